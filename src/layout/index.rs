//! The index (format.md §2.4): per stripe, `buckets` [`Bucket`] lines of
//! eight slot words; the slot-word codec; and which bits of a key's hash
//! choose its stripe, buckets and tag.

use super::{Ring, RECORD_ALIGN};
use core::mem::size_of;
use std::sync::atomic::AtomicU64;

/// Slots per index bucket (one cache line of `u64`).
pub const BUCKET_SLOTS: usize = 8;

/// One index bucket, as mapped: eight atomic slot words, one cache line.
#[repr(C, align(64))]
pub struct Bucket {
    /// The slot words (see [`slot_word`]).
    pub slots: [AtomicU64; BUCKET_SLOTS],
}

/// Size of one bucket.
pub const BUCKET_SIZE: u64 = size_of::<Bucket>() as u64;
const _: () = assert!(BUCKET_SIZE == 64);

// Slot word, format.md §2.4: bit 63 R1 (read once), bit 62 R2 (read
// twice), bit 61 the ring (1 = probation), bits 49..=60 tag, bits 0..=48
// position / 16 + 1 (0 = empty).

/// R1: set (once, by CAS) by a reader that hit the entry.
pub const VISITED: u64 = 1 << 63;
/// R2: set (once, by CAS) by a reader that hit an entry whose R1 was set.
pub const VISITED2: u64 = 1 << 62;
/// Both hit-count bits.
pub const COUNT_BITS: u64 = VISITED | VISITED2;
/// The ring bit: the slot names a probation-ring position.
pub const PROBATION: u64 = 1 << 61;
/// First bit of the tag in a slot word.
pub const TAG_SHIFT: u32 = 49;
/// Width of the tag: 12 bits.
pub const TAG_MASK: u64 = 0xFFF;
/// The position bits of a slot word.
pub const POS_MASK: u64 = (1 << TAG_SHIFT) - 1;
const _: () = assert!(PROBATION == 1 << (TAG_SHIFT + TAG_MASK.count_ones()));
const _: () = assert!(VISITED2 == PROBATION << 1 && VISITED == VISITED2 << 1);

/// Builds a slot word naming `pos` of the main ring (count 0).
#[inline]
pub fn slot_word(tag: u64, pos: u64) -> u64 {
    debug_assert_eq!(pos % RECORD_ALIGN, 0);
    (tag << TAG_SHIFT) | (pos / RECORD_ALIGN + 1)
}

/// Builds a slot word naming `pos` of ring `ring` (count 0).
#[inline]
pub fn ring_word(tag: u64, ring: Ring, pos: u64) -> u64 {
    slot_word(tag, pos)
        | if ring == Ring::Probation {
            PROBATION
        } else {
            0
        }
}

/// The hit count of a slot word (format.md §2.4): R1 + R2, except that R2
/// without R1 (an entry lent to main unread) counts 0.
#[inline]
pub fn hit_count(w: u64) -> u64 {
    if w & VISITED == 0 {
        0
    } else {
        1 + (w & VISITED2 != 0) as u64
    }
}

/// The ring a non-empty slot word names.
#[inline]
pub fn word_ring(w: u64) -> Ring {
    Ring::from_bit(w & PROBATION != 0)
}

/// Whether a slot word names a position (zero, or a corrupt word with no
/// position bits, is an empty slot).
#[inline]
pub fn occupied(w: u64) -> bool {
    w & POS_MASK != 0
}

/// Tag of a non-empty slot word.
#[inline]
pub fn word_tag(w: u64) -> u64 {
    (w >> TAG_SHIFT) & TAG_MASK
}

/// Log position named by a non-empty slot word.
#[inline]
pub fn word_pos(w: u64) -> u64 {
    ((w & POS_MASK) - 1) * RECORD_ALIGN
}

// Key placement, format.md §2.4: bits 0..24 of the hash choose the stripe,
// bits 24..52 the first bucket, bits 52..64 are the tag; the second bucket
// comes from the high half of the hash times the 64-bit golden ratio.

/// Bits of the hash that choose the stripe: bits 0..24.
pub const STRIPE_BITS: u32 = 24;
/// Bits that choose the first bucket: bits 24..52.
pub const BUCKET_BITS: u32 = 28;
/// The tag is the hash's bits from here up (52..64).
pub const TAG_HASH_SHIFT: u32 = STRIPE_BITS + BUCKET_BITS;
const _: () = assert!(64 - TAG_HASH_SHIFT == TAG_MASK.count_ones());
/// The 64-bit golden ratio: mixes the hash for the second bucket.
pub const ALT_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
