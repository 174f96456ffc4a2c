//! Options: [`Options`] for [`Cache::open`](crate::Cache::open) (with the
//! handle's dogpile defaults), [`WriteOptions`] for writes and
//! [`CreateOptions`] for the `get_or_create` family.

use crate::error::{Error, Result};
use crate::layout::{
    Geometry, MAX_CAPACITY, MAX_ENTRIES, MAX_READER_SLOTS, MAX_REGEN_STRIPES, MAX_SEGMENTS,
    MAX_STRIPES, MIN_SEGMENTS,
};
use std::time::Duration;

/// What [`Cache::open`](crate::Cache::open) does with an existing file that
/// fails validation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnCorrupt {
    /// Return the error (the default).
    #[default]
    Error,
    /// Replace a damaged slotcache file (bad header checksum or fields,
    /// wrong size, an *older* format version, other rkyv flags) with a new,
    /// empty one — a cache may drop data, it must never serve wrong data.
    /// Never done to a file that is not a slotcache file, nor to one of a
    /// newer format version (newer software may be using it).
    Reset,
}

/// How to create or open a cache file.
///
/// Geometry options (`capacity`, `max_entries`, `stripes`, `segments`,
/// `reader_slots`) apply when the file is created; an existing file keeps
/// the geometry it was created with, whatever these say.
///
/// ```
/// use slotcache::Options;
/// use std::time::Duration;
/// let opts = Options::new()
///     .capacity(256 << 20)
///     .max_entries(1_000_000)
///     .stripes(64)
///     .default_ttl(Duration::from_secs(300));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) capacity: u64,
    pub(crate) max_entries: Option<u64>,
    pub(crate) stripes: Option<u32>,
    pub(crate) segments: u32,
    pub(crate) reader_slots: u32,
    pub(crate) regen_stripes: u32,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) mode: u32,
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) pin_wait: Duration,
    pub(crate) dogpile: DogpileDefaults,
    pub(crate) on_corrupt: OnCorrupt,
    pub(crate) byte_range_locks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 64 << 20,
            max_entries: None,
            stripes: None,
            segments: 16,
            reader_slots: 256,
            regen_stripes: 1024,
            default_ttl: None,
            mode: 0o600,
            read_only: false,
            create: true,
            pin_wait: Duration::from_millis(100),
            dogpile: DogpileDefaults::default(),
            on_corrupt: OnCorrupt::Error,
            byte_range_locks: false,
        }
    }
}

impl Options {
    /// Defaults: 64 MiB, one index entry per 256 bytes of capacity, stripes
    /// chosen from the capacity (up to 64), 16 segments per stripe, 256
    /// reader slots, no TTL, mode `0o600`, read-write, create if missing,
    /// 100 ms pin wait.
    pub fn new() -> Options {
        Options::default()
    }

    /// Total size of the file in bytes (header, tables, index and data),
    /// at most 256 TiB (`1 << 48`); a larger value is
    /// [`Error::InvalidOptions`] before any file is created.
    pub fn capacity(mut self, bytes: u64) -> Options {
        self.capacity = bytes;
        self
    }

    /// How many entries the index is sized for: two 8-byte slots per entry
    /// (16 bytes), in buckets of eight. A key may live in either of two
    /// buckets and goes to the emptier one (two-choice hashing), so the
    /// index holds this many random keys without a bucket ever filling up
    /// (measured: 1M random keys at `max_entries(1_000_000)`, 0 bucket
    /// evictions and at most 7 of a bucket's 8 slots used). Past it, a key
    /// whose two buckets are both full evicts the older entry of the two.
    /// Default: capacity / 256. Range: 1..=2^40 (0 is an error, not a
    /// tiny index).
    pub fn max_entries(mut self, n: u64) -> Options {
        self.max_entries = Some(n);
        self
    }

    /// Number of lock stripes (1..=4096). Each stripe has its own write
    /// lock, index partition and log ring of `capacity / stripes` bytes.
    /// Default: one per MiB of capacity, rounded down to a power of two,
    /// between 1 and 64.
    pub fn stripes(mut self, n: u32) -> Options {
        self.stripes = Some(n);
        self
    }

