//! Dogpile protection: `get_or_create` and friends, after dogpile.cache's
//! `lock.py`.
//!
//! ```text
//! value = read(key)                       lock-free
//! fresh            -> return it
//! stale            -> try the key's regeneration lock; if someone else
//!                     holds it, return the stale value (ServeStale policy)
//! missing (or the Block policy)
//!                  -> wait for the lock (lock_timeout), read again:
//!                     fresh now -> return it
//! create, store (unless should_cache says no), release, return
//! ```
//!
//! Regeneration locks (module `regen`) are striped separately from write
//! locks, so a slow creator never blocks `get`, nor `set`/`delete` of other
//! keys.

use crate::cache::{schema_fingerprint, Cache, Checkable, Storable};
use crate::error::{Error, Result};
use crate::guard::{EntryMeta, Guard};
use crate::index::KeyHash;
use crate::layout::{kind, reader};
use crate::regen::{self, Acquired, RegenLock, Wait};
use rkyv::api::high::HighDeserializer;
use rkyv::rancor;
use rkyv::{Archive, Deserialize};
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// What a caller does with a stale value while another caller regenerates it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StalePolicy {
    /// Return the stale value at once (dogpile.cache's behaviour).
    #[default]
    ServeStale,
    /// Wait for the new value (bounded by the lock timeout).
    Block,
}

/// Per-call options for the `get_or_create` family. Unset fields take the
/// handle's defaults ([`Options::lock_timeout`](crate::Options::lock_timeout),
/// [`Options::stale_policy`](crate::Options::stale_policy),
/// [`Options::expiration`](crate::Options::expiration) and the default TTL).
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
pub struct CreateOptions<'a, T> {
    ttl: Option<Option<Duration>>,
    expiration: Option<Duration>,
    lock_timeout: Option<Duration>,
    policy: Option<StalePolicy>,
    should_cache: Option<&'a dyn Fn(&T) -> bool>,
}

impl<T> Default for CreateOptions<'_, T> {
    fn default() -> Self {
        CreateOptions {
            ttl: None,
            expiration: None,
            lock_timeout: None,
            policy: None,
            should_cache: None,
        }
    }
}

impl<'a, T> CreateOptions<'a, T> {
    /// All defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// TTL of a created value (`None`: never expires). Default: the
    /// cache's default TTL.
    pub fn ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = Some(ttl);
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
        self.policy = Some(policy);
        self
    }

    /// Decides whether a created value is stored; it is returned either way
    /// (dogpile.cache's `should_cache_fn`).
    pub fn should_cache(mut self, f: &'a dyn Fn(&T) -> bool) -> Self {
        self.should_cache = Some(f);
        self
    }
}

/// The defaults a [`Cache`] handle applies to `get_or_create` calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DogpileDefaults {
    pub lock_timeout: Option<Duration>,
    pub policy: StalePolicy,
    pub expiration: Option<Duration>,
}

/// What `get_or_create` returns: the cached value, zero-copy, or the value
/// this caller just created.
pub enum Fetched<'c, T: Archive> {
    /// Found in the cache (fresh, or stale while someone else regenerates).
    Cached(Guard<'c, T::Archived>),
    /// Created by this call. Boxed, so that a `Fetched` of a large `T` is
    /// small: a cached answer (the common case) is then not copied as a
    /// value of `size_of::<T>()` bytes through every return.
    Created(Box<T>),
}

impl<T: Archive> Fetched<'_, T> {
    /// Whether this call ran the creator.
    pub fn is_created(&self) -> bool {
        matches!(self, Fetched::Created(_))
    }

    /// Whether a stale value was served.
    pub fn is_stale(&self) -> bool {
        matches!(self, Fetched::Cached(g) if g.meta().is_stale())
    }

    /// Metadata of a cached value (`None` for a created one).
    pub fn meta(&self) -> Option<EntryMeta> {
        match self {
            Fetched::Cached(g) => Some(g.meta()),
            Fetched::Created(_) => None,
        }
    }

    /// The value as an owned `T` (deserializing a cached one).
    pub fn into_owned(self) -> Result<T>
    where
        T::Archived: Deserialize<T, HighDeserializer<rancor::Error>>,
    {
        match self {
            Fetched::Created(v) => Ok(*v),
            Fetched::Cached(g) => rkyv::deserialize::<T, rancor::Error>(&*g)
                .map_err(|e| Error::Deserialize(e.to_string())),
        }
    }
}

