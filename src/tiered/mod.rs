//! slotcache as each host's near cache (L1) in front of Redis (L2), with
//! fleet-wide dogpile protection and invalidation (feature `redis`).
//!
//! A [`TieredCache`] holds a [`Cache`] (this host's file, shared by its
//! processes) and a pool of Redis connections. Keys are stored in both
//! tiers under `prefix + key`.
//!
//! - **Reads** ([`TieredCache::get`]): a *verified* L1 entry is served from
//!   the mapping (zero-copy, no Redis round trip). Otherwise `GET` and
//!   `PTTL` in one transaction; the value is filled into L1 with a hard
//!   expiry no later than Redis's — unless an invalidation of the key
//!   arrived between the request and the fill (the fill-race rule below).
//! - **Writes** ([`TieredCache::set`], [`TieredCache::delete`]) go to Redis
//!   first, then to L1.
//! - **Invalidation**: one process per host (elected by a byte-range lock
//!   on the cache file) keeps a RESP3 connection with
//!   `CLIENT TRACKING on BCAST PREFIX <prefix>` and applies each
//!   invalidation to L1.
//! - **Dogpile** ([`TieredCache::get_or_create`]): the host's regeneration
//!   lock first (one process per host asks the fleet), then a lease in
//!   Redis on the key itself (`SET key <token> NX PX <lease>`); only the
//!   holder runs the creator and fills with a compare-and-set script.
//! - **Redis down**: L1 keeps serving (stale within
//!   [`TieredOptions::max_stale`]), creation falls back to the host lock
//!   only, recovery is automatic, and [`TierStats`] shows it.
//!
//! ## Why an L1 entry is trusted (format.md §5.12)
//!
//! Each L1 entry starts with the 8-byte **epoch** it was filled in (header
//! word 160). The subscriber moves the epoch to the next even value once
//! `CLIENT TRACKING` is acknowledged (from then on every write Redis
//! executes reaches it), to an odd value when the stream is lost, and to a
//! new even value on `FLUSHALL`/`FLUSHDB`. It also stores, in header word
//! 168, when its own heartbeat key's invalidation last came back through the
//! stream. An entry is *verified* when its epoch equals the current one,
//! that epoch is even and the heartbeat is younger than
//! [`TieredOptions::stream_timeout`]. So the invalidation lag is bounded by
//! the stream timeout even when messages are lost, the connection dies
//! silently or the subscriber process is stopped. A process that takes the
//! subscriber role over (its predecessor died) makes the epoch odd before
//! anything else, and a child the subscriber forks never holds the role.
//!
//! With the `tokio` feature too, the same calls exist for async code
//! (`get_async`, `set_async`, `delete_async`, `get_or_create_async`).
//!
//! **The fill race** (lettuce #3481): a reader reads the key's invalidation
//! sequence (one of 128 header words, by key hash) before its `GET`, and
//! fills L1 only if the sequence is unchanged; it re-reads the sequence
//! after the fill and deletes its own entry if it moved. The subscriber
//! bumps the sequence *before* deleting the L1 entry. Whichever order the
//! two interleave in, an invalidation that arrived after the `GET` either
//! refuses the fill, makes the filler delete it, or deletes it itself.
//!
//! ```no_run
//! use slotcache::tiered::{TieredCache, TieredOptions};
//! use slotcache::{Cache, Options};
//! use std::time::Duration;
//!
//! let l1 = Cache::open("app.cache", Options::new().capacity(64 << 20))?;
//! let cache = TieredCache::open(l1, TieredOptions::new("redis://127.0.0.1:6379/", "app:"))?;
//! cache.set("user:1", b"ada", Some(Duration::from_secs(300)))?;
//! let v = cache.get("user:1")?.expect("just written");
//! assert_eq!(&*v, b"ada");
//! let page = cache.get_or_create("page:/", Some(Duration::from_secs(60)), || {
//!     Ok::<_, std::convert::Infallible>(b"<html>".to_vec())
//! })?;
//! # drop(page);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "tokio")]
mod future;
mod l2;
mod subscriber;

use crate::{Cache, CreateError, CreateOptions, Error, Guard, Raw, StalePolicy, WriteOptions};
use l2::{Held, L2, LEASE_MAGIC};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subscriber::now_ns;

/// Epoch stored with values created while Redis was unreachable: odd, so
/// never verified.
const UNVERIFIED: u64 = u64::MAX;

