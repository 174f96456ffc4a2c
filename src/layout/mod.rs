//! The byte layout of a slotcache file: every offset, size and constant
//! that `format.md` describes lives here and nowhere else, one submodule
//! per table of `format.md`. Each table is a `#[repr(C)]` type whose field
//! offsets are asserted at compile time against the numbers `format.md`
//! gives ([`header::HeaderFields`] and [`header::SharedHeader`],
//! [`stripe::StripeEntry`], [`reader::ReaderCounters`], [`index::Bucket`],
//! [`record::RecordHeader`]), or a small codec of one word (the index slot
//! word in [`index`], the regeneration hint in [`regen_hint`]); lock
//! offsets are in [`locks`].
//!
//! A file is, in order: the header (one 4 KiB page), the stripe table, the
//! stripe mutex table ([`mutex::StripeMutex`]), the reader table, the index, the admission
//! sketch ([`sketch::SketchLine`]) and the data region. [`Geometry::new`] computes
//! where each one starts from the five numbers that define a file; it
//! serves both [`Geometry::plan`] (a new file) and [`Header::decode`]
//! (an existing one, which compares every stored offset with it). The
//! mapping hands out typed views of these tables (`crate::map`).

pub mod crc32c;
pub mod header;
pub mod index;
pub mod locks;
pub mod mutex;
pub mod reader;
pub mod record;
pub mod regen_hint;
pub mod sketch;
pub mod stripe;

pub use header::Header;
pub use index::{BUCKET_SIZE, BUCKET_SLOTS};
pub use mutex::STRIPE_MUTEX;
pub use reader::READER_COUNTERS;
pub use record::kind;
pub use stripe::STRIPE_ENTRY;

use crate::error::{Error, Result};

/// First eight bytes of a ready slotcache file. Written last at creation.
pub const MAGIC: [u8; 8] = *b"SLOTCACH";
/// First eight bytes while a creator is still initialising the file.
pub const MAGIC_INIT: [u8; 8] = *b"SLOTINIT";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 3;
/// Size of the header: one page.
pub const HEADER_SIZE: u64 = 4096;
/// Alignment of the index and the data region (a page).
pub const PAGE: u64 = 4096;
/// Cache-line size assumed for padding shared fields.
pub const LINE: u64 = 64;
/// Size of one atomic word of the file.
pub const WORD: u64 = 8;
/// Alignment of records in the log (and of the values inside them: rkyv
/// needs the archived root aligned).
pub const RECORD_ALIGN: u64 = 16;
/// Longest key slotcache stores, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest stripe count.
pub const MAX_STRIPES: u32 = 4096;
/// Largest reader-slot count.
pub const MAX_READER_SLOTS: u32 = 65_536;
/// Largest regeneration-stripe count.
pub const MAX_REGEN_STRIPES: u32 = 1 << 20;
/// Smallest segment size.
pub const MIN_SEGMENT: u64 = 4096;
/// Largest segment size (keeps every size computation far from overflow:
/// stripes x segments x segment size < 2^62).
pub const MAX_SEGMENT: u64 = 1 << 40;
/// Smallest and largest number of segments per stripe.
pub const MIN_SEGMENTS: u32 = 4;
/// See [`MIN_SEGMENTS`].
pub const MAX_SEGMENTS: u32 = 1024;
/// Largest file a cache may be created with (256 TiB): far beyond any
/// real cache, and small enough that every size and the default index
/// (one entry per 256 bytes) stay in range.
pub const MAX_CAPACITY: u64 = 1 << 48;
/// Largest `max_entries` (2^40).
pub const MAX_ENTRIES: u64 = 1 << 40;
/// Largest log position (exclusive) an index slot can name: 2^53 bytes
/// per ring.
pub const MAX_POSITION: u64 = (1 << 53) - RECORD_ALIGN;
/// Segments of a stripe's probation ring when the stripe has at least 8
/// (format.md §2.5); 4 below that.
pub const PROB_SEGMENTS: u32 = 8;

/// One of a stripe's two log rings (format.md §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ring {
    /// The main ring: entries that were read in probation, or whose ghost
    /// was found, or too large for a probation segment.
    Main = 0,
    /// The probation ring: where new keys enter.
    Probation = 1,
}

