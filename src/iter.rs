//! Enumeration: [`Cache::iter`] walks the live entries lock-free, stripe by
//! stripe, the way a reader does (format.md §5.11).

use crate::cache::Cache;
use crate::codec::{Value, ValueKind};
use crate::error::Result;
use crate::index::{self, Bucket, KeyHash};
use crate::layout::record::RecordHeader;
use crate::layout::BUCKET_SLOTS;
use crate::read::{entry_meta, read_at, EntryMeta, PinnedRecord, ReadAt};
use crate::readers::Pin;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{fence, Ordering};

/// One live entry yielded by [`Iter`]: pinned like a [`Guard`](crate::Guard),
/// so its bytes are valid (and unchanged) while it lives, and, like a guard,
/// tied to the thread that read it (neither `Send` nor `Sync`). A writer
/// that needs its log segment waits up to
/// [`Options::pin_wait`](crate::Options::pin_wait): drop entries promptly.
pub struct Entry<'c> {
    _pin: Pin<'c>,
    rh: RecordHeader,
    all: &'c [u8],
    meta: EntryMeta,
    stripe: u32,
}

impl<'c> Entry<'c> {
    /// The key.
    pub fn key(&self) -> &[u8] {
        self.rh.key(self.all)
    }

    /// Creation time, expiry and staleness of the entry, as of when it was
    /// read.
    pub fn meta(&self) -> EntryMeta {
        self.meta
    }

    /// Whether the value is raw bytes or an rkyv archive.
    pub fn kind(&self) -> ValueKind {
        ValueKind::of_record(self.rh.kind)
    }

    /// The schema fingerprint of an archived value's type (see
    /// [`schema_fingerprint`](crate::schema_fingerprint)); 0 for raw bytes.
    pub fn schema(&self) -> u64 {
        self.rh.schema
    }

    /// Length of the stored value in bytes.
    pub fn value_len(&self) -> usize {
        self.rh.val_len as usize
    }

    /// The stored value bytes (for an archived value, the archive; see
    /// [`value`](Self::value) for a checked view), zero-copy from the
    /// shared mapping and 16-byte aligned.
    pub fn bytes(&self) -> &[u8] {
        self.rh.value(self.all)
    }

    /// The value as a `V`, checked like [`Cache::get`] checks it: `None`
    /// when it is of another kind or type (schema) or does not validate.
    /// Zero-copy, borrowed from the entry. Counts nothing.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-entryv-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("ev.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("n", &7u32)?;
    /// let entry = cache.iter().next().unwrap()?;
    /// assert_eq!(*entry.value::<u32>().unwrap(), 7);
    /// assert!(entry.value::<u64>().is_none() && entry.value::<Raw>().is_none());
    /// # drop(entry); drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn value<V: Value>(&self) -> Option<&V::View> {
        if self.rh.kind != V::KIND || self.rh.schema != V::schema() {
            return None;
        }
        V::view(self.bytes())
    }

    /// The stripe the entry lives in (see [`Cache::key_placement`]).
    pub fn stripe(&self) -> u32 {
        self.stripe
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("kind", &self.kind())
            .field("value_len", &self.value_len())
            .field("stripe", &self.stripe)
            .field("meta", &self.meta)
            .finish()
    }
}

/// An iterator over the live entries of a cache, from [`Cache::iter`] or
/// [`Cache::iter_prefix`]. Yields `Result<Entry>`: the only errors are
/// those of a read (no reader slot free, a failed lock call of a read-only
/// handle); after one the iterator ends.
///
/// What a walk sees:
/// - It never takes a write lock, never waits for a writer and makes no
///   writer wait except through the pin of an [`Entry`] still alive; the
///   iterator itself holds no pin between items.
/// - Every entry yielded is a complete record that passed its checksum,
///   lives in the index slot it was found through, and is not
///   hard-invalidated (nor expired or soft-invalidated, unless
///   [`include_stale`](Self::include_stale)). It is never a torn record nor
///   bytes of an evicted one.
/// - Entries written, overwritten, deleted or evicted during the walk may
///   or may not appear (a deleted entry at most once, with the value it
///   had); the walk is not a snapshot of the whole cache.
/// - Each key appears at most once: an index holds one slot per key, and
///   the only way a stripe's walk could meet a key twice (deleted and
///   written again into its other bucket while the stripe's slots are
///   loaded) is caught by remembering the 64-bit key hashes yielded in the
///   stripe. (Two distinct keys with one full 64-bit hash in one stripe
///   would show as one: a 2^-64 event per pair of keys.)
/// - It counts no hit or miss and sets no visited bit: walking a cache is
///   not a use of its entries and does not change what eviction keeps.
pub struct Iter<'c> {
    cache: &'c Cache,
    /// The next stripe to load.
    next_stripe: u32,
    /// The loaded stripe's live slots: (bucket, word).
    slots: Vec<(u32, u64)>,
    /// Next index into `slots`.
    at: usize,
    /// Key hashes already yielded from the loaded stripe.
    seen: HashSet<u64>,
    prefix: Box<[u8]>,
    include_stale: bool,
}

