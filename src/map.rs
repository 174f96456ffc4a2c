//! The shared mapping. This module and `record` are where raw pointers into
//! the file are turned into references; every such place says why it is
//! sound.
//!
//! The rule the whole crate follows: bytes that another process may write
//! are only ever touched through atomics ([`Map::atomic`]). Plain byte
//! slices ([`Map::bytes`]) are formed only over log records that are
//! published (hence immutable) and pinned, or over the header's immutable
//! part; plain writes ([`Map::write`]) go only to log space that no index
//! slot names and no reader has pinned, under the stripe's write lock.

use memmap2::MmapRaw;
use std::sync::atomic::AtomicU64;

/// A shared, writable (or read-only) mapping of the whole cache file.
pub(crate) struct Map {
    raw: MmapRaw,
    len: u64,
    writable: bool,
}

impl Map {
    /// Wraps a mapping of `len` bytes.
    pub(crate) fn new(raw: MmapRaw, len: u64, writable: bool) -> Map {
        assert_eq!(raw.len() as u64, len, "mapping length");
        assert_eq!(raw.as_ptr() as usize % 4096, 0, "mapping is page aligned");
        Map { raw, len, writable }
    }

    /// Address of the first byte (for the fork handler's remapping).
    #[cfg(target_os = "linux")]
    pub(crate) fn addr(&self) -> usize {
        self.raw.as_ptr() as usize
    }

    /// Length in bytes.
    #[cfg(target_os = "linux")]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether stores are allowed.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The atomic word at byte offset `off`.
    ///
    /// Panics if `off` is misaligned or out of bounds (offsets come from a
    /// validated [`Geometry`](crate::layout::Geometry), so that is a bug).
    #[inline]
    pub(crate) fn atomic(&self, off: u64) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off + 8 <= self.len,
            "atomic at {off} outside mapping"
        );
        // SAFETY: the range is inside the mapping (checked above) and 8-byte
        // aligned (the mapping is page aligned and `off % 8 == 0`). The
        // mapping lives as long as `self`. Every access to shared mutable
        // words in the file goes through atomics, so other threads and
        // processes mutating the same word is not a data race. A read-only
        // mapping is only ever loaded from (Relaxed, see `index` and
        // `readers`): read-only handles own no reader slot, set no visited
        // bit (`Map::writable` is checked) and take no write path.
        unsafe { &*(self.raw.as_ptr().add(off as usize) as *const AtomicU64) }
    }

    /// Asks the CPU to start loading the cache line at byte offset `off`
    /// into its caches: a hint with no effect on what any load returns,
    /// ignored outside the mapping and on targets without the instruction.
    #[inline]
    pub(crate) fn prefetch(&self, off: u64) {
        #[cfg(target_arch = "x86_64")]
        if off < self.len {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = self.raw.as_ptr().wrapping_add(off as usize) as *const i8;
            // SAFETY: a prefetch never faults and reads nothing the program
            // can observe; `p` lies inside the mapping anyway. (The
            // intrinsic is a safe function on newer Rust, hence the allow.)
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(p)
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// The eight atomic words of the 64-byte line at byte offset `off`.
    ///
    /// Panics if `off` is not 64-byte aligned or out of bounds (a bug, as
    /// for [`atomic`](Map::atomic)).
    #[inline]
    pub(crate) fn line(&self, off: u64) -> &[AtomicU64; 8] {
        assert!(
            off % 64 == 0 && off + 64 <= self.len,
            "line at {off} outside mapping"
        );
        // SAFETY: as for `atomic`: in bounds (checked above), aligned (the
        // mapping is page aligned and `off % 64 == 0`), alive as long as
        // `self`, and only ever accessed through atomics.
        unsafe { &*(self.raw.as_ptr().add(off as usize) as *const [AtomicU64; 8]) }
    }

    /// A shared byte slice over `len` bytes at `off`, or `None` when the
    /// range is outside the mapping.
    ///
    /// # Safety
    /// No thread or process may write these bytes while the returned slice
    /// is alive: they must be a published log record pinned by the caller,
    /// or the immutable part of the header.
    #[inline]
    pub(crate) unsafe fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above); immutability for the slice's
        // lifetime is the caller's obligation, stated in the contract above.
        Some(unsafe {
            std::slice::from_raw_parts(self.raw.as_ptr().add(off as usize), len as usize)
        })
    }

    /// Copies `src` into the mapping at `off`.
    ///
    /// # Safety
    /// The caller has exclusive use of the range: it holds the stripe's write
    /// lock, the range is log space at or past the stripe's head, and the
    /// segment it lies in was checked to be unpinned after it fell below the
    /// tail. No reference to these bytes exists anywhere.
    #[inline]
    pub(crate) unsafe fn write(&self, off: u64, src: &[u8]) {
        assert!(self.writable, "write to a read-only mapping");
        assert!(
            off + src.len() as u64 <= self.len,
            "write at {off} outside mapping"
        );
        // SAFETY: in bounds and writable (checked above); exclusivity is the
        // caller's obligation. `src` cannot overlap the destination because
        // the caller holds no reference into that range.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.raw.as_mut_ptr().add(off as usize),
                src.len(),
            )
        }
    }

    /// Copies `len` bytes within the mapping from `from` to `to`.
    ///
    /// # Safety
    /// As for [`Map::write`] on the destination; the source must be a
    /// published record (immutable) and the ranges must not overlap.
    pub(crate) unsafe fn copy_within(&self, from: u64, to: u64, len: u64) {
        assert!(self.writable, "write to a read-only mapping");
        assert!(
            from + len <= self.len && to + len <= self.len,
            "copy outside mapping"
        );
        assert!(from + len <= to || to + len <= from, "overlapping copy");
        // SAFETY: bounds and non-overlap checked above; the destination is
        // exclusively ours and the source immutable (caller's contract).
        unsafe {
            let base = self.raw.as_mut_ptr();
            std::ptr::copy_nonoverlapping(
                base.add(from as usize),
                base.add(to as usize),
                len as usize,
            )
        }
    }

    /// Writes dirty pages back to the file and waits (`msync(MS_SYNC)`).
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        if self.writable {
            self.raw.flush()
        } else {
            Ok(())
        }
    }
}