impl Ring {
    /// The ring whose slot-word ring bit is `bit`.
    #[inline]
    pub fn from_bit(bit: bool) -> Ring {
        if bit {
            Ring::Probation
        } else {
            Ring::Main
        }
    }

    /// The pin/ring id of this ring of stripe `s` in a file of `stripes`
    /// stripes: `s` for main rings, `stripes + s` for probation rings
    /// (format.md §2.3, §2.5).
    #[inline]
    pub fn id(self, s: u32, stripes: u32) -> u32 {
        s + self as u32 * stripes
    }
}

/// Where one ring of a stripe lies and how its positions map onto it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeo {
    /// Segments in the ring.
    pub segments: u32,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Offset of the ring within its stripe's data.
    pub base: u64,
    /// Division by `segment_size`, by multiplication.
    pub seg_div: Divisor,
    /// Division by the ring's size, by multiplication.
    pub ring_div: Divisor,
}

impl RingGeo {
    fn new(segments: u32, segment_size: u64, base: u64) -> RingGeo {
        RingGeo {
            segments,
            segment_size,
            base,
            seg_div: Divisor::new(segment_size),
            ring_div: Divisor::new(segments as u64 * segment_size),
        }
    }

    /// Bytes of the ring.
    #[inline]
    pub fn size(&self) -> u64 {
        self.segments as u64 * self.segment_size
    }
}

/// How a stripe's `segments` segments of `segment_size` bytes are shared
/// between its rings (format.md §2.5): `(main segments, probation
/// segments, probation segment size)`. The probation ring takes
/// `max(1, round(segments / 8))` of the stripe's segments (about 12%, so
/// that probation holds about a tenth of the entries), cut into 8 segments
/// (4 when the stripe has fewer than 8: never more than `segments`, so
/// read-only pin locks stay distinct); main keeps the rest, at least 3.
pub fn probation_shape(segments: u32, segment_size: u64) -> (u32, u32, u64) {
    let taken = ((segments + 4) / 8).max(1);
    let n = if segments >= PROB_SEGMENTS {
        PROB_SEGMENTS
    } else {
        4
    };
    (segments - taken, n, taken as u64 * segment_size / n as u64)
}

/// Rounds `x` up to a multiple of `a` (a power of two).
pub const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// Where everything is in one file. Derived from the header; never stored
/// as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Total file size.
    pub file_size: u64,
    /// Lock stripes (and index and log partitions).
    pub stripes: u32,
    /// Segments in each stripe's log ring.
    pub segments: u32,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Index buckets per stripe.
    pub buckets: u32,
    /// Slots in the reader table.
    pub reader_slots: u32,
    /// Bytes per reader slot.
    pub reader_slot_size: u64,
    /// Offset of the stripe table.
    pub stripe_off: u64,
    /// Offset of the stripe mutex table (not stored: follows the stripe
    /// table).
    pub mutex_off: u64,
    /// Offset of the reader table.
    pub reader_off: u64,
    /// Offset of the index.
    pub index_off: u64,
    /// Offset of the admission sketch (not stored: follows the index).
    pub sketch_off: u64,
    /// Bytes of one stripe's sketch.
    pub sketch_bytes: u64,
    /// Offset of the data region.
    pub data_off: u64,
    /// Division by `segment_size`, by multiplication.
    pub seg_div: Divisor,
    /// The main ring: the stripe's first segments.
    pub main: RingGeo,
    /// The probation ring, after the main ring in each stripe's data.
    pub prob: RingGeo,
}

/// Exact division of a `u64` below 2^63 by a divisor fixed when the file is
/// opened, with two multiplications and a compare instead of a 64-bit
/// `div`, which is slow on common x86 cores (figures: `BENCHMARKS.md`,
/// "Figures the source refers to"); the read path needs two per lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Divisor {
    d: u64,
    /// `floor((2^64 − 1) / d)`.
    m: u64,
}

impl Divisor {
    /// Division by `d` (> 0).
    pub fn new(d: u64) -> Divisor {
        assert!(d > 0, "division by zero");
        Divisor { d, m: u64::MAX / d }
    }

    /// `(x / d, x % d)` for `x < 2^63`. The estimate `x·m / 2^64` is at most
    /// one below the true quotient there, and one compare corrects it.
    #[inline]
    pub fn div_rem(self, x: u64) -> (u64, u64) {
        debug_assert!(x < 1 << 63);
        let mut q = ((x as u128 * self.m as u128) >> 64) as u64;
        let mut r = x - q * self.d;
        if r >= self.d {
            q += 1;
            r -= self.d;
        }
        (q, r)
    }

