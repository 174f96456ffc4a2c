//! Inspection and tool entry points: who reads a file
//! ([`Cache::readers`]), how full each stripe is ([`Cache::stripe_stats`]),
//! and a low-level write of already-encoded bytes ([`Cache::set_record`])
//! for tools that move entries between files (the `slotcache` command's
//! `import`).

use crate::cache::Cache;
use crate::codec::ValueKind;
use crate::error::{Error, Result};
use crate::layout::kind;
use crate::options::WriteOptions;
use crate::readers::{pin_holder, ThreadSlot};
use crate::stats::stripe_counters;
use std::sync::atomic::Ordering;

pub use crate::stats::StripeStats;

/// One reader slot of the file's reader table (format.md §2.3), as
/// returned by [`Cache::readers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderInfo {
    /// The slot's index in the reader table.
    pub slot: u32,
    /// The pid of the process that last claimed the slot. Diagnostics only: after the owner died, another
    /// process may have been given the same pid.
    pub owner_pid: u32,
    /// Whether a live thread owns the slot now: its liveness lock is held
    /// by some process, or the slot belongs to this process.
    pub live: bool,
    /// Stripes whose pin word in this slot is set: guards (or iterator
    /// entries) of the owning thread alive now. A dead slot's leftover pins
    /// protect nothing; writers ignore them.
    pub pinned_stripes: u32,
}

impl Cache {
    /// Every reader slot ever claimed in the file: the slots below
    /// `reader_hwm` that record an owner pid (a thread's first slot is
    /// chosen from its pid, so slots below the high-water mark may never
    /// have been claimed; those are left out). For each: its last owner's pid, whether a live thread owns it, and how many
    /// stripes it pins. Lock-free apart from one lock query per slot not
    /// owned by this process (`F_OFD_GETLK`, the check writers make for
    /// dead readers); works on read-only handles. A snapshot: threads
    /// claim and release slots meanwhile.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-readers-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("r.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("k", &Raw(b"v"))?;
    /// let guard = cache.get::<Raw>("k")?.unwrap(); // this thread claims a slot
    /// let readers = cache.readers()?;
    /// let me = readers.iter().find(|r| r.owner_pid == std::process::id()).unwrap();
    /// assert!(me.live);
    /// assert_eq!(me.pinned_stripes, 1, "the guard pins its stripe");
    /// # drop(guard); drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn readers(&self) -> Result<Vec<ReaderInfo>> {
        let sh = self.shared_ref();
        let geo = &sh.geo;
        let pr = sh.process()?;
        let me = ThreadSlot::current_index(sh);
        let hwm = sh
            .map
            .header()
            .reader_hwm
            .load(Ordering::Relaxed)
            .min(geo.reader_slots as u64) as u32;
        let a = |w: &std::sync::atomic::AtomicU64| w.load(Ordering::Relaxed);
        (0..hwm)
            .filter(|&i| a(&sh.map.reader(i).counters.owner_pid) != 0)
            .map(|i| {
                let slot = sh.map.reader(i);
                let pinned_stripes = slot.pins.iter().filter(|&p| a(p) != 0).count() as u32;
                Ok(ReaderInfo {
                    slot: i,
                    owner_pid: a(&slot.counters.owner_pid) as u32,
                    live: pin_holder(sh, pr, me, i)?.is_some(),
                    pinned_stripes,
                })
            })
            .collect()
    }

    /// The counters of every stripe, in stripe order: how the entries and
    /// log bytes spread over the stripes, and where evictions and pin
    /// waits happen. [`stats`](Self::stats) is their sum (plus the reader
    /// counters). Loads only; works on read-only handles.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-stripestats-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("s.cache"), Options::new().capacity(8 << 20).stripes(4))?;
    /// cache.set("k", &Raw(b"v"))?;
    /// let stripes = cache.stripe_stats();
    /// assert_eq!(stripes.len(), 4);
    /// let s = cache.key_placement("k").stripe as usize;
    /// assert_eq!((stripes[s].entries, stripes[s].inserts), (1, 1));
    /// assert_eq!(stripes.iter().map(|s| s.entries).sum::<u64>(), cache.stats().entries);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn stripe_stats(&self) -> Vec<StripeStats> {
        let sh = self.shared_ref();
        (0..sh.geo.stripes)
            .map(|s| stripe_counters(&sh.map, s))
            .collect()
    }

    /// Stores already-encoded value bytes under `key` as a record of the
    /// given kind and schema fingerprint: a low-level entry point for tools
    /// that copy entries between files (for instance an export from
    /// [`iter`](Self::iter) — [`Entry::kind`](crate::Entry::kind),
    /// [`Entry::schema`](crate::Entry::schema),
    /// [`Entry::bytes`](crate::Entry::bytes) — imported into another file).
    /// Applications should use [`set`](Self::set).
    ///
    /// The bytes are not checked: validation is the reader's job, as for
    /// every record. A typed [`get`](Self::get) of an archived record still
    /// compares the schema and validates the archive with `bytecheck`, so
    /// bytes that are not an archive of the reader's type are a miss, never
    /// a wrong value. A [`ValueKind::Raw`] record must have schema 0 and an
    /// archived one a non-zero schema (no type has fingerprint 0); anything
    /// else is [`Error::InvalidOptions`]. The TTL is the options' (or the
    /// cache's default); the creation time is now.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-setrecord-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{schema_fingerprint, Cache, Options, ValueKind, WriteOptions};
    /// let from = Cache::open(dir.join("from.cache"), Options::new().capacity(8 << 20))?;
    /// let to = Cache::open(dir.join("to.cache"), Options::new().capacity(16 << 20))?;
    /// from.set("n", &7u32)?;
    /// for entry in from.iter() {
    ///     let e = entry?;
    ///     to.set_record(e.key(), e.kind(), e.schema(), e.bytes(), &WriteOptions::new())?;
    /// }
    /// assert_eq!(*to.get::<u32>("n")?.unwrap(), 7, "the same kind and schema: a typed hit");
    /// assert!(to.get::<u64>("n")?.is_none());
    /// assert_eq!(schema_fingerprint::<u32>(), to.iter().next().unwrap()?.schema());
    /// # drop((from, to)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn set_record(
        &self,
        key: impl AsRef<[u8]>,
        kind: ValueKind,
        schema: u64,
        bytes: &[u8],
        options: &WriteOptions,
    ) -> Result<()> {
        let record_kind = match kind {
            ValueKind::Raw if schema == 0 => kind::BYTES,
            ValueKind::Archived if schema != 0 => kind::ARCHIVED,
            ValueKind::Raw => return Err(bad_schema("0 for ValueKind::Raw", schema)),
            ValueKind::Archived => return Err(bad_schema("non-zero for ValueKind::Archived", 0)),
        };
        let item = std::iter::once((key.as_ref(), bytes));
        self.write_batch(
            "set_record",
            (record_kind, schema),
            item,
            self.ttl_of(options),
        )
    }
}

