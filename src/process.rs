//! What one process holds for one open file, in one fork generation: the
//! descriptor its locks are taken through, the stripe mutexes, the reader
//! slots it owns (claimed and released here), its read-only pin counts,
//! its regeneration table and its detached pins.
//!
//! The per-process state of the reader table and of regeneration is plain
//! data here; their protocols live in `crate::readers` and `crate::regen`,
//! which build on this module (it depends on neither). A fork child builds
//! a fresh [`Process`] before its first operation (`crate::shared`).

use crate::error::{Error, Result};
use crate::layout::locks::LIVE;
use crate::layout::mutex::LockWord;
use crate::locks::{self, BatchLock, Mode, StripeLock, StripeLocks};
use crate::map::Map;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::ThreadId;

/// What one process holds for one open file.
pub(crate) struct Process {
    /// The open file description locks are taken through.
    pub file: Arc<File>,
    /// The fork generation this state belongs to.
    pub generation: u64,
    /// Process id that built this state.
    pub pid: u32,
    /// The stripe write locks, of the file's kind (byte-range locks with
    /// their in-process halves, or robust mutexes in the mapping).
    pub stripe_locks: StripeLocks,
    /// Reader slots held by threads of this process (their liveness locks
    /// are ours, so `locks::held_by_other` cannot see them).
    pub owned_slots: Box<[AtomicBool]>,
    /// Serialises claiming reader slots.
    pub claim: Mutex<()>,
    /// Reference counts of read-only pins, by lock offset.
    pub ro_pins: Mutex<HashMap<u64, u32>>,
    /// Regeneration locks held by this process (protocol: `crate::regen`).
    pub regen: RegenTable,
    /// Pins of detached guards (`OwnedGuard`), in a slot of the process
    /// (protocol: `crate::readers`).
    pub detached: ProcessPins,
    /// `file` is a descriptor of its own, registered for the fork handler
    /// (a fork child's description; in the opening process `file` is the
    /// mapping's descriptor, registered by `crate::shared`).
    #[cfg(target_os = "linux")]
    lock_fd_registered: bool,
}

/// The in-process state of the regeneration stripes this process uses.
#[derive(Default)]
pub(crate) struct RegenTable {
    /// Per regeneration stripe in use.
    pub stripes: Mutex<HashMap<u32, RegenStripe>>,
    /// Signalled whenever an entry changes.
    pub changed: Condvar,
}

/// One regeneration stripe of [`RegenTable`].
#[derive(Default)]
pub(crate) struct RegenStripe {
    /// This process holds the stripe's file lock.
    pub file_held: bool,
    /// A thread of this process is taking the file lock (others wait).
    pub acquiring: bool,
    /// The hint this process published when it took the file lock (0: none).
    pub hint: u64,
    /// Keys being regenerated in this process, and by which thread.
    /// `None` while a lock is being handed to a background thread.
    pub keys: HashMap<Vec<u8>, Option<ThreadId>>,
}

/// The pins of detached guards ([`OwnedGuard`](crate::OwnedGuard)): one
/// reader slot per process, claimed on first use, whose pin word for a
/// stripe holds the lowest position any detached guard of the process pins
/// there, plus one. Unlike a thread's slot it is shared by every thread,
/// so its bookkeeping is behind a mutex, and a detached guard may be
/// dropped on any thread.
#[derive(Default)]
pub(crate) struct ProcessPins {
    /// The bookkeeping.
    pub state: Mutex<ProcessPinState>,
}

/// The bookkeeping of [`ProcessPins`].
#[derive(Default)]
pub(crate) struct ProcessPinState {
    /// The reader slot, once claimed.
    pub slot: Option<u32>,
    /// Per stripe: the positions pinned, with how many guards pin each.
    pub pinned: HashMap<u32, BTreeMap<u64, u32>>,
}

impl Process {
    /// Builds the state for `file` in the current process.
    pub(crate) fn new(file: Arc<File>, stripes: u32, reader_slots: u32, lock: LockWord) -> Process {
        Process {
            file,
            generation: crate::fork::generation(),
            pid: std::process::id(),
            stripe_locks: StripeLocks::new(stripes, lock),
            owned_slots: (0..reader_slots).map(|_| AtomicBool::new(false)).collect(),
            claim: Mutex::new(()),
            ro_pins: Mutex::new(Default::default()),
            regen: Default::default(),
            detached: Default::default(),
            #[cfg(target_os = "linux")]
            lock_fd_registered: false,
        }
    }

