//! The shared mapping, and the one place where offsets into it become
//! references ([`Map::view`]) — typed views of the tables of
//! [`layout`](crate::layout): `map.header()`, `map.stripe(s)`,
//! `map.reader(i)`, `map.pin(i, s)`, `map.bucket(s, b)`, `map.sketch(s)` — and byte slices
//! of log records (`bytes`, `write`, `copy_within`). Every such place says
//! why it is sound.
//!
//! The rule the whole crate follows: bytes that another process may write
//! are only ever touched through atomics (every field of the typed views is
//! an `AtomicU64`). Plain byte slices ([`Map::bytes`]) are formed only over
//! log records that are published (hence immutable) and pinned; plain
//! writes ([`Map::write`]) go only to log space that no index slot names
//! and no reader has pinned, under the stripe's write lock.
//!
//! A fork child re-points the mapping at a new open file description of
//! the same file ([`remap_in_child`]); the fork handler calls it.

use crate::layout::header::SharedHeader;
use crate::layout::index::Bucket;
use crate::layout::reader::{ReaderCounters, ReaderSlot};
use crate::layout::stripe::StripeEntry;
use crate::layout::{Geometry, PAGE, READER_COUNTERS, WORD};
use memmap2::MmapRaw;
use std::sync::atomic::AtomicU64;

/// A shared, writable (or read-only) mapping of the whole cache file, with
/// the validated geometry that places its tables.
pub(crate) struct Map {
    raw: MmapRaw,
    len: u64,
    geo: Geometry,
    writable: bool,
}

impl Map {
    /// Wraps a mapping of a file laid out by `geo` (validated: from
    /// [`Geometry::new`] through `plan` or `Header::decode`).
    ///
    /// Panics if the mapping is not page aligned or does not hold the
    /// tables `geo` places, which every typed view relies on.
    pub(crate) fn new(raw: MmapRaw, geo: Geometry, writable: bool) -> Map {
        let len = raw.len() as u64;
        assert_eq!(len, geo.file_size, "mapping length");
        assert_eq!(raw.as_ptr() as u64 % PAGE, 0, "mapping is page aligned");
        geo.assert_fits(len);
        Map {
            raw,
            len,
            geo,
            writable,
        }
    }

    /// The geometry placing the tables.
    #[inline]
    pub(crate) fn geo(&self) -> &Geometry {
        &self.geo
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
    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The `T` at byte offset `off`: the only place an offset becomes a
    /// reference to shared words. Callers are the typed views below, each
    /// instantiating `T` with a `#[repr(C)]` type of [`layout`] whose
    /// every field is an atomic (or an array of them), at an offset
    /// [`Geometry`] places for an index it checked.
    ///
    /// [`layout`]: crate::layout
    #[inline(always)]
    fn view<T>(&self, off: u64) -> &T {
        debug_assert!(
            off % core::mem::align_of::<T>() as u64 == 0
                && off + core::mem::size_of::<T>() as u64 <= self.len,
            "view at {off} outside mapping"
        );
        // SAFETY: in bounds: `Map::new` checked (`Geometry::assert_fits`)
        // that every table the geometry places lies inside the mapping,
        // and each caller checked its index against the table's count, so
        // `off..off + size_of::<T>()` is inside it. Aligned: the mapping is
        // page aligned and the geometry places tables and their entries at
        // multiples of their types' alignment (64 for lines, 8 for words;
        // asserted by `assert_fits`). Alive: the mapping lives as long as
        // `self`. No data race: every field of `T` is an atomic, and every
        // process accesses these bytes only through atomics. A read-only
        // mapping is only ever loaded from (Relaxed): read-only handles own
        // no reader slot, set no visited bit (`Map::writable` is checked)
        // and take no write path.
        unsafe { &*(self.raw.as_ptr().add(off as usize) as *const T) }
    }

    /// The header page.
    #[inline]
    pub(crate) fn header(&self) -> &SharedHeader {
        self.view(0)
    }

    /// Stripe `s`'s table entry.
    ///
    /// Panics if `s` is not a stripe of the file.
    #[inline]
    pub(crate) fn stripe(&self, s: u32) -> &StripeEntry {
        assert!(s < self.geo.stripes, "stripe {s} out of range");
        self.view(self.geo.stripe_off + s as u64 * crate::layout::STRIPE_ENTRY)
    }

    /// Stripe `s`'s mutex line (format.md §2.2a).
    ///
    /// Panics if `s` is not a stripe of the file.
    #[inline]
    pub(crate) fn stripe_mutex(&self, s: u32) -> &crate::layout::mutex::StripeMutex {
        assert!(s < self.geo.stripes, "stripe {s} out of range");
        self.view(self.geo.mutex_off + s as u64 * crate::layout::STRIPE_MUTEX)
    }

    /// Reader slot `i`'s counter line.
    ///
    /// Panics if `i` is not a reader slot of the file.
    #[inline]
    pub(crate) fn counters(&self, i: u32) -> &ReaderCounters {
        assert!(i < self.geo.reader_slots, "reader slot {i} out of range");
        self.view(self.geo.reader_slot(i))
    }

    /// Reader slot `i`'s pin word for ring id `s` (format.md §2.3: a
    /// stripe's main ring is its number, its probation ring `stripes` + it).
    ///
    /// Panics if `i` or `s` is out of range.
    #[inline]
    pub(crate) fn pin(&self, i: u32, s: u32) -> &AtomicU64 {
        assert!(
            i < self.geo.reader_slots && s < 2 * self.geo.stripes,
            "pin word {i}/{s} out of range"
        );
        self.view(self.geo.pin_word(i, s))
    }

    /// Reader slot `i`: its counters and its pin words.
    ///
    /// Panics if `i` is not a reader slot of the file.
    pub(crate) fn reader(&self, i: u32) -> ReaderSlot<'_> {
        let counters = self.counters(i);
        let off = self.geo.reader_slot(i) + READER_COUNTERS;
        debug_assert!(off % WORD == 0);
        // SAFETY: as for `view`: `assert_fits` checked that a reader slot
        // has room for two words per stripe after its counter line, so the
        // `2 * stripes` consecutive words from `off` (8-aligned: the slot is
        // 64-aligned, the counter line 128 bytes) are inside the mapping,
        // alive as long as `self`, and only ever accessed atomically.
        let pins = unsafe {
            std::slice::from_raw_parts(
                self.raw.as_ptr().add(off as usize) as *const AtomicU64,
                2 * self.geo.stripes as usize,
            )
        };
        ReaderSlot { counters, pins }
    }