/// How a [`TieredCache`] talks to Redis and how long it trusts what it has.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TieredOptions {
    /// Redis URL (`redis://host:port/db`).
    pub url: String,
    /// Prepended to every key in both tiers; the subscriber tracks it.
    /// Must not be empty.
    pub prefix: String,
    /// Longest time an entry lives in L1 (and the TTL of values without
    /// one in Redis). Default 60 s.
    pub l1_ttl: Duration,
    /// How long past its expiry (or while unverified) an L1 entry may be
    /// served while Redis is unreachable. Default 30 s.
    pub max_stale: Duration,
    /// Fleet lease of a creator (extended while it runs). Default 2 s.
    pub lease: Duration,
    /// How long `get_or_create` waits for another host's creator (and for
    /// the host lock) before [`Error::LockTimeout`]. Default 5 s.
    pub fleet_wait: Duration,
    /// Serve an old L1 value while another host creates a new one.
    /// Default true.
    pub serve_stale: bool,
    /// Connect, read and write timeout of every Redis call. Default 500 ms.
    pub io_timeout: Duration,
    /// After a failed Redis call, calls fail fast (to L1) for this long
    /// before a new connection is tried; also the subscriber's retry
    /// period. Default 250 ms.
    pub retry_interval: Duration,
    /// The subscriber writes its heartbeat key this often. Default 200 ms.
    pub heartbeat: Duration,
    /// L1 entries are unverified when the stream's heartbeat is older than
    /// this: the bound on invalidation lag. Default 1 s.
    pub stream_timeout: Duration,
    /// Run a subscriber candidate in this process. Default true.
    pub subscriber: bool,
    /// Test hook: sleep this long between the L2 reply and the L1 fill.
    #[doc(hidden)]
    pub fill_delay: Option<Duration>,
    /// Test hook: called with [`FillStage`]s of every L1 fill.
    #[doc(hidden)]
    pub fill_hook: Option<FillHook>,
}

/// Where a fill is when [`TieredOptions::fill_hook`] is called (test hook).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillStage {
    /// The value has arrived from Redis; the sequence is not checked yet.
    Arrived,
    /// The entry is in L1; the sequence is not checked again yet.
    Written,
}

/// A test hook run inside a fill (see [`FillStage`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct FillHook(pub Arc<dyn Fn(FillStage) + Send + Sync>);

impl std::fmt::Debug for FillHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FillHook")
    }
}

impl TieredOptions {
    /// Defaults for Redis at `url`, keys under `prefix`.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> TieredOptions {
        TieredOptions {
            url: url.into(),
            prefix: prefix.into(),
            l1_ttl: Duration::from_secs(60),
            max_stale: Duration::from_secs(30),
            lease: Duration::from_secs(2),
            fleet_wait: Duration::from_secs(5),
            serve_stale: true,
            io_timeout: Duration::from_millis(500),
            retry_interval: Duration::from_millis(250),
            heartbeat: Duration::from_millis(200),
            stream_timeout: Duration::from_secs(1),
            subscriber: true,
            fill_delay: None,
            fill_hook: None,
        }
    }
}