    /// The state of a fork child: `file` is the child's own open file
    /// description ([`fork::reopen_for_child`](crate::fork::reopen_for_child)),
    /// registered so that the child's own children detach from it when
    /// they fork in turn (a grandchild that never uses the cache would
    /// otherwise keep the child's locks alive after the child dies).
    pub(crate) fn for_child(
        file: Arc<File>,
        stripes: u32,
        reader_slots: u32,
        lock: LockWord,
    ) -> Process {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let writable = {
                // SAFETY: F_GETFL on a descriptor `file` keeps open.
                let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
                fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY
            };
            crate::fork::register_lock_file(file.as_raw_fd(), writable);
            let mut p = Process::new(file, stripes, reader_slots, lock);
            p.lock_fd_registered = true;
            p
        }
        #[cfg(not(target_os = "linux"))]
        Process::new(file, stripes, reader_slots, lock)
    }

    /// Takes stripe `s`'s write lock (see [`StripeLocks::lock`]) in the
    /// file mapped as `map`.
    pub(crate) fn lock_stripe<'p>(
        &'p self,
        map: &'p Map,
        s: u32,
    ) -> std::io::Result<StripeLock<'p>> {
        self.stripe_locks.lock(map, &self.file, s)
    }

    /// Takes the write locks of a batch's `stripes` (ascending, distinct,
    /// non-empty; see [`StripeLocks::lock_many`]).
    pub(crate) fn lock_stripes<'p>(
        &'p self,
        map: &'p Map,
        stripes: &[u32],
    ) -> std::io::Result<BatchLock<'p>> {
        self.stripe_locks.lock_many(map, &self.file, stripes)
    }

    /// Claims a free reader slot for this process (a thread's, or the
    /// process-wide slot of detached guards): the first slot from a
    /// pid-derived start whose liveness lock `LIVE + i` nobody holds.
    /// Resets the pins a dead previous owner may have left, records our pid
    /// and raises `reader_hwm` (format.md §5.6).
    pub(crate) fn claim_slot(&self, map: &Map, path: &Path) -> Result<u32> {
        let n = map.geo().reader_slots;
        let _claiming = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        let start = (std::process::id().wrapping_mul(SLOT_START_MULTIPLIER) >> 7) % n;
        for k in 0..n {
            let i = (start + k) % n;
            if self.owned_slots[i as usize].load(Ordering::Acquire) {
                continue;
            }
            let got = locks::lock(&self.file, LIVE + i as u64, Mode::Exclusive, false)
                .map_err(|e| Error::io("locking a reader slot", path, e))?;
            if !got {
                continue;
            }
            // Nobody alive holds slot `i`: whatever pins it has belong to a
            // dead thread. Reset them before we use it.
            let slot = map.reader(i);
            for pin in slot.pins {
                pin.store(0, Ordering::SeqCst);
            }
            // Fenced pins until the claimer says otherwise (`crate::readers`).
            slot.counters
                .pin_fence
                .store(crate::layout::reader::PINS_FENCED, Ordering::SeqCst);
            slot.counters
                .owner_pid
                .store(self.pid as u64, Ordering::Relaxed);
            self.owned_slots[i as usize].store(true, Ordering::Release);
            map.header()
                .reader_hwm
                .fetch_max(i as u64 + 1, Ordering::SeqCst);
            return Ok(i);
        }
        Err(Error::ReadersFull {
            path: path.to_path_buf(),
            slots: n,
        })
    }

    /// Gives reader slot `i` back: its pins zeroed, its liveness lock
    /// released.
    pub(crate) fn release_slot(&self, map: &Map, i: u32) {
        for pin in map.reader(i).pins {
            pin.store(0, Ordering::SeqCst);
        }
        self.owned_slots[i as usize].store(false, Ordering::Release);
        let _ = locks::unlock(&self.file, LIVE + i as u64);
    }
}

/// Spreads the first reader slot a process tries over the table (Knuth's
/// multiplicative hash of the pid).
const SLOT_START_MULTIPLIER: u32 = 2_654_435_761;

#[cfg(target_os = "linux")]
impl Drop for Process {
    fn drop(&mut self) {
        if self.lock_fd_registered {
            use std::os::fd::AsRawFd;
            crate::fork::unregister_open_file(self.file.as_raw_fd(), 0);
        }
    }
}
