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

use crate::cache::Cache;
use crate::codec::{FromView, Value};
use crate::error::{Error, Result};
use crate::guard::{Detach, EntryMeta, Guard, OwnedGuard};
use crate::index::KeyHash;
use crate::layout::reader;
use crate::options::{CreateOptions, DogpileDefaults, StalePolicy};
use crate::regen::{self, Acquired, RegenLock, Wait};
use std::convert::Infallible;
use std::time::{Duration, Instant};

/// What `get_or_create` returns: the cached value, zero-copy, or the value
/// this caller just created.
pub enum Fetched<'c, V: Value> {
    /// Found in the cache (fresh, or stale while someone else regenerates).
    Cached(Guard<'c, V::View>),
    /// Created by this call. Boxed, so that a `Fetched` of a large `V` is
    /// small: a cached answer (the common case) is then not copied as a
    /// value of `size_of::<V>()` bytes through every return.
    Created(Box<V>),
}

impl<V: Value> Fetched<'_, V> {
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

    /// The value as an owned `V` (deserializing, or for
    /// [`Raw`](crate::Raw) copying, a cached one).
    pub fn into_owned(self) -> Result<V>
    where
        V: FromView,
    {
        match self {
            Fetched::Created(v) => Ok(*v),
            Fetched::Cached(g) => V::from_view(&g),
        }
    }
}

impl<V: Value> Fetched<'_, V>
where
    V::View: Detach,
{
    /// Turns this into an [`OwnedFetched`], which any thread may hold: a
    /// cached value's guard is [detached](Guard::detach).
    pub fn detach(self) -> Result<OwnedFetched<V>> {
        Ok(match self {
            Fetched::Cached(g) => OwnedFetched::Cached(g.detach()?),
            Fetched::Created(v) => OwnedFetched::Created(v),
        })
    }
}

/// A [`Fetched`] whose cached value is held by an [`OwnedGuard`]: `Send`
/// (when the value is), so it can cross `.await` points and threads. What
/// the async `get_or_create` family returns; [`Fetched::detach`] makes one.
pub enum OwnedFetched<V: Value> {
    /// Found in the cache (fresh, or stale while someone else regenerates).
    Cached(OwnedGuard<V::View>),
    /// Created by this call.
    Created(Box<V>),
}

impl<V: Value> OwnedFetched<V> {
    /// Whether this call ran the creator.
    pub fn is_created(&self) -> bool {
        matches!(self, OwnedFetched::Created(_))
    }

    /// Whether a stale value was served.
    pub fn is_stale(&self) -> bool {
        self.meta().is_some_and(|m| m.is_stale())
    }

    /// Metadata of a cached value (`None` for a created one).
    pub fn meta(&self) -> Option<EntryMeta> {
        match self {
            OwnedFetched::Cached(g) => Some(g.meta()),
            OwnedFetched::Created(_) => None,
        }
    }

    /// The value as an owned `V` (deserializing, or for
    /// [`Raw`](crate::Raw) copying, a cached one).
    pub fn into_owned(self) -> Result<V>
    where
        V: FromView,
    {
        match self {
            OwnedFetched::Created(v) => Ok(*v),
            OwnedFetched::Cached(g) => V::from_view(&g),
        }
    }
}

impl<V: Value> std::fmt::Debug for OwnedFetched<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.meta() {
            Some(meta) => f.debug_tuple("Cached").field(&meta).finish(),
            None => f.write_str("Created(..)"),
        }
    }
}

impl<V: Value> std::fmt::Debug for Fetched<'_, V> {
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
    pub(crate) fn into_cache_error(self) -> Error {
        match self {
            CreateError::Cache(e) => e,
            CreateError::Creator(never) => match never {},
        }
    }
}

/// A call's options with the handle's defaults filled in.
pub(crate) struct Resolved<'a, V> {
    pub(crate) dogpile: DogpileDefaults,
    ttl: Option<Duration>,
    should_cache: Option<&'a (dyn Fn(&V) -> bool + Sync)>,
}

impl<V> Resolved<'_, V> {
    /// Whether a created value is stored.
    fn keeps(&self, value: &V) -> bool {
        self.should_cache.is_none_or(|f| f(value))
    }
}