impl<T: Archive> std::fmt::Debug for Fetched<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetched::Cached(g) => f.debug_tuple("Cached").field(&g.meta()).finish(),
            Fetched::Created(_) => f.write_str("Created(..)"),
        }
    }
}

/// The error of [`Cache::get_or_try_create`]: the cache's, or the creator's
/// unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CreateError<E> {
    /// The cache failed (I/O, lock timeout, re-entry, limits...).
    #[error(transparent)]
    Cache(#[from] Error),
    /// The creator failed; nothing was stored and the lock was released.
    #[error("the creator failed")]
    Creator(E),
}

impl CreateError<Infallible> {
    fn into_cache_error(self) -> Error {
        match self {
            CreateError::Cache(e) => e,
            CreateError::Creator(never) => match never {},
        }
    }
}

/// Options with the handle's defaults filled in.
struct Resolved<'a, T> {
    ttl: Option<Duration>,
    expiration: Option<Duration>,
    lock_timeout: Option<Duration>,
    policy: StalePolicy,
    should_cache: Option<&'a dyn Fn(&T) -> bool>,
}

/// What the lock-free first read and the regeneration lock decided.
enum Decision<'c, T: Archive> {
    /// Return this (fresh, or stale while someone else regenerates).
    Done(Fetched<'c, T>),
    /// This caller regenerates, holding the lock.
    Create(RegenLock),
}

