//! The admission sketch (format.md §2.4a): per stripe, a count-min sketch
//! of 4-bit counters, 16 to a word, in whole [`SketchLine`]s after the
//! index. Its size follows from the index's: `sketch_counters(buckets)`
//! counters per stripe, about two per entry the index is sized for.

use super::BUCKET_SLOTS;
use core::mem::size_of;
use std::sync::atomic::AtomicU64;

/// One cache line of the sketch: eight words of sixteen 4-bit counters.
#[repr(C, align(64))]
pub struct SketchLine {
    /// The counter words: counter `c` is bits `4*(c % 16)..+4` of word
    /// `c / 16` of the stripe's sketch.
    pub words: [AtomicU64; 8],
}

/// Size of one sketch line.
pub const SKETCH_LINE: u64 = size_of::<SketchLine>() as u64;
const _: () = assert!(SKETCH_LINE == 64);

/// 4-bit counters per word.
pub const COUNTERS_PER_WORD: u64 = 16;
/// Largest counter value.
pub const COUNTER_MAX: u64 = 15;
/// Counters a key maps to (one per row of the count-min sketch).
pub const SKETCH_ROWS: u64 = 4;
/// Added to the key hash once per row before mixing: row `i` uses
/// `mix64(hash + i * SKETCH_ROW_STEP)` (the 64-bit golden ratio).
pub const SKETCH_ROW_STEP: u64 = 0x9E37_79B9_7F4A_7C15;
/// Additions per index entry between two halvings of the counters.
pub const SKETCH_PERIOD_PER_ENTRY: u64 = 10;
/// The halving of every counter of a word at once: shift right by one,
/// dropping the bit each counter would receive from its neighbour.
pub const HALVING_MASK: u64 = 0x7777_7777_7777_7777;

/// Entries a stripe's index is sized for: two slots per entry.
pub const fn sketch_entries(buckets: u32) -> u64 {
    buckets as u64 * BUCKET_SLOTS as u64 / 2
}

/// Counters of one stripe's sketch: `next_pow2(2 × entries)`, at least one
/// line's worth (128). A power of two, so a counter is picked by a mask.
pub const fn sketch_counters(buckets: u32) -> u64 {
    let c = (2 * sketch_entries(buckets)).next_power_of_two();
    if c < SKETCH_LINE * 2 {
        SKETCH_LINE * 2
    } else {
        c
    }
}

/// Bytes of one stripe's sketch: half a byte per counter, whole lines.
pub const fn sketch_bytes(buckets: u32) -> u64 {
    sketch_counters(buckets) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_sizes_are_whole_lines_of_about_two_counters_per_entry() {
        for b in [1u32, 2, 15, 16, 17, 1000, 1 << 20, u32::MAX] {
            let c = sketch_counters(b);
            assert!(c.is_power_of_two() && c >= 128, "{b}");
            assert_eq!(sketch_bytes(b) % SKETCH_LINE, 0, "{b}");
            assert!(c >= 2 * sketch_entries(b), "{b}");
            assert!(b < 32 || c < 4 * sketch_entries(b), "{b}");
        }
        assert_eq!(sketch_counters(16), 128);
        assert_eq!(sketch_counters(17), 256);
    }
}
