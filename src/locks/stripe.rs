//! Stripe write locks (format.md §6), of the kind the file's header
//! records:
//!
//! - **byte-range** (every platform): the in-process mutex of each
//!   stripe, then its byte-range lock `WRITE + s`; a batch's stripes
//!   together with one range lock when it can.
//! - **robust** (Linux with glibc): the stripe's process-shared robust
//!   pthread mutex in the file's mutex table. It excludes threads as well
//!   as processes (it is owned by a thread), so no in-process mutex is
//!   taken; a batch locks its stripes one by one in ascending order, which
//!   is deadlock-free because every writer that holds more than one stripe
//!   takes them in that order.

use super::Mode;
use crate::layout::locks::WRITE;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
use crate::layout::mutex::StripeMutex;
use crate::layout::mutex::{LockWord, KIND_ROBUST};
use crate::map::Map;
use std::fs::File;
use std::io;
use std::sync::{Mutex, MutexGuard};

/// Most robust stripe mutexes a batch holds at once: half the kernel's
/// limit on the robust list it walks when a thread dies
/// (`ROBUST_LIST_LIMIT`, 2048), leaving room for the application's own
/// robust mutexes. A batch over more stripes is written in ascending
/// chunks of this many.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub(crate) const MAX_HELD_ROBUST: usize = 1024;

/// A file's stripe write locks, as this process takes them.
pub(crate) enum StripeLocks {
    /// Byte-range locks, with one in-process mutex per stripe taken first
    /// (one process's file locks do not exclude each other).
    ByteRange(Box<[Mutex<()>]>),
    /// Robust mutexes in the mapping: nothing per process.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    Robust,
}

/// Holds one stripe's write lock.
pub(crate) struct StripeLock<'p> {
    held: Held<'p>,
}

enum Held<'p> {
    ByteRange {
        file: &'p File,
        stripe: u32,
        _mutex: MutexGuard<'p, ()>,
    },
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    Robust {
        mutex: &'p StripeMutex,
        stripe: u32,
        /// The previous owner died and the mutex is not yet consistent.
        owner_died: bool,
    },
}

/// Holds the write locks of a batch's stripes.
pub(crate) enum BatchLock<'p> {
    /// Every stripe mutex from the lowest to the highest stripe of the
    /// batch, and the file locks.
    ByteRange {
        file: &'p File,
        file_locks: BatchFileLocks,
        _mutexes: Vec<MutexGuard<'p, ()>>,
    },
    /// The batch's own stripes, in ascending order.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    Robust(Vec<StripeLock<'p>>),
}

/// Which file locks a [`BatchLock`] holds.
pub(crate) enum BatchFileLocks {
    /// One range over the lock bytes of stripes `lo..=hi` (one system call
    /// to take, one to release).
    Range { off: u64, len: u64 },
    /// One lock per stripe of the batch, taken one by one in ascending order.
    Each(Vec<u32>),
}

impl StripeLocks {
    /// The locks of a file with `stripes` stripes whose header records
    /// `kind` (already checked usable by [`super::check_kind`] for a
    /// writable handle).
    pub(crate) fn new(stripes: u32, kind: LockWord) -> StripeLocks {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if kind.kind == KIND_ROBUST {
            return StripeLocks::Robust;
        }
        let _ = (kind, KIND_ROBUST);
        StripeLocks::ByteRange((0..stripes).map(|_| Mutex::new(())).collect())
    }

    /// How many stripe locks one thread may hold at once: unbounded for
    /// byte-range locks; for robust mutexes [`MAX_HELD_ROBUST`], because
    /// the kernel walks at most 2048 entries of a dead thread's robust
    /// list, and a mutex beyond them would never be marked owner-died.
    pub(crate) fn max_held(&self) -> usize {
        match self {
            StripeLocks::ByteRange(_) => usize::MAX,
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            StripeLocks::Robust => MAX_HELD_ROBUST,
        }
    }

