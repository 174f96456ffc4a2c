//! The stripe table (format.md §2.2): one [`StripeEntry`] per stripe.

use core::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU64;

/// One stripe-table entry, as mapped: three cache lines. The first holds
/// the two ring tails, which every reader loads (one line for both), and
/// `repairs`, written only on the rare repair path; the second the main
/// ring's head and the writer's counters; the third the probation ring's
/// head and the counters of the probation policy and the admission sketch. Only a holder of the
/// stripe's write lock stores to it.
#[repr(C, align(64))]
pub struct StripeEntry {
    /// Main-ring positions below it are dead.
    pub tail: AtomicU64,
    /// Resets of this stripe after its invariants failed (format.md §5.8).
    pub repairs: AtomicU64,
    /// Probation-ring positions below it are dead (or ghosts).
    pub prob_tail: AtomicU64,
    _pad: [AtomicU64; 5],
    /// Next append position of the main ring.
    pub head: AtomicU64,
    /// Live index slots (approximate after a crash).
    pub entries: AtomicU64,
    /// Records inserted.
    pub inserts: AtomicU64,
    /// Entries evicted.
    pub evictions: AtomicU64,
    /// Entries reinserted in the main ring (read since their last pass).
    pub reinserts: AtomicU64,
    /// Entries deleted.
    pub deletes: AtomicU64,
    /// Writes that found a live pin on the space they needed.
    pub pin_waits: AtomicU64,
    /// Evictions because both buckets of a new key were full (a subset of
    /// `evictions`).
    pub index_evictions: AtomicU64,
    /// Next append position of the probation ring.
    pub prob_head: AtomicU64,
    /// Entries copied from probation to main (read while in probation).
    pub promotions: AtomicU64,
    /// Entries that left probation unread and became ghosts.
    pub ghosts: AtomicU64,
    /// Writes of a new key whose ghost was found (to main, or to probation
    /// when the admission sketch refused it: `ghost_rejections`).
    pub ghost_hits: AtomicU64,
    /// Bytes copied by promotions and reinsertions (write amplification).
    pub rewritten_bytes: AtomicU64,
    /// Whether main's oldest segment holds an entry lent to it unread:
    /// `(tail + 16) << 1 | answer` for the main tail it was found at, 0 =
    /// not known (format.md §5.4). A hint: any value is safe.
    pub lend_memo: AtomicU64,
    /// Of `ghost_hits`, the keys the admission sketch sent to probation
    /// (format.md §5.2).
    pub ghost_rejections: AtomicU64,
    /// Additions made to the stripe's admission sketch; its counters are
    /// halved at the additions that bring it to `period + k × period / 2`
    /// (format.md §2.4a). Any value is safe.
    pub sketch_additions: AtomicU64,
}

/// Size of one stripe-table entry.
pub const STRIPE_ENTRY: u64 = size_of::<StripeEntry>() as u64;

// format.md §2.2, row by row.
const _: () = {
    assert!(offset_of!(StripeEntry, tail) == 0);
    assert!(offset_of!(StripeEntry, repairs) == 8);
    assert!(offset_of!(StripeEntry, prob_tail) == 16);
    assert!(offset_of!(StripeEntry, head) == 64);
    assert!(offset_of!(StripeEntry, entries) == 72);
    assert!(offset_of!(StripeEntry, inserts) == 80);
    assert!(offset_of!(StripeEntry, evictions) == 88);
    assert!(offset_of!(StripeEntry, reinserts) == 96);
    assert!(offset_of!(StripeEntry, deletes) == 104);
    assert!(offset_of!(StripeEntry, pin_waits) == 112);
    assert!(offset_of!(StripeEntry, index_evictions) == 120);
    assert!(offset_of!(StripeEntry, prob_head) == 128);
    assert!(offset_of!(StripeEntry, promotions) == 136);
    assert!(offset_of!(StripeEntry, ghosts) == 144);
    assert!(offset_of!(StripeEntry, ghost_hits) == 152);
    assert!(offset_of!(StripeEntry, rewritten_bytes) == 160);
    assert!(offset_of!(StripeEntry, lend_memo) == 168);
    assert!(offset_of!(StripeEntry, ghost_rejections) == 176);
    assert!(offset_of!(StripeEntry, sketch_additions) == 184);
    assert!(STRIPE_ENTRY == 192);
};
