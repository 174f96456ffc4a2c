//! The public handle: [`Cache`], with its reads (the lookup itself is
//! `crate::read`'s), writes, maintenance (`verify`, `repair`, `clear`,
//! `invalidate`) and the reports they return.

use crate::clock::now_ns;
use crate::codec::{schema_fingerprint, Encoded, FromView, Value};
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::index::{Buckets, KeyHash};
use crate::layout::reader::{self, Counter};
use crate::layout::{kind, MAX_KEY_LEN, RECORD_ALIGN};
use crate::log::{NewRecord, StripeCheck, StripeWriter};
use crate::options::Options;
use crate::options::{DogpileDefaults, WriteOptions};
use crate::read::{self, Found};
use crate::readers::FileReaders;
use crate::shared::Shared;
use crate::stats::Stats;
use rkyv::Archive;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What [`Cache::invalidate`] does to entries created before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// They become misses for every reader in every process.
    Hard,
    /// They become stale: misses for [`Cache::get`], still visible to
    /// [`Cache::get_stale`] (so one caller can regenerate while others
    /// serve the old value).
    Soft,
}

/// The geometry of an open cache file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// Total file size in bytes.
    pub file_size: u64,
    /// Lock stripes.
    pub stripes: u32,
    /// Segments per stripe ring.
    pub segments: u32,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Index slots (two per intended entry).
    pub index_slots: u64,
    /// Reader slots.
    pub reader_slots: u32,
    /// Whether this handle is read-only.
    pub read_only: bool,
    /// When the file was created.
    pub created: std::time::SystemTime,
}

/// What [`Cache::verify`] found. Equal reports from two `verify` calls on
/// an unchanged file: verifying writes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Records walked in the live part of every stripe's log.
    pub records_scanned: u64,
    /// Records named by a live index slot whose CRC does not match (damage
    /// from outside, or a torn write after a power failure). Lookups treat
    /// them as misses; [`Cache::repair`] clears their slots.
    pub bad_checksums: u64,
    /// Records in the live log that no index slot names and whose CRC does
    /// not match: damage no lookup can reach, dropped when the log wraps.
    /// Not counted by [`is_clean`](Self::is_clean) (a record whose key
    /// hash was damaged may be counted here and as a dangling slot).
    pub unreachable_bad_checksums: u64,
    /// Live index slots that do not name a well-formed record of their own
    /// key placement. Lookups treat them as misses; [`Cache::repair`]
    /// clears them.
    pub dangling_slots: u64,
    /// Stripes whose head and tail break their invariants (format.md §2.2:
    /// damage from outside). Their log and index are not walked (nothing
    /// there can be trusted, and a walk could not be bounded); the next
    /// write to the stripe, or [`Cache::repair`], resets them empty.
    pub damaged_stripes: u64,
    /// Live index slots (of undamaged stripes).
    pub live_entries: u64,
    /// Sum over stripes of |entries counter − live slots| (counters drift
    /// only when a process dies mid-write).
    pub entries_drift: u64,
    /// Live pins: reader slots of live threads holding guards, and read-only
    /// pin locks.
    pub live_pins: u64,
}

impl VerifyReport {
    /// Adds one stripe's findings.
    fn add(&mut self, c: &StripeCheck) {
        self.records_scanned += c.records_scanned;
        self.bad_checksums += c.bad_checksums;
        self.unreachable_bad_checksums += c.unreachable_bad_checksums;
        self.dangling_slots += c.dangling_slots;
        self.damaged_stripes += c.damaged as u64;
        self.live_entries += c.live_entries;
        self.entries_drift = self.entries_drift.saturating_add(c.entries_drift);
    }

    /// No damaged stripe, no bad checksum a lookup can reach and no
    /// dangling slot.
    pub fn is_clean(&self) -> bool {
        self.bad_checksums == 0 && self.dangling_slots == 0 && self.damaged_stripes == 0
    }
}

/// What [`Cache::repair`] found and reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// What the file looked like before the repair (as [`Cache::verify`]
    /// would have reported it).
    pub before: VerifyReport,
    /// Damaged stripes (see [`VerifyReport::damaged_stripes`]) emptied and
    /// restarted at their next segment boundary; their entries are lost.
    pub stripes_reset: u64,
    /// Index slots zeroed because the record they name fails its checks
    /// (dangling slots and slots naming a record with a bad checksum).
    pub slots_cleared: u64,
    /// Stripes whose entry counter was set to the number of live slots.
    pub entries_fixed: u64,
}