impl<'c> Iter<'c> {
    fn new(cache: &'c Cache, prefix: &[u8]) -> Iter<'c> {
        Iter {
            cache,
            next_stripe: 0,
            slots: Vec::new(),
            at: 0,
            seen: HashSet::new(),
            prefix: prefix.into(),
            include_stale: false,
        }
    }

    /// Also yield expired and soft-invalidated entries (see
    /// [`EntryMeta::is_stale`]); hard-invalidated ones never are.
    pub fn include_stale(mut self, yes: bool) -> Self {
        self.include_stale = yes;
        self
    }

    /// Loads the live slots of stripe `s` (atomic loads of its buckets,
    /// then one acquire fence, as a lookup loads its two buckets).
    fn load_stripe(&mut self, s: u32) {
        let sh = self.cache.shared_ref();
        let geo = &sh.geo;
        self.slots.clear();
        self.seen.clear();
        self.at = 0;
        let tails = crate::index::Tails::load(&sh.map, s);
        for b in 0..geo.buckets {
            let bucket = Bucket::at(&sh.map, s, b);
            for i in 0..BUCKET_SLOTS {
                // Relaxed + fence: a read-only mapping may only be loaded Relaxed.
                let w = bucket.slot(i).load(Ordering::Relaxed);
                if tails.live(w) {
                    self.slots.push((b, w));
                }
            }
        }
        fence(Ordering::Acquire);
    }

    /// Reads the entry slot `w` of bucket `b` of stripe `s` names, if it is
    /// one to yield.
    fn read(&mut self, s: u32, b: u32, w: u64) -> Result<Option<Entry<'c>>> {
        let sh = self.cache.shared_arc();
        let (seen, prefix) = (&self.seen, &self.prefix);
        // The record must be the one its slot places (stripe, bucket, tag),
        // not yet yielded, and under the prefix; checked before its CRC.
        let placed = |rh: &RecordHeader, all: &[u8]| {
            let kh = KeyHash::from_hash(rh.hash, &sh.geo);
            kh.stripe == s
                && kh.has_bucket(b)
                && kh.tag == index::word_tag(w)
                && rh.key(all).starts_with(prefix)
                && !seen.contains(&rh.hash)
        };
        let PinnedRecord { pin, rh, all } =
            match read_at(sh, s, index::word_ring(w), index::word_pos(w), placed)? {
                ReadAt::Found(r) => r,
                ReadAt::Skip | ReadAt::Corrupt => return Ok(None),
            };
        let (meta, hard) = entry_meta(sh, &rh);
        if hard || (!self.include_stale && meta.is_stale()) {
            return Ok(None);
        }
        self.seen.insert(rh.hash);
        Ok(Some(Entry {
            _pin: pin,
            rh,
            all,
            meta,
            stripe: s,
        }))
    }
}

impl<'c> Iterator for Iter<'c> {
    type Item = Result<Entry<'c>>;