    /// Segments per stripe ring (4..=1024, default 16). Eviction frees one
    /// segment at a time; the largest value is one segment minus the record
    /// header and key.
    pub fn segments(mut self, n: u32) -> Options {
        self.segments = n;
        self
    }

    /// Number of reader slots (1..=65536, default 256): one per thread
    /// that reads, across all processes, at the same time.
    pub fn reader_slots(mut self, n: u32) -> Options {
        self.reader_slots = n;
        self
    }

    /// Number of regeneration lock stripes (1..=1048576, default 1024):
    /// `get_or_create` callers in different processes exclude each other per
    /// `hash % regen_stripes`. Stored in the file at creation.
    pub fn regen_stripes(mut self, n: u32) -> Options {
        self.regen_stripes = n;
        self
    }

    /// TTL for entries written without an explicit one. Stored in the file
    /// at creation; when set on open of an existing file it overrides the
    /// stored default for this handle. Saturates at 2^64 ns (~584 years):
    /// `Duration::MAX` means "never expires in practice", never a wrapped
    /// value.
    pub fn default_ttl(mut self, ttl: Duration) -> Options {
        self.default_ttl = Some(ttl);
        self
    }

    /// Permission bits of a newly created file (Unix; default `0o600`).
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = mode;
        self
    }

    /// Open read-only: reads work, writes return [`Error::ReadOnly`].
    /// A file the process cannot write is opened read-only automatically.
    pub fn read_only(mut self, yes: bool) -> Options {
        self.read_only = yes;
        self
    }

    /// Whether to create the file if it does not exist (default `true`).
    pub fn create(mut self, yes: bool) -> Options {
        self.create = yes;
        self
    }

    /// How long a write waits for a live reader to release a pinned
    /// segment before it fails with [`Error::Pinned`] (default 100 ms;
    /// `Duration::MAX` waits for as long as the guard lives).
    pub fn pin_wait(mut self, wait: Duration) -> Options {
        self.pin_wait = wait;
        self
    }

    /// Default for `get_or_create`: how long a caller with no value waits
    /// for another caller's creator before [`Error::LockTimeout`]
    /// (default: forever; `Duration::MAX` also means forever).
    pub fn lock_timeout(mut self, timeout: Duration) -> Options {
        self.dogpile.lock_timeout = Some(timeout);
        self
    }

    /// Default for `get_or_create`: serve stale values while one caller
    /// regenerates (the default), or block until the new value exists.
    pub fn stale_policy(mut self, policy: StalePolicy) -> Options {
        self.dogpile.stale_policy = policy;
        self
    }

    /// Default for `get_or_create`: values older than this are stale,
    /// whatever TTL they were stored with (dogpile.cache's
    /// `expiration_time`).
    pub fn expiration(mut self, age: Duration) -> Options {
        self.dogpile.expiration = Some(age);
        self
    }

    /// What to do when an existing file fails validation (default:
    /// [`OnCorrupt::Error`]).
    pub fn on_corrupt(mut self, what: OnCorrupt) -> Options {
        self.on_corrupt = what;
        self
    }

    /// Not a public promise: creates the file with byte-range stripe locks
    /// even where robust mutexes are available (format.md §6), so that
    /// benchmarks and tests can compare both kinds on one machine. An
    /// existing file keeps the kind it was created with.
    #[doc(hidden)]
    pub fn byte_range_locks(mut self, yes: bool) -> Options {
        self.byte_range_locks = yes;
        self
    }

    /// The stripe count a new file gets.
    pub(crate) fn effective_stripes(&self) -> u32 {
        self.stripes.unwrap_or_else(|| {
            let per_mib = (self.capacity >> 20).clamp(1, 64) as u32;
            1 << (31 - per_mib.leading_zeros())
        })
    }

    /// The entry count a new file's index is sized for: the option, or
    /// one entry per 256 bytes of capacity (at least 1, at most
    /// [`MAX_ENTRIES`]).
    pub(crate) fn effective_entries(&self) -> u64 {
        self.max_entries
            .unwrap_or((self.capacity / 256).clamp(1, MAX_ENTRIES))
    }

    /// Checks ranges; the geometry check (does it all fit) comes after.
    pub(crate) fn validate(&self) -> Result<()> {
        let check = |option, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(Error::InvalidOptions {
                    option,
                    expected: format!("{lo}..={hi}"),
                    found: v.to_string(),
                })
            } else {
                Ok(())
            }
        };
        check("capacity", self.capacity, 1, MAX_CAPACITY)?;
        check(
            "stripes",
            self.effective_stripes() as u64,
            1,
            MAX_STRIPES as u64,
        )?;
        check(
            "segments",
            self.segments as u64,
            MIN_SEGMENTS as u64,
            MAX_SEGMENTS as u64,
        )?;
        check(
            "reader_slots",
            self.reader_slots as u64,
            1,
            MAX_READER_SLOTS as u64,
        )?;
        check("max_entries", self.effective_entries(), 1, MAX_ENTRIES)?;
        check(
            "regen_stripes",
            self.regen_stripes as u64,
            1,
            MAX_REGEN_STRIPES as u64,
        )?;
        check("mode", self.mode as u64, 0, 0o7777)?;
        Ok(())
    }

    /// The layout of a new file with these options (an error when they do
    /// not fit together, e.g. a capacity too small for the stripes).
    pub(crate) fn plan(&self) -> Result<Geometry> {
        Geometry::plan(
            self.capacity,
            self.effective_stripes(),
            self.segments,
            self.effective_entries(),
            self.reader_slots,
        )
    }
}

