//! The index (format.md §2.4): where a key lives ([`KeyHash`]: its stripe,
//! its two buckets and its tag), and the operations on a key's buckets —
//! the lookup's candidates, the writer's free slot or victim, the visited
//! bit. A key may live in one of two buckets of its stripe (two-choice
//! hashing: a new key goes to the one with more free slots), so a lookup
//! loads two cache lines, independently and therefore in parallel, and a
//! writer holding the stripe lock owns every bucket its keys can be in.
//! The bucket line, the slot-word codec and the hash bits are
//! [`layout::index`](crate::layout::index)'s.

use crate::layout::index::{
    self as lx, ALT_MULTIPLIER, BUCKET_BITS, BUCKET_SLOTS, POS_MASK, STRIPE_BITS, TAG_HASH_SHIFT,
    TAG_MASK, TAG_SHIFT,
};
use crate::layout::{Geometry, RECORD_ALIGN};
use crate::map::Map;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use crate::layout::index::{occupied, slot_word, word_pos, word_tag, VISITED};

/// Where a key lives: its hash, stripe, bucket and tag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyHash {
    /// xxh3-64 of the key with the file's seed.
    pub hash: u64,
    /// The stripe: bits 0..24 of the hash mapped onto `0..stripes`.
    pub stripe: u32,
    /// First-choice bucket within the stripe.
    pub bucket: u32,
    /// Second-choice bucket within the stripe (equal to `bucket` only when
    /// the stripe has a single bucket).
    pub alt: u32,
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
        let buckets = geo.buckets as u64;
        // `buckets` is a u32, so the 28-bit field times it cannot overflow.
        let bucket = range(
            (hash >> STRIPE_BITS) & ((1 << BUCKET_BITS) - 1),
            BUCKET_BITS,
            buckets,
        );
        KeyHash {
            hash,
            stripe: range(hash & STRIPE_FIELD, STRIPE_BITS, geo.stripes as u64) as u32,
            bucket: bucket as u32,
            alt: alt_bucket(hash, bucket, buckets) as u32,
            tag: (hash >> TAG_HASH_SHIFT) & TAG_MASK,
        }
    }

    /// Whether `b` is one of the key's two buckets.
    #[inline]
    pub(crate) fn has_bucket(&self, b: u32) -> bool {
        self.bucket == b || self.alt == b
    }
}

const STRIPE_FIELD: u64 = (1 << STRIPE_BITS) - 1;

/// Maps a `bits`-bit value uniformly onto `0..n` with a multiplication and
/// a shift (Lemire's "fast range"), not a division: `x * n >> bits`.
#[inline]
fn range(x: u64, bits: u32, n: u64) -> u64 {
    (x * n) >> bits
}

/// The second-choice bucket: uniform over the stripe's other buckets, from
/// the high half of `hash` times the 64-bit golden ratio (so it mixes every
/// bit of the hash, not only those the first choice uses).
#[inline]
fn alt_bucket(hash: u64, bucket: u64, buckets: u64) -> u64 {
    if buckets < 2 {
        return bucket;
    }
    let m = range(hash.wrapping_mul(ALT_MULTIPLIER) >> 32, 32, buckets - 1);
    let b = bucket + 1 + m;
    if b >= buckets {
        b - buckets
    } else {
        b
    }
}

/// The eight slots of one bucket.
#[derive(Clone, Copy)]
pub(crate) struct Bucket<'m> {
    slots: &'m [AtomicU64; BUCKET_SLOTS],
}

impl<'m> Bucket<'m> {
    /// Bucket `b` of stripe `s`.
    #[inline]
    pub(crate) fn at(map: &'m Map, s: u32, b: u32) -> Bucket<'m> {
        let line: &'m lx::Bucket = map.bucket(s, b);
        Bucket { slots: &line.slots }
    }

    /// Slot `i` (0..8).
    #[inline]
    pub(crate) fn slot(&self, i: usize) -> &'m AtomicU64 {
        &self.slots[i]
    }

    /// Clears every slot.
    pub(crate) fn clear(&self) {
        for s in self.slots {
            s.store(0, Ordering::Release);
        }
    }
}

/// Most slots a key's buckets have together.
const PAIR_SLOTS: usize = 2 * BUCKET_SLOTS;
// The tag scan of `candidates` compares the high halves of slot words.
const _: () = assert!(TAG_SHIFT >= 32 && TAG_SHIFT + TAG_MASK.count_ones() <= 64);

/// The one or two buckets a key may live in: slots `0..8` are the first
/// choice, `8..16` the second (absent when the stripe has one bucket).
#[derive(Clone, Copy)]
pub(crate) struct Buckets<'m> {
    first: Bucket<'m>,
    second: Bucket<'m>,
    /// Slots in use: 16, or 8 when both choices are the same bucket.
    n: usize,
}