    fn next(&mut self) -> Option<Self::Item> {
        let stripes = self.cache.shared_ref().geo.stripes;
        loop {
            let Some(&(b, w)) = self.slots.get(self.at) else {
                if self.next_stripe >= stripes {
                    return None;
                }
                self.load_stripe(self.next_stripe);
                self.next_stripe += 1;
                continue;
            };
            self.at += 1;
            match self.read(self.next_stripe - 1, b, w) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => {}
                Err(e) => {
                    self.next_stripe = stripes;
                    self.slots.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

impl std::iter::FusedIterator for Iter<'_> {}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("next_stripe", &self.next_stripe)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("include_stale", &self.include_stale)
            .finish()
    }
}

impl Cache {
    /// Walks the live entries, stripe by stripe, lock-free like a reader:
    /// see [`Iter`] for what a walk concurrent with writers sees. Works on
    /// read-only handles too (each entry then pins its segment with a
    /// shared lock, two system calls). O(index size + entries).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-iter-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw, ValueKind};
    /// let cache = Cache::open(dir.join("it.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("a", &Raw(b"raw"))?;
    /// cache.set("b", &7u32)?;
    /// let mut seen = Vec::new();
    /// for entry in cache.iter() {
    ///     let entry = entry?;
    ///     seen.push((entry.key().to_vec(), entry.kind()));
    /// }
    /// seen.sort();
    /// assert_eq!(seen, [(b"a".to_vec(), ValueKind::Raw), (b"b".to_vec(), ValueKind::Archived)]);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter::new(self, &[])
    }

    /// [`iter`](Self::iter) keeping only keys that start with `prefix`. A
    /// filter: the walk still visits every stripe (keys are placed by
    /// hash), but skips other keys before checksumming their records.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-iterp-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// let cache = Cache::open(dir.join("itp.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("user:1", &Raw(b"ada"))?;
    /// cache.set("user:2", &Raw(b"bob"))?;
    /// cache.set("session:9", &Raw(b"x"))?;
    /// let mut users = cache
    ///     .iter_prefix("user:")
    ///     .map(|e| e.map(|e| (e.key().to_vec(), e.bytes().to_vec())))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// users.sort();
    /// assert_eq!(users, [(b"user:1".to_vec(), b"ada".to_vec()), (b"user:2".to_vec(), b"bob".to_vec())]);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn iter_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter<'_> {
        Iter::new(self, prefix.as_ref())
    }

    /// The entry stored under `key`, whatever its kind and type: one lookup
    /// like [`get`](Self::get) (O(1), lock-free, counted as a hit or a
    /// miss), handing out the record as an [`Entry`] — for tools that show
    /// any value (its kind, schema and raw bytes) without knowing its type.
    /// Expired and soft-invalidated entries are misses, as for `get`.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-getentry-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw, ValueKind};
    /// let cache = Cache::open(dir.join("e.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("n", &7u32)?;
    /// let e = cache.get_entry("n")?.expect("stored");
    /// assert_eq!(e.kind(), ValueKind::Archived);
    /// assert_eq!(e.value::<u32>().map(|v| v.to_native()), Some(7));
    /// assert!(cache.get_entry("missing")?.is_none());
    /// # drop(e); drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn get_entry(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry<'_>>> {
        self.entry_of(key.as_ref(), false)
    }

    /// Like [`get_entry`](Self::get_entry), but also returns expired and
    /// soft-invalidated entries (see [`EntryMeta::is_stale`]).
    pub fn get_entry_stale(&self, key: impl AsRef<[u8]>) -> Result<Option<Entry<'_>>> {
        self.entry_of(key.as_ref(), true)
    }

    fn entry_of(&self, key: &[u8], stale_ok: bool) -> Result<Option<Entry<'_>>> {
        self.lookup(key, stale_ok, |f| {
            f.pin.count(crate::layout::reader::HITS);
            let stripe = KeyHash::new(key, self.seed(), self.geo()).stripe;
            Some(Entry {
                _pin: f.pin,
                rh: f.rh,
                all: f.all,
                meta: f.meta,
                stripe,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::index::{self, Bucket, VISITED};
    use crate::layout::BUCKET_SLOTS;
    use crate::{Cache, Options, Raw};
    use std::sync::atomic::Ordering;

    /// (live slots, visited slots) of the whole index.
    fn visited(c: &Cache) -> (usize, usize) {
        let sh = c.shared();
        let (mut live, mut seen) = (0, 0);
        for s in 0..sh.geo.stripes {
            for b in 0..sh.geo.buckets {
                for i in 0..BUCKET_SLOTS {
                    let w = Bucket::at(&sh.map, s, b).slot(i).load(Ordering::SeqCst);
                    live += index::occupied(w) as usize;
                    seen += (w & VISITED != 0) as usize;
                }
            }
        }
        (live, seen)
    }

    #[test]
    fn iteration_sets_no_visited_bit_and_counts_nothing() {
        let d = crate::testing::TestDir::new("iter");
        let c = Cache::open(
            d.path().join("c"),
            Options::new().capacity(1 << 20).stripes(2),
        )
        .unwrap();
        for i in 0..100u32 {
            c.set(i.to_le_bytes(), &Raw(b"v")).unwrap();
        }
        let stats = c.stats();
        assert_eq!(c.iter().count(), 100);
        assert_eq!(visited(&c), (100, 0), "iteration is not a use");
        assert_eq!(c.stats(), stats, "no counter moved");
        // The check above can fail: a lookup does set the bit.
        assert!(c.get::<Raw>(7u32.to_le_bytes()).unwrap().is_some());
        assert_eq!(visited(&c), (100, 1));
    }
}
