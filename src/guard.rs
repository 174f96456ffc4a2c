//! Read guards: a reference into the mapping plus the pin that keeps it
//! valid — [`Guard`], tied to the reading thread, and [`OwnedGuard`], its
//! detached form, which any thread may hold and drop.

use crate::error::Result;
use crate::layout::RECORD_ALIGN;
use crate::readers::{DetachedPin, Pin};
use std::fmt;
use std::ops::Deref;

pub use crate::read::EntryMeta;

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
    /// The record's whole value (`value` points into it: an rkyv root is
    /// not at its start).
    pub(crate) bytes: &'c [u8],
    pub(crate) meta: EntryMeta,
    pub(crate) _pin: Pin<'c>,
}

impl<V: ?Sized> Guard<'_, V> {
    /// Creation time, expiry and staleness of the entry.
    pub fn meta(&self) -> EntryMeta {
        self.meta
    }
}

impl<V: ?Sized + Detach> Guard<'_, V> {
    /// Turns this guard into an [`OwnedGuard`]: the same zero-copy value,
    /// kept from reuse by a pin of the *process* rather than of the reading
    /// thread, so it may be sent to, kept by and dropped on any thread, and
    /// outlive the `Cache` handle it came from (it holds the file open).
    /// For language bindings (a Python `memoryview`), async tasks and
    /// caches of guards.
    ///
    /// The process pin goes into one reader slot per process, claimed on
    /// first use (so this can fail with [`Error::ReadersFull`](crate::Error::ReadersFull)).
    /// Pinning and unpinning it take a mutex: a detached guard costs more
    /// than a guard, still no system call after the first. In the rare case
    /// where eviction has already passed the record while this guard held
    /// it (its bytes are safe only as long as this guard lives), the value
    /// is copied instead, keeping its 16-byte alignment.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("slotcache-doc-detach-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use slotcache::{Cache, Options, OwnedGuard, Raw};
    /// let cache = Cache::open(dir.join("c"), Options::new().capacity(8 << 20))?;
    /// cache.set("k", &Raw(b"shared bytes"))?;
    /// let owned: OwnedGuard<[u8]> = cache.get::<Raw>("k")?.expect("stored").detach()?;
    /// let len = std::thread::spawn(move || owned.len()).join().unwrap();
    /// assert_eq!(len, 12);
    /// # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), slotcache::Error>(())
    /// ```
    pub fn detach(self) -> Result<OwnedGuard<V>> {
        let hold = match self._pin.detach()? {
            Some(pin) => Hold::Pinned(pin),
            None => {
                let mut copy = rkyv::util::AlignedVec::<{ RECORD_ALIGN as usize }>::with_capacity(
                    self.bytes.len(),
                );
                copy.extend_from_slice(self.bytes);
                Hold::Copied(copy)
            }
        };
        let value: *const V = self.value;
        let value = match &hold {
            Hold::Pinned(_) => value,
            Hold::Copied(copy) => {
                let off = value as *const u8 as usize - self.bytes.as_ptr() as usize;
                V::rebase(value, copy.as_ptr().wrapping_add(off))
            }
        };
        // `self` (and with it the thread's pin) is dropped only now, after
        // the process pin was published or the bytes copied.
        Ok(OwnedGuard {
            value,
            meta: self.meta,
            _hold: hold,
        })
    }
}

/// Values a [`Guard`] can be detached with: every sized type (an archived
/// `T`) and `[u8]` (raw bytes). Sealed.
pub trait Detach: detach_sealed::Sealed {
    /// `ptr`'s value at address `at` (same metadata).
    #[doc(hidden)]
    fn rebase(ptr: *const Self, at: *const u8) -> *const Self;
}

mod detach_sealed {
    pub trait Sealed {}
    impl<T> Sealed for T {}
    impl Sealed for [u8] {}
}

impl<T> Detach for T {
    fn rebase(_: *const T, at: *const u8) -> *const T {
        at.cast()
    }
}

impl Detach for [u8] {
    fn rebase(ptr: *const [u8], at: *const u8) -> *const [u8] {
        std::ptr::slice_from_raw_parts(at, ptr.len())
    }
}

/// What keeps an [`OwnedGuard`]'s value valid.
enum Hold {
    /// A pin of the process on the record in the mapping (held for its
    /// `Drop`, which unpins).
    #[allow(dead_code)]
    Pinned(DetachedPin),
    /// A copy (16-byte aligned), made when the record could no longer be
    /// pinned safely.
    Copied(rkyv::util::AlignedVec<{ RECORD_ALIGN as usize }>),
}

/// A detached [`Guard`] (see [`Guard::detach`]): derefs to the value in the
/// shared mapping, keeps the file open and the bytes from reuse until it
/// is dropped — on any thread. `Send` and `Sync` when the value is `Sync`.
///
/// After `fork()`, a child's copy of an `OwnedGuard` still reads the
/// mapping but no longer protects it (the pin is the parent's): drop
/// inherited guards in the child, as for [`Guard`].
pub struct OwnedGuard<V: ?Sized> {
    /// Points into the mapping (kept alive by `_hold`'s file handle and
    /// protected by its pin) or into `_hold`'s copy.
    value: *const V,
    meta: EntryMeta,
    _hold: Hold,
}

// SAFETY: the value an `OwnedGuard` points to is immutable for as long as
// the guard lives (a published record protected by a process pin, which
// writers of every process respect, or a private copy), the mapping and
// the copy live as long as the guard, and dropping it only touches
// mutex-protected state of the process (`ProcessPins`, `ro_pins`), so it
// may move to another thread whenever `&V` may be shared.
unsafe impl<V: ?Sized + Sync> Send for OwnedGuard<V> {}
// SAFETY: `&OwnedGuard` only hands out `&V` and `EntryMeta` (Copy).
unsafe impl<V: ?Sized + Sync> Sync for OwnedGuard<V> {}

impl<V: ?Sized> OwnedGuard<V> {
    /// Creation time, expiry and staleness of the entry.
    pub fn meta(&self) -> EntryMeta {
        self.meta
    }
}

impl<V: ?Sized> Deref for OwnedGuard<V> {
    type Target = V;
    #[inline]
    fn deref(&self) -> &V {
        // SAFETY: `value` points to an initialised `V` that stays valid and
        // unchanged while `self` lives (see the `Send` impl).
        unsafe { &*self.value }
    }
}

impl<V: ?Sized + fmt::Debug> fmt::Debug for OwnedGuard<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedGuard")
            .field("value", &&**self)
            .field("meta", &self.meta)
            .finish()
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