impl<'m> Buckets<'m> {
    /// The buckets `kh` may live in.
    #[inline]
    pub(crate) fn of(map: &'m Map, kh: &KeyHash) -> Buckets<'m> {
        let n = if kh.alt == kh.bucket {
            BUCKET_SLOTS
        } else {
            PAIR_SLOTS
        };
        Buckets {
            first: Bucket::at(map, kh.stripe, kh.bucket),
            second: Bucket::at(map, kh.stripe, kh.alt),
            n,
        }
    }

    /// Starts loading the old records the key's slots name (any tag match,
    /// live or not: a prefetch is only a hint), for a writer that will soon
    /// compare the key against them. Reads the index lines, so they should
    /// be in cache already ([`Buckets::prefetch_lines`]).
    pub(crate) fn prefetch_records(&self, map: &Map, kh: &KeyHash) {
        for (_, w) in self.candidates(kh.tag, 0) {
            map.prefetch(map.geo().data(kh.stripe, word_pos(w)));
        }
    }

    /// Starts loading both index lines.
    pub(crate) fn prefetch_lines(map: &Map, kh: &KeyHash) {
        map.prefetch(map.geo().bucket(kh.stripe, kh.bucket));
        map.prefetch(map.geo().bucket(kh.stripe, kh.alt));
    }

    /// Slot `i` of the pair (0..16).
    #[inline]
    fn slot(&self, i: usize) -> &'m AtomicU64 {
        if i < BUCKET_SLOTS {
            self.first.slot(i)
        } else {
            self.second.slot(i - BUCKET_SLOTS)
        }
    }

    /// Iterates `(slot, word)` over the slots whose tag matches and whose
    /// position is at or above `tail` (live candidates), first choice first.
    /// Every word of both buckets is loaded before any is examined, so the
    /// two cache lines are fetched in parallel.
    #[inline]
    pub(crate) fn candidates(
        &self,
        tag: u64,
        tail: u64,
    ) -> impl Iterator<Item = (&'m AtomicU64, u64)> + '_ {
        let mut words = [0u64; PAIR_SLOTS];
        // Relaxed + fence: a read-only mapping may only be loaded Relaxed.
        for i in 0..BUCKET_SLOTS {
            words[i] = self.first.slots[i].load(Ordering::Relaxed);
            words[BUCKET_SLOTS + i] = self.second.slots[i].load(Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Acquire);
        // One branch-free pass marks the slots with the key's tag (usually
        // one, or none on a miss); only those are examined further.
        let mut mask = tag_mask(&words, tag);
        mask &= (1u32 << self.n) - 1;
        // `word_pos(w) >= tail` on the raw position bits, which also rules
        // out empty slots (and cannot underflow on them).
        let min_bits = tail.div_ceil(RECORD_ALIGN);
        std::iter::from_fn(move || loop {
            if mask == 0 {
                return None;
            }
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if words[i] & POS_MASK > min_bits {
                return Some((self.slot(i), words[i]));
            }
        })
    }

    /// Finds the slot whose word names exactly `pos` (writer side).
    pub(crate) fn find_pos(&self, pos: u64) -> Option<(&'m AtomicU64, u64)> {
        (0..self.n).find_map(|i| {
            let s = self.slot(i);
            let w = s.load(Ordering::Acquire);
            (occupied(w) && word_pos(w) == pos).then_some((s, w))
        })
    }

    /// Picks the slot for a new key (writer side, under the stripe lock): a
    /// free slot (empty, or naming a dead position) of the bucket with more
    /// free slots (the first choice on a tie), otherwise the victim of both
    /// — the oldest entry not read since written, or the oldest of all.
    /// Returns the slot and whether it evicts a live entry.
    pub(crate) fn free_or_victim(&self, tail: u64) -> (&'m AtomicU64, bool) {
        let mut victim: Option<(&AtomicU64, u64)> = None;
        let mut free: [(usize, Option<&AtomicU64>); 2] = [(0, None); 2];
        let rank = |w: u64| (w & VISITED != 0, word_pos(w));
        for i in 0..self.n {
            let s = self.slot(i);
            let w = s.load(Ordering::Acquire);
            if !occupied(w) || word_pos(w) < tail {
                let f = &mut free[i / BUCKET_SLOTS];
                f.0 += 1;
                f.1.get_or_insert(s);
            } else if victim.is_none_or(|(_, v)| rank(w) < rank(v)) {
                victim = Some((s, w));
            }
        }
        let pick = if free[1].0 > free[0].0 {
            free[1].1
        } else {
            free[0].1
        };
        match pick {
            Some(s) => (s, false),
            None => (victim.expect("a bucket has slots").0, true),
        }
    }
}

/// Bit `i` set when `words[i]` carries `tag` (whatever its position).
/// The tag lies in a word's high half, so the pass compares 32-bit lanes:
/// with SSE2 (every x86-64), four words per compare and one mask move,
/// about 30 instructions for the 16 words instead of about 100 for a
/// scalar pass (callgrind, BENCHMARKS.md "Reads at the memory floor").
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn tag_mask(words: &[u64; PAIR_SLOTS], tag: u64) -> u32 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_castps_si128, _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_movemask_ps,
        _mm_set1_epi32, _mm_set_epi64x, _mm_shuffle_ps,
    };
    let hi_mask = (TAG_MASK << (TAG_SHIFT - 32)) as u32;
    let want = (tag << (TAG_SHIFT - 32)) as u32 & hi_mask;
    let mut mask = 0u32;
    // SAFETY: these intrinsics only compute on registers (no pointer), and
    // SSE2 is enabled at compile time (the cfg above), so the instructions
    // exist. (Safe functions in newer Rust, hence `unused_unsafe`.)
    #[allow(unused_unsafe)]
    unsafe {
        let (m, w) = (_mm_set1_epi32(hi_mask as i32), _mm_set1_epi32(want as i32));
        for q in 0..PAIR_SLOTS / 4 {
            let at = |i: usize| words[4 * q + i] as i64;
            let a = _mm_castsi128_ps(_mm_set_epi64x(at(1), at(0)));
            let b = _mm_castsi128_ps(_mm_set_epi64x(at(3), at(2)));
            // The high halves of the four words, in order.
            let hi = _mm_castps_si128(_mm_shuffle_ps::<0b11_01_11_01>(a, b));
            let eq = _mm_cmpeq_epi32(_mm_and_si128(hi, m), w);
            mask |= (_mm_movemask_ps(_mm_castsi128_ps(eq)) as u32) << (4 * q);
        }
    }
    mask
}