impl Cache {
    fn resolve<'a, T>(&self, o: &CreateOptions<'a, T>) -> Resolved<'a, T> {
        let d = self.dogpile;
        Resolved {
            ttl: o.ttl.unwrap_or_else(|| self.default_ttl()),
            expiration: o.expiration.or(d.expiration),
            lock_timeout: o.lock_timeout.or(d.lock_timeout),
            policy: o.policy.unwrap_or(d.policy),
            should_cache: o.should_cache,
        }
    }

    fn needs_regen(meta: &EntryMeta, expiration: Option<Duration>) -> bool {
        meta.is_stale() || expiration.is_some_and(|e| meta.age() >= e)
    }

    /// Steps 1-3 of the algorithm: everything before the creator runs.
    fn decide<'c, T>(&'c self, key: &[u8], o: &Resolved<'_, T>) -> Result<Decision<'c, T>>
    where
        T: Archive,
        T::Archived: Checkable,
    {
        let fresh = |g: &Guard<'_, T::Archived>| !Self::needs_regen(&g.meta(), o.expiration);
        let stale = match self.get_stale::<T>(key)? {
            Some(g) if fresh(&g) => return Ok(Decision::Done(Fetched::Cached(g))),
            other => other,
        };
        self.writable("get_or_create")?;
        let kh = KeyHash::new(key, self.seed(), self.geo());
        let shared = self.shared_arc();
        if let Some(old) = stale.filter(|_| o.policy == StalePolicy::ServeStale) {
            match regen::acquire(shared, key, kh.hash, Wait::Never)? {
                Acquired::Held(lock, _) => {
                    drop(old); // do not pin the old value while creating
                    return self.recheck(key, lock, fresh);
                }
                Acquired::Busy => {
                    self.count(reader::STALE_SERVED);
                    let mut old = old;
                    // Stale by this call's `expiration` age only: say so.
                    old.meta.aged |= !old.meta.is_stale();
                    return Ok(Decision::Done(Fetched::Cached(old)));
                }
            }
        }
        let start = Instant::now();
        // `Duration::MAX` (or anything past what an `Instant` holds) means
        // no timeout, not an overflow.
        let deadline = o.lock_timeout.and_then(crate::options::deadline_after);
        match regen::acquire(shared, key, kh.hash, Wait::Until(deadline))? {
            Acquired::Held(lock, waited) => {
                if waited {
                    self.count(reader::WAITS);
                }
                self.recheck(key, lock, fresh)
            }
            Acquired::Busy => {
                self.count(reader::WAITS);
                self.count(reader::LOCK_TIMEOUTS);
                Err(Error::LockTimeout {
                    key: String::from_utf8_lossy(key).into_owned(),
                    waited_ms: start.elapsed().as_millis() as u64,
                })
            }
        }
    }

    /// With the lock held: someone may have created the value meanwhile.
    fn recheck<'c, T>(
        &'c self,
        key: &[u8],
        lock: RegenLock,
        fresh: impl Fn(&Guard<'_, T::Archived>) -> bool,
    ) -> Result<Decision<'c, T>>
    where
        T: Archive,
        T::Archived: Checkable,
    {
        match self.get_stale::<T>(key)? {
            Some(g) if fresh(&g) => Ok(Decision::Done(Fetched::Cached(g))),
            _ => Ok(Decision::Create(lock)),
        }
    }

    /// Runs the creator with the lock held and stores the value.
    fn create<T, E>(
        &self,
        key: &[u8],
        o: &Resolved<'_, T>,
        lock: RegenLock,
        creator: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CreateError<E>>
    where
        T: Storable + Archive,
    {
        self.count(reader::CREATES);
        // A panic unwinds through here and drops `lock`: released, nothing stored.
        let value = creator().map_err(CreateError::Creator)?;
        if o.should_cache.is_none_or(|f| f(&value)) {
            self.set_with_ttl(key, &value, o.ttl)?;
        }
        drop(lock);
        Ok(value)
    }

    fn dogpile<'c, T, E>(
        &'c self,
        key: &[u8],
        o: &Resolved<'_, T>,
        creator: impl FnOnce() -> Result<T, E>,
    ) -> Result<Fetched<'c, T>, CreateError<E>>
    where
        T: Storable + Archive,
        T::Archived: Checkable,
    {
        match self.decide::<T>(key, o)? {
            Decision::Done(f) => Ok(f),
            Decision::Create(lock) => Ok(Fetched::Created(Box::new(
                self.create(key, o, lock, creator)?,
            ))),
        }
    }

    /// Returns the cached value of `key`, or creates it with `creator` —
    /// with dogpile protection across threads and processes: only one caller
    /// at a time runs the creator for a key; callers that have a stale value
    /// get it back at once meanwhile, callers with no value wait for the one
    /// creator (up to the lock timeout).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-goc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options};
    /// use std::time::Duration;
    /// let cache = Cache::open(dir.join("c"), Options::new().capacity(8 << 20)
    ///     .default_ttl(Duration::from_secs(60)))?;
    /// assert!(cache.get_or_create("answer", || 6u64 * 7)?.is_created());
    /// let v = cache.get_or_create::<u64, _>("answer", || unreachable!("cached"))?;
    /// assert_eq!(v.into_owned()?, 42);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn get_or_create<T, F>(&self, key: impl AsRef<[u8]>, creator: F) -> Result<Fetched<'_, T>>
    where
        T: Storable + Archive,
        T::Archived: Checkable,
        F: FnOnce() -> T,
    {
        self.get_or_create_with(key, &CreateOptions::new(), creator)
    }

    /// [`get_or_create`](Self::get_or_create) with per-call options.
    pub fn get_or_create_with<T, F>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, T>,
        creator: F,
    ) -> Result<Fetched<'_, T>>
    where
        T: Storable + Archive,
        T::Archived: Checkable,
        F: FnOnce() -> T,
    {
        let o = self.resolve(options);
        self.dogpile(key.as_ref(), &o, || Ok::<T, Infallible>(creator()))
            .map_err(CreateError::into_cache_error)
    }

    /// Like [`get_or_create`](Self::get_or_create) with a fallible creator:
    /// its error comes back unchanged as [`CreateError::Creator`], nothing is
    /// stored and the lock is released, so the next caller regenerates.
    pub fn get_or_try_create<T, E, F>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, T>,
        creator: F,
    ) -> Result<Fetched<'_, T>, CreateError<E>>
    where
        T: Storable + Archive,
        T::Archived: Checkable,
        F: FnOnce() -> Result<T, E>,
    {
        let o = self.resolve(options);
        self.dogpile(key.as_ref(), &o, creator)
    }

    /// Like [`get_or_create`](Self::get_or_create), but a caller that finds
    /// a stale value and wins the regeneration lock returns the stale value
    /// at once and regenerates on a new thread, which takes over the lock
    /// (dogpile.cache's `async_creation_runner`). A missing value is still
    /// created on the calling thread. Returns the handle of the background
    /// thread, if one was started.
    #[allow(clippy::type_complexity)]
    pub fn get_or_create_background<T, F>(
        &self,
        key: impl AsRef<[u8]>,
        creator: F,
    ) -> Result<(Fetched<'_, T>, Option<std::thread::JoinHandle<Result<()>>>)>
    where
        T: Storable + Archive + Send + 'static,
        T::Archived: Checkable,
        F: FnOnce() -> T + Send + 'static,
    {
        let key = key.as_ref();
        let o = self.resolve(&CreateOptions::<T>::new());
        let fresh = |g: &Guard<'_, T::Archived>| !Self::needs_regen(&g.meta(), o.expiration);
        if let Some(g) = self.get_stale::<T>(key)? {
            if fresh(&g) {
                return Ok((Fetched::Cached(g), None));
            }
            self.writable("get_or_create_background")?;
            let kh = KeyHash::new(key, self.seed(), self.geo());
            match regen::acquire(self.shared_arc(), key, kh.hash, Wait::Never)? {
                Acquired::Busy => {
                    self.count(reader::STALE_SERVED);
                    return Ok((Fetched::Cached(g), None));
                }
                Acquired::Held(lock, _) => {
                    // The previous creator may have stored a fresh value
                    // between our read and our winning the lock: look again
                    // before regenerating (step 4 of the algorithm).
                    let lock = match self.recheck::<T>(key, lock, fresh)? {
                        Decision::Done(f) => return Ok((f, None)),
                        Decision::Create(lock) => lock,
                    };
                    self.count(reader::STALE_SERVED);
                    lock.release_owner();
                    let (cache, key, ttl) = (self.clone(), key.to_vec(), o.ttl);
                    let handle = std::thread::Builder::new()
                        .name("slotcache-regen".into())
                        .spawn(move || {
                            lock.adopt();
                            cache.count(reader::CREATES);
                            let value = creator();
                            let r = cache.set_with_ttl(&key, &value, ttl);
                            drop(lock);
                            r
                        })
                        .map_err(|e| Error::io("starting a regeneration thread", self.path(), e))?;
                    return Ok((Fetched::Cached(g), Some(handle)));
                }
            }
        }
        let v = self
            .dogpile(key, &o, || Ok::<T, Infallible>(creator()))
            .map_err(CreateError::into_cache_error)?;
        Ok((v, None))
    }

    /// `get_or_create` for several keys: the creator receives the keys this
    /// caller won the right to create (missing or stale ones nobody else is
    /// regenerating) and returns their values in that order. Stale values
    /// are served for keys another caller is regenerating. Results are in
    /// the order of `keys`; a key given twice gets the same outcome twice.
    ///
    /// Locks are taken in one global order (regeneration stripe, then key),
    /// so concurrent batches cannot deadlock.
    ///
    /// No read guard is held while the creator runs or while its values are
    /// stored (a slow creator must not pin log space that writers of other
    /// processes need): the values found in the cache are read again at the
    /// end. A value found fresh that was evicted or deleted meanwhile is
    /// created then, by another call of the creator with the keys still
    /// unresolved — so the creator is usually called once, and at most 4
    /// times.
    pub fn get_or_create_many<T, K, F>(
        &self,
        keys: &[K],
        mut creator: F,
    ) -> Result<Vec<Fetched<'_, T>>>
    where
        T: Storable + Archive,
        T::Archived: Checkable,
        K: AsRef<[u8]>,
        F: FnMut(&[&[u8]]) -> Vec<T>,
    {
        let o = self.resolve(&CreateOptions::<T>::new());
        let regen_stripes = self.shared_ref().header.regen_stripes as u64;
        let place = |i: &usize| {
            let k = keys[*i].as_ref();
            (
                KeyHash::new(k, self.seed(), self.geo()).hash % regen_stripes,
                k,
            )
        };
        let mut results: Vec<Option<Fetched<'_, T>>> = (0..keys.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        for _ in 0..MANY_ROUNDS {
            // One index per distinct key, in the global lock order.
            let mut order = pending.clone();
            order.sort_by(|a, b| place(a).cmp(&place(b)));
            order.dedup_by(|a, b| keys[*a].as_ref() == keys[*b].as_ref());
            let mut won: Vec<(usize, RegenLock)> = Vec::new();
            for &i in &order {
                // A cached answer is only noted here: its guard is dropped
                // at once and the value read again at the end.
                if let Decision::Create(lock) = self.decide::<T>(keys[i].as_ref(), &o)? {
                    won.push((i, lock));
                }
            }
            if !won.is_empty() {
                self.create_many(keys, &o, won, &mut creator, &mut results)?;
            }
            // Everything not created by this call is read now, with no
            // guard held across a creator or a write before this point.
            let mut still = Vec::new();
            for i in pending {
                if results[i].is_some() {
                    continue;
                }
                match self.get_stale::<T>(keys[i].as_ref())? {
                    Some(mut g) => {
                        // Stale by this call's `expiration` age only: say so.
                        g.meta.aged |= Self::needs_regen(&g.meta(), o.expiration);
                        results[i] = Some(Fetched::Cached(g));
                    }
                    None => still.push(i),
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(results
                    .into_iter()
                    .map(|r| r.expect("every key resolved"))
                    .collect());
            }
        }
        Err(Error::InvalidOptions {
            option: "get_or_create_many keys",
            expected: format!(
                "values that stay in the cache until the batch ends (tried {MANY_ROUNDS} rounds)"
            ),
            found: format!(
                "{} key(s) evicted, deleted or not cached (should_cache) every time",
                pending.len()
            ),
        })
    }

    /// Runs the creator of `get_or_create_many` for the keys in `won` (whose
    /// regeneration locks are held), stores the values with one batch write
    /// (one range lock over their stripes when it can), then releases the
    /// locks. Nothing is pinned meanwhile.
    fn create_many<'c, T, K, F>(
        &'c self,
        keys: &[K],
        o: &Resolved<'_, T>,
        won: Vec<(usize, RegenLock)>,
        creator: &mut F,
        results: &mut [Option<Fetched<'c, T>>],
    ) -> Result<()>
    where
        T: Storable + Archive,
        K: AsRef<[u8]>,
        F: FnMut(&[&[u8]]) -> Vec<T>,
    {
        let to_create: Vec<&[u8]> = won.iter().map(|(i, _)| keys[*i].as_ref()).collect();
        for _ in &won {
            self.count(reader::CREATES);
        }
        let values = creator(&to_create);
        if values.len() != won.len() {
            return Err(Error::InvalidOptions {
                option: "get_or_create_many creator",
                expected: format!("{} values, one per key passed to it", won.len()),
                found: format!("{} values", values.len()),
            });
        }
        let mut keep = Vec::with_capacity(won.len());
        for ((i, _), value) in won.iter().zip(&values) {
            if o.should_cache.is_none_or(|f| f(value)) {
                let bytes = rkyv::to_bytes::<rancor::Error>(value)
                    .map_err(|e| Error::Serialize(e.to_string()))?;
                keep.push((keys[*i].as_ref(), bytes));
            }
        }
        let schema = schema_fingerprint::<T>();
        let items: Vec<_> = keep
            .iter()
            .map(|(k, b)| (*k, kind::ARCHIVED, schema, &b[..]))
            .collect();
        self.write_batch("get_or_create_many", &items, o.ttl)?;
        for ((i, lock), value) in won.into_iter().zip(values) {
            drop(lock);
            results[i] = Some(Fetched::Created(Box::new(value)));
        }
        Ok(())
    }
}

/// Most rounds `get_or_create_many` makes before giving up on keys whose
/// values keep disappearing between being found and being read back (each
/// round creates what is missing; see its documentation).
const MANY_ROUNDS: usize = 4;
