//! The header page (format.md §2.1): [`HeaderFields`], the immutable
//! first 128 bytes with their codec; [`SharedHeader`], the whole page as
//! mapped (the shared words are atomics); and [`Header`], the validated
//! fields of a file, whose [`encode`](Header::encode) and
//! [`decode`](Header::decode) are the two directions of one codec.

use super::mutex::LockWord;
use super::regen_hint::HINT_WORDS;
use super::{
    Geometry, FORMAT_VERSION, HEADER_SIZE, MAGIC, MAX_KEY_LEN, MAX_READER_SLOTS, MAX_REGEN_STRIPES,
    MAX_SEGMENT, MAX_SEGMENTS, MAX_STRIPES, MIN_SEGMENT, MIN_SEGMENTS,
};
use crate::error::{Error, Result};
use core::mem::{offset_of, size_of};
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// The immutable part of the header, bytes 0..128. `#[repr(C)]`, so its
/// field offsets are the file's (asserted below); the file's bytes are
/// little-endian, and [`read`](Self::read) and [`write`](Self::write)
/// convert.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFields {
    /// `SLOTINIT` while the creator initialises, `SLOTCACH` when ready.
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Total bytes; must equal the file's length.
    pub file_size: u64,
    /// Stripes.
    pub stripes: u32,
    /// Segments per stripe ring.
    pub segments: u32,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Index buckets per stripe.
    pub buckets: u32,
    /// Reader slots.
    pub reader_slots: u32,
    /// xxh3 seed for keys.
    pub hash_seed: u64,
    /// rkyv format flags of the writer.
    pub rkyv_flags: u32,
    /// [`MAX_KEY_LEN`].
    pub max_key_len: u32,
    /// File creation time (ns).
    pub created: u64,
    /// Default TTL in ns, 0 = none.
    pub default_ttl: u64,
    /// Offset of the stripe table.
    pub stripe_off: u64,
    /// Offset of the reader table.
    pub reader_off: u64,
    /// Bytes per reader slot.
    pub reader_slot_size: u32,
    /// Regeneration lock stripes.
    pub regen_stripes: u32,
    /// Offset of the index.
    pub index_off: u64,
    /// Offset of the data region.
    pub data_off: u64,
    /// CRC32 of bytes [`CRC_START`]..[`CRC_END`] and of `lock_word`
    /// ([`header_crc`]).
    pub header_crc: u32,
    /// The stripe lock kind and mutex ABI ([`LockWord`]).
    pub lock_word: u32,
}

/// First byte covered by the header CRC (after the magic).
pub const CRC_START: usize = offset_of!(HeaderFields, format_version);
/// End of the first run of bytes covered by the header CRC.
pub const CRC_END: usize = offset_of!(HeaderFields, header_crc);
/// The lock word, the second run of bytes covered by the header CRC.
const LOCK_WORD: usize = offset_of!(HeaderFields, lock_word);

/// The header CRC of the header bytes `h`: CRC32 of bytes 8..120 then
/// 124..128 (the lock word), skipping the CRC field itself.
pub fn header_crc(h: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&h[CRC_START..CRC_END]);
    c.update(&h[LOCK_WORD..LOCK_WORD + 4]);
    c.finalize()
}

/// The header page as mapped. Every word is atomic (the immutable fields
/// and the reserved space too), so a reference to it never claims that
/// another process does not write some byte of it.
#[repr(C, align(64))]
pub struct SharedHeader {
    /// [`HeaderFields`]: decoded from a copy at open (read with [`Header::decode`]), never through the mapping.
    _fields: [AtomicU64; size_of::<HeaderFields>() / 8],
    /// ns; entries created at or before it are misses.
    pub hard_invalidate: AtomicU64,
    /// ns; entries created at or before it are stale.
    pub soft_invalidate: AtomicU64,
    /// One past the highest reader slot ever claimed (only grows).
    pub reader_hwm: AtomicU64,
    /// Number of `clear()` calls (diagnostics).
    pub clears: AtomicU64,
    /// `slotcache::tiered` (format.md §5.12): the invalidation stream's
    /// epoch (even and non-zero while it is up). 0 in files never used by it.
    pub tiered_epoch: AtomicU64,
    /// `slotcache::tiered`: ns when the subscriber last saw its heartbeat
    /// come back through the stream.
    pub tiered_heartbeat: AtomicU64,
    _reserved: [AtomicU64; 106],
    /// Regeneration hints (see [`regen_hint`](super::regen_hint)).
    pub regen_hints: [AtomicU64; HINT_WORDS],
    /// `slotcache::tiered`: per-key invalidation sequences, word
    /// `xxh3_64(l2_key) % TIERED_SEQ_WORDS`.
    pub tiered_seqs: [AtomicU64; TIERED_SEQ_WORDS],
}

