//! The async face of dogpile protection (feature `tokio`):
//! [`Cache::get_or_create_async`] and friends, after moka's
//! `future::Cache::get_with`/`try_get_with` (the creator is a future,
//! polled only when this call regenerates).
//!
//! The algorithm is the blocking one (format.md §5.9), taken step by step
//! through the same crate functions of module `dogpile`: the lock-free read
//! and the stale path's try of the regeneration lock never block anyway.
//! Only step 3 differs: instead of blocking its thread on the lock, a caller
//! tries it without waiting and sleeps on tokio's timer between tries
//! (50 µs doubling to 2 ms, the back-off `regen` polls a file lock with),
//! so a waiting task leaves its executor thread to other tasks.
//!
//! Who owns a held lock: the in-process regeneration table records the
//! thread holding a key, so that a caller re-entering its own key gets
//! [`Error::Reentrant`](crate::Error::Reentrant) instead of a deadlock. A
//! task moves between threads and a thread runs many tasks, so a lock won
//! by a task has no owner thread (`RegenLock::release_owner`, as during a
//! background hand-over), except while its creator future is being polled:
//! then the polling thread owns it (`RegenLock::adopt`). Whatever the
//! creator runs *inside* its poll and asks for the same key — an awaited
//! `get_or_create_async`, a blocking `get_or_create` — gets `Reentrant`;
//! every other task, on whatever thread, waits.

use crate::cache::Cache;
use crate::codec::Value;
use crate::dogpile::{CreateError, Decision, OwnedFetched, Resolved};
use crate::error::Result;
use crate::guard::Detach;
use crate::options::CreateOptions;
use crate::regen::{RegenLock, Wait};
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::time::{Duration, Instant};

/// The first pause between two tries of a busy regeneration lock, doubled
/// after each try up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_micros(50);
/// The longest pause between two tries: a released lock is noticed within
/// about this much (tokio's timer rounds up to its 1 ms tick).
const MAX_PAUSE: Duration = Duration::from_millis(2);

/// A [`Decision`] that may cross an `.await`: a `Guard` is tied to its
/// thread, so a cached answer is detached at once.
enum Turn<V: Value> {
    Done(OwnedFetched<V>),
    Create(RegenLock),
}

/// `None` for [`Decision::Wait`].
fn turn<V: Value>(decision: Decision<'_, V>) -> Result<Option<Turn<V>>>
where
    V::View: Detach,
{
    Ok(match decision {
        Decision::Done(fetched) => Some(Turn::Done(fetched.detach()?)),
        Decision::Create(lock) => Some(Turn::Create(lock)),
        Decision::Wait => None,
    })
}

/// Makes the calling thread the owner of a held lock for as long as it
/// lives: during one poll of the creator, also when that poll panics.
struct PollOwner<'a>(&'a RegenLock);

impl<'a> PollOwner<'a> {
    fn adopt(lock: &'a RegenLock) -> Self {
        lock.adopt();
        PollOwner(lock)
    }
}

impl Drop for PollOwner<'_> {
    fn drop(&mut self) {
        self.0.release_owner();
    }
}

