//! The byte layout of a slotcache file: every offset, size and constant that
//! `format.md` describes lives here and nowhere else.
//!
//! A file is, in order: the header (one 4 KiB page), the stripe table, the
//! reader table, the index and the data region. [`Geometry`] computes where
//! each one starts from a handful of numbers stored in the header, and
//! [`Geometry::validate`] checks a header read from disk, saying what was
//! expected and what was found for every field it rejects.

use crate::error::{Error, Result};
use std::path::Path;

/// First eight bytes of a ready slotcache file. Written last at creation.
pub const MAGIC: [u8; 8] = *b"SLOTCACH";
/// First eight bytes while a creator is still initialising the file.
pub const MAGIC_INIT: [u8; 8] = *b"SLOTINIT";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 2;
/// Size of the header: one page.
pub const HEADER_SIZE: u64 = 4096;
/// Cache-line size assumed for padding shared fields.
pub const LINE: u64 = 64;
/// Alignment of records in the log (and of the values inside them: rkyv
/// needs the archived root aligned).
pub const RECORD_ALIGN: u64 = 16;
/// Size of a record header.
pub const RECORD_HEADER: u64 = 48;
/// Longest key slotcache stores, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Slots per index bucket (one cache line of `u64`).
pub const BUCKET_SLOTS: usize = 8;
/// Size of one stripe-table entry (two cache lines: the tail alone in the
/// first, the writer-owned fields in the second).
pub const STRIPE_ENTRY: u64 = 128;
/// Size of the per-reader counter line that starts every reader slot.
pub const READER_COUNTERS: u64 = 128;
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
/// Largest log position (exclusive) an index slot can name: 2^55 bytes.
pub const MAX_POSITION: u64 = (1 << 55) - 16;