/// Words in the `tiered_seqs` table of the header.
pub const TIERED_SEQ_WORDS: usize = 128;

// format.md §2.1, row by row.
const _: () = {
    assert!(offset_of!(HeaderFields, magic) == 0);
    assert!(offset_of!(HeaderFields, format_version) == 8);
    assert!(offset_of!(HeaderFields, header_size) == 12);
    assert!(offset_of!(HeaderFields, file_size) == 16);
    assert!(offset_of!(HeaderFields, stripes) == 24);
    assert!(offset_of!(HeaderFields, segments) == 28);
    assert!(offset_of!(HeaderFields, segment_size) == 32);
    assert!(offset_of!(HeaderFields, buckets) == 40);
    assert!(offset_of!(HeaderFields, reader_slots) == 44);
    assert!(offset_of!(HeaderFields, hash_seed) == 48);
    assert!(offset_of!(HeaderFields, rkyv_flags) == 56);
    assert!(offset_of!(HeaderFields, max_key_len) == 60);
    assert!(offset_of!(HeaderFields, created) == 64);
    assert!(offset_of!(HeaderFields, default_ttl) == 72);
    assert!(offset_of!(HeaderFields, stripe_off) == 80);
    assert!(offset_of!(HeaderFields, reader_off) == 88);
    assert!(offset_of!(HeaderFields, reader_slot_size) == 96);
    assert!(offset_of!(HeaderFields, regen_stripes) == 100);
    assert!(offset_of!(HeaderFields, index_off) == 104);
    assert!(offset_of!(HeaderFields, data_off) == 112);
    assert!(offset_of!(HeaderFields, header_crc) == 120);
    assert!(offset_of!(HeaderFields, lock_word) == 124);
    assert!(size_of::<HeaderFields>() == 128);
    assert!(offset_of!(SharedHeader, hard_invalidate) == 128);
    assert!(offset_of!(SharedHeader, soft_invalidate) == 136);
    assert!(offset_of!(SharedHeader, reader_hwm) == 144);
    assert!(offset_of!(SharedHeader, clears) == 152);
    assert!(offset_of!(SharedHeader, tiered_epoch) == 160);
    assert!(offset_of!(SharedHeader, tiered_heartbeat) == 168);
    assert!(offset_of!(SharedHeader, regen_hints) == 1024);
    assert!(offset_of!(SharedHeader, tiered_seqs) == 3072);
    assert!(size_of::<SharedHeader>() as u64 == HEADER_SIZE);
};

/// A field of [`HeaderFields`] in its little-endian file form.
trait Le: Copy {
    /// Reads the field from the start of `b`.
    fn read(b: &[u8]) -> Self;
    /// Writes the field to the start of `b`.
    fn write(self, b: &mut [u8]);
}

impl Le for u32 {
    fn read(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
    }
    fn write(self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.to_le_bytes())
    }
}

impl Le for u64 {
    fn read(b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }
    fn write(self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self.to_le_bytes())
    }
}

impl Le for [u8; 8] {
    fn read(b: &[u8]) -> [u8; 8] {
        b[..8].try_into().expect("8 bytes")
    }
    fn write(self, b: &mut [u8]) {
        b[..8].copy_from_slice(&self)
    }
}

/// `read` and `write` of every field, each at its `offset_of!`.
macro_rules! header_codec {
    ($($f:ident),* $(,)?) => {
        impl HeaderFields {
            /// Decodes the first 128 bytes of `b` (no checks).
            pub fn read(b: &[u8]) -> HeaderFields {
                HeaderFields { $($f: Le::read(&b[offset_of!(HeaderFields, $f)..]),)* }
            }

            /// Encodes into the first 128 bytes of `b`.
            pub fn write(&self, b: &mut [u8]) {
                $(Le::write(self.$f, &mut b[offset_of!(HeaderFields, $f)..]);)*
            }
        }
    };
}

header_codec!(
    magic,
    format_version,
    header_size,
    file_size,
    stripes,
    segments,
    segment_size,
    buckets,
    reader_slots,
    hash_seed,
    rkyv_flags,
    max_key_len,
    created,
    default_ttl,
    stripe_off,
    reader_off,
    reader_slot_size,
    regen_stripes,
    index_off,
    data_off,
    header_crc,
    lock_word,
);

/// The immutable header fields of a file, validated.
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
    /// The kind of stripe locks the file uses (format.md §6).
    pub lock: LockWord,
}