fn bad_schema(expected: &str, found: u64) -> Error {
    Error::InvalidOptions {
        option: "set_record schema",
        expected: expected.to_string(),
        found: format!("{found:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::{schema_fingerprint, Cache, Error, Options, Raw, ValueKind, WriteOptions};
    use std::time::Duration;

    fn dir(name: &str) -> crate::testing::TestDir {
        crate::testing::TestDir::new(&format!("inspect-{name}"))
    }

    #[test]
    fn stripe_stats_sum_to_stats() {
        let d = dir("stripes");
        let c = Cache::open(d.join("c"), Options::new().capacity(1 << 20).stripes(4)).unwrap();
        for i in 0..200u32 {
            c.set(i.to_le_bytes(), &Raw([0u8; 100])).unwrap();
        }
        for i in 0..10u32 {
            assert!(c.delete(i.to_le_bytes()).unwrap());
        }
        let per = c.stripe_stats();
        let st = c.stats();
        assert_eq!(per.len(), 4);
        assert!(per.iter().enumerate().all(|(i, s)| s.stripe == i as u32));
        let sum = |f: fn(&super::StripeStats) -> u64| per.iter().map(f).sum::<u64>();
        assert_eq!(sum(|s| s.entries), st.entries);
        assert_eq!(sum(|s| s.bytes_used), st.bytes_used);
        assert_eq!(sum(|s| s.inserts), st.inserts);
        assert_eq!(sum(|s| s.evictions), st.evictions);
        assert_eq!(sum(|s| s.deletes), 10);
        assert_eq!(sum(|s| s.reinserts), st.reinserts);
        assert_eq!(sum(|s| s.pin_waits), st.pin_waits);
        assert_eq!(sum(|s| s.index_evictions), st.index_evictions);
        assert_eq!(sum(|s| s.repairs), st.stripe_repairs);
        assert!(
            per.iter().all(|s| s.entries > 0),
            "200 keys reach every stripe"
        );
        drop(c);
    }

    #[test]
    fn readers_report_live_and_dead_slots_and_pins() {
        let d = dir("readers");
        let c = Cache::open(d.join("c"), Options::new().capacity(1 << 20).stripes(2)).unwrap();
        assert!(c.readers().unwrap().is_empty(), "no slot claimed yet");
        c.set("k", &Raw(b"v")).unwrap();
        // A thread that read and exited: its slot stays claimed-once, not live.
        let c2 = c.clone();
        std::thread::spawn(move || drop(c2.get::<Raw>("k").unwrap()))
            .join()
            .unwrap();
        let after_thread = c.readers().unwrap();
        assert_eq!(after_thread.len(), 1);
        assert!(!after_thread[0].live, "{after_thread:?}");
        assert_eq!(after_thread[0].owner_pid, std::process::id());
        assert_eq!(after_thread[0].pinned_stripes, 0);
        // This thread holding a guard: live, one stripe pinned.
        let g = c.get::<Raw>("k").unwrap().unwrap();
        let now = c.readers().unwrap();
        let live: Vec<_> = now.iter().filter(|r| r.live).collect();
        assert_eq!(live.len(), 1, "{now:?}");
        assert_eq!(live[0].pinned_stripes, 1);
        drop(g);
        let idle = c.readers().unwrap();
        assert!(idle.iter().all(|r| r.pinned_stripes == 0));
        // A read-only handle sees the same table.
        let ro = Cache::open(d.join("c"), Options::new().read_only(true)).unwrap();
        assert_eq!(ro.readers().unwrap().len(), idle.len());
        drop((c, ro));
    }

    #[test]
    fn set_record_keeps_kind_schema_and_ttl_and_checks_the_schema() {
        let d = dir("setrecord");
        let c = Cache::open(d.join("c"), Options::new().capacity(1 << 20)).unwrap();
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&42u64).unwrap();
        let ttl = WriteOptions::new().ttl(Some(Duration::from_secs(60)));
        c.set_record(
            "n",
            ValueKind::Archived,
            schema_fingerprint::<u64>(),
            &archive,
            &ttl,
        )
        .unwrap();
        assert_eq!(*c.get::<u64>("n").unwrap().unwrap(), 42);
        let meta = c.get::<u64>("n").unwrap().unwrap().meta();
        let left = meta
            .expires()
            .unwrap()
            .duration_since(meta.created())
            .unwrap();
        assert_eq!(left, Duration::from_secs(60));
        c.set_record("r", ValueKind::Raw, 0, b"bytes", &WriteOptions::new())
            .unwrap();
        assert_eq!(&*c.get::<Raw>("r").unwrap().unwrap(), b"bytes");
        // Bytes that are no archive of the reader's type are a miss.
        c.set_record(
            "bad",
            ValueKind::Archived,
            schema_fingerprint::<String>(),
            b"\xff",
            &ttl,
        )
        .unwrap();
        assert!(c.get::<String>("bad").unwrap().is_none());
        assert_eq!(c.stats().corrupt, 1);
        for (kind, schema) in [(ValueKind::Raw, 5), (ValueKind::Archived, 0)] {
            let e = c.set_record("x", kind, schema, b"v", &ttl).unwrap_err();
            assert!(matches!(e, Error::InvalidOptions { .. }), "{e}");
        }
        assert!(!c.contains("x").unwrap());
        let ro = Cache::open(d.join("c"), Options::new().read_only(true)).unwrap();
        let e = ro
            .set_record("x", ValueKind::Raw, 0, b"v", &ttl)
            .unwrap_err();
        assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
        drop((c, ro));
    }
}