    /// `x % d` for `x < 2^63`.
    #[inline]
    pub fn rem(self, x: u64) -> u64 {
        self.div_rem(x).1
    }
}

impl Geometry {
    /// The layout of a file with these five numbers: the one formula of
    /// format.md §2.1, used to plan a new file and to check an existing
    /// file's stored offsets. The numbers must be in their ranges
    /// (`segment_size >= MIN_SEGMENT`), as [`plan`](Self::plan) and
    /// [`Header::decode`] ensure before calling it.
    pub fn new(
        stripes: u32,
        segments: u32,
        segment_size: u64,
        buckets: u32,
        reader_slots: u32,
    ) -> Geometry {
        let stripe_off = HEADER_SIZE;
        let mutex_off = align_up(stripe_off + stripes as u64 * STRIPE_ENTRY, LINE);
        let reader_off = mutex_off + stripes as u64 * STRIPE_MUTEX;
        // Two pin words per stripe: one per ring (format.md §2.3).
        let reader_slot_size = READER_COUNTERS + align_up(2 * stripes as u64 * WORD, LINE);
        let index_off = align_up(reader_off + reader_slots as u64 * reader_slot_size, PAGE);
        // The index is whole lines, so the sketch that follows it is
        // line-aligned (format.md §2.4a).
        let sketch_off = index_off + stripes as u64 * buckets as u64 * BUCKET_SIZE;
        let sketch_bytes = sketch::sketch_bytes(buckets);
        let data_off = align_up(sketch_off + stripes as u64 * sketch_bytes, PAGE);
        let ring = segments as u64 * segment_size;
        let (main_segments, prob_segments, prob_segment_size) =
            probation_shape(segments, segment_size);
        let main = RingGeo::new(main_segments, segment_size, 0);
        let prob = RingGeo::new(prob_segments, prob_segment_size, main.size());
        Geometry {
            file_size: data_off + stripes as u64 * ring,
            stripes,
            segments,
            segment_size,
            buckets,
            reader_slots,
            reader_slot_size,
            stripe_off,
            mutex_off,
            reader_off,
            index_off,
            sketch_off,
            sketch_bytes,
            data_off,
            seg_div: Divisor::new(segment_size),
            main,
            prob,
        }
    }

    /// Lays out a new file. `entries` is the number of entries the index
    /// should hold (it gets two slots per entry); the data region takes what
    /// is left of `capacity`.
    pub fn plan(
        capacity: u64,
        stripes: u32,
        segments: u32,
        entries: u64,
        reader_slots: u32,
    ) -> Result<Geometry> {
        let slots = entries.saturating_mul(2).max(BUCKET_SLOTS as u64);
        let buckets = slots
            .div_ceil(BUCKET_SLOTS as u64 * stripes as u64)
            .clamp(1, u32::MAX as u64) as u32;
        // Everything before the data region is independent of the
        // segment size: lay it out with the smallest one first.
        let smallest = Geometry::new(stripes, segments, MIN_SEGMENT, buckets, reader_slots);
        let data_off = smallest.data_off;
        let too_small = |need: u64| {
            Error::InvalidOptions {
            option: "capacity",
            expected: format!(
                "at least {need} bytes for {stripes} stripes x {segments} segments of {MIN_SEGMENT} bytes, \
                 {entries} entries and {reader_slots} reader slots"
            ),
            found: capacity.to_string(),
        }
        };
        if capacity < smallest.file_size {
            return Err(too_small(smallest.file_size));
        }
        let per_segment = (capacity - data_off) / (stripes as u64 * segments as u64);
        let segment_size = (per_segment & !(MIN_SEGMENT - 1)).min(MAX_SEGMENT);
        Ok(Geometry::new(
            stripes,
            segments,
            segment_size,
            buckets,
            reader_slots,
        ))
    }

    /// Bytes of one stripe's data: its `segments` segments, shared by its
    /// main and probation rings.
    pub fn ring_size(&self) -> u64 {
        self.segments as u64 * self.segment_size
    }