impl Cache {
    /// [`get_or_create`](Self::get_or_create) for async code: returns the
    /// cached value of `key`, or awaits `init` and stores its value — one
    /// creator at a time for a key across the tasks and threads of this
    /// process and every other process using the file (moka's
    /// `future::Cache::get_with`, across processes).
    ///
    /// - Reads are the synchronous lock-free reads of
    ///   [`get`](Self::get): a fresh value returns without awaiting
    ///   anything, and `init` is dropped without being polled.
    /// - A stale value, while another caller regenerates it, is returned at
    ///   once (the serve-stale policy); this call regenerates it when nobody
    ///   else does.
    /// - A missing value (or the [`StalePolicy::Block`](crate::StalePolicy::Block)
    ///   policy) waits for the one creator, here or in another process,
    ///   without blocking the executor thread: the regeneration lock is
    ///   tried between sleeps on tokio's timer (about 2 ms apart at most),
    ///   up to the lock timeout ([`Error::LockTimeout`](crate::Error::LockTimeout)).
    ///   The winner of the lock looks again and returns the value the
    ///   previous creator stored, if it is fresh.
    ///
    /// The result is an [`OwnedFetched`]: a cached value comes as a
    /// [detached](crate::Guard::detach) zero-copy guard, which may be held
    /// across `.await`s and sent to other tasks. The returned future is
    /// `Send` when `V` and `init` are, so it can be `tokio::spawn`ed (with a
    /// clone of the handle: clones are cheap).
    ///
    /// **Cancellation.** Dropping the future (a `tokio::time::timeout`, a
    /// `select!`, an aborted task) while it waits or while `init` runs
    /// releases the regeneration lock and stores nothing; the next caller
    /// becomes the creator. A value is stored only after `init` has
    /// completed, with no `.await` between storing it and releasing the
    /// lock.
    ///
    /// **Re-entry.** `init` asking for its own key — awaiting
    /// `get_or_create_async` of it, or calling the blocking
    /// [`get_or_create`](Self::get_or_create) — gets
    /// [`Error::Reentrant`](crate::Error::Reentrant) instead of a deadlock,
    /// as in the blocking API (other keys are fine). A task that `init`
    /// *spawns* is another task: asking for the same key, it waits for
    /// `init`, so `init` must not await it (it would wait until the lock
    /// timeout). Other tasks on the same thread as a creator wait for it
    /// like any other caller.
    ///
    /// Must run inside a tokio runtime with its timer enabled
    /// (`#[tokio::main]`, or a runtime built with `enable_time`/`enable_all`)
    /// when it has to wait; it panics otherwise, as `tokio::time::sleep` does.
    /// Do not call the blocking `get_or_create` family from async tasks: it
    /// blocks the executor thread while it waits.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-goca-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options};
    /// use std::time::Duration;
    ///
    /// async fn load_report(id: u32) -> String {
    ///     tokio::time::sleep(Duration::from_millis(1)).await; // a database, a service...
    ///     format!("report {id}")
    /// }
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// # rt.block_on(async {
    /// let cache = Cache::open(dir.join("app.cache"), Options::new()
    ///     .capacity(8 << 20)
    ///     .default_ttl(Duration::from_secs(60)))?;
    ///
    /// let report = cache.get_or_create_async("report:7", load_report(7)).await?;
    /// assert!(report.is_created());
    /// // Cached now: the future passed is dropped without being polled.
    /// let again = cache.get_or_create_async("report:7", load_report(7)).await?;
    /// assert!(!again.is_created());
    /// assert_eq!(again.into_owned()?, "report 7");
    ///
    /// // The future is Send: spawn it with a clone of the handle.
    /// let c = cache.clone();
    /// let task = tokio::spawn(async move {
    ///     let n = c.get_or_create_async("answer", async { 6u64 * 7 }).await?;
    ///     n.into_owned()
    /// });
    /// assert_eq!(task.await??, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub async fn get_or_create_async<V, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        init: Fut,
    ) -> Result<OwnedFetched<V>>
    where
        V: Value,
        V::View: Detach,
        Fut: Future<Output = V>,
    {
        self.get_or_create_async_opt(key, &CreateOptions::new(), init)
            .await
    }

    /// [`get_or_create_async`](Self::get_or_create_async) with per-call
    /// [`CreateOptions`] (TTL, lock timeout, stale policy, expiration,
    /// `should_cache`).
    pub async fn get_or_create_async_opt<V, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, V>,
        init: Fut,
    ) -> Result<OwnedFetched<V>>
    where
        V: Value,
        V::View: Detach,
        Fut: Future<Output = V>,
    {
        let init = async { Ok::<V, Infallible>(init.await) };
        self.get_or_try_create_async_opt(key, options, init)
            .await
            .map_err(CreateError::into_cache_error)
    }

    /// Like [`get_or_create_async`](Self::get_or_create_async) with a
    /// fallible `init` (moka's `try_get_with`): its error comes back
    /// unchanged as [`CreateError::Creator`] to this caller only, nothing is
    /// stored and the lock is released, so the next caller (a waiter
    /// included) runs its own `init`.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-gotca-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, CreateError, Options};
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// # rt.block_on(async {
    /// let cache = Cache::open(dir.join("c"), Options::new().capacity(8 << 20))?;
    /// let failed = cache
    ///     .get_or_try_create_async::<u64, _, _>("k", async { Err("backend down") })
    ///     .await;
    /// assert!(matches!(failed, Err(CreateError::Creator("backend down"))));
    /// assert!(cache.get::<u64>("k")?.is_none(), "nothing stored");
    /// let ok = cache.get_or_try_create_async("k", async { Ok::<_, &str>(5u64) }).await;
    /// assert_eq!(ok.unwrap().into_owned()?, 5);
    /// # Ok::<(), slotcache::Error>(())
    /// # }).unwrap();
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub async fn get_or_try_create_async<V, E, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        init: Fut,
    ) -> Result<OwnedFetched<V>, CreateError<E>>
    where
        V: Value,
        V::View: Detach,
        Fut: Future<Output = Result<V, E>>,
    {
        self.get_or_try_create_async_opt(key, &CreateOptions::new(), init)
            .await
    }

    /// [`get_or_try_create_async`](Self::get_or_try_create_async) with
    /// per-call [`CreateOptions`].
    pub async fn get_or_try_create_async_opt<V, E, Fut>(
        &self,
        key: impl AsRef<[u8]>,
        options: &CreateOptions<'_, V>,
        init: Fut,
    ) -> Result<OwnedFetched<V>, CreateError<E>>
    where
        V: Value,
        V::View: Detach,
        Fut: Future<Output = Result<V, E>>,
    {
        let key = key.as_ref();
        let o = self.resolve(options);
        let first = turn(self.first_look::<V>(key, &o)?)?;
        let lock = match first {
            Some(t) => t,
            None => self.wait_turn_async(key, &o).await?,
        };
        let lock = match lock {
            Turn::Done(fetched) => return Ok(fetched),
            Turn::Create(lock) => lock,
        };
        // The lock is this thread's from its acquisition to the end of the
        // creator's first poll (nothing awaits in between), then nobody's
        // but during the creator's polls.
        self.count_create();
        let mut init = pin!(init);
        // Dropped here (cancelled, or a panic unwinding): `lock` is
        // released with the future and nothing is stored.
        let value = poll_fn(|cx| {
            let _owner = PollOwner::adopt(&lock);
            init.as_mut().poll(cx)
        })
        .await
        .map_err(CreateError::Creator)?;
        self.finish_create(key, &o, lock, &value)?;
        Ok(OwnedFetched::Created(Box::new(value)))
    }

    /// Step 3 without blocking: tries the regeneration lock, sleeping on
    /// tokio's timer between tries, until it is won (then step 4's second
    /// look) or the lock timeout passes.
    async fn wait_turn_async<V: Value>(&self, key: &[u8], o: &Resolved<'_, V>) -> Result<Turn<V>>
    where
        V::View: Detach,
    {
        let start = Instant::now();
        // `Duration::MAX` (or anything an `Instant` cannot hold) means no
        // timeout, as for the blocking wait.
        let deadline = o.dogpile.lock_timeout.and_then(|t| start.checked_add(t));
        let mut pause = FIRST_PAUSE;
        let mut waited = false;
        loop {
            // A wait that ends now: one try that asks the lock itself, as
            // the blocking wait does, and never believes the hint another
            // process published (`Wait::Never` would: after a creator
            // process is killed, its hint says "busy" for up to a second).
            let now = Wait::Until(Some(Instant::now()));
            if let Some(t) = turn(self.wait_turn::<V>(key, o, now, waited)?)? {
                return Ok(t);
            }
            waited = true;
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Err(self.lock_timed_out(key, start)),
                Some(d) => d - now,
                None => pause,
            };
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}
