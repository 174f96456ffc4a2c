//! Which threads of this process hold, or are trying to take, a robust
//! stripe mutex (any file): what lets a locker tell a lock word that names
//! an idle thread of its own process (bytes written from outside) from one
//! of its own threads really holding the lock (format.md §6, "A damaged
//! lock word").
//!
//! Each thread counts itself in one of [`SLOTS`] counters, each on its own
//! cache line, so that writers of different threads do not share a line:
//! the low 32 bits count holds and attempts in progress, the high 32 bits
//! count attempts ever begun (wrapping). A checker compares two snapshots:
//! if no attempt began between them, no thread of this process can have
//! re-taken a lock in between, which is what makes the verdict free of
//! ABA (see [`Snapshot::quiet_since`]).

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

/// Counters threads are spread over.
const SLOTS: usize = 16;

/// One counter on its own cache line.
#[repr(align(64))]
struct Slot(AtomicU64);

/// The counters (`holds | attempts << 32`).
static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicU64::new(0)) }; SLOTS];

/// The next slot handed to a thread.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A thread's place among the counters and its own count.
struct Local {
    /// Its counter (`usize::MAX`: not assigned yet).
    slot: Cell<usize>,
    /// Its own holds and attempts in progress (a batch holds many stripe
    /// mutexes at once).
    own: Cell<u64>,
}

thread_local! {
    /// The calling thread's [`Local`].
    static MINE: Local = const {
        Local {
            slot: Cell::new(usize::MAX),
            own: Cell::new(0),
        }
    };
}

/// Adds `holds` (±1) to this thread's own count and returns its counter.
fn count_own(holds: i64) -> &'static AtomicU64 {
    MINE.with(|l| {
        if l.slot.get() == usize::MAX {
            l.slot.set(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
        }
        l.own.set(l.own.get().saturating_add_signed(holds));
        &COUNTS[l.slot.get()].0
    })
}

/// Counts the calling thread before it tries to take a stripe mutex: one
/// hold (until [`release`]) and one attempt begun. The fence orders the
/// count before the C library's store of the thread id in the lock word.
pub(crate) fn attempt() {
    count_own(1).fetch_add(1 | 1 << 32, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// Uncounts the calling thread's hold: after its unlock (until then the
/// lock word names the thread), or after an attempt that failed.
pub(crate) fn release() {
    fence(Ordering::SeqCst);
    count_own(-1).fetch_sub(1, Ordering::SeqCst);
}

/// The counters summed at one moment (each read in turn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// Holds and attempts in progress of the other threads of this process
    /// (the checking thread's own left out).
    pub(crate) others: u64,
    /// Attempts ever begun (wrapping).
    attempts: u64,
}

/// Reads every counter (on the checking thread).
pub(crate) fn snapshot() -> Snapshot {
    fence(Ordering::SeqCst);
    let (mut holds, mut attempts) = (0u64, 0u64);
    for s in &COUNTS {
        let v = s.0.load(Ordering::SeqCst);
        holds += v & 0xffff_ffff;
        attempts = attempts.wrapping_add(v >> 32);
    }
    Snapshot {
        others: holds.saturating_sub(MINE.with(|l| l.own.get())),
        attempts,
    }
}

impl Snapshot {
    /// Whether no thread of this process began an attempt between `earlier`
    /// and `self`. A lock word read between the two that names a thread of
    /// another thread of this process, and that still names it after
    /// `self` was taken, was held by that thread throughout (re-taking it
    /// would have been an attempt), so that thread was counted in any
    /// snapshot taken between (its `others`).
    pub(crate) fn quiet_since(self, earlier: Snapshot) -> bool {
        self.attempts == earlier.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_and_holds_are_counted_until_released() {
        // Other tests of this binary may lock meanwhile: compare only this
        // thread's own slot.
        let before = count_own(0).load(Ordering::SeqCst);
        attempt();
        let during = count_own(0).load(Ordering::SeqCst);
        assert_eq!(during & 0xffff_ffff, (before & 0xffff_ffff) + 1);
        assert_eq!(during >> 32, (before >> 32) + 1);
        release();
        let after = count_own(0).load(Ordering::SeqCst);
        assert_eq!(after & 0xffff_ffff, before & 0xffff_ffff);
        assert_eq!(after >> 32, (before >> 32) + 1, "attempts never go back");
    }

    #[test]
    fn a_thread_does_not_count_itself_among_the_others() {
        // Other tests of this binary may hold meanwhile: a thread that
        // attempts shows in this thread's snapshot while it holds.
        let (held, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                attempt();
                attempt();
                held.wait();
                go.wait();
                release();
                release();
            });
            held.wait();
            attempt();
            let during = snapshot();
            release();
            go.wait();
            assert!(during.others >= 2, "{during:?}");
        });
    }

    #[test]
    fn an_attempt_between_two_snapshots_is_seen() {
        let a = snapshot();
        attempt();
        let b = snapshot();
        release();
        assert!(!b.quiet_since(a));
        assert!(b.quiet_since(b));
    }
}
