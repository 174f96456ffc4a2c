//! The index: per stripe, `buckets` cache-line buckets of eight atomic
//! slots. A key lives in exactly one bucket (set-associative, no probing),
//! so a lookup touches one cache line and a writer holding the stripe lock
//! owns every bucket its keys can be in.
//!
//! Slot word (`u64`): bit 63 = visited (read since written), bits 51..=62 =
//! 12-bit tag from the key hash, bits 0..=50 = log position / 16 + 1.
//! Zero is an empty slot.

use crate::layout::{Geometry, BUCKET_SLOTS, RECORD_ALIGN};
use crate::map::Map;
use std::sync::atomic::{AtomicU64, Ordering};

/// Set by a reader the first time it hits the entry.
pub(crate) const VISITED: u64 = 1 << 63;
const TAG_SHIFT: u32 = 51;
const TAG_MASK: u64 = 0xFFF;
const POS_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Where a key lives: its hash, stripe, bucket and tag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash {
    /// xxh3-64 of the key with the file's seed.
    pub hash: u64,
    /// `hash % stripes`.
    pub stripe: u32,
    /// Bucket within the stripe.
    pub bucket: u32,
    /// 12-bit tag.
    pub tag: u64,
}

impl KeyHash {
    /// Hashes `key` and places it in `geo`.
    #[inline]
    pub(crate) fn new(key: &[u8], seed: u64, geo: &Geometry) -> KeyHash {
        Self::from_hash(xxhash_rust::xxh3::xxh3_64_with_seed(key, seed), geo)
    }

    /// Places an already computed hash.
    #[inline]
    pub(crate) fn from_hash(hash: u64, geo: &Geometry) -> KeyHash {
        KeyHash {
            hash,
            stripe: (hash % geo.stripes as u64) as u32,
            bucket: (((hash >> 16) & 0xFFFF_FFFF) % geo.buckets as u64) as u32,
            tag: (hash >> 52) & TAG_MASK,
        }
    }
}

/// Builds a slot word naming `pos` (not visited).
#[inline]
pub(crate) fn slot_word(tag: u64, pos: u64) -> u64 {
    debug_assert_eq!(pos % RECORD_ALIGN, 0);
    (tag << TAG_SHIFT) | (pos / RECORD_ALIGN + 1)
}

/// Whether a slot word names a position (zero, or a corrupt word with no
/// position bits, is an empty slot).
#[inline]
pub(crate) fn occupied(w: u64) -> bool {
    w & POS_MASK != 0
}

/// Tag of a non-empty slot word.
#[inline]
pub(crate) fn word_tag(w: u64) -> u64 {
    (w >> TAG_SHIFT) & TAG_MASK
}

/// Log position named by a non-empty slot word.
#[inline]
pub(crate) fn word_pos(w: u64) -> u64 {
    ((w & POS_MASK) - 1) * RECORD_ALIGN
}

/// The eight slots of one bucket.
#[derive(Clone, Copy)]
pub(crate) struct Bucket<'m> {
    map: &'m Map,
    off: u64,
}

impl<'m> Bucket<'m> {
    /// The bucket `kh` maps to.
    #[inline]
    pub(crate) fn of(map: &'m Map, geo: &Geometry, kh: &KeyHash) -> Bucket<'m> {
        Bucket {
            map,
            off: geo.bucket(kh.stripe, kh.bucket),
        }
    }

    /// Slot `i` (0..8).
    #[inline]
    pub(crate) fn slot(&self, i: usize) -> &'m AtomicU64 {
        self.map.atomic(self.off + 8 * i as u64)
    }

    /// Iterates `(slot, word)` over the slots whose tag matches and whose
    /// position is at or above `tail` (live candidates).
    #[inline]
    pub(crate) fn candidates(
        &self,
        tag: u64,
        tail: u64,
    ) -> impl Iterator<Item = (&'m AtomicU64, u64)> + '_ {
        (0..BUCKET_SLOTS).filter_map(move |i| {
            let s = self.slot(i);
            // Relaxed + fence: a read-only mapping may only be loaded Relaxed.
            let w = s.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            (occupied(w) && word_tag(w) == tag && word_pos(w) >= tail).then_some((s, w))
        })
    }

    /// Finds the slot whose word names exactly `pos` (writer side).
    pub(crate) fn find_pos(&self, pos: u64) -> Option<(&'m AtomicU64, u64)> {
        (0..BUCKET_SLOTS).find_map(|i| {
            let s = self.slot(i);
            let w = s.load(Ordering::Acquire);
            (occupied(w) && word_pos(w) == pos).then_some((s, w))
        })
    }

    /// Picks the slot for a new key (writer side, under the stripe lock):
    /// an empty or dead slot if there is one, otherwise the victim — the
    /// oldest entry not read since written, or the oldest of all. Returns the
    /// slot and whether it evicts a live entry.
    pub(crate) fn free_or_victim(&self, tail: u64) -> (&'m AtomicU64, bool) {
        let mut victim: Option<(&AtomicU64, u64)> = None;
        let rank = |w: u64| (w & VISITED != 0, word_pos(w));
        for i in 0..BUCKET_SLOTS {
            let s = self.slot(i);
            let w = s.load(Ordering::Acquire);
            if !occupied(w) || word_pos(w) < tail {
                return (s, false);
            }
            if victim.is_none_or(|(_, v)| rank(w) < rank(v)) {
                victim = Some((s, w));
            }
        }
        (victim.expect("a bucket has slots").0, true)
    }

    /// Clears every slot.
    pub(crate) fn clear(&self) {
        for i in 0..BUCKET_SLOTS {
            self.slot(i).store(0, Ordering::Release);
        }
    }
}

/// Marks an entry visited, once: only when the bit is not already set, and
/// only if the slot still holds the word the reader saw.
#[inline]
pub(crate) fn mark_visited(slot: &AtomicU64, word: u64) {
    if word & VISITED == 0 {
        let _ = slot.compare_exchange(word, word | VISITED, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_word_roundtrip() {
        for pos in [0u64, 16, 4096, crate::layout::MAX_POSITION - 16] {
            for tag in [0u64, 1, 0xFFF] {
                let w = slot_word(tag, pos);
                assert_ne!(w, 0);
                assert_eq!(word_pos(w), pos);
                assert_eq!(word_tag(w), tag);
                assert_eq!(word_pos(w | VISITED), pos);
                assert_eq!(word_tag(w | VISITED), tag);
            }
        }
    }

    #[test]
    fn key_hash_is_in_range_and_seeded() {
        let geo = crate::layout::Geometry::plan(16 << 20, 7, 8, 1000, 8).unwrap();
        for i in 0..1000u32 {
            let k = i.to_le_bytes();
            let a = KeyHash::new(&k, 1, &geo);
            assert!(a.stripe < 7 && a.bucket < geo.buckets && a.tag <= 0xFFF);
            assert_ne!(a.hash, KeyHash::new(&k, 2, &geo).hash);
        }
    }
}