/// Bit `i` set when `words[i]` carries `tag`: the portable pass.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn tag_mask(words: &[u64; PAIR_SLOTS], tag: u64) -> u32 {
    let mut mask = 0u32;
    for (i, &w) in words.iter().enumerate() {
        mask |= ((word_tag(w) == tag) as u32) << i;
    }
    mask
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
            assert!(a.alt < geo.buckets && a.alt != a.bucket);
            assert_ne!(a.hash, KeyHash::new(&k, 2, &geo).hash);
        }
    }

    /// Two keys of the same stripe with different bucket pairs.
    fn two_choice_key(geo: &Geometry) -> KeyHash {
        (0u32..)
            .map(|i| KeyHash::new(&i.to_le_bytes(), 3, geo))
            .find(|k| k.bucket != k.alt)
            .unwrap()
    }

    #[test]
    fn buckets_on_a_bare_map_pick_free_slots_then_the_oldest_unvisited() {
        let map = crate::testing::bare_map(1 << 20, 1, 4, 64);
        let kh = two_choice_key(map.geo());
        let b = Buckets::of(&map, &kh);
        // Empty: the first choice's first slot, no eviction.
        let (slot, evicts) = b.free_or_victim(0);
        assert!(!evicts);
        assert!(std::ptr::eq(slot, b.slot(0)));
        // Fill the first bucket: the second (emptier) one is chosen.
        for i in 0..BUCKET_SLOTS {
            b.slot(i)
                .store(slot_word(kh.tag, 16 * (i as u64 + 1)), Ordering::SeqCst);
        }
        let (slot, evicts) = b.free_or_victim(0);
        assert!(!evicts && std::ptr::eq(slot, b.slot(BUCKET_SLOTS)));
        for i in BUCKET_SLOTS..2 * BUCKET_SLOTS {
            b.slot(i)
                .store(slot_word(kh.tag, 16 * (i as u64 + 1)), Ordering::SeqCst);
        }
        // Full: the oldest entry not visited is the victim.
        mark_visited(b.slot(0), b.slot(0).load(Ordering::SeqCst));
        let (slot, evicts) = b.free_or_victim(0);
        assert!(
            evicts && std::ptr::eq(slot, b.slot(1)),
            "slot 0 was visited"
        );
        // Positions below the tail are free again.
        let (slot, evicts) = b.free_or_victim(16 * 3);
        assert!(!evicts && std::ptr::eq(slot, b.slot(0)));
        // Candidates: the key's tag at or above the tail, first choice first.
        let found: Vec<u64> = b
            .candidates(kh.tag, 16 * 15)
            .map(|(_, w)| word_pos(w))
            .collect();
        assert_eq!(found, [16 * 15, 16 * 16]);
        assert!(b.candidates(kh.tag ^ 1, 0).next().is_none(), "another tag");
        assert_eq!(b.find_pos(16 * 9).map(|(_, w)| word_pos(w)), Some(16 * 9));
        Bucket::at(&map, kh.stripe, kh.bucket).clear();
        assert_eq!(b.candidates(kh.tag, 0).count(), BUCKET_SLOTS);
    }

    #[test]
    fn tag_mask_marks_exactly_the_words_of_the_tag() {
        let mut words = [0u64; PAIR_SLOTS];
        for (i, w) in words.iter_mut().enumerate() {
            // Tags 0x5A5 and neighbours differing in one bit, some visited.
            let tag = if i % 3 == 0 {
                0x5A5
            } else {
                0x5A5 ^ (1 << (i % 12))
            };
            *w = slot_word(tag, 16 * i as u64) | if i % 2 == 0 { VISITED } else { 0 };
        }
        let mask = tag_mask(&words, 0x5A5);
        for (i, &w) in words.iter().enumerate() {
            assert_eq!(mask >> i & 1 == 1, word_tag(w) == 0x5A5, "slot {i}");
        }
        assert_eq!(mask.count_ones(), 6);
        assert_eq!(tag_mask(&words, 0xFFF), 0);
    }
}
