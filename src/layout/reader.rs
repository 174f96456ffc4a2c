//! The reader table (format.md §2.3): per slot, a [`ReaderCounters`] line
//! and then one pin word per stripe.

use core::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU64;

/// The counter line that starts every reader slot, as mapped. Each counter
/// is written only by the thread that owns the slot.
#[repr(C, align(64))]
pub struct ReaderCounters {
    /// Lookups that returned a value.
    pub hits: AtomicU64,
    /// Lookups that returned nothing (absent, expired, corrupt, mismatched).
    pub misses: AtomicU64,
    /// Expired or invalidated entries found.
    pub expired: AtomicU64,
    /// Records that failed their checksum, bounds or rkyv checks.
    pub corrupt: AtomicU64,
    /// Records of another type.
    pub mismatched: AtomicU64,
    /// Pid of the last owner (diagnostics only).
    pub owner_pid: AtomicU64,
    /// Creator runs of `get_or_create`.
    pub creates: AtomicU64,
    /// Stale values served while another caller regenerated.
    pub stale_served: AtomicU64,
    /// Waits for another caller's creator.
    pub waits: AtomicU64,
    /// Waits that timed out.
    pub lock_timeouts: AtomicU64,
    /// How the owner publishes its pins: [`PINS_FENCED`] or
    /// [`PINS_PLAIN`] (format.md §5.5). Written by the owner when it claims
    /// the slot, before its first pin.
    pub pin_fence: AtomicU64,
    _pad: [AtomicU64; 5],
}

/// [`ReaderCounters::pin_fence`]: the owner publishes each pin with a
/// sequentially consistent store (and re-loads the tail the same way).
pub const PINS_FENCED: u64 = 0;
/// [`ReaderCounters::pin_fence`]: the owner's process is registered for
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` and publishes its pins
/// with plain stores; an evictor must issue that barrier before it may
/// trust what it reads of this slot's pins.
pub const PINS_PLAIN: u64 = 1;

/// Size of the counter line; the pin words follow it.
pub const READER_COUNTERS: u64 = size_of::<ReaderCounters>() as u64;

// format.md §2.3, row by row.
const _: () = {
    assert!(offset_of!(ReaderCounters, hits) == 0);
    assert!(offset_of!(ReaderCounters, misses) == 8);
    assert!(offset_of!(ReaderCounters, expired) == 16);
    assert!(offset_of!(ReaderCounters, corrupt) == 24);
    assert!(offset_of!(ReaderCounters, mismatched) == 32);
    assert!(offset_of!(ReaderCounters, owner_pid) == 40);
    assert!(offset_of!(ReaderCounters, creates) == 48);
    assert!(offset_of!(ReaderCounters, stale_served) == 56);
    assert!(offset_of!(ReaderCounters, waits) == 64);
    assert!(offset_of!(ReaderCounters, lock_timeouts) == 72);
    assert!(offset_of!(ReaderCounters, pin_fence) == 80);
    assert!(READER_COUNTERS == 128);
};

/// One reader slot, as the map hands it out: its counters and its pin
/// words (`pins[r]`: 0, or the lowest position pinned in ring id `r`, plus
/// one; ring id `s` is stripe `s`'s main ring, `stripes + s` its probation
/// ring).
#[derive(Clone, Copy)]
pub struct ReaderSlot<'m> {
    /// The counter line.
    pub counters: &'m ReaderCounters,
    /// One pin word per ring: `2 * stripes`.
    pub pins: &'m [AtomicU64],
}

/// A counter of [`ReaderCounters`] a reader adds to (`owner_pid` is not a
/// counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `hits`.
    Hits,
    /// `misses`.
    Misses,
    /// `expired`.
    Expired,
    /// `corrupt`.
    Corrupt,
    /// `mismatched`.
    Mismatched,
    /// `creates`.
    Creates,
    /// `stale_served`.
    StaleServed,
    /// `waits`.
    Waits,
    /// `lock_timeouts`.
    LockTimeouts,
}

impl ReaderCounters {
    /// The word of counter `c`.
    #[inline]
    pub fn get(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::Hits => &self.hits,
            Counter::Misses => &self.misses,
            Counter::Expired => &self.expired,
            Counter::Corrupt => &self.corrupt,
            Counter::Mismatched => &self.mismatched,
            Counter::Creates => &self.creates,
            Counter::StaleServed => &self.stale_served,
            Counter::Waits => &self.waits,
            Counter::LockTimeouts => &self.lock_timeouts,
        }
    }
}

/// The counters by their short names (`reader::HITS`), as `count` takes
/// them.
pub const HITS: Counter = Counter::Hits;
/// See [`Counter::Misses`].
pub const MISSES: Counter = Counter::Misses;
/// See [`Counter::Expired`].
pub const EXPIRED: Counter = Counter::Expired;
/// See [`Counter::Corrupt`].
pub const CORRUPT: Counter = Counter::Corrupt;
/// See [`Counter::Mismatched`].
pub const MISMATCHED: Counter = Counter::Mismatched;
/// See [`Counter::Creates`].
pub const CREATES: Counter = Counter::Creates;
/// See [`Counter::StaleServed`].
pub const STALE_SERVED: Counter = Counter::StaleServed;
/// See [`Counter::Waits`].
pub const WAITS: Counter = Counter::Waits;
/// See [`Counter::LockTimeouts`].
pub const LOCK_TIMEOUTS: Counter = Counter::LockTimeouts;
