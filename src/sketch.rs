//! The writer-only admission sketch (format.md §2.4a): per stripe, a
//! count-min sketch of 4-bit counters (TinyLFU, Einziger et al., ACM ToS
//! 2017) that estimates how often a key was missed and written, read and
//! passed by the evictor. A `set` of a new key whose ghost is found enters
//! the main ring only if its estimate is at least that of main's next
//! victim plus the victim's hit count (format.md §5.2); otherwise it goes
//! to probation.
//!
//! Only a holder of the stripe's write lock touches it (relaxed atomic
//! loads and stores: the bytes are shared, the lock orders the writers);
//! readers never do. It is advisory: any bytes are valid counters, so a
//! damaged sketch, or one left half-halved by a writer that died, only
//! changes admission decisions.

use crate::layout::sketch::{
    COUNTERS_PER_WORD, COUNTER_MAX, HALVING_MASK, SKETCH_PERIOD_PER_ENTRY, SKETCH_ROWS,
    SKETCH_ROW_STEP,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// The SplitMix64 finaliser: a bijective 64-bit mix, spreading a key's
/// hash over the counters of each row.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One stripe's sketch, as mapped, with the stripe's additions counter.
pub(crate) struct Sketch<'a> {
    words: &'a [AtomicU64],
    /// Counters − 1 (the counter count is a power of two).
    mask: u64,
    additions: &'a AtomicU64,
    /// Additions before the first halving.
    period: u64,
}

impl<'a> Sketch<'a> {
    /// The sketch of `words` (a power-of-two number of them, as the
    /// geometry lays out), counting its additions in `additions`, for a
    /// stripe whose index holds `entries` entries.
    pub(crate) fn new(words: &'a [AtomicU64], additions: &'a AtomicU64, entries: u64) -> Self {
        debug_assert!(words.is_empty() || words.len().is_power_of_two());
        Sketch {
            words,
            mask: (words.len() as u64 * COUNTERS_PER_WORD).saturating_sub(1),
            additions,
            // Even and at least 2, so that half a period is a whole step.
            period: (SKETCH_PERIOD_PER_ENTRY.saturating_mul(entries) & !1).max(2),
        }
    }

    /// Word index and bit shift of `hash`'s counter in row `row`.
    #[inline]
    fn counter(&self, hash: u64, row: u64) -> (usize, u32) {
        let c = mix64(hash.wrapping_add(row.wrapping_mul(SKETCH_ROW_STEP))) & self.mask;
        (
            (c / COUNTERS_PER_WORD) as usize % self.words.len().max(1),
            ((c % COUNTERS_PER_WORD) * 4) as u32,
        )
    }

    /// The key's estimated frequency: the least of its four counters
    /// (0..=15).
    pub(crate) fn estimate(&self, hash: u64) -> u64 {
        if self.words.is_empty() {
            return 0;
        }
        (0..SKETCH_ROWS)
            .map(|row| {
                let (w, shift) = self.counter(hash, row);
                (self.words[w].load(Ordering::Relaxed) >> shift) & COUNTER_MAX
            })
            .min()
            .unwrap_or(0)
    }

    /// Adds `by` occurrences of the key: `by` times, +1 on each of its
    /// counters below 15, and one addition counted; the counters are
    /// halved whenever the additions reach `period + k × period / 2`
    /// (TinyLFU's reset: halving the additions count after each halving
    /// makes the next one half a period later).
    pub(crate) fn add(&self, hash: u64, by: u64) {
        if self.words.is_empty() {
            return;
        }
        for _ in 0..by {
            for row in 0..SKETCH_ROWS {
                let (w, shift) = self.counter(hash, row);
                let word = &self.words[w];
                let v = word.load(Ordering::Relaxed);
                if (v >> shift) & COUNTER_MAX < COUNTER_MAX {
                    word.store(v + (1 << shift), Ordering::Relaxed);
                }
            }
            let n = self.additions.load(Ordering::Relaxed).wrapping_add(1);
            self.additions.store(n, Ordering::Relaxed);
            if n >= self.period && (n - self.period) % (self.period / 2) == 0 {
                self.halve();
            }
        }
    }

    /// Halves every counter.
    fn halve(&self) {
        for word in self.words {
            let v = word.load(Ordering::Relaxed);
            word.store((v >> 1) & HALVING_MASK, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn estimate_counts_additions_and_saturates_at_15() {
        let (w, adds) = (words(64), AtomicU64::new(0));
        let sk = Sketch::new(&w, &adds, 1_000_000);
        assert_eq!(sk.estimate(42), 0);
        sk.add(42, 1);
        assert_eq!(sk.estimate(42), 1);
        sk.add(42, 2);
        assert_eq!(sk.estimate(42), 3);
        sk.add(42, 40);
        assert_eq!(sk.estimate(42), 15, "saturates");
        assert_eq!(adds.load(Ordering::Relaxed), 43);
        // No other counter of a word overflowed into its neighbour.
        let set: u32 = w
            .iter()
            .map(|x| {
                let v = x.load(Ordering::Relaxed);
                (0..16).filter(|i| (v >> (4 * i)) & 15 != 0).count() as u32
            })
            .sum();
        assert!((1..=4).contains(&set), "{set} counters touched");
        for x in &w {
            let v = x.load(Ordering::Relaxed);
            assert!((0..16).all(|i| matches!((v >> (4 * i)) & 15, 0 | 15)));
        }
        assert!(sk.estimate(7) <= 15);
    }

    #[test]
    fn counters_halve_after_a_period_then_every_half_period() {
        let (w, adds) = (words(8), AtomicU64::new(0));
        // 10 entries: a period of 100 additions.
        let sk = Sketch::new(&w, &adds, 10);
        sk.add(1, 12);
        assert_eq!(sk.estimate(1), 12);
        // 88 more additions of other keys: the 100th halves everything.
        for k in 0..87 {
            sk.add(1_000 + k, 1);
        }
        let before = sk.estimate(1);
        assert!(before >= 12);
        sk.add(5_000, 1);
        assert_eq!(adds.load(Ordering::Relaxed), 100);
        assert_eq!(sk.estimate(1), before / 2);
        for x in &w {
            let v = x.load(Ordering::Relaxed);
            assert!((0..16).all(|i| (v >> (4 * i)) & 15 <= 7), "all halved");
        }
        // The next halving comes 50 additions later.
        let mid = sk.estimate(1);
        for k in 0..49 {
            sk.add(9_000 + k, 1);
        }
        let at149 = sk.estimate(1);
        assert!(at149 >= mid);
        sk.add(9_999, 1);
        assert_eq!(sk.estimate(1), at149 / 2);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for entries in [0, 1, 3, u64::MAX / 5, u64::MAX] {
            let w: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(next())).collect();
            for start in [0, u64::MAX, u64::MAX - 1, next()] {
                let adds = AtomicU64::new(start);
                let sk = Sketch::new(&w, &adds, entries);
                for _ in 0..200 {
                    let h = next();
                    assert!(sk.estimate(h) <= 15);
                    sk.add(h, next() % 3);
                }
            }
        }
        let adds = AtomicU64::new(u64::MAX);
        let sk = Sketch::new(&[], &adds, 5);
        sk.add(1, 2);
        assert_eq!(sk.estimate(1), 0);
    }
}