/// Header field offsets (bytes from the start of the file).
pub mod hdr {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` format version.
    pub const VERSION: usize = 8;
    /// `u32` header size.
    pub const HEADER_SIZE: usize = 12;
    /// `u64` file size.
    pub const FILE_SIZE: usize = 16;
    /// `u32` stripe count.
    pub const STRIPES: usize = 24;
    /// `u32` segments per stripe.
    pub const SEGMENTS: usize = 28;
    /// `u64` segment size.
    pub const SEGMENT_SIZE: usize = 32;
    /// `u32` index buckets per stripe.
    pub const BUCKETS: usize = 40;
    /// `u32` reader slots.
    pub const READER_SLOTS: usize = 44;
    /// `u64` xxh3 seed.
    pub const HASH_SEED: usize = 48;
    /// `u32` rkyv format flags.
    pub const RKYV_FLAGS: usize = 56;
    /// `u32` maximum key length.
    pub const MAX_KEY: usize = 60;
    /// `u64` creation time (ns since the Unix epoch).
    pub const CREATED: usize = 64;
    /// `u64` default TTL in ns (0 = none).
    pub const DEFAULT_TTL: usize = 72;
    /// `u64` offset of the stripe table.
    pub const STRIPE_OFF: usize = 80;
    /// `u64` offset of the reader table.
    pub const READER_OFF: usize = 88;
    /// `u32` size of one reader slot.
    pub const READER_SLOT_SIZE: usize = 96;
    /// `u32` number of regeneration lock stripes.
    pub const REGEN_STRIPES: usize = 100;
    /// `u64` offset of the index.
    pub const INDEX_OFF: usize = 104;
    /// `u64` offset of the data region.
    pub const DATA_OFF: usize = 112;
    /// `u32` CRC32 of bytes 8..120.
    pub const CRC: usize = 120;
    /// End of the immutable part covered by the CRC.
    pub const CRC_END: usize = 120;
    /// `AtomicU64`: hard invalidation time (ns).
    pub const HARD_INVALIDATE: usize = 128;
    /// `AtomicU64`: soft invalidation time (ns).
    pub const SOFT_INVALIDATE: usize = 136;
    /// `AtomicU64`: one past the highest reader slot ever claimed.
    pub const READER_HWM: usize = 144;
    /// `AtomicU64`: number of `clear()` calls.
    pub const CLEARS: usize = 152;
    /// `[AtomicU64; REGEN_HINTS]`: which regeneration stripe some process
    /// holds, and until when the hint is believed (see `regen`).
    pub const REGEN_HINTS: usize = 1024;
    /// Words in the regeneration hint table.
    pub const REGEN_HINT_WORDS: usize = 256;
}

/// Stripe-table entry field offsets (from the entry's start).
pub mod stripe {
    /// `AtomicU64` tail: positions below it are dead. Alone in its line
    /// but for `REPAIRS`, which is written only on the rare repair path.
    pub const TAIL: u64 = 0;
    /// `AtomicU64` stripe resets after damage was found (by a writer's
    /// check or by `Cache::repair`). Was zero padding: old files read 0.
    pub const REPAIRS: u64 = 8;
    /// `AtomicU64` head: next append position.
    pub const HEAD: u64 = 64;
    /// `AtomicU64` live entries.
    pub const ENTRIES: u64 = 72;
    /// `AtomicU64` records inserted.
    pub const INSERTS: u64 = 80;
    /// `AtomicU64` entries evicted.
    pub const EVICTIONS: u64 = 88;
    /// `AtomicU64` entries reinserted (second chance).
    pub const REINSERTS: u64 = 96;
    /// `AtomicU64` entries deleted.
    pub const DELETES: u64 = 104;
    /// `AtomicU64` writes that waited on a pinned segment.
    pub const PIN_WAITS: u64 = 112;
    /// `AtomicU64` entries evicted because both of a new key's index
    /// buckets were full (a subset of `EVICTIONS`).
    pub const INDEX_EVICTIONS: u64 = 120;
}

/// Reader-slot counter offsets (from the slot's start). Each is written only
/// by the thread that owns the slot.
pub mod reader {
    /// `AtomicU64` hits.
    pub const HITS: u64 = 0;
    /// `AtomicU64` misses (absent, expired, corrupt or mismatched).
    pub const MISSES: u64 = 8;
    /// `AtomicU64` expired or invalidated entries seen.
    pub const EXPIRED: u64 = 16;
    /// `AtomicU64` records that failed their checksum or bounds checks.
    pub const CORRUPT: u64 = 24;
    /// `AtomicU64` records of another type.
    pub const MISMATCHED: u64 = 32;
    /// `AtomicU64` pid of the last owner (diagnostics only).
    pub const OWNER_PID: u64 = 40;
    /// `AtomicU64` creator runs (`get_or_create` regenerations).
    pub const CREATES: u64 = 48;
    /// `AtomicU64` stale values served while another caller regenerates.
    pub const STALE_SERVED: u64 = 56;
    /// `AtomicU64` waits for another caller's creator.
    pub const WAITS: u64 = 64;
    /// `AtomicU64` waits that ended in a lock timeout.
    pub const LOCK_TIMEOUTS: u64 = 72;
    /// First pin word (one `AtomicU64` per stripe follows).
    pub const PINS: u64 = 128;
}

/// Byte-range lock offsets. They lie far beyond the end of any file, so they
/// never cover data (this matters on Windows, where locks are mandatory).
pub mod locks {
    /// Base of every lock byte.
    pub const BASE: u64 = 1 << 62;
    /// Stripe write lock `s` is at `WRITE + s`.
    pub const WRITE: u64 = BASE;
    /// Regeneration lock `r` is at `REGEN + r`.
    pub const REGEN: u64 = BASE + (1 << 32);
    /// Liveness lock of reader slot `i` is at `LIVE + i`.
    pub const LIVE: u64 = BASE + (2 << 32);
    /// Read-only pins: segment `g` of stripe `s` is at `RO_PIN + s * segments + g`.
    pub const RO_PIN: u64 = BASE + (3 << 32);
    #[cfg_attr(not(windows), allow(dead_code))]
    /// Windows only: the byte that serialises creating and validating the
    /// file (Unix uses a whole-file `flock`, which is independent of these
    /// byte-range locks; Windows' whole-file lock would cover them all).
    pub const OPEN: u64 = BASE + (4 << 32);
}

/// Record kinds (byte 4 of a record header).
pub mod kind {
    /// Raw bytes (a `Raw` value).
    pub const BYTES: u8 = 1;
    /// An rkyv archive stored with `set`.
    pub const ARCHIVED: u8 = 2;
    /// End of the records in this segment.
    pub const END: u8 = 0xEE;
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
    /// Offset of the reader table.
    pub reader_off: u64,
    /// Offset of the index.
    pub index_off: u64,
    /// Offset of the data region.
    pub data_off: u64,
    /// Division by `segment_size`, by multiplication.
    pub seg_div: Divisor,
    /// Division by [`ring_size`](Geometry::ring_size), by multiplication.
    pub ring_div: Divisor,
}

/// Exact division of a `u64` below 2^63 by a divisor fixed when the file is
/// opened, with two multiplications and a compare instead of a 64-bit
/// `div` (up to ~40 cycles on common x86 cores, and the read path needs
/// two per lookup).
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
        let stripe_off = HEADER_SIZE;
        let reader_off = align_up(stripe_off + stripes as u64 * STRIPE_ENTRY, LINE);
        let reader_slot_size = READER_COUNTERS + align_up(stripes as u64 * 8, LINE);
        let index_off = align_up(reader_off + reader_slots as u64 * reader_slot_size, 4096);
        let slots = entries.saturating_mul(2).max(BUCKET_SLOTS as u64);
        let buckets = slots
            .div_ceil(BUCKET_SLOTS as u64 * stripes as u64)
            .clamp(1, u32::MAX as u64);
        let data_off = align_up(index_off + stripes as u64 * buckets * LINE, 4096);
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
        let min_data = stripes as u64 * segments as u64 * MIN_SEGMENT;
        if capacity < data_off + min_data {
            return Err(too_small(data_off + min_data));
        }
        let per_segment = (capacity - data_off) / (stripes as u64 * segments as u64);
        let segment_size = (per_segment & !(MIN_SEGMENT - 1)).min(MAX_SEGMENT);
        let file_size = data_off + stripes as u64 * segments as u64 * segment_size;
        Ok(Geometry {
            file_size,
            stripes,
            segments,
            segment_size,
            buckets: buckets as u32,
            reader_slots,
            reader_slot_size,
            stripe_off,
            reader_off,
            index_off,
            data_off,
            seg_div: Divisor::new(segment_size),
            ring_div: Divisor::new(segments as u64 * segment_size),
        })
    }

    /// Bytes of one stripe's log ring.
    pub fn ring_size(&self) -> u64 {
        self.segments as u64 * self.segment_size
    }

    /// Offset of stripe `s`'s table entry.
    pub fn stripe_entry(&self, s: u32) -> u64 {
        self.stripe_off + s as u64 * STRIPE_ENTRY
    }

    /// Offset of reader slot `i`.
    pub fn reader_slot(&self, i: u32) -> u64 {
        self.reader_off + i as u64 * self.reader_slot_size
    }

    /// Offset of reader slot `i`'s pin word for stripe `s`.
    pub fn pin_word(&self, i: u32, s: u32) -> u64 {
        self.reader_slot(i) + reader::PINS + s as u64 * 8
    }

    /// Offset of bucket `b` of stripe `s`.
    pub fn bucket(&self, s: u32, b: u32) -> u64 {
        self.index_off + (s as u64 * self.buckets as u64 + b as u64) * LINE
    }

    /// Offset in the file of log position `pos` of stripe `s`.
    pub fn data(&self, s: u32, pos: u64) -> u64 {
        self.data_off + s as u64 * self.ring_size() + self.ring_div.rem(pos)
    }

    /// Largest value that fits in one record with a key of `key_len` bytes
    /// (0 for a key longer than [`MAX_KEY_LEN`], which cannot be stored).
    pub fn max_value(&self, key_len: usize) -> usize {
        if key_len > MAX_KEY_LEN {
            return 0;
        }
        let room = self.segment_size - align_up(RECORD_HEADER + key_len as u64, RECORD_ALIGN);
        room.min(u32::MAX as u64) as usize
    }

    /// Writes the immutable header fields into `h` (the first
    /// [`HEADER_SIZE`] bytes of a new file), magic excluded.
    pub fn encode(
        &self,
        h: &mut [u8],
        seed: u64,
        rkyv_flags: u32,
        created: u64,
        ttl: u64,
        regen_stripes: u32,
    ) {
        let mut put = |off: usize, bytes: &[u8]| h[off..off + bytes.len()].copy_from_slice(bytes);
        put(hdr::VERSION, &FORMAT_VERSION.to_le_bytes());
        put(hdr::HEADER_SIZE, &(HEADER_SIZE as u32).to_le_bytes());
        put(hdr::FILE_SIZE, &self.file_size.to_le_bytes());
        put(hdr::STRIPES, &self.stripes.to_le_bytes());
        put(hdr::SEGMENTS, &self.segments.to_le_bytes());
        put(hdr::SEGMENT_SIZE, &self.segment_size.to_le_bytes());
        put(hdr::BUCKETS, &self.buckets.to_le_bytes());
        put(hdr::READER_SLOTS, &self.reader_slots.to_le_bytes());
        put(hdr::REGEN_STRIPES, &regen_stripes.to_le_bytes());
        put(hdr::HASH_SEED, &seed.to_le_bytes());
        put(hdr::RKYV_FLAGS, &rkyv_flags.to_le_bytes());
        put(hdr::MAX_KEY, &(MAX_KEY_LEN as u32).to_le_bytes());
        put(hdr::CREATED, &created.to_le_bytes());
        put(hdr::DEFAULT_TTL, &ttl.to_le_bytes());
        put(hdr::STRIPE_OFF, &self.stripe_off.to_le_bytes());
        put(hdr::READER_OFF, &self.reader_off.to_le_bytes());
        put(
            hdr::READER_SLOT_SIZE,
            &(self.reader_slot_size as u32).to_le_bytes(),
        );
        put(hdr::INDEX_OFF, &self.index_off.to_le_bytes());
        put(hdr::DATA_OFF, &self.data_off.to_le_bytes());
        let crc = crc32fast::hash(&h[hdr::VERSION..hdr::CRC_END]);
        h[hdr::CRC..hdr::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The immutable header fields of an existing file, validated.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Where everything is.
    pub geo: Geometry,
    /// xxh3 seed for keys.
    pub seed: u64,
    /// rkyv format flags of the writer.
    pub rkyv_flags: u32,
    /// Creation time of the file (ns since the Unix epoch).
    pub created: u64,
    /// Default TTL in ns (0 = none).
    pub default_ttl: u64,
    /// Number of regeneration lock stripes.
    pub regen_stripes: u32,
}

fn u32_at(h: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(h[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(h: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(h[off..off + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// Validates the first [`HEADER_SIZE`] bytes of a file of `file_len`
    /// bytes. O(1): nothing beyond the header is read.
    pub fn decode(path: &Path, h: &[u8], file_len: u64) -> Result<Header> {
        let magic: [u8; 8] = h[hdr::MAGIC..hdr::MAGIC + 8].try_into().expect("8 bytes");
        if magic != MAGIC {
            return Err(Error::NotSlotcache {
                path: path.to_path_buf(),
                expected: MAGIC,
                found: magic,
            });
        }
        let version = u32_at(h, hdr::VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                expected: FORMAT_VERSION,
                found: version,
            });
        }
        let bad = |field: &'static str, expected: String, found: String| Error::CorruptHeader {
            path: path.to_path_buf(),
            field,
            expected,
            found,
        };
        let crc = crc32fast::hash(&h[hdr::VERSION..hdr::CRC_END]);
        let stored = u32_at(h, hdr::CRC);
        if crc != stored {
            return Err(bad(
                "header_crc",
                format!("{crc:#010x}"),
                format!("{stored:#010x}"),
            ));
        }
        let file_size = u64_at(h, hdr::FILE_SIZE);
        if file_size != file_len {
            return Err(Error::SizeMismatch {
                path: path.to_path_buf(),
                expected: file_size,
                found: file_len,
            });
        }
        let stripes = u32_at(h, hdr::STRIPES);
        let segments = u32_at(h, hdr::SEGMENTS);
        let segment_size = u64_at(h, hdr::SEGMENT_SIZE);
        let buckets = u32_at(h, hdr::BUCKETS);
        let reader_slots = u32_at(h, hdr::READER_SLOTS);
        let range = |field, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(bad(field, format!("{lo}..={hi}"), v.to_string()))
            } else {
                Ok(())
            }
        };
        range(
            "header_size",
            u32_at(h, hdr::HEADER_SIZE) as u64,
            HEADER_SIZE,
            HEADER_SIZE,
        )?;
        range("stripes", stripes as u64, 1, MAX_STRIPES as u64)?;
        let regen_stripes = u32_at(h, hdr::REGEN_STRIPES);
        range(
            "regen_stripes",
            regen_stripes as u64,
            1,
            MAX_REGEN_STRIPES as u64,
        )?;
        range(
            "segments",
            segments as u64,
            MIN_SEGMENTS as u64,
            MAX_SEGMENTS as u64,
        )?;
        range(
            "reader_slots",
            reader_slots as u64,
            1,
            MAX_READER_SLOTS as u64,
        )?;
        range("buckets", buckets as u64, 1, u32::MAX as u64)?;
        range(
            "max_key_len",
            u32_at(h, hdr::MAX_KEY) as u64,
            MAX_KEY_LEN as u64,
            MAX_KEY_LEN as u64,
        )?;
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment_size) || segment_size % MIN_SEGMENT != 0 {
            return Err(bad(
                "segment_size",
                format!("a multiple of {MIN_SEGMENT} up to {MAX_SEGMENT}"),
                segment_size.to_string(),
            ));
        }
        // The layout is a pure function of these numbers: recompute it and
        // compare every offset, so a header that passed its CRC but was
        // written by a buggy or hostile program cannot point outside the file.
        let expect = Geometry {
            file_size,
            stripes,
            segments,
            segment_size,
            buckets,
            reader_slots,
            reader_slot_size: READER_COUNTERS + align_up(stripes as u64 * 8, LINE),
            stripe_off: HEADER_SIZE,
            reader_off: align_up(HEADER_SIZE + stripes as u64 * STRIPE_ENTRY, LINE),
            index_off: 0,
            data_off: 0,
            seg_div: Divisor::new(segment_size.max(1)),
            ring_div: Divisor::new((segments as u64 * segment_size).max(1)),
        };
        let index_off = align_up(
            expect.reader_off + reader_slots as u64 * expect.reader_slot_size,
            4096,
        );
        let data_off = align_up(index_off + stripes as u64 * buckets as u64 * LINE, 4096);
        let geo = Geometry {
            index_off,
            data_off,
            ..expect
        };
        let fields = [
            ("stripe_off", hdr::STRIPE_OFF, geo.stripe_off),
            ("reader_off", hdr::READER_OFF, geo.reader_off),
            ("index_off", hdr::INDEX_OFF, geo.index_off),
            ("data_off", hdr::DATA_OFF, geo.data_off),
        ];
        for (field, off, want) in fields {
            let found = u64_at(h, off);
            if found != want {
                return Err(bad(field, want.to_string(), found.to_string()));
            }
        }
        let slot_size = u32_at(h, hdr::READER_SLOT_SIZE) as u64;
        if slot_size != geo.reader_slot_size {
            return Err(bad(
                "reader_slot_size",
                geo.reader_slot_size.to_string(),
                slot_size.to_string(),
            ));
        }
        let want_size = data_off + stripes as u64 * segments as u64 * segment_size;
        if want_size != file_size {
            return Err(bad(
                "file_size",
                want_size.to_string(),
                file_size.to_string(),
            ));
        }
        Ok(Header {
            geo,
            seed: u64_at(h, hdr::HASH_SEED),
            rkyv_flags: u32_at(h, hdr::RKYV_FLAGS),
            created: u64_at(h, hdr::CREATED),
            default_ttl: u64_at(h, hdr::DEFAULT_TTL),
            regen_stripes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(geo: &Geometry) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE as usize];
        geo.encode(&mut h, 7, 0x15, 1, 0, 64);
        h[..8].copy_from_slice(&MAGIC);
        h
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
        assert!(g.reader_off >= g.stripe_off + 8 * STRIPE_ENTRY);
        assert!(g.index_off >= g.reader_off + 64 * g.reader_slot_size);
        assert_eq!(g.data(3, g.ring_size() + 5), g.data(3, 5));
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
        h[hdr::VERSION..hdr::VERSION + 4].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = Header::decode(p, &h, g.file_size).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        let h = encoded(&g);
        let e = Header::decode(p, &h, g.file_size - 4096).unwrap_err();
        assert!(matches!(e, Error::SizeMismatch { .. }), "{e}");
        let mut h = encoded(&g);
        h[hdr::STRIPES] ^= 1;
        let e = Header::decode(p, &h, g.file_size).unwrap_err();
        assert!(e.to_string().contains("header_crc"), "{e}");
    }
}
