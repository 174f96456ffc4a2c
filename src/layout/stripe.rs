//! The stripe table (format.md §2.2): one [`StripeEntry`] per stripe.

use core::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU64;

/// One stripe-table entry, as mapped: two cache lines, the tail alone in
/// the first (every reader loads it) but for `repairs`, which is written
/// only on the rare repair path; the writer-owned words in the second.
/// Only a holder of the stripe's write lock stores to it.
#[repr(C, align(64))]
pub struct StripeEntry {
    /// Log positions below it are dead.
    pub tail: AtomicU64,
    /// Resets of this stripe after its invariants failed (format.md §5.8).
    /// Was zero padding: files written before it read 0.
    pub repairs: AtomicU64,
    _pad: [AtomicU64; 6],
    /// Next append position.
    pub head: AtomicU64,
    /// Live index slots (approximate after a crash).
    pub entries: AtomicU64,
    /// Records inserted.
    pub inserts: AtomicU64,
    /// Entries evicted.
    pub evictions: AtomicU64,
    /// Entries reinserted (second chance).
    pub reinserts: AtomicU64,
    /// Entries deleted.
    pub deletes: AtomicU64,
    /// Writes that found a live pin on the space they needed.
    pub pin_waits: AtomicU64,
    /// Evictions because both buckets of a new key were full (a subset of
    /// `evictions`).
    pub index_evictions: AtomicU64,
}

/// Size of one stripe-table entry.
pub const STRIPE_ENTRY: u64 = size_of::<StripeEntry>() as u64;

// format.md §2.2, row by row.
const _: () = {
    assert!(offset_of!(StripeEntry, tail) == 0);
    assert!(offset_of!(StripeEntry, repairs) == 8);
    assert!(offset_of!(StripeEntry, head) == 64);
    assert!(offset_of!(StripeEntry, entries) == 72);
    assert!(offset_of!(StripeEntry, inserts) == 80);
    assert!(offset_of!(StripeEntry, evictions) == 88);
    assert!(offset_of!(StripeEntry, reinserts) == 96);
    assert!(offset_of!(StripeEntry, deletes) == 104);
    assert!(offset_of!(StripeEntry, pin_waits) == 112);
    assert!(offset_of!(StripeEntry, index_evictions) == 120);
    assert!(STRIPE_ENTRY == 128);
};