macro_rules! setters {
    ($($(#[$m:meta])* $name:ident: $t:ty;)*) => {
        impl TieredOptions {
            $($(#[$m])* pub fn $name(mut self, v: $t) -> Self { self.$name = v; self })*
        }
    };
}

setters! {
    /// See [`TieredOptions::l1_ttl`](struct.TieredOptions.html#structfield.l1_ttl).
    l1_ttl: Duration;
    /// See the field.
    max_stale: Duration;
    /// See the field.
    lease: Duration;
    /// See the field.
    fleet_wait: Duration;
    /// See the field.
    serve_stale: bool;
    /// See the field.
    io_timeout: Duration;
    /// See the field.
    retry_interval: Duration;
    /// See the field.
    heartbeat: Duration;
    /// See the field.
    stream_timeout: Duration;
    /// See the field.
    subscriber: bool;
    /// Test hook.
    #[doc(hidden)]
    fill_delay: Option<Duration>;
    /// Test hook.
    #[doc(hidden)]
    fill_hook: Option<FillHook>;
}

/// Counters of one process's [`TieredCache`] (not shared between
/// processes), plus the host's current epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Reads served by a verified L1 entry.
    pub l1_hits: u64,
    /// Reads answered by Redis with a value.
    pub l2_hits: u64,
    /// Reads that found nothing (or a lease) in Redis.
    pub l2_misses: u64,
    /// Redis calls that failed (unreachable, timeout, error).
    pub l2_errors: u64,
    /// L1 fills from Redis values.
    pub fills: u64,
    /// Fills refused (or undone) because an invalidation of the key arrived
    /// between the request and the fill.
    pub fills_refused: u64,
    /// Fleet leases won.
    pub leases_won: u64,
    /// Lease attempts that found another holder.
    pub leases_lost: u64,
    /// Lease holders' fills refused by Redis (a writer voided the lease).
    pub leases_voided: u64,
    /// Creator runs (with a lease, or host-only while Redis was down).
    pub creates: u64,
    /// Creator runs while Redis was unreachable (host lock only).
    pub creates_degraded: u64,
    /// Old values served while Redis was down or another host created.
    pub stale_served: u64,
    /// Epoch moves made by this process's subscriber.
    pub epoch_changes: u64,
    /// Invalidations applied by this process's subscriber.
    pub invalidations: u64,
    /// `FLUSHALL`/`FLUSHDB` seen by this process's subscriber.
    pub flushes: u64,
    /// Whether this process is the host's subscriber.
    pub subscriber: bool,
    /// The host's epoch now (header word 160).
    pub epoch: u64,
}

#[derive(Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    l2_misses: AtomicU64,
    l2_errors: AtomicU64,
    fills: AtomicU64,
    fills_refused: AtomicU64,
    leases_won: AtomicU64,
    leases_lost: AtomicU64,
    leases_voided: AtomicU64,
    creates: AtomicU64,
    creates_degraded: AtomicU64,
    stale_served: AtomicU64,
    epoch_changes: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    subscriber: AtomicU64,
}

impl Inner {
    /// Runs the test hook, if any.
    fn hook(&self, stage: FillStage) {
        if let Some(h) = &self.opts.fill_hook {
            (h.0)(stage);
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The error of [`TieredCache::set`] and [`TieredCache::delete`] (and of
/// [`TieredCache::open`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TieredError {
    /// The L1 cache failed.
    #[error(transparent)]
    Cache(#[from] Error),
    /// Redis failed: the write did not happen there (L1 no longer holds
    /// the key on this host).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

pub(crate) struct Inner {
    l1: Cache,
    l2: L2,
    opts: TieredOptions,
    stats: Counters,
    stop: AtomicBool,
    hb_key: Vec<u8>,
}

/// A value served by a [`TieredCache`]: borrowed from the L1 mapping, or
/// owned (just read from Redis, or just created).
pub enum TieredValue<'c> {
    /// A verified (or, while Redis is down, stale) L1 entry, zero-copy.
    Near(NearGuard<'c>),
    /// Bytes from Redis or from the creator.
    Owned(Vec<u8>),
}

impl TieredValue<'_> {
    /// Whether the value came from L1.
    pub fn is_near(&self) -> bool {
        matches!(self, TieredValue::Near(_))
    }

    /// Whether an old value was served (Redis down, or another host creating).
    pub fn is_stale(&self) -> bool {
        matches!(self, TieredValue::Near(g) if g.stale)
    }
}

impl Deref for TieredValue<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TieredValue::Near(g) => g,
            TieredValue::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for TieredValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_near() { "Near" } else { "Owned" };
        f.debug_tuple(kind).field(&&**self).finish()
    }
}

/// An L1 entry's value (after its epoch word), zero-copy.
pub struct NearGuard<'c> {
    guard: Guard<'c, [u8]>,
    stale: bool,
}

impl Deref for NearGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.guard[8..]
    }
}

/// The cache: see the [module documentation](self).
pub struct TieredCache {
    inner: Arc<Inner>,
    /// The subscriber candidate thread this handle started, with the fork
    /// generation of the process that started it (a forked child has no
    /// such thread: joining it there fails or waits forever).
    candidate: Option<(std::thread::JoinHandle<()>, u64)>,
}

/// A fleet lease on a key, from [`TieredCache::try_lease`].
#[derive(Debug)]
pub struct Lease {
    key: Vec<u8>,
    side: Vec<u8>,
    token: Vec<u8>,
}

/// The side key of `k`'s [`Lease`] (`k`: `prefix + key`).
fn side_key(k: &[u8]) -> Vec<u8> {
    let mut s = b"\0lease\0".to_vec();
    s.extend_from_slice(k);
    s
}

/// What the read path found.
enum Lookup<'c> {
    Hit(TieredValue<'c>),
    /// Redis has nothing (`leased`: a lease, someone is creating).
    Miss {
        leased: bool,
    },
    /// Redis is unreachable.
    Down,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl TieredCache {
    /// A tiered cache over `l1` (a read-write handle) and the Redis of
    /// `options`. Does not connect: Redis may be down when it opens.
    pub fn open(l1: Cache, options: TieredOptions) -> Result<TieredCache, TieredError> {
        l1.writable("TieredCache::open")?;
        if options.prefix.is_empty() {
            return Err(TieredError::Redis(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "TieredOptions::prefix must not be empty",
            ))));
        }
        let l2 = L2::new(&options.url, options.io_timeout, options.retry_interval)?;
        let hb_key = format!(
            "slotcache-hb:{}:{}-{}",
            options.prefix,
            std::process::id(),
            now_ns()
        )
        .into_bytes();
        let inner = Arc::new(Inner {
            l1,
            l2,
            stats: Counters::default(),
            stop: AtomicBool::new(false),
            hb_key,
            opts: options,
        });
        let candidate = if inner.opts.subscriber {
            let i = inner.clone();
            let h = std::thread::Builder::new()
                .name("slotcache-tiered-sub".into())
                .spawn(move || i.candidate())
                .map_err(|e| Error::io("starting the subscriber thread", inner.l1.path(), e))?;
            Some((h, crate::fork::generation()))
        } else {
            None
        };
        Ok(TieredCache { inner, candidate })
    }

    /// The L1 cache.
    pub fn l1(&self) -> &Cache {
        &self.inner.l1
    }

    /// The options.
    pub fn options(&self) -> &TieredOptions {
        &self.inner.opts
    }

    /// `prefix + key`: the key in both tiers.
    pub fn full_key(&self, key: impl AsRef<[u8]>) -> Vec<u8> {
        let mut k = self.inner.opts.prefix.as_bytes().to_vec();
        k.extend_from_slice(key.as_ref());
        k
    }

    /// Whether L1 entries filled now would be verified: this host's
    /// invalidation stream is up.
    pub fn stream_up(&self) -> bool {
        self.inner.epoch_now().1
    }

    /// This process's counters and the host's epoch.
    pub fn stats(&self) -> TierStats {
        let c = &self.inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStats {
            l1_hits: l(&c.l1_hits),
            l2_hits: l(&c.l2_hits),
            l2_misses: l(&c.l2_misses),
            l2_errors: l(&c.l2_errors),
            fills: l(&c.fills),
            fills_refused: l(&c.fills_refused),
            leases_won: l(&c.leases_won),
            leases_lost: l(&c.leases_lost),
            leases_voided: l(&c.leases_voided),
            creates: l(&c.creates),
            creates_degraded: l(&c.creates_degraded),
            stale_served: l(&c.stale_served),
            epoch_changes: l(&c.epoch_changes),
            invalidations: l(&c.invalidations),
            flushes: l(&c.flushes),
            subscriber: l(&c.subscriber) != 0,
            epoch: self.inner.header().tiered_epoch.load(Ordering::SeqCst),
        }
    }

    /// The value of `key`: a verified L1 entry, else Redis's (filled into
    /// L1). Redis unreachable: an L1 entry within
    /// [`max_stale`](TieredOptions::max_stale), else `None`. Errors only
    /// when L1 fails.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<TieredValue<'_>>, Error> {
        self.with_full_key(key.as_ref(), |k| {
            Ok(match self.lookup(k)? {
                Lookup::Hit(v) => Some(v),
                Lookup::Miss { .. } => None,
                Lookup::Down => self.stale(k)?,
            })
        })
    }

    /// Runs `f` with `prefix + key`, built on the stack when it is short
    /// (the hit path allocates nothing).
    fn with_full_key<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        let p = self.inner.opts.prefix.as_bytes();
        let mut buf = [0u8; 256];
        match buf.get_mut(..p.len() + key.len()) {
            Some(k) => {
                k[..p.len()].copy_from_slice(p);
                k[p.len()..].copy_from_slice(key);
                f(k)
            }
            None => f(&self.full_key(key)),
        }
    }

    /// A verified L1 entry, or Redis's answer.
    fn lookup(&self, k: &[u8]) -> Result<Lookup<'_>, Error> {
        let i = &*self.inner;
        if let Some(v) = self.verified(k)? {
            return Ok(Lookup::Hit(v));
        }
        // Before the request: the key's sequence and the epoch (§5.12).
        let seq = i.seq(k);
        let (epoch, _) = i.epoch_now();
        let sent = Instant::now();
        match i.l2.fetch(k) {
            Ok(Held::Value(v, pttl)) => {
                bump(&i.stats.l2_hits);
                self.fill(k, &v, pttl.map(Duration::from_millis), sent, seq, epoch)?;
                Ok(Lookup::Hit(TieredValue::Owned(v)))
            }
            Ok(Held::Lease) => {
                bump(&i.stats.l2_misses);
                Ok(Lookup::Miss { leased: true })
            }
            Ok(Held::Absent) => {
                bump(&i.stats.l2_misses);
                Ok(Lookup::Miss { leased: false })
            }
            Err(_) => {
                bump(&i.stats.l2_errors);
                Ok(Lookup::Down)
            }
        }
    }

    /// A verified L1 entry of `k` (an L2 key), zero-copy.
    fn verified(&self, k: &[u8]) -> Result<Option<TieredValue<'_>>, Error> {
        let i = &*self.inner;
        let Some(g) = i.l1.get::<Raw>(k)? else {
            return Ok(None);
        };
        if g.len() >= 8 {
            let filled = u64::from_le_bytes(g[..8].try_into().expect("8 bytes"));
            let (epoch, up) = i.epoch_now();
            if up && filled == epoch {
                bump(&i.stats.l1_hits);
                return Ok(Some(TieredValue::Near(NearGuard {
                    guard: g,
                    stale: false,
                })));
            }
        }
        Ok(None)
    }

    /// Fills L1 with a value read from (or written to) Redis when the
    /// sequence read before the request (`seq`) is unchanged, before and
    /// after the write. `pttl`: the value's TTL in Redis as of some moment
    /// after `sent` (when the request left): the L1 entry expires at
    /// `sent + pttl` at the latest, never after Redis's copy.
    fn fill(
        &self,
        k: &[u8],
        v: &[u8],
        pttl: Option<Duration>,
        sent: Instant,
        seq: u64,
        epoch: u64,
    ) -> Result<bool, Error> {
        let i = &*self.inner;
        if let Some(d) = i.opts.fill_delay {
            std::thread::sleep(d);
        }
        i.hook(FillStage::Arrived);
        if i.seq(k) != seq {
            bump(&i.stats.fills_refused);
            return Ok(false);
        }
        let ttl = match pttl {
            Some(t) => match t.checked_sub(sent.elapsed()) {
                Some(left) if !left.is_zero() => left.min(i.opts.l1_ttl),
                // Already expired in Redis: nothing to keep.
                _ => return Ok(false),
            },
            None => i.opts.l1_ttl,
        };
        self.put_l1(k, v, epoch, ttl)?;
        i.hook(FillStage::Written);
        if i.seq(k) != seq {
            let _ = i.l1.delete(k);
            bump(&i.stats.fills_refused);
            return Ok(false);
        }
        bump(&i.stats.fills);
        Ok(true)
    }

    fn put_l1(&self, k: &[u8], v: &[u8], epoch: u64, ttl: Duration) -> Result<(), Error> {
        let mut rec = Vec::with_capacity(8 + v.len());
        rec.extend_from_slice(&epoch.to_le_bytes());
        rec.extend_from_slice(v);
        let ttl = ttl.max(Duration::from_millis(1));
        self.inner
            .l1
            .set_opt(k, &Raw(&rec), &WriteOptions::new().ttl(Some(ttl)))
    }

    /// An L1 entry, verified or not, that expired less than `max_stale`
    /// ago (Redis is unreachable).
    fn stale(&self, k: &[u8]) -> Result<Option<TieredValue<'_>>, Error> {
        let i = &*self.inner;
        let Some(g) = i.l1.get_stale::<Raw>(k)? else {
            return Ok(None);
        };
        if g.len() < 8 {
            return Ok(None);
        }
        let within = match g.meta().expires() {
            None => true,
            Some(exp) => exp + i.opts.max_stale > std::time::SystemTime::now(),
        };
        if !within {
            return Ok(None);
        }
        bump(&i.stats.stale_served);
        Ok(Some(TieredValue::Near(NearGuard {
            guard: g,
            stale: true,
        })))
    }

    /// Writes `value` to Redis (with `ttl`, or
    /// [`l1_ttl`](TieredOptions::l1_ttl) when `None`), then to L1, and
    /// voids any [`Lease`] on the key. Redis
    /// unreachable: an error, and this host's L1 no longer holds the key.
    pub fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), TieredError> {
        let i = &*self.inner;
        let k = self.full_key(key);
        let ttl = ttl.unwrap_or(i.opts.l1_ttl);
        let sent = Instant::now();
        if let Err(e) = i.l2.set_voiding(&k, &side_key(&k), value, Some(ms(ttl))) {
            bump(&i.stats.l2_errors);
            i.invalidate_local(&k);
            return Err(e.into());
        }
        // Fills of the old value in flight on this host are refused.
        i.invalidate_local(&k);
        let seq = i.seq(&k);
        let (epoch, _) = i.epoch_now();
        self.fill(
            &k,
            value,
            Some(Duration::from_millis(ms(ttl))),
            sent,
            seq,
            epoch,
        )?;
        Ok(())
    }

    /// Deletes `key` from Redis, then from L1 (and voids any lease on it,
    /// [`Lease`]s included).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), TieredError> {
        let i = &*self.inner;
        let k = self.full_key(key);
        let r = i.l2.delete(&k, &side_key(&k));
        i.invalidate_local(&k);
        if r.is_err() {
            bump(&i.stats.l2_errors);
        }
        Ok(r?)
    }

    /// Takes the fleet lease of `key` for a creator that runs outside
    /// [`get_or_create`](Self::get_or_create) (dogpile.cache's mutex in the
    /// Python package): `None` when another holder has it. Unlike
    /// `get_or_create`'s lease it lives on a side key (`"\0lease\0" + prefix +
    /// key`, outside the tracked prefix), so a key whose old value is still in Redis can be leased. It
    /// is not extended: it expires after [`lease`](TieredOptions::lease).
    /// Take the host's lock first (one process per host asks the fleet).
    /// Fill with [`set_leased`](Self::set_leased); a [`set`](Self::set) or
    /// [`delete`](Self::delete) of the key by anyone voids it (fencing).
    ///
    /// ```no_run
    /// # use slotcache::{Cache, Options, tiered::{TieredCache, TieredOptions}};
    /// # let l1 = Cache::open("app.slotcache", Options::new())?;
    /// # let t = TieredCache::open(l1, TieredOptions::new("redis://127.0.0.1/", "app:"))?;
    /// if let Some(lease) = t.try_lease("report")? {
    ///     let value = b"made by the one creator of the fleet".to_vec();
    ///     let written = t.set_leased(&lease, &value, None)?; // false: voided
    ///     t.release_lease(lease)?;
    /// #   let _ = written;
    /// }
    /// # Ok::<(), slotcache::tiered::TieredError>(())
    /// ```
    pub fn try_lease(&self, key: impl AsRef<[u8]>) -> Result<Option<Lease>, TieredError> {
        let i = &*self.inner;
        let k = self.full_key(key);
        let side = side_key(&k);
        let token = lease_token();
        match i.l2.take_lease(&side, &token, ms(i.opts.lease)) {
            Ok(true) => {
                bump(&i.stats.leases_won);
                Ok(Some(Lease {
                    key: k,
                    side,
                    token,
                }))
            }
            Ok(false) => {
                bump(&i.stats.leases_lost);
                Ok(None)
            }
            Err(e) => {
                bump(&i.stats.l2_errors);
                Err(e.into())
            }
        }
    }

    /// The fill of a [`Lease`] holder: writes `value` to Redis (TTL as in
    /// [`set`](Self::set)) only if the lease is still ours (not voided by a
    /// writer, not expired), then to L1, and ends the lease. Whether it was
    /// written.
    pub fn set_leased(
        &self,
        lease: &Lease,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, TieredError> {
        let i = &*self.inner;
        bump(&i.stats.creates);
        let ttl = ttl.unwrap_or(i.opts.l1_ttl);
        let sent = Instant::now();
        let r =
            i.l2.fill_side_leased(&lease.key, &lease.side, &lease.token, value, Some(ms(ttl)));
        match r {
            Ok(true) => {
                i.invalidate_local(&lease.key);
                let seq = i.seq(&lease.key);
                let (epoch, _) = i.epoch_now();
                let in_redis = Some(Duration::from_millis(ms(ttl)));
                self.fill(&lease.key, value, in_redis, sent, seq, epoch)?;
                Ok(true)
            }
            Ok(false) => {
                bump(&i.stats.leases_voided);
                Ok(false)
            }
            Err(e) => {
                bump(&i.stats.l2_errors);
                Err(e.into())
            }
        }
    }

    /// Keeps `value` in this host's L1 only, unverified: what a creator
    /// made while Redis was unreachable (its `set` failed). Served by
    /// [`get`](Self::get) while Redis stays unreachable (within
    /// [`max_stale`](TieredOptions::max_stale) past `ttl`, capped by
    /// [`l1_ttl`](TieredOptions::l1_ttl)); never a hit once Redis is back.
    pub fn keep_local(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        self.keep_degraded(&self.full_key(key), ttl, value)
    }

    /// Gives a [`Lease`] back (if still ours), so another host may create
    /// at once. A no-op after [`set_leased`](Self::set_leased).
    pub fn release_lease(&self, lease: Lease) -> Result<(), TieredError> {
        self.inner
            .l2
            .release_lease(&lease.side, &lease.token)
            .map(drop)
            .map_err(|e| {
                bump(&self.inner.stats.l2_errors);
                e.into()
            })
    }

    /// The value of `key`, or the one `creator` makes — with one creator
    /// per key across the fleet while Redis is up (the host's regeneration
    /// lock, then a lease in Redis), and at most one per key per host while
    /// it is down. `ttl`: the value's TTL in Redis (default
    /// [`l1_ttl`](TieredOptions::l1_ttl)); L1 keeps it at most that long.
    ///
    /// Waiting for another host's creator is bounded by
    /// [`fleet_wait`](TieredOptions::fleet_wait) ([`Error::LockTimeout`]);
    /// with [`serve_stale`](TieredOptions::serve_stale) an old L1 value is
    /// returned at once meanwhile.
    pub fn get_or_create<E>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        creator: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<TieredValue<'_>, CreateError<E>> {
        let i = &*self.inner;
        let k = self.full_key(key);
        if let Some(v) = self.first_look(&k)? {
            return Ok(v);
        }
        let (lock_key, never) = (host_lock_key(&k), |_: &Raw<Vec<u8>>| false);
        let opts = i.host_lock_options(&never);
        let mut out = None;
        let mut creator = Some(creator);
        let r =
            i.l1.get_or_try_create_opt::<Raw<Vec<u8>>, (), _>(&lock_key, &opts, || {
                out = Some(self.fleet_create(&k, ttl, &mut creator));
                Err(())
            });
        host_lock_result(&k, r.err(), out)
    }

    /// Before the host lock: a verified L1 entry or Redis's value, or (Redis
    /// down, or another host creating and `serve_stale`) an old L1 value.
    fn first_look(&self, k: &[u8]) -> Result<Option<TieredValue<'_>>, Error> {
        Ok(match self.lookup(k)? {
            Lookup::Hit(v) => Some(v),
            Lookup::Down => self.stale(k)?,
            Lookup::Miss { leased } if leased && self.inner.opts.serve_stale => self.stale(k)?,
            Lookup::Miss { .. } => None,
        })
    }

    /// One look of a caller holding the host lock: a value, or the lease
    /// won (create), or Redis down (create for this host only), or wait.
    fn fleet_step(&self, k: &[u8], lost_once: &mut bool) -> Result<Step<TieredValue<'_>>, Error> {
        let i = &*self.inner;
        match self.lookup(k)? {
            Lookup::Hit(v) => return Ok(Step::Done(v)),
            Lookup::Down => {
                return Ok(match self.stale(k)? {
                    Some(v) => Step::Done(v),
                    None => Step::Degraded,
                })
            }
            Lookup::Miss { leased } => {
                if !leased {
                    let token = lease_token();
                    match i.l2.take_lease(k, &token, ms(i.opts.lease)) {
                        Ok(true) => {
                            bump(&i.stats.leases_won);
                            return Ok(Step::Lease(token));
                        }
                        Ok(false) => {}
                        Err(_) => {
                            bump(&i.stats.l2_errors);
                            return Ok(Step::Degraded);
                        }
                    }
                }
                if !*lost_once {
                    *lost_once = true;
                    bump(&i.stats.leases_lost);
                }
                if i.opts.serve_stale {
                    if let Some(v) = self.stale(k)? {
                        return Ok(Step::Done(v));
                    }
                }
            }
        }
        Ok(Step::Wait)
    }

    /// With the host lock: look again, then take the fleet lease or wait
    /// for its holder's fill.
    fn fleet_create<E>(
        &self,
        k: &[u8],
        ttl: Option<Duration>,
        creator: &mut Option<impl FnOnce() -> Result<Vec<u8>, E>>,
    ) -> Result<TieredValue<'_>, CreateError<E>> {
        let i = &*self.inner;
        let mut wait = Backoff::new(i.opts.fleet_wait);
        let mut lost_once = false;
        loop {
            match self.fleet_step(k, &mut lost_once)? {
                Step::Done(v) => return Ok(v),
                Step::Degraded => {
                    let create = creator.take().expect("the creator runs once");
                    let value = i.created(create(), None)?;
                    self.keep_degraded(k, ttl, &value)?;
                    return Ok(TieredValue::Owned(value));
                }
                Step::Lease(token) => {
                    let create = creator.take().expect("the creator runs once");
                    let (tx, rx) = std::sync::mpsc::channel::<()>();
                    let made = std::thread::scope(|s| {
                        s.spawn(|| i.extend_while(k, &token, rx));
                        let made = create();
                        drop(tx);
                        made
                    });
                    let value = i.created(made, Some((k, &token)))?;
                    self.store_leased(k, ttl, &token, &value)?;
                    return Ok(TieredValue::Owned(value));
                }
                Step::Wait => std::thread::sleep(wait.next(k)?),
            }
        }
    }

    /// Holding the lease, the value made: write it to Redis only if the key
    /// still holds our token, then fill L1.
    fn store_leased(
        &self,
        k: &[u8],
        ttl: Option<Duration>,
        token: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        let i = &*self.inner;
        let ttl = ttl.unwrap_or(i.opts.l1_ttl);
        let seq = i.seq(k);
        let (epoch, _) = i.epoch_now();
        let sent = Instant::now();
        match i.l2.fill_leased(k, token, value, Some(ms(ttl))) {
            Ok(true) => {
                let in_redis = Duration::from_millis(ms(ttl));
                self.fill(k, value, Some(in_redis), sent, seq, epoch)?;
            }
            Ok(false) => bump(&i.stats.leases_voided),
            Err(_) => bump(&i.stats.l2_errors),
        }
        Ok(())
    }

    /// Redis unreachable, holding the host lock, the value made: keep it in
    /// L1 only, unverified (served while Redis is down, within
    /// `max_stale`).
    fn keep_degraded(&self, k: &[u8], ttl: Option<Duration>, value: &[u8]) -> Result<(), Error> {
        let i = &*self.inner;
        bump(&i.stats.creates_degraded);
        let ttl = ttl.unwrap_or(i.opts.l1_ttl).min(i.opts.l1_ttl);
        self.put_l1(k, value, UNVERIFIED, ttl)
    }
}