/// Where a key lives: its write-lock stripe and its regeneration stripe.
/// Keys that share a stripe contend for its lock (writes, or regeneration
/// across processes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Placement {
    /// The stripe (from the key hash, §2.4 of format.md): the write lock, index partition and log ring.
    pub stripe: u32,
    /// `hash % regen_stripes`: the regeneration lock.
    pub regen_stripe: u32,
}

/// How many items ahead a batch (`get_many`, `set_many`) prefetches index
/// lines (and, half as far ahead, the records they name).
const PREFETCH_AHEAD: usize = 16;

/// A cache file shared by every process that opens it.
///
/// Cheap to clone (an `Arc`); every clone and every other `open` of the same
/// file in this process share one descriptor, one set of lock mutexes and
/// the threads' reader slots.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-cache-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Options};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
/// struct User { name: String, visits: u32 }
///
/// let cache = Cache::open(dir.join("users.cache"), Options::new().capacity(16 << 20))?;
/// cache.set("user:1", &User { name: "ada".into(), visits: 3 })?;
///
/// // Zero-copy: the guard points into the shared mapping.
/// let user = cache.get::<User>("user:1")?.expect("present");
/// assert_eq!(user.name, "ada");
/// assert_eq!(user.visits, 3);
/// drop(user);
///
/// assert_eq!(cache.get_owned::<User>("user:1")?, Some(User { name: "ada".into(), visits: 3 }));
/// assert!(cache.delete("user:1")?);
/// assert!(cache.get::<User>("user:1")?.is_none());
/// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    shared: Arc<Shared>,
    default_ttl: u64,
    pin_wait: Duration,
    /// This handle refuses writes (asked for read-only while the process
    /// has the file open read-write).
    read_only_handle: bool,
    pub(crate) dogpile: DogpileDefaults,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("path", &self.shared.path)
            .field("info", &self.info())
            .finish()
    }
}

