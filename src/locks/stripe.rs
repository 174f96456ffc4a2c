//! Stripe write locks (format.md §6): the in-process mutex of each stripe,
//! then its byte-range lock `WRITE + s`; a batch's stripes together with
//! one range lock when it can.

use super::Mode;
use crate::layout::locks::WRITE;
use std::fs::File;
use std::io;
use std::sync::{Mutex, MutexGuard};

/// The in-process halves of a file's stripe write locks: one mutex per
/// stripe, taken before the file lock (one process's file locks do not
/// exclude each other).
pub(crate) struct StripeLocks {
    mutexes: Box<[Mutex<()>]>,
}

/// Holds one stripe's write lock (both halves).
pub(crate) struct StripeLock<'p> {
    file: &'p File,
    stripe: u32,
    _mutex: MutexGuard<'p, ()>,
}

/// Holds the write locks of a batch's stripes: every stripe mutex from the
/// lowest to the highest stripe of the batch, and the file locks.
pub(crate) struct BatchLock<'p> {
    file: &'p File,
    file_locks: BatchFileLocks,
    _mutexes: Vec<MutexGuard<'p, ()>>,
}

/// Which file locks a [`BatchLock`] holds.
enum BatchFileLocks {
    /// One range over the lock bytes of stripes `lo..=hi` (one system call
    /// to take, one to release).
    Range { off: u64, len: u64 },
    /// One lock per stripe of the batch, taken one by one in ascending order.
    Each(Vec<u32>),
}

impl StripeLocks {
    /// The mutexes of a file with `stripes` stripes.
    pub(crate) fn new(stripes: u32) -> StripeLocks {
        StripeLocks {
            mutexes: (0..stripes).map(|_| Mutex::new(())).collect(),
        }
    }

    fn mutex(&self, s: u32) -> MutexGuard<'_, ()> {
        self.mutexes[s as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes stripe `s`'s write lock through `file`: the in-process mutex,
    /// then the file lock. Released when the guard drops.
    pub(crate) fn lock<'p>(&'p self, file: &'p File, s: u32) -> io::Result<StripeLock<'p>> {
        let mutex = self.mutex(s);
        super::lock(file, WRITE + s as u64, Mode::Exclusive, true)?;
        Ok(StripeLock {
            file,
            stripe: s,
            _mutex: mutex,
        })
    }

    /// Takes the write locks of `stripes` (ascending, distinct, non-empty)
    /// for one batch. The in-process mutexes of every stripe from the first
    /// to the last are taken in ascending order, because the file locks of
    /// one process do not exclude each other and a range covers them all.
    /// Then one non-blocking lock over the whole range of lock bytes: a
    /// batch that touches most stripes of a file makes 2 system calls
    /// instead of two per stripe. If another process holds any stripe of
    /// the range, the batch falls back to locking its own stripes one by
    /// one, blocking, in ascending order (as single-stripe writers and
    /// other batches do), so a range never waits, never starves behind busy
    /// stripes it does not need, and cannot deadlock.
    pub(crate) fn lock_many<'p>(
        &'p self,
        file: &'p File,
        stripes: &[u32],
    ) -> io::Result<BatchLock<'p>> {
        let (lo, hi) = (stripes[0], stripes[stripes.len() - 1]);
        let mutexes = (lo..=hi).map(|s| self.mutex(s)).collect();
        let (off, len) = (WRITE + lo as u64, (hi - lo) as u64 + 1);
        let mut batch = BatchLock {
            file,
            file_locks: BatchFileLocks::Each(Vec::with_capacity(stripes.len())),
            _mutexes: mutexes,
        };
        if stripes.len() > 1 && super::lock_range(file, off, len, Mode::Exclusive, false)? {
            batch.file_locks = BatchFileLocks::Range { off, len };
            return Ok(batch);
        }
        for &s in stripes {
            super::lock(file, WRITE + s as u64, Mode::Exclusive, true)?;
            if let BatchFileLocks::Each(held) = &mut batch.file_locks {
                held.push(s);
            }
        }
        Ok(batch)
    }
}

impl Drop for StripeLock<'_> {
    fn drop(&mut self) {
        // Unlock the file before the mutex (field drop order) so the next
        // thread of this process never finds its own description's lock.
        let _ = super::unlock(self.file, WRITE + self.stripe as u64);
    }
}

impl Drop for BatchLock<'_> {
    fn drop(&mut self) {
        // File locks first, then the mutexes (field drop order), as for
        // `StripeLock`.
        match &self.file_locks {
            BatchFileLocks::Range { off, len } => {
                let _ = super::unlock_range(self.file, *off, *len);
            }
            BatchFileLocks::Each(held) => {
                for &s in held {
                    let _ = super::unlock(self.file, WRITE + s as u64);
                }
            }
        }
    }
}