/// What a caller holding the host lock does next (`V`: the value found).
enum Step<V> {
    /// Return this value.
    Done(V),
    /// This lease (its token) is ours: create.
    Lease(Vec<u8>),
    /// Redis is unreachable: create for this host only.
    Degraded,
    /// Another host is creating: look again after a pause.
    Wait,
}

/// The pauses of a caller waiting for another host's creator: 5 ms growing
/// by half to 100 ms, until `fleet_wait` has passed.
struct Backoff {
    start: Instant,
    limit: Duration,
    next: Duration,
}

impl Backoff {
    fn new(limit: Duration) -> Backoff {
        Backoff {
            start: Instant::now(),
            limit,
            next: Duration::from_millis(5),
        }
    }

    /// The next pause, or [`Error::LockTimeout`] once the wait is over.
    fn next(&mut self, k: &[u8]) -> Result<Duration, Error> {
        if self.start.elapsed() >= self.limit {
            return Err(Error::LockTimeout {
                key: String::from_utf8_lossy(k).into_owned(),
                waited_ms: ms(self.start.elapsed()),
            });
        }
        let d = self.next;
        self.next = (d * 3 / 2).min(Duration::from_millis(100));
        Ok(d)
    }
}

/// The host's regeneration lock is taken on a key of its own (never
/// stored): one process of the host asks the fleet (or, Redis down,
/// creates).
fn host_lock_key(k: &[u8]) -> Vec<u8> {
    let mut lock_key = b"\0slotcache-tiered\0".to_vec();
    lock_key.extend_from_slice(k);
    lock_key
}

