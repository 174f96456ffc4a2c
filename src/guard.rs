//! Read guards: a reference into the mapping plus the pin that keeps it
//! valid.

use crate::readers::Pin;
use std::fmt;
use std::ops::Deref;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Metadata of a stored entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub(crate) created: u64,
    pub(crate) expires: u64,
    /// The clock when the entry was read; 0 when the lookup did not read it
    /// (entries without a TTL), and [`age`](EntryMeta::age) reads it then.
    pub(crate) now: u64,
    pub(crate) soft: u64,
    /// Older than the `expiration` age of the `get_or_create` call that
    /// served it (which then treated it as stale).
    pub(crate) aged: bool,
}

impl EntryMeta {
    /// When the entry was written (wall clock of the writing process).
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.created)
    }

    /// When the entry expires, if it has a TTL.
    pub fn expires(&self) -> Option<SystemTime> {
        (self.expires != 0).then(|| UNIX_EPOCH + Duration::from_nanos(self.expires))
    }

    /// Whether the TTL had run out when the entry was read.
    pub fn is_expired(&self) -> bool {
        self.expires != 0 && self.now >= self.expires
    }

    /// Whether the entry was stale when read: expired, soft-invalidated,
    /// or (for a value served by `get_or_create`) older than that call's
    /// `expiration` age. A stale value is still usable while a fresh one
    /// is made.
    pub fn is_stale(&self) -> bool {
        self.is_expired() || self.created <= self.soft || self.aged
    }

    /// Age of the entry: when it was read for an entry with a TTL, now for
    /// one without (whose lookup reads no clock); zero if the clock went
    /// backwards.
    pub fn age(&self) -> Duration {
        let now = if self.now != 0 {
            self.now
        } else {
            crate::shared::now_ns()
        };
        Duration::from_nanos(now.saturating_sub(self.created))
    }
}

/// A value read from the cache, borrowed straight from the shared mapping.
///
/// `Guard<'_, V::View>` (from [`Cache::get::<V>`](crate::Cache::get))
/// derefs to the value's [`View`](crate::Value::View): `T::Archived` for a
/// typed value, `[u8]` for [`Raw`](crate::Raw) bytes. While the
/// guard lives, no process reuses the bytes it points to, so keep guards
/// short-lived: a writer that needs the space waits at most
/// [`Options::pin_wait`](crate::Options::pin_wait) and then fails with
/// [`Error::Pinned`](crate::Error::Pinned).
///
/// A guard is tied to the thread that read it (it is neither `Send` nor
/// `Sync`): its pin lives in that thread's reader slot.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("slotcache-doc-guard-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use slotcache::{Cache, Options, Raw};
/// let cache = Cache::open(dir.join("guard.cache"), Options::new().capacity(8 << 20))?;
/// cache.set("k", &Raw(b"hello"))?;
/// let guard = cache.get::<Raw>("k")?.expect("just written");
/// assert_eq!(&*guard, b"hello");
/// assert!(!guard.meta().is_expired());
/// # drop(guard); drop(cache); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), slotcache::Error>(())
/// ```
pub struct Guard<'c, V: ?Sized> {
    pub(crate) value: &'c V,
    pub(crate) meta: EntryMeta,
    pub(crate) _pin: Pin<'c>,
}

impl<V: ?Sized> Guard<'_, V> {
    /// Creation time, expiry and staleness of the entry.
    pub fn meta(&self) -> EntryMeta {
        self.meta
    }
}

impl<V: ?Sized> Deref for Guard<'_, V> {
    type Target = V;
    #[inline]
    fn deref(&self) -> &V {
        self.value
    }
}

impl<V: ?Sized + fmt::Debug> fmt::Debug for Guard<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("value", &self.value)
            .field("meta", &self.meta)
            .finish()
    }
}
