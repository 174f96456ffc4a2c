//! Per-process state of one open cache file, and fork detection.
//!
//! Locks, reader slots and in-process mutexes belong to a process. A child
//! created by `fork()` inherits copies of all of them: the parent's open
//! file description (so OFD locks taken through it are *shared* with the
//! parent, silently breaking mutual exclusion), the parent's reader slots
//! (so the child's pins would land in the parent's slot) and mutexes that
//! may be locked by parent threads that do not exist in the child.
//!
//! A `pthread_atfork` child handler bumps [`generation`]. Every operation
//! compares the generation its [`Process`] was built in with the current one
//! — one relaxed load of a process-local word — and a child builds itself a
//! fresh `Process` (new open file description, new mutexes, no reader slots)
//! before doing anything. The parent's `Process` is leaked in the child: it
//! must not close or unlock anything the parent still uses.

use crate::layout::locks as lk;
use crate::locks;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Installs the fork handler (once per process).
pub(crate) fn install_fork_handler() {
    ATFORK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registering a handler that only performs an atomic add is
        // async-signal-safe and valid for the life of the process.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// The current fork generation: 0 in the process that first opened a cache,
/// incremented in every child at `fork()`.
#[inline]
pub(crate) fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// What one process holds for one open file.
pub(crate) struct Process {
    /// The open file description locks are taken through.
    pub file: Arc<File>,
    /// The fork generation this state belongs to.
    pub generation: u64,
    /// Process id that built this state.
    pub pid: u32,
    /// In-process half of each stripe's write lock, taken before the file lock.
    pub stripe_mutex: Box<[Mutex<()>]>,
    /// Reader slots held by threads of this process (their liveness locks
    /// are ours, so `held_by_other` cannot see them).
    pub owned_slots: Box<[AtomicBool]>,
    /// Serialises claiming reader slots.
    pub claim: Mutex<()>,
    /// Reference counts of read-only pins, by lock offset.
    pub ro_pins: Mutex<std::collections::HashMap<u64, u32>>,
}

impl Process {
    /// Builds the state for `file` in the current process.
    pub(crate) fn new(file: Arc<File>, stripes: u32, reader_slots: u32) -> Process {
        Process {
            file,
            generation: generation(),
            pid: std::process::id(),
            stripe_mutex: (0..stripes).map(|_| Mutex::new(())).collect(),
            owned_slots: (0..reader_slots).map(|_| AtomicBool::new(false)).collect(),
            claim: Mutex::new(()),
            ro_pins: Mutex::new(Default::default()),
        }
    }

    /// A fresh open file description of the same file for a forked child.
    ///
    /// On Linux the child must not share the parent's description (OFD
    /// locks would be shared), so it reopens the file through
    /// `/proc/self/fd`, which yields the same inode even if the path was
    /// replaced. Elsewhere locks are per process and not inherited by a
    /// child, so the inherited descriptor is kept (closing it would drop the
    /// child's classic `fcntl` locks).
    pub(crate) fn reopen_for_child(parent: &File, writable: bool) -> std::io::Result<Arc<File>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let p = format!("/proc/self/fd/{}", parent.as_raw_fd());
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(writable)
                .open(p)?;
            Ok(Arc::new(f))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = writable;
            Ok(Arc::new(parent.try_clone()?))
        }
    }

    /// Takes stripe `s`'s write lock: the in-process mutex, then the file
    /// lock. Released when the guard drops.
    pub(crate) fn lock_stripe(&self, s: u32) -> std::io::Result<StripeLock<'_>> {
        let mutex = self.stripe_mutex[s as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks::lock(
            &self.file,
            lk::WRITE + s as u64,
            locks::Mode::Exclusive,
            true,
        )?;
        Ok(StripeLock {
            process: self,
            stripe: s,
            _mutex: mutex,
        })
    }
}

/// Holds one stripe's write lock (both halves).
pub(crate) struct StripeLock<'p> {
    process: &'p Process,
    stripe: u32,
    _mutex: std::sync::MutexGuard<'p, ()>,
}

impl Drop for StripeLock<'_> {
    fn drop(&mut self) {
        // Unlock the file before the mutex (field drop order) so the next
        // thread of this process never finds its own description's lock.
        let _ = locks::unlock(&self.process.file, lk::WRITE + self.stripe as u64);
    }
}
