//! The regeneration hint words of the header (format.md §2.1 and §5.9):
//! a holder of regeneration stripe *r* publishes `(r + 1) << 40 |
//! deadline` in word `r % 256`, the deadline in units of 2^20 ns (about
//! 1 ms), 40 bits, compared modulo 2^40.

/// Words in the hint table.
pub const HINT_WORDS: usize = 256;

/// How long a hint is believed after it is published: 1 s.
pub const HINT_LEASE_NS: u64 = 1_000_000_000;

/// Bits of a hint word that hold the deadline.
pub const HINT_TIME_BITS: u32 = 40;

/// The deadline's unit: 2^20 ns.
const HINT_TIME_UNIT_SHIFT: u32 = 20;

const TIME_MASK: u64 = (1 << HINT_TIME_BITS) - 1;

/// The word `stripe` maps to (stripes share words modulo [`HINT_WORDS`]).
#[inline]
pub fn word_index(stripe: u32) -> usize {
    stripe as usize % HINT_WORDS
}

/// The hint a holder of `stripe` publishes at `now_ns`.
pub fn encode(stripe: u32, now_ns: u64) -> u64 {
    let deadline = ((now_ns + HINT_LEASE_NS) >> HINT_TIME_UNIT_SHIFT) & TIME_MASK;
    ((stripe as u64 + 1) << HINT_TIME_BITS) | deadline
}

/// Whether hint word `w` names `stripe` with a deadline still ahead of
/// `now_ns` (compared modulo 2^40, so the wrap of the 40-bit clock every
/// ~36 years does not matter).
pub fn names_live(w: u64, stripe: u32, now_ns: u64) -> bool {
    let ahead = (w & TIME_MASK).wrapping_sub(now_ns >> HINT_TIME_UNIT_SHIFT) & TIME_MASK;
    w >> HINT_TIME_BITS == stripe as u64 + 1 && ahead != 0 && ahead < 1 << (HINT_TIME_BITS - 1)
}

/// The stripe number a hint word names, plus one (0: none).
#[cfg(test)]
pub fn stripe_plus_one(w: u64) -> u64 {
    w >> HINT_TIME_BITS
}