/// The answer of `get_or_create` from what its host lock call returned
/// (`err`) and what the fleet part produced (`out`, if it ran).
fn host_lock_result<T, E>(
    k: &[u8],
    err: Option<CreateError<()>>,
    out: Option<Result<T, CreateError<E>>>,
) -> Result<T, CreateError<E>> {
    match (err, out) {
        (_, Some(res)) => res,
        (Some(CreateError::Cache(e)), None) => Err(CreateError::Cache(e)),
        // Never stored, so never found cached.
        (_, None) => Err(CreateError::Cache(Error::LockTimeout {
            key: String::from_utf8_lossy(k).into_owned(),
            waited_ms: 0,
        })),
    }
}

impl Inner {
    /// The options of the host lock's `get_or_try_create`.
    fn host_lock_options<'a>(
        &self,
        never: &'a (dyn Fn(&Raw<Vec<u8>>) -> bool + Sync),
    ) -> CreateOptions<'a, Raw<Vec<u8>>> {
        CreateOptions::new()
            .lock_timeout(self.opts.fleet_wait)
            .stale_policy(StalePolicy::Block)
            .should_cache(never)
    }

    /// Counts a creator run; on failure, gives the lease (if any) back so
    /// that another host may try at once.
    fn created<E>(
        &self,
        made: Result<Vec<u8>, E>,
        lease: Option<(&[u8], &[u8])>,
    ) -> Result<Vec<u8>, CreateError<E>> {
        bump(&self.stats.creates);
        made.map_err(|e| {
            if let Some((k, token)) = lease {
                let _ = self.l2.release_lease(k, token);
            }
            CreateError::Creator(e)
        })
    }

    /// Extends the lease every third of its length until `done` is dropped
    /// (or the lease is voided, expired, or Redis is down).
    fn extend_while(&self, k: &[u8], token: &[u8], done: std::sync::mpsc::Receiver<()>) {
        let every = self.opts.lease / 3;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(every) {
            if !matches!(
                self.l2.extend_lease(k, token, ms(self.opts.lease)),
                Ok(true)
            ) {
                return;
            }
        }
    }
}

/// A fresh lease token: the magic, then process, time and a counter.
fn lease_token() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut t = LEASE_MAGIC.to_vec();
    let n = N.fetch_add(1, Ordering::Relaxed);
    t.extend_from_slice(format!("{}-{}-{n}", std::process::id(), now_ns()).as_bytes());
    t
}

impl Drop for TieredCache {
    fn drop(&mut self) {
        // Only the handle that started the subscriber candidate stops it
        // (the async API's blocking sections use handles without one).
        if let Some((h, generation)) = self.candidate.take() {
            if generation != crate::fork::generation() {
                // A forked child's copy of the handle: the thread lives in
                // the parent only, and this process's `stop` flag is its
                // own copy. Joining panicked or could wait forever; the
                // handle is forgotten (its stack belongs to the parent's
                // thread).
                std::mem::forget(h);
                return;
            }
            self.inner.stop.store(true, Ordering::Relaxed);
            let _ = h.join();
        }
    }
}