/// What a caller does with a stale value while another caller regenerates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StalePolicy {
    /// Return the stale value at once (dogpile.cache's behaviour).
    #[default]
    ServeStale,
    /// Wait for the new value (bounded by the lock timeout).
    Block,
}

/// The dogpile settings of a handle ([`Options::lock_timeout`],
/// [`Options::stale_policy`], [`Options::expiration`]), and, with a
/// call's [`CreateOptions`] applied, of that call. The one place their
/// defaults live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DogpileDefaults {
    /// `None`: wait forever.
    pub lock_timeout: Option<Duration>,
    pub stale_policy: StalePolicy,
    /// `None`: only the TTL (and soft invalidation) makes values stale.
    pub expiration: Option<Duration>,
}

impl DogpileDefaults {
    /// These defaults overridden by what `o` sets.
    pub(crate) fn with<V>(self, o: &CreateOptions<'_, V>) -> DogpileDefaults {
        DogpileDefaults {
            lock_timeout: o.lock_timeout.or(self.lock_timeout),
            stale_policy: o.stale_policy.unwrap_or(self.stale_policy),
            expiration: o.expiration.or(self.expiration),
        }
    }
}

/// Per-call options of a write ([`Cache::set_opt`](crate::Cache::set_opt),
/// [`Cache::set_many_opt`](crate::Cache::set_many_opt)). Unset fields take
/// the handle's defaults.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-wopt-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Options, Raw, WriteOptions};
/// use std::time::Duration;
/// let cache = Cache::open(dir.join("w.cache"), Options::new().capacity(8 << 20)
///     .default_ttl(Duration::from_secs(60)))?;
/// let short = WriteOptions::new().ttl(Some(Duration::from_secs(5)));
/// cache.set_opt("session", &Raw(b"token"), &short)?;
/// let forever = WriteOptions::new().ttl(None);
/// cache.set_many_opt([("a", &1u32), ("b", &2u32)], &forever)?;
/// assert!(cache.get::<u32>("a")?.unwrap().meta().expires().is_none());
/// assert!(cache.get::<Raw>("session")?.unwrap().meta().expires().is_some());
/// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// `None`: the cache's default TTL; `Some(None)`: never expires.
    pub(crate) ttl: Option<Option<Duration>>,
}

impl WriteOptions {
    /// All defaults: the cache's default TTL.
    pub fn new() -> WriteOptions {
        WriteOptions::default()
    }