    /// The geometry of ring `r`.
    #[inline]
    pub fn ring(&self, r: Ring) -> &RingGeo {
        match r {
            Ring::Main => &self.main,
            Ring::Probation => &self.prob,
        }
    }

    /// Offset of reader slot `i`.
    pub fn reader_slot(&self, i: u32) -> u64 {
        self.reader_off + i as u64 * self.reader_slot_size
    }

    /// Offset of reader slot `i`'s pin word for ring id `s` (a stripe's
    /// main ring is its number, its probation ring `stripes` + it).
    pub fn pin_word(&self, i: u32, s: u32) -> u64 {
        self.reader_slot(i) + READER_COUNTERS + s as u64 * WORD
    }

    /// Offset of bucket `b` of stripe `s`.
    pub fn bucket(&self, s: u32, b: u32) -> u64 {
        self.index_off + (s as u64 * self.buckets as u64 + b as u64) * BUCKET_SIZE
    }

    /// Offset of stripe `s`'s admission sketch.
    pub fn sketch(&self, s: u32) -> u64 {
        self.sketch_off + s as u64 * self.sketch_bytes
    }

    /// Offset in the file of position `pos` of ring `r` of stripe `s`.
    #[inline]
    pub fn ring_data(&self, s: u32, r: Ring, pos: u64) -> u64 {
        let g = self.ring(r);
        self.data_off + s as u64 * self.ring_size() + g.base + g.ring_div.rem(pos)
    }

    /// Largest value that fits in one record with a key of `key_len` bytes
    /// (0 for a key longer than [`MAX_KEY_LEN`], which cannot be stored).
    pub fn max_value(&self, key_len: usize) -> usize {
        if key_len > MAX_KEY_LEN {
            return 0;
        }
        let room = self.segment_size - record::value_offset(key_len);
        room.min(u32::MAX as u64) as usize
    }