/// What the lock-free first read and the regeneration lock decided.
pub(crate) enum Decision<'c, V: Value> {
    /// Return this (fresh, or stale while someone else regenerates).
    Done(Fetched<'c, V>),
    /// This caller regenerates, holding the lock.
    Create(RegenLock),
    /// Wait for the lock (step 3): from [`Cache::first_look`], there is no
    /// value to serve meanwhile (missing, or the block policy; the lock was
    /// not tried); from [`Cache::wait_turn`], the lock is still someone
    /// else's. No other function answers this.
    Wait,
}

impl Cache {
    pub(crate) fn resolve<'a, V>(&self, o: &CreateOptions<'a, V>) -> Resolved<'a, V> {
        Resolved {
            dogpile: self.dogpile.with(o),
            ttl: self.ttl_of(&o.write),
            should_cache: o.should_cache,
        }
    }

    fn needs_regen(meta: &EntryMeta, expiration: Option<Duration>) -> bool {
        meta.is_stale() || expiration.is_some_and(|e| meta.age() >= e)
    }

    /// Steps 1-2 of the algorithm: the lock-free read and, for a stale
    /// value under the serve-stale policy, one try of the regeneration lock
    /// (step 4's second look when it is won). [`Decision::Wait`] when the
    /// caller has to wait for the lock (step 3). Never blocks.
    pub(crate) fn first_look<'c, V: Value>(
        &'c self,
        key: &[u8],
        o: &Resolved<'_, V>,
    ) -> Result<Decision<'c, V>> {
        let expiration = o.dogpile.expiration;
        let fresh = |g: &Guard<'_, V::View>| !Self::needs_regen(&g.meta(), expiration);
        let stale = match self.get_stale::<V>(key)? {
            Some(g) if fresh(&g) => return Ok(Decision::Done(Fetched::Cached(g))),
            other => other,
        };
        self.writable("get_or_create")?;
        if let Some(old) = stale.filter(|_| o.dogpile.stale_policy == StalePolicy::ServeStale) {
            match self.regen_acquire(key, Wait::Never)? {
                Acquired::Held(lock, _) => {
                    drop(old); // do not pin the old value while creating
                    return self.recheck(key, lock, expiration);
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
        Ok(Decision::Wait)
    }

    /// Takes the regeneration lock of `key` (format.md §5.9), waiting as
    /// `wait` says.
    pub(crate) fn regen_acquire(&self, key: &[u8], wait: Wait) -> Result<Acquired> {
        let kh = KeyHash::new(key, self.seed(), self.geo());
        regen::acquire(self.shared_arc(), key, kh.hash, wait)
    }

    /// Step 3, one attempt: takes the regeneration lock of `key`, waiting
    /// as `wait` says, then takes step 4's second look. [`Decision::Wait`]
    /// when the lock is still someone else's. A won lock after a wait
    /// (this attempt's, or `waited`: the caller's own before it) is
    /// counted in `waits`.
    pub(crate) fn wait_turn<'c, V: Value>(
        &'c self,
        key: &[u8],
        o: &Resolved<'_, V>,
        wait: Wait,
        waited: bool,
    ) -> Result<Decision<'c, V>> {
        let expiration = o.dogpile.expiration;
        match self.regen_acquire(key, wait)? {
            Acquired::Held(lock, waited_now) => {
                if waited || waited_now {
                    self.count(reader::WAITS);
                }
                self.recheck(key, lock, expiration)
            }
            Acquired::Busy => Ok(Decision::Wait),
        }
    }

    /// The end of a wait for the regeneration lock that began at `start`
    /// and reached the lock timeout: counted, typed.
    pub(crate) fn lock_timed_out(&self, key: &[u8], start: Instant) -> Error {
        self.count(reader::WAITS);
        self.count(reader::LOCK_TIMEOUTS);
        Error::LockTimeout {
            key: String::from_utf8_lossy(key).into_owned(),
            waited_ms: start.elapsed().as_millis() as u64,
        }
    }

    /// Steps 1-4 up to the creator, waiting for the lock by blocking.
    fn decide<'c, V: Value>(&'c self, key: &[u8], o: &Resolved<'_, V>) -> Result<Decision<'c, V>> {
        match self.first_look(key, o)? {
            Decision::Wait => {}
            decided => return Ok(decided),
        }
        let start = Instant::now();
        // `Duration::MAX` (or anything past what an `Instant` holds) means
        // no timeout, not an overflow.
        let deadline = o
            .dogpile
            .lock_timeout
            .and_then(crate::options::deadline_after);
        match self.wait_turn(key, o, Wait::Until(deadline), false)? {
            Decision::Wait => Err(self.lock_timed_out(key, start)),
            decided => Ok(decided),
        }
    }

    /// With the lock held: someone may have created the value meanwhile.
    fn recheck<'c, V: Value>(
        &'c self,
        key: &[u8],
        lock: RegenLock,
        expiration: Option<Duration>,
    ) -> Result<Decision<'c, V>> {
        match self.get_stale::<V>(key)? {
            Some(g) if !Self::needs_regen(&g.meta(), expiration) => {
                Ok(Decision::Done(Fetched::Cached(g)))
            }
            _ => Ok(Decision::Create(lock)),
        }
    }

    /// Stores a created value (unless `should_cache` refuses it) under
    /// `key` with the call's TTL.
    fn store_created<V: Value>(&self, key: &[u8], o: &Resolved<'_, V>, value: &V) -> Result<()> {
        if !o.keeps(value) {
            return Ok(());
        }
        self.write_one("get_or_create", key, value, o.ttl)
    }

    /// Counts a creator run (just before it starts).
    pub(crate) fn count_create(&self) {
        self.count(reader::CREATES);
    }

    /// The end of step 4: stores the created `value` (unless `should_cache`
    /// refuses it), then releases the lock.
    pub(crate) fn finish_create<V: Value>(
        &self,
        key: &[u8],
        o: &Resolved<'_, V>,
        lock: RegenLock,
        value: &V,
    ) -> Result<()> {
        self.store_created(key, o, value)?;
        drop(lock);
        Ok(())
    }

    /// Runs the creator with the lock held and stores the value.
    fn create<V: Value, E>(
        &self,
        key: &[u8],
        o: &Resolved<'_, V>,
        lock: RegenLock,
        creator: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, CreateError<E>> {
        self.count_create();
        // A panic unwinds through here and drops `lock`: released, nothing stored.
        let value = creator().map_err(CreateError::Creator)?;
        self.finish_create(key, o, lock, &value)?;
        Ok(value)
    }

    fn dogpile<'c, V: Value, E>(
        &'c self,
        key: &[u8],
        o: &Resolved<'_, V>,
        creator: impl FnOnce() -> Result<V, E>,
    ) -> Result<Fetched<'c, V>, CreateError<E>> {
        match self.decide::<V>(key, o)? {
            Decision::Create(lock) => Ok(Fetched::Created(Box::new(
                self.create(key, o, lock, creator)?,
            ))),
            Decision::Done(f) => Ok(f),
            Decision::Wait => unreachable!("decide waits for the lock"),
        }
    }

    /// Returns the cached value of `key`, or creates it with `creator` —
    /// with dogpile protection across threads and processes: only one caller
    /// at a time runs the creator for a key; callers that have a stale value
    /// get it back at once meanwhile, callers with no value wait for the one
    /// creator (up to the lock timeout).
    ///
    /// The value kind follows from the creator: `|| 42u64` caches a typed
    /// `u64`, `|| Raw(bytes)` raw bytes ([`Raw`](crate::Raw)).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-goc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, Raw};
    /// use std::time::Duration;
    /// let cache = Cache::open(dir.join("c"), Options::new().capacity(8 << 20)
    ///     .default_ttl(Duration::from_secs(60)))?;
    /// assert!(cache.get_or_create("answer", || 6u64 * 7)?.is_created());
    /// let v = cache.get_or_create::<u64, _>("answer", || unreachable!("cached"))?;
    /// assert_eq!(v.into_owned()?, 42);
    ///
    /// // Raw bytes get the same protection.
    /// let page = cache.get_or_create("page", || Raw(b"<html>".to_vec()))?;
    /// assert_eq!(page.into_owned()?, Raw(b"<html>".to_vec()));
    /// assert_eq!(&*cache.get::<Raw>("page")?.unwrap(), b"<html>");
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn get_or_create<V, F>(&self, key: impl AsRef<[u8]>, creator: F) -> Result<Fetched<'_, V>>
    where
        V: Value,
        F: FnOnce() -> V,
    {
        self.get_or_create_opt(key, &CreateOptions::new(), creator)
    }

    /// [`get_or_create`](Self::get_or_create) with per-call
    /// [`CreateOptions`].
    pub fn get_or_create_opt<V, F>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, V>,
        creator: F,
    ) -> Result<Fetched<'_, V>>
    where
        V: Value,
        F: FnOnce() -> V,
    {
        self.get_or_try_create_opt(key, options, || Ok::<V, Infallible>(creator()))
            .map_err(CreateError::into_cache_error)
    }

    /// Like [`get_or_create`](Self::get_or_create) with a fallible creator:
    /// its error comes back unchanged as [`CreateError::Creator`], nothing is
    /// stored and the lock is released, so the next caller regenerates.
    pub fn get_or_try_create<V, E, F>(
        &self,
        key: impl AsRef<[u8]>,
        creator: F,
    ) -> Result<Fetched<'_, V>, CreateError<E>>
    where
        V: Value,
        F: FnOnce() -> Result<V, E>,
    {
        self.get_or_try_create_opt(key, &CreateOptions::new(), creator)
    }

    /// [`get_or_try_create`](Self::get_or_try_create) with per-call
    /// [`CreateOptions`].
    pub fn get_or_try_create_opt<V, E, F>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, V>,
        creator: F,
    ) -> Result<Fetched<'_, V>, CreateError<E>>
    where
        V: Value,
        F: FnOnce() -> Result<V, E>,
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
    pub fn get_or_create_background<V, F>(
        &self,
        key: impl AsRef<[u8]>,
        creator: F,
    ) -> Result<(Fetched<'_, V>, Option<std::thread::JoinHandle<Result<()>>>)>
    where
        V: Value + Send + 'static,
        F: FnOnce() -> V + Send + 'static,
    {
        self.get_or_create_background_opt(key, &CreateOptions::new(), creator)
    }

    /// [`get_or_create_background`](Self::get_or_create_background) with
    /// per-call [`CreateOptions`]. The options are `'static` because the
    /// regeneration thread applies their `should_cache` after the call has
    /// returned (a function or a closure that captures nothing is
    /// `'static`).
    #[allow(clippy::type_complexity)]
    pub fn get_or_create_background_opt<V, F>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'static, V>,
        creator: F,
    ) -> Result<(Fetched<'_, V>, Option<std::thread::JoinHandle<Result<()>>>)>
    where
        V: Value + Send + 'static,
        F: FnOnce() -> V + Send + 'static,
    {
        let key = key.as_ref();
        let o = self.resolve(options);
        let expiration = o.dogpile.expiration;
        let fresh = |g: &Guard<'_, V::View>| !Self::needs_regen(&g.meta(), expiration);
        if let Some(g) = self.get_stale::<V>(key)? {
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
                    let lock = match self.recheck::<V>(key, lock, expiration)? {
                        Decision::Create(lock) => lock,
                        Decision::Done(f) => return Ok((f, None)),
                        Decision::Wait => unreachable!("recheck holds the lock"),
                    };
                    self.count(reader::STALE_SERVED);
                    lock.release_owner();
                    let (cache, key) = (self.clone(), key.to_vec());
                    let handle = std::thread::Builder::new()
                        .name("slotcache-regen".into())
                        .spawn(move || {
                            lock.adopt();
                            cache.count(reader::CREATES);
                            let value = creator();
                            let r = cache.store_created(&key, &o, &value);
                            drop(lock);
                            r
                        })
                        .map_err(|e| Error::io("starting a regeneration thread", self.path(), e))?;
                    return Ok((Fetched::Cached(g), Some(handle)));
                }
            }
        }
        let v = self
            .dogpile(key, &o, || Ok::<V, Infallible>(creator()))
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
    /// times; keys whose values disappear every time are
    /// [`Error::ValuesDisappeared`]. A creator that returns a number of
    /// values other than the number of keys it was given is
    /// [`Error::CreatorContract`].
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-gocm-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options};
    /// let cache = Cache::open(dir.join("m.cache"), Options::new().capacity(8 << 20))?;
    /// cache.set("b", &20u32)?;
    /// let got = cache.get_or_create_many(["a", "b", "c"], |missing| {
    ///     assert_eq!(missing.len(), 2, "only a and c are missing (in lock order)");
    ///     missing.iter().map(|k| k[0] as u32).collect()
    /// })?;
    /// let got = got.into_iter().map(|f| f.into_owned()).collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(got, [97, 20, 99]);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn get_or_create_many<V, F>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
        creator: F,
    ) -> Result<Vec<Fetched<'_, V>>>
    where
        V: Value,
        F: FnMut(&[&[u8]]) -> Vec<V>,
    {
        self.get_or_create_many_opt(keys, &CreateOptions::new(), creator)
    }

    /// [`get_or_create_many`](Self::get_or_create_many) with per-call
    /// [`CreateOptions`] (applied to every key; `should_cache` to every
    /// created value).
    pub fn get_or_create_many_opt<V, F>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<[u8]>>,
        options: &CreateOptions<'_, V>,
        mut creator: F,
    ) -> Result<Vec<Fetched<'_, V>>>
    where
        V: Value,
        F: FnMut(&[&[u8]]) -> Vec<V>,
    {
        let keys: Vec<_> = keys.into_iter().collect();
        let o = self.resolve(options);
        let regen_stripes = self.shared_ref().header.regen_stripes as u64;
        let place = |i: &usize| {
            let k = keys[*i].as_ref();
            (
                KeyHash::new(k, self.seed(), self.geo()).hash % regen_stripes,
                k,
            )
        };
        let mut results: Vec<Option<Fetched<'_, V>>> = (0..keys.len()).map(|_| None).collect();
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
                if let Decision::Create(lock) = self.decide::<V>(keys[i].as_ref(), &o)? {
                    won.push((i, lock));
                }
            }
            if !won.is_empty() {
                self.create_many(&keys, &o, won, &mut creator, &mut results)?;
            }
            // Everything not created by this call is read now, with no
            // guard held across a creator or a write before this point.
            let mut still = Vec::new();
            for i in pending {
                if results[i].is_some() {
                    continue;
                }
                match self.get_stale::<V>(keys[i].as_ref())? {
                    Some(mut g) => {
                        // Stale by this call's `expiration` age only: say so.
                        g.meta.aged |= Self::needs_regen(&g.meta(), o.dogpile.expiration);
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
        Err(Error::ValuesDisappeared {
            keys: pending.len(),
            first_key: String::from_utf8_lossy(keys[pending[0]].as_ref()).into_owned(),
            rounds: MANY_ROUNDS as u32,
        })
    }

    /// Runs the creator of `get_or_create_many` for the keys in `won` (whose
    /// regeneration locks are held), stores the values with one batch write
    /// (one range lock over their stripes when it can), then releases the
    /// locks. Nothing is pinned meanwhile.
    fn create_many<'c, V, K, F>(
        &'c self,
        keys: &[K],
        o: &Resolved<'_, V>,
        won: Vec<(usize, RegenLock)>,
        creator: &mut F,
        results: &mut [Option<Fetched<'c, V>>],
    ) -> Result<()>
    where
        V: Value,
        K: AsRef<[u8]>,
        F: FnMut(&[&[u8]]) -> Vec<V>,
    {
        let to_create: Vec<&[u8]> = won.iter().map(|(i, _)| keys[*i].as_ref()).collect();
        for _ in &won {
            self.count(reader::CREATES);
        }
        let values = creator(&to_create);
        if values.len() != won.len() {
            return Err(Error::CreatorContract {
                op: "get_or_create_many",
                expected: format!("{} values, one per key passed to it", won.len()),
                found: format!("{} values", values.len()),
            });
        }
        let kept = to_create
            .iter()
            .zip(&values)
            .filter(|(_, value)| o.keeps(value))
            .map(|(k, value)| (*k, value));
        self.write_values("get_or_create_many", kept, o.ttl)?;
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