    /// The tail of ring id `r` (format.md §2.3): the main ring's `tail`
    /// of stripe `r`, or the probation ring's `prob_tail` of stripe
    /// `r - stripes`.
    ///
    /// Panics if `r` is out of range.
    #[inline]
    pub(crate) fn ring_tail(&self, r: u32) -> &AtomicU64 {
        let stripes = self.geo.stripes;
        if r < stripes {
            &self.stripe(r).tail
        } else {
            &self.stripe(r - stripes).prob_tail
        }
    }

    /// Bucket `b` of stripe `s`.
    ///
    /// Panics if `s` or `b` is out of range.
    #[inline]
    pub(crate) fn bucket(&self, s: u32, b: u32) -> &Bucket {
        assert!(
            s < self.geo.stripes && b < self.geo.buckets,
            "bucket {s}/{b} out of range"
        );
        self.view(self.geo.bucket(s, b))
    }

    /// Stripe `s`'s admission sketch words (format.md §2.4a).
    ///
    /// Panics if `s` is not a stripe of the file.
    pub(crate) fn sketch(&self, s: u32) -> &[AtomicU64] {
        assert!(s < self.geo.stripes, "stripe {s} out of range");
        let off = self.geo.sketch(s);
        debug_assert!(off % crate::layout::LINE == 0);
        // SAFETY: as for `view`: `assert_fits` checked that the sketch
        // region (`stripes` runs of `sketch_bytes`, line-aligned, a whole
        // number of lines) lies inside the mapping before the data region,
        // so the `sketch_bytes / 8` words from `off` (8-aligned) are
        // inside it, alive as long as `self`, and only ever accessed
        // atomically (stores only by the stripe's lock holder).
        unsafe {
            std::slice::from_raw_parts(
                self.raw.as_ptr().add(off as usize) as *const AtomicU64,
                (self.geo.sketch_bytes / WORD) as usize,
            )
        }
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

/// Fork child only: maps the file open as `fd` over the mapping at `addr`
/// (`len` bytes), with the same protection, so the child's mapping no
/// longer references the parent's open file description. Returns whether
/// it did. Async-signal-safe (one `mmap`).
///
/// # Safety
/// `addr` and `len` must be those of a live [`Map`] of the file `fd` is
/// open on ([`Map::addr`], [`Map::len`]), `writable` its protection.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn remap_in_child(addr: usize, len: usize, fd: i32, writable: bool) -> bool {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    // SAFETY: the new mapping replaces the old one at the same address and
    // length, with the same protection, over the same file (the caller's
    // contract), so every pointer into it stays valid and sees the same
    // bytes.
    let m = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd,
            0,
        )
    };
    m != libc::MAP_FAILED
}