    /// Panics unless the tables lie in order, aligned, inside `len` bytes:
    /// what the map relies on to hand out typed views without a bounds
    /// check per field. True of every geometry [`new`](Self::new) builds
    /// for numbers in range.
    pub fn assert_fits(&self, len: u64) {
        let stripes = self.stripes as u64;
        assert!(self.stripe_off >= HEADER_SIZE && self.stripe_off % LINE == 0);
        assert!(self.stripe_off + stripes * STRIPE_ENTRY <= self.mutex_off);
        assert!(self.mutex_off % LINE == 0);
        assert!(self.mutex_off + stripes * STRIPE_MUTEX <= self.reader_off);
        assert!(self.reader_off % LINE == 0 && self.reader_slot_size % LINE == 0);
        assert!(self.reader_slot_size >= READER_COUNTERS + 2 * stripes * WORD);
        assert!(
            self.reader_off + self.reader_slots as u64 * self.reader_slot_size <= self.index_off
        );
        assert!(self.index_off % LINE == 0);
        assert!(self.index_off + stripes * self.buckets as u64 * BUCKET_SIZE <= self.sketch_off);
        assert!(self.sketch_off % LINE == 0 && self.sketch_bytes % LINE == 0);
        assert!(self.sketch_bytes == sketch::sketch_bytes(self.buckets));
        assert!(self.sketch_off + stripes * self.sketch_bytes <= self.data_off);
        assert!(self.data_off + stripes * self.ring_size() <= self.file_size);
        assert!(self.main.base == 0 && self.prob.base == self.main.size());
        assert!(self.main.size() + self.prob.size() == self.ring_size());
        assert!(self.prob.segments <= self.segments && self.main.segments >= 3);
        assert!(self.file_size <= len, "the mapping holds the file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    fn encoded(geo: &Geometry) -> Vec<u8> {
        let h = Header {
            geo: *geo,
            seed: 7,
            rkyv_flags: 0x15,
            created: 1,
            default_ttl: 0,
            regen_stripes: 64,
            lock: mutex::LockWord::BYTE_RANGE,
        };
        h.encode(MAGIC)
    }

    #[test]
    fn divisor_matches_hardware_division() {
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        for d in [
            1u64,
            2,
            3,
            7,
            4096,
            364_544,
            5_832_704,
            (1 << 40) + 17,
            u32::MAX as u64,
        ] {
            let div = Divisor::new(d);
            for edge in [
                0,
                1,
                d - 1,
                d,
                d + 1,
                2 * d - 1,
                (1 << 63) - 1,
                (1 << 63) - d,
            ] {
                assert_eq!(div.div_rem(edge), (edge / d, edge % d), "{edge} / {d}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = x >> 1;
                assert_eq!(div.div_rem(v), (v / d, v % d), "{v} / {d}");
            }
        }
    }

    #[test]
    fn plan_fits_capacity_and_aligns_regions() {
        let g = Geometry::plan(64 << 20, 8, 16, 100_000, 64).unwrap();
        assert!(g.file_size <= 64 << 20);
        assert_eq!(g.index_off % 4096, 0);
        assert_eq!(g.data_off % 4096, 0);
        assert_eq!(g.segment_size % MIN_SEGMENT, 0);
        assert!(g.buckets as u64 * 8 * 8 >= 200_000);
        assert_eq!(g.mutex_off, g.stripe_off + 8 * STRIPE_ENTRY);
        assert_eq!(g.reader_off, g.mutex_off + 8 * STRIPE_MUTEX);
        assert!(g.index_off >= g.reader_off + 64 * g.reader_slot_size);
        // The sketch follows the index, about two 4-bit counters per entry.
        assert_eq!(g.sketch_off, g.index_off + 8 * g.buckets as u64 * 64);
        assert_eq!(g.sketch_bytes, sketch::sketch_bytes(g.buckets));
        assert!(g.sketch_bytes * 2 >= 2 * 100_000 / 8);
        assert!(g.data_off >= g.sketch_off + 8 * g.sketch_bytes);
        assert_eq!(
            g.ring_data(3, Ring::Main, g.main.size() + 5),
            g.ring_data(3, Ring::Main, 5)
        );
        assert_eq!(
            g.ring_data(3, Ring::Probation, g.prob.size() + 5),
            g.ring_data(3, Ring::Probation, 5)
        );
        assert_eq!(
            g.ring_data(3, Ring::Probation, 0),
            g.ring_data(3, Ring::Main, 0) + g.main.size()
        );
        assert_eq!(
            g.ring_data(4, Ring::Main, 0),
            g.ring_data(3, Ring::Main, 0) + g.ring_size()
        );
        // 16 segments: 14 for main, 2 cut into 8 for probation.
        assert_eq!((g.segments, g.main.segments, g.prob.segments), (16, 14, 8));
        assert_eq!(g.prob.segment_size, g.segment_size / 4);
        for n in [4, 5, 7, 8, 11, 16, 64, 1024] {
            let (m, p, size) = probation_shape(n, MIN_SEGMENT);
            assert!(m >= 3 && p <= n && size % RECORD_ALIGN == 0, "{n}");
            assert_eq!(
                m as u64 * MIN_SEGMENT + p as u64 * size,
                n as u64 * MIN_SEGMENT
            );
        }
    }

    #[test]
    fn plan_rejects_tiny_capacity_with_the_minimum() {
        let e = Geometry::plan(100_000, 64, 16, 1000, 16).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("at least"), "{msg}");
    }

    #[test]
    fn header_roundtrips() {
        let g = Geometry::plan(8 << 20, 4, 8, 10_000, 32).unwrap();
        let h = encoded(&g);
        let d = Header::decode(Path::new("x"), &h, g.file_size).unwrap();
        assert_eq!(d.geo, g);
        assert_eq!(d.seed, 7);
        assert_eq!(d.rkyv_flags, 0x15);
    }

    #[test]
    fn header_errors_say_expected_and_found() {
        let g = Geometry::plan(8 << 20, 4, 8, 10_000, 32).unwrap();
        let p = Path::new("f");
        let mut h = encoded(&g);
        h[0] = b'X';
        assert!(matches!(
            Header::decode(p, &h, g.file_size),
            Err(Error::NotSlotcache { .. })
        ));
        let mut h = encoded(&g);
        let version = core::mem::offset_of!(header::HeaderFields, format_version);
        h[version..version + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = Header::decode(p, &h, g.file_size).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        let h = encoded(&g);
        let e = Header::decode(p, &h, g.file_size - 4096).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
        let mut h = encoded(&g);
        h[core::mem::offset_of!(header::HeaderFields, stripes)] ^= 1;
        let e = Header::decode(p, &h, g.file_size).unwrap_err();
        assert!(e.to_string().contains("header_crc"), "{e}");
    }
}
