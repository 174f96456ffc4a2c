//! [`Cache::invalidated_at`]: when the file was last invalidated, so that
//! callers applying their own freshness rules (the Python binding's
//! dogpile.cache invalidation strategy) see the same invalidations every
//! process sees.

use crate::cache::{Cache, Invalidation};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl Cache {
    /// When [`invalidate(how)`](Cache::invalidate) was last called on this
    /// file, by any process (`None`: never). Entries created up to that
    /// time are hard-invalidated (misses for every read) or soft-invalidated
    /// (stale).
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-invat-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Invalidation, Options};
    /// let cache = Cache::open(dir.join("i"), Options::new().capacity(8 << 20))?;
    /// assert_eq!(cache.invalidated_at(Invalidation::Soft), None);
    /// cache.invalidate(Invalidation::Soft)?;
    /// assert!(cache.invalidated_at(Invalidation::Soft).is_some());
    /// assert_eq!(cache.invalidated_at(Invalidation::Hard), None);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn invalidated_at(&self, how: Invalidation) -> Option<SystemTime> {
        let ns = self.invalidation_word(how).load(Ordering::Acquire);
        (ns != 0).then(|| UNIX_EPOCH + Duration::from_nanos(ns))
    }
}