    /// TTL of the values written (`None`: they never expire). Saturates
    /// like [`Options::default_ttl`]. Default: the cache's default TTL.
    pub fn ttl(mut self, ttl: Option<Duration>) -> WriteOptions {
        self.ttl = Some(ttl);
        self
    }
}

/// Per-call options of the `get_or_create` family (every entry point takes
/// them: [`Cache::get_or_create_opt`](crate::Cache::get_or_create_opt),
/// [`Cache::get_or_try_create_opt`](crate::Cache::get_or_try_create_opt),
/// [`Cache::get_or_create_many_opt`](crate::Cache::get_or_create_many_opt),
/// [`Cache::get_or_create_background_opt`](crate::Cache::get_or_create_background_opt),
/// [`Memo::call_opt`](crate::Memo::call_opt)). Unset fields take the
/// handle's defaults ([`Options::lock_timeout`],
/// [`Options::stale_policy`], [`Options::expiration`] and the default TTL).
///
/// ```
/// use slotcache::{CreateOptions, StalePolicy};
/// use std::time::Duration;
/// let keep_nonempty = |v: &Vec<u8>| !v.is_empty();
/// let opts = CreateOptions::new()
///     .ttl(Some(Duration::from_secs(60)))
///     .lock_timeout(Duration::from_secs(2))
///     .stale_policy(StalePolicy::Block)
///     .should_cache(&keep_nonempty);
/// # let _ = opts;
/// ```
pub struct CreateOptions<'a, V> {
    pub(crate) write: WriteOptions,
    pub(crate) expiration: Option<Duration>,
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) stale_policy: Option<StalePolicy>,
    pub(crate) should_cache: Option<&'a (dyn Fn(&V) -> bool + Sync)>,
}

impl<V> Default for CreateOptions<'_, V> {
    fn default() -> Self {
        CreateOptions {
            write: WriteOptions::new(),
            expiration: None,
            lock_timeout: None,
            stale_policy: None,
            should_cache: None,
        }
    }
}

impl<V> Clone for CreateOptions<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for CreateOptions<'_, V> {}

impl<V> std::fmt::Debug for CreateOptions<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateOptions")
            .field("ttl", &self.write.ttl)
            .field("expiration", &self.expiration)
            .field("lock_timeout", &self.lock_timeout)
            .field("stale_policy", &self.stale_policy)
            .field("should_cache", &self.should_cache.is_some())
            .finish()
    }
}

impl<'a, V> CreateOptions<'a, V> {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// TTL of a created value (`None`: never expires). Default: the
    /// cache's default TTL.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.write = self.write.ttl(ttl);
        self
    }

    /// Treat values older than this as stale, whatever TTL they were
    /// stored with (dogpile.cache's `expiration_time`).
    pub fn expiration(mut self, age: Duration) -> Self {
        self.expiration = Some(age);
        self
    }

    /// How long to wait for another caller's creation of a missing value
    /// before failing with [`Error::LockTimeout`].
    /// `Duration::MAX` (or any duration too long to add to the clock)
    /// means no timeout.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// Serve stale values while someone regenerates, or wait.
    pub fn stale_policy(mut self, policy: StalePolicy) -> Self {
        self.stale_policy = Some(policy);
        self
    }

    /// Decides whether a created value is stored; it is returned either way
    /// (dogpile.cache's `should_cache_fn`). `Sync`, so that
    /// [`get_or_create_background_opt`](crate::Cache::get_or_create_background_opt)
    /// can call it on its regeneration thread (which needs options of
    /// lifetime `'static`: a function, or a closure that captures nothing).
    pub fn should_cache(mut self, f: &'a (dyn Fn(&V) -> bool + Sync)) -> Self {
        self.should_cache = Some(f);
        self
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (about 584 years):
/// every duration option and argument means "that long, or as long as the
/// clock can count", never a value wrapped modulo 2^64.
pub(crate) fn saturating_ns(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// `now + d`, or `None` ("no deadline") when that is beyond what an
/// [`Instant`](std::time::Instant) can represent (`Duration::MAX` means
/// forever).
pub(crate) fn deadline_after(d: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(d)
}
