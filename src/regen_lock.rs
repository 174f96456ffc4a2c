//! Regeneration locks as a public API: [`Cache::regen_try_lock`],
//! [`Cache::regen_lock`], [`Cache::regen_is_locked`] and [`RegenGuard`].
//!
//! These are the locks `get_or_create` uses (format.md §5.9): per key
//! inside a process, the byte-range lock `REGEN + hash % regen_stripes`
//! across processes. They are exposed for callers that run the dogpile
//! algorithm themselves (the Python binding's dogpile.cache backend hands
//! them to `dogpile.cache` as its mutexes).
//!
//! Unlike the locks `get_or_create` takes, a [`RegenGuard`] belongs to no
//! thread: it is `Send + Sync`, any thread may release it, and a thread
//! that asks again for a key it holds waits (or, trying, fails) like any
//! other caller, as with a `threading.Lock`. A killed holder's lock is
//! released by the kernel.
//!
//! **Several locks at once.** Byte-range locks have no deadlock detection
//! (fcntl(2)): two callers that each hold one regeneration lock and wait
//! for the other's deadlock forever. A caller that holds a regeneration
//! lock and waits for another must either wait in the global order
//! `(regen_stripe, key)` ([`RegenGuard::order_key`]) or bound its wait;
//! format.md §5.9 gives the rule the Python binding follows.

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::index::KeyHash;
use crate::regen::{self, Acquired, Wait};
use std::time::Duration;

/// A held regeneration lock (from [`Cache::regen_try_lock`] or
/// [`Cache::regen_lock`]). Released by [`release`](RegenGuard::release)
/// or on drop, from any thread. In a fork child, a guard inherited from
/// the parent releases nothing (the lock is the parent's).
pub struct RegenGuard {
    _lock: regen::RegenLock,
    stripe: u32,
    key: Vec<u8>,
}

impl std::fmt::Debug for RegenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegenGuard")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("regen_stripe", &self.stripe)
            .finish()
    }
}

impl RegenGuard {
    /// The regeneration stripe (`hash % regen_stripes`).
    pub fn regen_stripe(&self) -> u32 {
        self.stripe
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The position of this lock in the global acquisition order:
    /// `(regen_stripe, key)`. Waiting only for locks above every lock one
    /// holds cannot deadlock.
    pub fn order_key(&self) -> (u32, &[u8]) {
        (self.stripe, &self.key)
    }

    /// Releases the lock (dropping the guard does the same).
    pub fn release(self) {
        drop(self);
    }
}

impl Cache {
    fn regen_acquire(&self, key: &[u8], wait: Wait) -> Result<Option<RegenGuard>> {
        self.writable("regen_lock")?;
        let kh = KeyHash::new(key, self.seed(), self.geo());
        let stripe = self.key_placement(key).regen_stripe;
        match regen::acquire(self.shared_arc(), key, kh.hash, wait)? {
            Acquired::Held(lock, _) => {
                // Nobody owns it: any thread may release it, and the
                // acquiring thread asking again waits like anyone else.
                lock.release_owner();
                Ok(Some(RegenGuard {
                    _lock: lock,
                    stripe,
                    key: key.to_vec(),
                }))
            }
            Acquired::Busy => Ok(None),
        }
    }

    /// Takes `key`'s regeneration lock if it is free, without waiting.
    /// `None` when another caller (thread or process) holds it, including
    /// a `get_or_create` of this thread.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-regen-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options};
    /// use std::time::Duration;
    /// let cache = Cache::open(dir.join("r"), Options::new().capacity(8 << 20))?;
    /// let guard = cache.regen_try_lock("report")?.expect("free");
    /// assert!(cache.regen_try_lock("report")?.is_none(), "held, even for this thread");
    /// assert!(cache.regen_is_locked("report")?);
    /// // Released from another thread, as dogpile's async creation runner does.
    /// std::thread::spawn(move || guard.release()).join().unwrap();
    /// assert!(cache.regen_lock("report", Some(Duration::from_millis(10)))?.is_some());
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn regen_try_lock(&self, key: impl AsRef<[u8]>) -> Result<Option<RegenGuard>> {
        let key = key.as_ref();
        Self::check_key_len(key)?;
        match self.regen_acquire(key, Wait::Never) {
            Err(Error::Reentrant { .. }) => Ok(None),
            other => other,
        }
    }

    /// Takes `key`'s regeneration lock, waiting up to `timeout` (`None`:
    /// forever; wait in short slices to stay interruptible). `None` when
    /// the timeout passed. [`Error::Reentrant`] when this thread holds the
    /// key through `get_or_create` (waiting would wait for itself).
    pub fn regen_lock(
        &self,
        key: impl AsRef<[u8]>,
        timeout: Option<Duration>,
    ) -> Result<Option<RegenGuard>> {
        let key = key.as_ref();
        Self::check_key_len(key)?;
        let deadline = timeout.and_then(crate::options::deadline_after);
        self.regen_acquire(key, Wait::Until(deadline))
    }

    /// Whether `key`'s regeneration lock is held, without taking it: by a
    /// caller in this process (per key), or by another process (per
    /// regeneration stripe: another process regenerating any key of the
    /// stripe counts). A snapshot: it may change right after.
    pub fn regen_is_locked(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        Self::check_key_len(key)?;
        let kh = KeyHash::new(key, self.seed(), self.geo());
        regen::is_locked(self.shared_arc(), key, kh.hash)
    }

    fn check_key_len(key: &[u8]) -> Result<()> {
        if key.len() > crate::MAX_KEY_LEN {
            return Err(Error::KeyTooLarge {
                max: crate::MAX_KEY_LEN,
                found: key.len(),
            });
        }
        Ok(())
    }
}