    /// Takes stripe `s`'s write lock through `file` (byte-range) or in
    /// `map` (robust). Released when the guard drops. A guard whose
    /// [`owner_died`](StripeLock::owner_died) must have the stripe repaired
    /// before it is trusted.
    pub(crate) fn lock<'p>(
        &'p self,
        map: &'p Map,
        file: &'p File,
        s: u32,
    ) -> io::Result<StripeLock<'p>> {
        match self {
            StripeLocks::ByteRange(mutexes) => {
                let _ = map;
                let mutex = mutexes[s as usize]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                super::lock(file, WRITE + s as u64, Mode::Exclusive, true)?;
                Ok(StripeLock {
                    held: Held::ByteRange {
                        file,
                        stripe: s,
                        _mutex: mutex,
                    },
                })
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            StripeLocks::Robust => {
                let _ = file;
                let mutex = map.stripe_mutex(s);
                // SAFETY: the file's lock word is this build's (checked at
                // open for every writable handle, the only ones that lock),
                // so the mutex was initialised by `robust::init` when the
                // file was created; `map` is writable and outlives the guard.
                let got = unsafe { super::robust::lock(mutex) }?;
                Ok(StripeLock {
                    held: Held::Robust {
                        mutex,
                        stripe: s,
                        owner_died: got == super::robust::Locked::OwnerDied,
                    },
                })
            }
        }
    }

    /// Takes the write locks of `stripes` (ascending, distinct, non-empty)
    /// for one batch.
    ///
    /// Byte-range: the in-process mutexes of every stripe from the first
    /// to the last are taken in ascending order, because the file locks of
    /// one process do not exclude each other and a range covers them all.
    /// Then one non-blocking lock over the whole range of lock bytes: a
    /// batch that touches most stripes of a file makes 2 system calls
    /// instead of two per stripe. If another process holds any stripe of
    /// the range, the batch falls back to locking its own stripes one by
    /// one, blocking, in ascending order (as single-stripe writers and
    /// other batches do), so a range never waits, never starves behind busy
    /// stripes it does not need, and cannot deadlock.
    ///
    /// Robust: each stripe's mutex, blocking, in ascending order.
    pub(crate) fn lock_many<'p>(
        &'p self,
        map: &'p Map,
        file: &'p File,
        stripes: &[u32],
    ) -> io::Result<BatchLock<'p>> {
        let mutexes = match self {
            StripeLocks::ByteRange(m) => {
                let _ = map;
                m
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            StripeLocks::Robust => {
                let held = stripes
                    .iter()
                    .map(|&s| self.lock(map, file, s))
                    .collect::<io::Result<Vec<_>>>()?;
                return Ok(BatchLock::Robust(held));
            }
        };
        let (lo, hi) = (stripes[0], stripes[stripes.len() - 1]);
        let guards = (lo..=hi)
            .map(|s| {
                mutexes[s as usize]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
            .collect();
        let (off, len) = (WRITE + lo as u64, (hi - lo) as u64 + 1);
        let file_locks =
            if stripes.len() > 1 && super::lock_range(file, off, len, Mode::Exclusive, false)? {
                BatchFileLocks::Range { off, len }
            } else {
                let mut held = Vec::with_capacity(stripes.len());
                for &s in stripes {
                    if let Err(e) = super::lock(file, WRITE + s as u64, Mode::Exclusive, true) {
                        for &h in &held {
                            let _ = super::unlock(file, WRITE + h as u64);
                        }
                        return Err(e);
                    }
                    held.push(s);
                }
                BatchFileLocks::Each(held)
            };
        Ok(BatchLock::ByteRange {
            file,
            file_locks,
            _mutexes: guards,
        })
    }
}

impl StripeLock<'_> {
    /// The stripe's previous lock owner died holding it (robust mutexes
    /// only: byte-range locks are released by the kernel without a word).
    /// The holder repairs the stripe, then calls
    /// [`mark_consistent`](Self::mark_consistent).
    pub(crate) fn owner_died(&self) -> Option<u32> {
        match &self.held {
            Held::ByteRange { .. } => None,
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            Held::Robust {
                owner_died, stripe, ..
            } => owner_died.then_some(*stripe),
        }
    }

    /// Marks the mutex consistent after the repair (format.md §6, "A dead
    /// owner").
    pub(crate) fn mark_consistent(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if let Held::Robust {
            mutex, owner_died, ..
        } = &mut self.held
        {
            if *owner_died {
                // SAFETY: this thread holds the mutex (the guard exists).
                unsafe { super::robust::consistent(mutex) };
                *owner_died = false;
            }
        }
    }
}

impl Drop for StripeLock<'_> {
    fn drop(&mut self) {
        // A holder that unwinds before its repair finished still marks the
        // mutex consistent: unlocking an inconsistent robust mutex would
        // make it unusable forever (`ENOTRECOVERABLE`), and the stripe needs
        // no more than what every writer checks on entry (format.md §7).
        self.mark_consistent();
        match &self.held {
            // Unlock the file before the mutex (field drop order) so the
            // next thread of this process never finds its own
            // description's lock.
            Held::ByteRange { file, stripe, .. } => {
                let _ = super::unlock(file, WRITE + *stripe as u64);
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            Held::Robust { mutex, .. } => {
                // SAFETY: this thread holds the mutex (the guard exists).
                unsafe { super::robust::unlock(mutex) };
            }
        }
    }
}

impl BatchLock<'_> {
    /// The stripes of the batch whose previous owner died (see
    /// [`StripeLock::owner_died`]).
    pub(crate) fn owners_died(&self) -> Vec<u32> {
        match self {
            BatchLock::ByteRange { .. } => Vec::new(),
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            BatchLock::Robust(held) => held.iter().filter_map(|l| l.owner_died()).collect(),
        }
    }

    /// Marks every mutex of the batch consistent after the repairs.
    pub(crate) fn mark_consistent(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if let BatchLock::Robust(held) = self {
            held.iter_mut().for_each(StripeLock::mark_consistent);
        }
    }
}

impl Drop for BatchLock<'_> {
    fn drop(&mut self) {
        // File locks first, then the mutexes (field drop order), as for
        // `StripeLock`. Robust guards release themselves.
        match self {
            BatchLock::ByteRange {
                file,
                file_locks: BatchFileLocks::Range { off, len },
                ..
            } => {
                let _ = super::unlock_range(file, *off, *len);
            }
            BatchLock::ByteRange {
                file,
                file_locks: BatchFileLocks::Each(held),
                ..
            } => {
                for &s in held.iter() {
                    let _ = super::unlock(file, WRITE + s as u64);
                }
            }
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            BatchLock::Robust(_) => {}
        }
    }
}