impl Cache {
    /// Opens the cache file at `path`, creating and preallocating it if it
    /// does not exist (unless [`Options::create`] is off).
    ///
    /// Opening an existing file reads and validates its header only (O(1),
    /// whatever the file's size) and adopts its geometry. A file this
    /// process cannot write is opened read-only.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Cache> {
        let shared = crate::open::open(path.as_ref(), &options)?;
        let default_ttl = match options.default_ttl {
            Some(d) => crate::options::saturating_ns(d).max(1),
            None => shared.header.default_ttl,
        };
        let read_only_handle = options.read_only && shared.read_only.is_none();
        Ok(Cache {
            read_only_handle,
            shared,
            default_ttl,
            pin_wait: options.pin_wait,
            dogpile: options.dogpile,
        })
    }

    /// The shared state (unit tests inspect the file through it).
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The geometry of the file.
    pub fn info(&self) -> Info {
        let g = &self.shared.geo;
        Info {
            file_size: g.file_size,
            stripes: g.stripes,
            segments: g.segments,
            segment_size: g.segment_size,
            index_slots: g.stripes as u64 * g.buckets as u64 * crate::layout::BUCKET_SLOTS as u64,
            reader_slots: g.reader_slots,
            read_only: self.read_only_handle || self.shared.read_only.is_some(),
            created: std::time::UNIX_EPOCH + Duration::from_nanos(self.shared.header.created),
        }
    }

    /// The stripes `key` maps to in this file (the hash is seeded per file).
    pub fn key_placement(&self, key: impl AsRef<[u8]>) -> Placement {
        let kh = KeyHash::new(key.as_ref(), self.shared.header.seed, &self.shared.geo);
        Placement {
            stripe: kh.stripe,
            regen_stripe: (kh.hash % self.shared.header.regen_stripes as u64) as u32,
        }
    }

    /// The largest value this file stores under a key of `key_len` bytes.
    pub fn max_value_len(&self, key_len: usize) -> usize {
        self.shared.geo.max_value(key_len)
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn check_key(key: &[u8]) -> Result<()> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                max: MAX_KEY_LEN,
                found: key.len(),
            });
        }
        Ok(())
    }

    /// `Ok` when this handle may write.
    pub(crate) fn writable(&self, op: &'static str) -> Result<()> {
        if self.read_only_handle {
            let why = "opened with Options::read_only";
            return Err(Error::ReadOnly {
                path: self.shared.path.clone(),
                op,
                why,
            });
        }
        self.shared.writable(op)
    }

    pub(crate) fn shared_ref(&self) -> &Shared {
        &self.shared
    }

    /// The header page of the file (its shared words, format.md §2.1),
    /// for the tiered cache's epoch and invalidation words.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_header(&self) -> &crate::layout::header::SharedHeader {
        self.shared.map.header()
    }

    pub(crate) fn shared_arc(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn seed(&self) -> u64 {
        self.shared.header.seed
    }

    pub(crate) fn geo(&self) -> &crate::layout::Geometry {
        &self.shared.geo
    }

    /// Counts an event in the calling thread's reader slot.
    pub(crate) fn count(&self, field: Counter) {
        crate::readers::count(&self.shared, field);
    }

    /// Finds `key`: lock-free, no system call (for a read-write handle), no
    /// allocation. Expired and soft-invalidated entries are returned only
    /// with `stale_ok`; hard-invalidated ones never. A record found is
    /// handed to `finish` ([`read::lookup`]).
    #[inline]
    pub(crate) fn lookup<'c, R>(
        &'c self,
        key: &[u8],
        stale_ok: bool,
        finish: impl FnOnce(Found<'c>) -> Option<R>,
    ) -> Result<Option<R>> {
        Self::check_key(key)?;
        let kh = KeyHash::new(key, self.shared.header.seed, &self.shared.geo);
        self.lookup_hashed(key, &kh, stale_ok, finish)
    }

    /// [`lookup`](Self::lookup) of a checked key whose hash is known.
    #[inline]
    fn lookup_hashed<'c, R>(
        &'c self,
        key: &[u8],
        kh: &KeyHash,
        stale_ok: bool,
        finish: impl FnOnce(Found<'c>) -> Option<R>,
    ) -> Result<Option<R>> {
        read::lookup(&self.shared, key, kh, stale_ok, finish)
    }

    /// Hands out a found record as a `V` (a counted hit), or counts why
    /// it is a miss: another kind or schema (mismatched), or bytes that do
    /// not check (corrupt).
    #[inline]
    fn typed<'c, V: ?Sized>(
        f: Found<'c>,
        want_kind: u8,
        want_schema: u64,
        access: impl FnOnce(&'c [u8]) -> Option<&'c V>,
    ) -> Option<Guard<'c, V>> {
        if f.rh.kind != want_kind || f.rh.schema != want_schema {
            f.pin.count(reader::MISMATCHED);
            f.pin.count(reader::MISSES);
            return None;
        }
        match access(f.value) {
            Some(value) => {
                f.pin.count(reader::HITS);
                Some(Guard {
                    value,
                    bytes: f.value,
                    meta: f.meta,
                    _pin: f.pin,
                })
            }
            None => {
                f.pin.count(reader::CORRUPT);
                f.pin.count(reader::MISSES);
                None
            }
        }
    }

    /// [`typed`](Self::typed) for a [`Value`]: its kind, its schema, its
    /// check.
    #[inline]
    fn valued<V: Value>(f: Found<'_>) -> Option<Guard<'_, V::View>> {
        Self::typed(f, V::KIND, V::schema(), V::view)
    }

    /// Reads the value stored under `key`, without copying: the guard
    /// derefs to the value in the mapping — `T::Archived` for a typed value
    /// (validated with `bytecheck`), `[u8]` for [`Raw`](crate::Raw) bytes.
    /// A missing, expired, corrupt or differently typed entry is `Ok(None)`.
    ///
    /// Validation is cheap next to the lookup (figures: `BENCHMARKS.md`,
    /// "Figures the source refers to").
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-get-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("get.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("answer", &42u64)?;
    /// cache.set("greeting", &Raw(b"hello"))?;
    /// assert_eq!(*cache.get::<u64>("answer")?.unwrap(), 42);
    /// assert_eq!(&*cache.get::<Raw>("greeting")?.unwrap(), b"hello");
    /// assert!(cache.get::<u32>("answer")?.is_none(), "another type is a miss");
    /// assert!(cache.get::<u64>("nothing")?.is_none());
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    #[inline]
    pub fn get<V: Value>(&self, key: impl AsRef<[u8]>) -> Result<Option<Guard<'_, V::View>>> {
        self.lookup(key.as_ref(), false, Self::valued::<V>)
    }

    /// Like [`get`](Self::get), but also returns expired and
    /// soft-invalidated entries (see [`EntryMeta::is_stale`](crate::EntryMeta::is_stale)). Hard
    /// invalidation still hides them.
    pub fn get_stale<V: Value>(&self, key: impl AsRef<[u8]>) -> Result<Option<Guard<'_, V::View>>> {
        self.lookup(key.as_ref(), true, Self::valued::<V>)
    }

    /// Like [`get`](Self::get) of a typed value, without `bytecheck`
    /// validation (the CRC-32C and the schema fingerprint are still checked).
    ///
    /// # Safety
    /// Every process writing this file must store well-formed archives of
    /// `T` under this schema fingerprint: a record that passes its checksum
    /// but holds an invalid archive (a bug in a writer, or a type changed
    /// without changing its name and archived size) is undefined behaviour.
    pub unsafe fn get_unchecked<T: Archive>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Guard<'_, T::Archived>>> {
        if std::mem::align_of::<T::Archived>() > RECORD_ALIGN as usize {
            // Values are 16-aligned in the log; a type that needs more
            // cannot be referenced in place (`get` reports it as corrupt).
            return Ok(None);
        }
        self.lookup(key.as_ref(), false, |f| {
            Self::typed(f, kind::ARCHIVED, schema_fingerprint::<T>(), |b| {
                // SAFETY: the caller promises the bytes are a valid archive of T;
                // they are 16-aligned and immutable while the guard lives.
                Some(unsafe { rkyv::access_unchecked::<T::Archived>(b) })
            })
        })
    }

    /// Reads the value under `key` into an owned `V`: deserialized for a
    /// typed value, copied for [`Raw`](crate::Raw) (`get_owned::<Raw>`
    /// gives a `Raw<Vec<u8>>`). No guard outlives the call.
    pub fn get_owned<V: FromView>(&self, key: impl AsRef<[u8]>) -> Result<Option<V>> {
        match self.get::<V>(key)? {
            Some(g) => V::from_view(&g).map(Some),
            None => Ok(None),
        }
    }

    /// Whether a fresh entry (of any type) exists under `key`.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let found = self.lookup(key.as_ref(), false, |f| {
            f.pin.count(reader::HITS);
            Some(())
        })?;
        Ok(found.is_some())
    }

    /// Reads several keys; `result[i]` belongs to the `i`-th key. Lookups
    /// take no locks, so this is [`get`](Self::get) for each key, with
    /// every guard alive together, the index lines and records of the keys
    /// ahead prefetched so that their cache misses overlap.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-getmany-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options};
    /// let cache = Cache::open(dir.join("gm.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set_many([("a", &1u32), ("b", &2u32)])?;
    /// let guards = cache.get_many::<u32>(["a", "missing", "b"])?;
    /// let got: Vec<Option<u32>> = guards.iter().map(|g| g.as_ref().map(|g| g.to_native())).collect();
    /// assert_eq!(got, [Some(1), None, Some(2)]);
    /// drop(guards);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn get_many<V: Value>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Result<Vec<Option<Guard<'_, V::View>>>> {
        self.lookup_many(keys, false, Self::valued::<V>)
    }

    /// Like [`get_many`](Self::get_many), but also returns expired and
    /// soft-invalidated entries (as [`get_stale`](Self::get_stale) does).
    pub fn get_many_stale<V: Value>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
    ) -> Result<Vec<Option<Guard<'_, V::View>>>> {
        self.lookup_many(keys, true, Self::valued::<V>)
    }

    /// Looks up every key, prefetching the index lines of the key
    /// [`PREFETCH_AHEAD`] places ahead and the records of the key half as
    /// far ahead, so the random misses of a batch overlap instead of
    /// following each other.
    fn lookup_many<'c, K: AsRef<[u8]>, R>(
        &'c self,
        keys: impl IntoIterator<Item = K>,
        stale_ok: bool,
        mut finish: impl FnMut(Found<'c>) -> Option<R>,
    ) -> Result<Vec<Option<R>>> {
        let (sh, geo) = (&self.shared, &self.shared.geo);
        let keys = keys
            .into_iter()
            .map(|k| {
                Self::check_key(k.as_ref())?;
                let kh = KeyHash::new(k.as_ref(), sh.header.seed, geo);
                Ok((k, kh))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(keys.len());
        for (j, (k, kh)) in keys.iter().enumerate() {
            self.prefetch_ahead(j, |i| keys.get(i).map(|p| &p.1));
            out.push(self.lookup_hashed(k.as_ref(), kh, stale_ok, &mut finish)?);
        }
        Ok(out)
    }

    /// Before item `j` of a batch (`item(i)`: the hash of item `i`, if
    /// any): starts loading the index lines of the item [`PREFETCH_AHEAD`]
    /// places ahead and the records named by the item half as far ahead (at
    /// `j = 0`, also the lines of the first items). Batches are memory-bound:
    /// each key's index lines, then its record, are random loads, and this
    /// overlaps those misses across the batch.
    #[inline]
    fn prefetch_ahead<'k>(&self, j: usize, item: impl Fn(usize) -> Option<&'k KeyHash>) {
        let map = &self.shared.map;
        let first = if j == 0 { 0 } else { j + PREFETCH_AHEAD };
        for kh in (first..=j + PREFETCH_AHEAD).filter_map(&item) {
            Buckets::prefetch_lines(map, kh);
        }
        if let Some(kh) = item(j + PREFETCH_AHEAD / 2) {
            Buckets::of(map, kh).prefetch_records(map, kh);
        }
    }

    fn expiry(&self, ttl: Option<Duration>, now: u64) -> u64 {
        match ttl {
            Some(d) => now.saturating_add(crate::options::saturating_ns(d)).max(1),
            None => 0,
        }
    }

    pub(crate) fn default_ttl(&self) -> Option<Duration> {
        (self.default_ttl != 0).then(|| Duration::from_nanos(self.default_ttl))
    }

    /// Checks one item and places its key.
    fn prepare(&self, key: &[u8], value_len: usize) -> Result<KeyHash> {
        Self::check_key(key)?;
        let max = self.shared.geo.max_value(key.len());
        if value_len > max {
            return Err(Error::ValueTooLarge {
                max,
                found: value_len,
                segment_size: self.shared.geo.segment_size,
            });
        }
        Ok(KeyHash::new(key, self.shared.header.seed, &self.shared.geo))
    }

    /// The TTL a write with these options gets.
    pub(crate) fn ttl_of(&self, o: &WriteOptions) -> Option<Duration> {
        o.ttl.unwrap_or_else(|| self.default_ttl())
    }

    /// Writes a batch of `(key, value bytes)` of one kind and schema: one
    /// lock acquisition per stripe touched (one range lock over them when
    /// it can).
    pub(crate) fn write_batch<'i>(
        &self,
        op: &'static str,
        (kind, schema): (u8, u64),
        items: impl IntoIterator<Item = (&'i [u8], &'i [u8])>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.writable(op)?;
        let placed = items
            .into_iter()
            .map(|(k, v)| Ok((self.prepare(k, v.len())?, k, v)))
            .collect::<Result<Vec<_>>>()?;
        // The items in stripe order, by sorting small `(stripe, index)`
        // pairs rather than the items: the index keeps a stripe's items in
        // call order (the last write of a key wins), so an unstable sort
        // does, and it moves 16 bytes an item instead of the whole item.
        let mut order: Vec<(u32, usize)> = placed
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0.stripe, i))
            .collect();
        order.sort_unstable();
        let pr = self.shared.process()?;
        let now = now_ns();
        let groups: Vec<_> = order.chunk_by(|a, b| a.0 == b.0).collect();
        let stripes: Vec<u32> = groups.iter().map(|g| g[0].0).collect();
        if stripes.is_empty() {
            return Ok(());
        }
        let readers = self.file_readers(pr);
        let mut j = 0;
        // Held until every stripe of the chunk is written (see
        // `Process::lock_stripes`); one chunk unless robust mutexes cap
        // how many one thread may hold (`StripeLocks::max_held`).
        let per_chunk = pr.stripe_locks.max_held();
        for (groups, stripes) in groups.chunks(per_chunk).zip(stripes.chunks(per_chunk)) {
            let _locks = self.lock_stripes(pr, stripes)?;
            for group in groups {
                let s = group[0].0;
                let mut w = StripeWriter::new(&self.shared.map, &readers, s, self.pin_wait, now);
                for &(_, i) in *group {
                    let (kh, key, value) = &placed[i];
                    self.prefetch_ahead(j, |o| order.get(o).map(|&(_, i)| &placed[i].0));
                    j += 1;
                    w.put(kh, &self.record((kind, schema), key, value, now, ttl))?;
                }
            }
        }
        Ok(())
    }

    /// Encodes `(key, value)` items (raw bytes are borrowed, not copied)
    /// and writes them as one batch.
    pub(crate) fn write_values<'v, V: Value + 'v, K: AsRef<[u8]>>(
        &self,
        op: &'static str,
        items: impl IntoIterator<Item = (K, &'v V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let encoded = items
            .into_iter()
            .map(|(k, v)| Ok((k, v.encode()?)))
            .collect::<Result<Vec<(K, Encoded<'v>)>>>()?;
        let items = encoded.iter().map(|(k, b)| (k.as_ref(), &b[..]));
        self.write_batch(op, (V::KIND, V::schema()), items, ttl)
    }

    /// Encodes one value (raw bytes are borrowed, not copied) and writes it.
    pub(crate) fn write_one<V: Value>(
        &self,
        op: &'static str,
        key: &[u8],
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes = value.encode()?;
        self.write_single(op, (V::KIND, V::schema()), key, &bytes, ttl)
    }

    /// [`write_batch`](Self::write_batch) of one item, without its
    /// vectors (sorting, grouping): the path of every `set`.
    fn write_single(
        &self,
        op: &'static str,
        (kind, schema): (u8, u64),
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.writable(op)?;
        let kh = self.prepare(key, value.len())?;
        let pr = self.shared.process()?;
        let now = now_ns();
        let _lock = self.lock_stripe(pr, kh.stripe)?;
        let readers = self.file_readers(pr);
        let mut w = StripeWriter::new(&self.shared.map, &readers, kh.stripe, self.pin_wait, now);
        w.put(&kh, &self.record((kind, schema), key, value, now, ttl))
    }

    /// The record of one write at `now`.
    fn record<'a>(
        &self,
        (kind, schema): (u8, u64),
        key: &'a [u8],
        value: &'a [u8],
        now: u64,
        ttl: Option<Duration>,
    ) -> NewRecord<'a> {
        NewRecord {
            kind,
            schema,
            key,
            value,
            created: now,
            expires: self.expiry(ttl, now),
        }
    }

    /// Stores `value` under `key` with the cache's default TTL: a typed
    /// value as an rkyv archive, [`Raw`](crate::Raw) bytes as they are.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-set-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("set.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("answer", &42u64)?;
    /// cache.set("greeting", &Raw(b"hello"))?;
    /// cache.set("greeting", &Raw(String::from("hello again")))?; // overwrites
    /// assert_eq!(cache.get_owned::<u64>("answer")?, Some(42));
    /// assert_eq!(&*cache.get::<Raw>("greeting")?.unwrap(), b"hello again");
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn set<V: Value>(&self, key: impl AsRef<[u8]>, value: &V) -> Result<()> {
        self.set_opt(key, value, &WriteOptions::new())
    }

    /// [`set`](Self::set) with per-call [`WriteOptions`] (a TTL).
    pub fn set_opt<V: Value>(
        &self,
        key: impl AsRef<[u8]>,
        value: &V,
        options: &WriteOptions,
    ) -> Result<()> {
        self.write_one("set", key.as_ref(), value, self.ttl_of(options))
    }

    /// Stores several values with the default TTL, taking each stripe's
    /// lock once for all the keys in it (all the stripes' locks together:
    /// concurrent readers see the batch stripe by stripe, never half of a
    /// stripe's items).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-setmany-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("sm.cache"), Options::new().capacity(8 << 20))?;
    /// let users = [("user:1", "ada".to_string()), ("user:2", "bob".to_string())];
    /// cache.set_many(users.iter().map(|(k, v)| (*k, v)))?;
    /// cache.set_many([("x", &Raw(b"1")), ("y", &Raw(b"2"))])?;
    /// assert_eq!(cache.get::<String>("user:2")?.unwrap().as_str(), "bob");
    /// assert_eq!(&*cache.get::<Raw>("y")?.unwrap(), b"2");
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn set_many<'v, V: Value + 'v, K: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, &'v V)>,
    ) -> Result<()> {
        self.write_values("set_many", items, self.default_ttl())
    }

    /// [`set_many`](Self::set_many) with per-call [`WriteOptions`] (a TTL
    /// for every item).
    pub fn set_many_opt<'v, V: Value + 'v, K: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, &'v V)>,
        options: &WriteOptions,
    ) -> Result<()> {
        self.write_values("set_many", items, self.ttl_of(options))
    }

    /// Removes `key`; returns whether it was present.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.writable("delete")?;
        let key = key.as_ref();
        let kh = self.prepare(key, 0)?;
        let pr = self.shared.process()?;
        let _lock = self.lock_stripe(pr, kh.stripe)?;
        let readers = self.file_readers(pr);
        Ok(StripeWriter::new(
            &self.shared.map,
            &readers,
            kh.stripe,
            self.pin_wait,
            now_ns(),
        )
        .delete(&kh, key))
    }

    /// Checks the whole file and reports what is damaged, **without
    /// writing a byte of it**: no repair, no visited bit, no counter.
    ///
    /// Each stripe is walked under its write lock. Taking the lock changes
    /// no byte of the file (it is a byte-range lock far beyond its end),
    /// and it is what makes the walk safe against writers of every
    /// process: only a holder of the lock writes a stripe's log, so the
    /// records walked cannot change underneath (a lock-free walk would have
    /// to pin every record, and could not read head, tail and index as one
    /// consistent state). Writers of a stripe wait while it is walked.
    ///
    /// Per stripe: head and tail against their invariants (a stripe failing
    /// them is [`damaged`](VerifyReport::damaged_stripes) and not walked
    /// further); every live index slot must name a well-formed record of
    /// its own stripe, one of its two buckets and tag, whose CRC verifies;
    /// the live log is walked and its unnamed records re-checksummed; live
    /// pins are counted. O(file size); meant for diagnostics and tests, not
    /// for the hot path. Lookups never need it: they check each record as
    /// they read it. To reset what it finds, call [`repair`](Self::repair).
    ///
    /// A read-only handle cannot take write locks: it counts live pins
    /// only.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-verify-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("v.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("k", &Raw(b"v"))?;
    /// let report = cache.verify()?;
    /// assert!(report.is_clean(), "{report:?}");
    /// assert_eq!(report.live_entries, 1);
    /// assert_eq!(cache.verify()?, report, "verifying changes nothing");
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        self.each_stripe(&mut report, false, |w, r| r.add(&w.verify()))?;
        Ok(report)
    }

    /// Resets what [`verify`](Self::verify) would report as damaged, stripe
    /// by stripe under each stripe's write lock, and says what it reset:
    /// damaged stripes are emptied and restarted (as a writer does when it
    /// finds one, format.md §5.8, and counted in
    /// [`Stats::stripe_repairs`]), index slots naming a record that fails
    /// its checks are zeroed, and entry counters are set to the live count.
    /// Records are never rewritten: a bad record no slot names stays until
    /// the log wraps over it. A read-only handle gets [`Error::ReadOnly`].
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-repair-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("r.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("k", &Raw(b"v"))?;
    /// let repaired = cache.repair()?;
    /// assert!(repaired.before.is_clean());
    /// assert_eq!((repaired.stripes_reset, repaired.slots_cleared), (0, 0));
    /// assert_eq!(&*cache.get::<Raw>("k")?.unwrap(), b"v", "nothing healthy is touched");
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn repair(&self) -> Result<RepairReport> {
        self.writable("repair")?;
        let mut before = VerifyReport::default();
        let (mut reset, mut cleared, mut fixed) = (0, 0, 0);
        self.each_stripe(&mut before, true, |w, r| {
            let (found, done) = w.repair();
            r.add(&found);
            reset += done.reset as u64;
            cleared += done.cleared;
            fixed += done.entries_fixed as u64;
        })?;
        Ok(RepairReport {
            before,
            stripes_reset: reset,
            slots_cleared: cleared,
            entries_fixed: fixed,
        })
    }

    /// Counts each stripe's live pins into `report`, then (read-write
    /// handles) runs `f` on the stripe under its write lock, through a
    /// writer that has not checked (nor repaired) the stripe.
    fn each_stripe(
        &self,
        report: &mut VerifyReport,
        fix: bool,
        mut f: impl FnMut(&mut StripeWriter<'_>, &mut VerifyReport),
    ) -> Result<()> {
        let pr = self.shared.process()?;
        for s in 0..self.shared.geo.stripes {
            report.live_pins += crate::readers::count_live_pins(&self.shared, pr, s)?;
            if self.shared.read_only.is_some() {
                continue; // cannot take write locks: pins only
            }
            let _lock = if fix {
                self.lock_stripe(pr, s)?
            } else {
                self.lock_stripe_for_verify(pr, s)?
            };
            let readers = self.file_readers(pr);
            let mut w =
                StripeWriter::unchecked(&self.shared.map, &readers, s, self.pin_wait, now_ns());
            f(&mut w, report);
        }
        Ok(())
    }

    /// Removes every entry, stripe by stripe (each under its lock).
    pub fn clear(&self) -> Result<()> {
        self.writable("clear")?;
        let pr = self.shared.process()?;
        for s in 0..self.shared.geo.stripes {
            let _lock = self.lock_stripe(pr, s)?;
            let readers = self.file_readers(pr);
            StripeWriter::new(&self.shared.map, &readers, s, self.pin_wait, now_ns()).clear();
        }
        self.shared
            .map
            .header()
            .clears
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Invalidates every entry created up to now, in every process using the
    /// file (the time is stored in the header).
    pub fn invalidate(&self, how: Invalidation) -> Result<()> {
        self.writable("invalidate")?;
        self.invalidation_word(how)
            .fetch_max(now_ns(), Ordering::AcqRel);
        Ok(())
    }

    /// The header word holding the time of the last `how` invalidation.
    pub(crate) fn invalidation_word(&self, how: Invalidation) -> &std::sync::atomic::AtomicU64 {
        let header = self.shared.map.header();
        match how {
            Invalidation::Hard => &header.hard_invalidate,
            Invalidation::Soft => &header.soft_invalidate,
        }
    }

    /// Writes dirty pages to the file and waits for the disk (`msync`).
    /// Without it, a crash of a *process* loses nothing, but a power failure
    /// may lose recent writes.
    pub fn flush(&self) -> Result<()> {
        self.shared
            .map
            .flush()
            .map_err(|e| Error::io("flushing", &self.shared.path, e))
    }

    /// Sums the counters of every stripe and every reader slot.
    pub fn stats(&self) -> Stats {
        Stats::collect(&self.shared)
    }

    /// Takes stripe `s`'s write lock; if its previous owner died holding
    /// it, repairs the stripe and marks the lock consistent first
    /// (format.md §6, "A dead owner").
    fn lock_stripe<'p>(
        &'p self,
        pr: &'p crate::process::Process,
        s: u32,
    ) -> Result<crate::locks::StripeLock<'p>> {
        self.lock_stripe_then(pr, s, || self.recover_dead_owner(pr, s))
    }

    /// Takes stripe `s`'s write lock for [`verify`](Self::verify), which
    /// writes no byte of the data: a dead previous owner is counted and the
    /// mutex marked consistent (the lock's own line), but the stripe is
    /// left as found, for the verification to report and the next writer
    /// to check (format.md §5.8).
    fn lock_stripe_for_verify<'p>(
        &'p self,
        pr: &'p crate::process::Process,
        s: u32,
    ) -> Result<crate::locks::StripeLock<'p>> {
        self.lock_stripe_then(pr, s, || crate::log::count_dead_owner(&self.shared.map, s))
    }

    /// Takes stripe `s`'s write lock; if its previous owner died, runs
    /// `dead_owner` holding it, then marks the lock consistent.
    fn lock_stripe_then<'p>(
        &'p self,
        pr: &'p crate::process::Process,
        s: u32,
        dead_owner: impl FnOnce(),
    ) -> Result<crate::locks::StripeLock<'p>> {
        let mut lock = pr
            .lock_stripe(&self.shared.map, s)
            .map_err(|e| self.lock_error(s, e))?;
        if lock.owner_died().is_some() {
            dead_owner();
            lock.mark_consistent();
        }
        Ok(lock)
    }

    /// [`lock_stripe`](Self::lock_stripe) for a batch's `stripes`
    /// (ascending, distinct, non-empty; see `Process::lock_stripes`).
    fn lock_stripes<'p>(
        &'p self,
        pr: &'p crate::process::Process,
        stripes: &[u32],
    ) -> Result<crate::locks::BatchLock<'p>> {
        let mut locks = pr
            .lock_stripes(&self.shared.map, stripes)
            .map_err(|e| self.lock_error(stripes[0], e))?;
        let dead = locks.owners_died();
        if !dead.is_empty() {
            for s in dead {
                self.recover_dead_owner(pr, s);
            }
            locks.mark_consistent();
        }
        Ok(locks)
    }

    /// Repairs stripe `s`, whose lock this thread holds after its previous
    /// owner died (see `StripeWriter::recover_dead_owner`).
    #[cold]
    fn recover_dead_owner(&self, pr: &crate::process::Process, s: u32) {
        let readers = self.file_readers(pr);
        StripeWriter::unchecked(&self.shared.map, &readers, s, self.pin_wait, now_ns())
            .recover_dead_owner();
    }

    /// The error of a failed stripe lock: [`Error::StripeLockDamaged`]
    /// for a robust mutex left unusable or damaged, else an I/O error.
    #[cold]
    fn lock_error(&self, s: u32, e: std::io::Error) -> Error {
        let damaged = |why| Error::StripeLockDamaged {
            path: self.shared.path.clone(),
            stripe: s,
            why,
        };
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if e.raw_os_error() == Some(libc::ENOTRECOVERABLE) {
            return damaged("not recoverable: released inconsistent after its owner died, by a program other than slotcache");
        }
        if e.kind() == std::io::ErrorKind::InvalidData {
            return damaged("its bytes were changed from outside");
        }
        Error::io("locking a stripe", &self.shared.path, e)
    }

    /// The readers of this file as its writers see them.
    fn file_readers<'p>(&'p self, pr: &'p crate::process::Process) -> FileReaders<'p> {
        FileReaders {
            shared: &self.shared,
            process: pr,
        }
    }
}
