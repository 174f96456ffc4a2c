//! The async face of [`TieredCache`] (features `redis` and `tokio`):
//! `get_async`, `set_async`, `delete_async` and `get_or_create_async`,
//! the sync calls of the same names for tokio code.
//!
//! A verified L1 hit is served at once, without awaiting anything (and
//! copied out: a zero-copy guard may not cross an `.await`). Every Redis
//! call runs on tokio's blocking pool (`spawn_blocking`), so no executor
//! thread waits on the network; the host's regeneration lock is the async
//! one of [`Cache::get_or_try_create_async_opt`](crate::Cache::get_or_try_create_async_opt)
//! (tried between sleeps on tokio's timer), and waits for another host's
//! creator sleep on tokio's timer too. The creator is a future, polled on
//! the caller's task only when this call creates.
//!
//! **Cancellation.** Dropping the future while it waits stores nothing.
//! Dropped while its creator runs, it stops extending its lease: another
//! host creates after the lease expires
//! ([`TieredOptions::lease`](super::TieredOptions::lease)).

use super::{host_lock_key, host_lock_result, Backoff, Step, TieredCache, TieredError};
use crate::{CreateError, Error, Raw};
use std::future::Future;
use std::time::Duration;

impl TieredCache {
    /// Runs `f` on tokio's blocking pool with a handle on this cache
    /// (sharing its connections, counters and subscriber); a panic in `f`
    /// resumes here.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TieredCache) -> T + Send + 'static,
    ) -> T {
        let handle = TieredCache {
            inner: self.inner.clone(),
            candidate: None,
        };
        match tokio::task::spawn_blocking(move || f(&handle)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// [`get`](Self::get) for async code: a verified L1 entry at once,
    /// else Redis's value (filled into L1) read on the blocking pool;
    /// Redis unreachable, an L1 entry within `max_stale`. The value is
    /// copied out.
    ///
    /// ```no_run
    /// # use slotcache::tiered::{TieredCache, TieredOptions};
    /// # use slotcache::{Cache, Options};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let l1 = Cache::open("app.cache", Options::new())?;
    /// let cache = TieredCache::open(l1, TieredOptions::new("redis://127.0.0.1/", "app:"))?;
    /// cache.set_async("user:1", b"ada", None).await?;
    /// assert_eq!(cache.get_async("user:1").await?.as_deref(), Some(&b"ada"[..]));
    /// # Ok(()) }
    /// ```
    pub async fn get_async(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        let k = self.full_key(key);
        if let Some(v) = self.verified(&k)? {
            return Ok(Some(v.to_vec()));
        }
        self.blocking(move |t| {
            Ok(match t.lookup(&k)? {
                super::Lookup::Hit(v) => Some(v.to_vec()),
                super::Lookup::Miss { .. } => None,
                super::Lookup::Down => t.stale(&k)?.map(|v| v.to_vec()),
            })
        })
        .await
    }

    /// [`set`](Self::set) for async code (Redis, then L1, on the blocking
    /// pool).
    pub async fn set_async(
        &self,
        key: impl AsRef<[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), TieredError> {
        let (k, v) = (key.as_ref().to_vec(), value.to_vec());
        self.blocking(move |t| t.set(k, &v, ttl)).await
    }

    /// [`delete`](Self::delete) for async code.
    pub async fn delete_async(&self, key: impl AsRef<[u8]>) -> Result<(), TieredError> {
        let k = key.as_ref().to_vec();
        self.blocking(move |t| t.delete(k)).await
    }

    /// [`get_or_create`](Self::get_or_create) for async code: one creator
    /// per key across the fleet while Redis is up (the host's regeneration
    /// lock, awaited, then the lease in Redis), at most one per host while
    /// it is down. `init` is awaited only when this call creates.
    ///
    /// ```no_run
    /// # use slotcache::tiered::{TieredCache, TieredOptions};
    /// # use slotcache::{Cache, Options};
    /// # use std::time::Duration;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// # let cache = TieredCache::open(Cache::open("app.cache", Options::new())?,
    /// #     TieredOptions::new("redis://127.0.0.1/", "app:"))?;
    /// let page = cache
    ///     .get_or_create_async("page:/", Some(Duration::from_secs(60)), async {
    ///         Ok::<_, std::io::Error>(b"<html>".to_vec())
    ///     })
    ///     .await?;
    /// # drop(page); Ok(()) }
    /// ```
    pub async fn get_or_create_async<E, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        ttl: Option<Duration>,
        init: Fut,
    ) -> Result<Vec<u8>, CreateError<E>>
    where
        Fut: Future<Output = Result<Vec<u8>, E>>,
    {
        let k = self.full_key(key);
        if let Some(v) = self.verified(&k)? {
            return Ok(v.to_vec());
        }
        let kk = k.clone();
        let first = self
            .blocking(move |t| Ok::<_, Error>(t.first_look(&kk)?.map(|v| v.to_vec())))
            .await?;
        if let Some(v) = first {
            return Ok(v);
        }
        let i = &*self.inner;
        let (lock_key, never) = (host_lock_key(&k), |_: &Raw<Vec<u8>>| false);
        let opts = i.host_lock_options(&never);
        let mut out = None;
        let r =
            i.l1.get_or_try_create_async_opt::<Raw<Vec<u8>>, (), _>(&lock_key, &opts, async {
                out = Some(self.fleet_create_async(&k, ttl, init).await);
                Err(())
            })
            .await;
        host_lock_result(&k, r.err(), out)
    }

    /// `fleet_create` for async code.
    async fn fleet_create_async<E>(
        &self,
        k: &[u8],
        ttl: Option<Duration>,
        init: impl Future<Output = Result<Vec<u8>, E>>,
    ) -> Result<Vec<u8>, CreateError<E>> {
        let i = &*self.inner;
        let mut wait = Backoff::new(i.opts.fleet_wait);
        let mut lost_once = false;
        loop {
            let kk = k.to_vec();
            let (step, lost) = self
                .blocking(move |t| {
                    let step = t.fleet_step(&kk, &mut lost_once).map(|s| match s {
                        Step::Done(v) => Step::Done(v.to_vec()),
                        Step::Lease(token) => Step::Lease(token),
                        Step::Degraded => Step::Degraded,
                        Step::Wait => Step::Wait,
                    });
                    (step, lost_once)
                })
                .await;
            lost_once = lost;
            match step? {
                Step::Done(v) => return Ok(v),
                Step::Degraded => {
                    let value = i.created(init.await, None)?;
                    self.keep_degraded(k, ttl, &value)?;
                    return Ok(value);
                }
                Step::Lease(token) => {
                    let (tx, rx) = std::sync::mpsc::channel::<()>();
                    let (inner, kk, tk) = (self.inner.clone(), k.to_vec(), token.clone());
                    std::thread::Builder::new()
                        .name("slotcache-tiered-lease".into())
                        .spawn(move || inner.extend_while(&kk, &tk, rx))
                        .map_err(|e| Error::io("starting the lease thread", i.l1.path(), e))?;
                    let made = init.await;
                    drop(tx);
                    let (kk, tk) = (k.to_vec(), token);
                    return match made {
                        Ok(value) => {
                            let value = i.created::<E>(Ok(value), None)?;
                            self.blocking(move |t| {
                                t.store_leased(&kk, ttl, &tk, &value).map(|()| value)
                            })
                            .await
                            .map_err(CreateError::Cache)
                        }
                        Err(e) => {
                            self.blocking(move |t| {
                                let _ = t.inner.created(Err(()), Some((&kk, &tk)));
                            })
                            .await;
                            Err(CreateError::Creator(e))
                        }
                    };
                }
                Step::Wait => tokio::time::sleep(wait.next(k)?).await,
            }
        }
    }
}