impl Header {
    /// The header page of a new file with these fields and `magic`
    /// ([`HEADER_SIZE`] bytes; the shared words are zero).
    pub fn encode(&self, magic: [u8; 8]) -> Vec<u8> {
        let g = &self.geo;
        let mut f = HeaderFields {
            magic,
            format_version: FORMAT_VERSION,
            header_size: HEADER_SIZE as u32,
            file_size: g.file_size,
            stripes: g.stripes,
            segments: g.segments,
            segment_size: g.segment_size,
            buckets: g.buckets,
            reader_slots: g.reader_slots,
            hash_seed: self.seed,
            rkyv_flags: self.rkyv_flags,
            max_key_len: MAX_KEY_LEN as u32,
            created: self.created,
            default_ttl: self.default_ttl,
            stripe_off: g.stripe_off,
            reader_off: g.reader_off,
            reader_slot_size: g.reader_slot_size as u32,
            regen_stripes: self.regen_stripes,
            index_off: g.index_off,
            data_off: g.data_off,
            header_crc: 0,
            lock_word: self.lock.to_u32(),
        };
        let mut h = vec![0u8; HEADER_SIZE as usize];
        f.write(&mut h);
        f.header_crc = header_crc(&h);
        f.write(&mut h);
        h
    }

    /// Validates the first [`HEADER_SIZE`] bytes of a file of `file_len`
    /// bytes. O(1): nothing beyond the header is read.
    pub fn decode(path: &Path, h: &[u8], file_len: u64) -> Result<Header> {
        let f = HeaderFields::read(h);
        if f.magic != MAGIC {
            return Err(Error::NotSlotcache {
                path: path.to_path_buf(),
                expected: MAGIC,
                found: f.magic,
            });
        }
        if f.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                expected: FORMAT_VERSION,
                found: f.format_version,
            });
        }
        let bad = |field: &'static str, expected: String, found: String| Error::CorruptHeader {
            path: path.to_path_buf(),
            field,
            expected,
            found,
        };
        let crc = header_crc(h);
        if crc != f.header_crc {
            return Err(bad(
                "header_crc",
                format!("{crc:#010x}"),
                format!("{:#010x}", f.header_crc),
            ));
        }
        if f.file_size != file_len {
            return Err(Error::SizeMismatch {
                path: path.to_path_buf(),
                expected: f.file_size,
                found: file_len,
            });
        }
        let range = |field, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(bad(field, format!("{lo}..={hi}"), v.to_string()))
            } else {
                Ok(())
            }
        };
        range(
            "header_size",
            f.header_size as u64,
            HEADER_SIZE,
            HEADER_SIZE,
        )?;
        range("stripes", f.stripes as u64, 1, MAX_STRIPES as u64)?;
        range(
            "regen_stripes",
            f.regen_stripes as u64,
            1,
            MAX_REGEN_STRIPES as u64,
        )?;
        range(
            "segments",
            f.segments as u64,
            MIN_SEGMENTS as u64,
            MAX_SEGMENTS as u64,
        )?;
        range(
            "reader_slots",
            f.reader_slots as u64,
            1,
            MAX_READER_SLOTS as u64,
        )?;
        range("buckets", f.buckets as u64, 1, u32::MAX as u64)?;
        range(
            "max_key_len",
            f.max_key_len as u64,
            MAX_KEY_LEN as u64,
            MAX_KEY_LEN as u64,
        )?;
        let segment_size = f.segment_size;
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
        let geo = Geometry::new(
            f.stripes,
            f.segments,
            segment_size,
            f.buckets,
            f.reader_slots,
        );
        let fields = [
            ("stripe_off", f.stripe_off, geo.stripe_off),
            ("reader_off", f.reader_off, geo.reader_off),
            ("index_off", f.index_off, geo.index_off),
            ("data_off", f.data_off, geo.data_off),
        ];
        for (field, found, want) in fields {
            if found != want {
                return Err(bad(field, want.to_string(), found.to_string()));
            }
        }
        if f.reader_slot_size as u64 != geo.reader_slot_size {
            return Err(bad(
                "reader_slot_size",
                geo.reader_slot_size.to_string(),
                f.reader_slot_size.to_string(),
            ));
        }
        let lock = LockWord::from_u32(f.lock_word);
        if !lock.is_known() {
            return Err(bad(
                "lock_word",
                "0 (byte-range locks) or a robust-mutex word (format.md §2.1)".into(),
                format!("{:#010x}", f.lock_word),
            ));
        }
        if geo.file_size != f.file_size {
            return Err(bad(
                "file_size",
                geo.file_size.to_string(),
                f.file_size.to_string(),
            ));
        }
        Ok(Header {
            geo,
            seed: f.hash_seed,
            rkyv_flags: f.rkyv_flags,
            created: f.created,
            default_ttl: f.default_ttl,
            regen_stripes: f.regen_stripes,
            lock,
        })
    }
}
