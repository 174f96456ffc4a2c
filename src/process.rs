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
//! must not unlock anything the parent still holds.
//!
//! On Linux the child handler also re-points each cache file's descriptor
//! and mapping at a new open file description: otherwise the child would
//! keep the parent's description alive, and with it every OFD lock the
//! parent holds, even after the parent is killed.

use crate::layout::locks as lk;
use crate::locks;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

/// Held by every `Cache::open` for as long as it holds the registry of open
/// files (`shared`), and by the `prepare` fork handler until the parent and
/// child handlers run: so `fork()` waits for an open in progress, and a
/// child never inherits the registry locked by a thread it does not have
/// (its first `open` would wait forever).
#[cfg(unix)]
static OPEN_GATE: AtomicBool = AtomicBool::new(false);

/// Spins (yielding, then sleeping) until `flag` is taken.
#[cfg(unix)]
fn spin_lock(flag: &AtomicBool) {
    let mut spins = 0u32;
    while flag
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 100 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }
}

/// Holds [`OPEN_GATE`]; released on drop.
#[cfg(unix)]
pub(crate) struct OpenGate(());

#[cfg(unix)]
impl OpenGate {
    /// Waits for the gate (an open in another thread, or a `fork()` in
    /// progress) and takes it.
    pub(crate) fn enter() -> OpenGate {
        spin_lock(&OPEN_GATE);
        OpenGate(())
    }
}

#[cfg(unix)]
impl Drop for OpenGate {
    fn drop(&mut self) {
        OPEN_GATE.store(false, Ordering::Release);
    }
}

/// Descriptors of cache files this process holds, for the fork handler:
/// descriptor, mapping address and length (0 and 0 for a descriptor that
/// only carries locks: a fork child's own open file description), and
/// whether it is writable. Every descriptor slotcache opens is here, in
/// every fork generation, so that no child keeps its parent's open file
/// descriptions (and their OFD locks) alive.
#[cfg(target_os = "linux")]
static OPEN_FILES: std::sync::Mutex<Vec<(i32, usize, usize, bool)>> =
    std::sync::Mutex::new(Vec::new());

/// Held from the `prepare` fork handler until the parent and child handlers
/// run, so no thread is half-way through changing `OPEN_FILES` at `fork()`.
#[cfg(target_os = "linux")]
static FORK_LOCK: AtomicBool = AtomicBool::new(false);

#[cfg(target_os = "linux")]
fn fork_lock() {
    spin_lock(&FORK_LOCK);
}

#[cfg(target_os = "linux")]
fn fork_unlock() {
    FORK_LOCK.store(false, Ordering::Release);
}

/// Records a descriptor that only carries locks (a fork child's own open
/// file description, see [`Process::reopen_for_child`]) so that the
/// children of this process detach from it in turn.
#[cfg(target_os = "linux")]
pub(crate) fn register_lock_file(fd: i32, writable: bool) {
    register_open_file(fd, 0, 0, writable);
}

/// Records an open file so a forked child can detach from it.
#[cfg(target_os = "linux")]
pub(crate) fn register_open_file(fd: i32, addr: usize, len: usize, writable: bool) {
    fork_lock();
    OPEN_FILES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((fd, addr, len, writable));
    fork_unlock();
}

/// Forgets a file recorded by [`register_open_file`].
#[cfg(target_os = "linux")]
pub(crate) fn unregister_open_file(fd: i32, addr: usize) {
    fork_lock();
    OPEN_FILES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|e| (e.0, e.1) != (fd, addr));
    fork_unlock();
}

/// `prepare`: the open gate, then (Linux) the open-file list, in the order
/// `open` takes them.
#[cfg(unix)]
extern "C" fn before_fork() {
    spin_lock(&OPEN_GATE);
    #[cfg(target_os = "linux")]
    fork_lock();
}

#[cfg(unix)]
extern "C" fn after_fork_in_parent() {
    #[cfg(target_os = "linux")]
    fork_unlock();
    OPEN_GATE.store(false, Ordering::Release);
}

#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    #[cfg(target_os = "linux")]
    {
        // The child inherits the parent's open file description through the
        // descriptor *and* through the shared mapping. OFD locks are
        // released only when the last reference to the description goes, so
        // as long as this child lives, a parent killed while holding a stripe
        // lock or a reader slot would keep them. Give the child a description
        // of its own for both. Only async-signal-safe calls here, and no
        // allocation: the list is read in place (the prepare handler holds
        // `FORK_LOCK`, so nobody was changing it, and only this thread exists).
        if let Ok(files) = OPEN_FILES.try_lock() {
            for &(fd, addr, len, writable) in files.iter() {
                detach(fd, addr, len, writable);
            }
        }
        fork_unlock();
    }
    OPEN_GATE.store(false, Ordering::Release);
}

/// Replaces descriptor `fd` and the mapping at `addr` (none when `len` is
/// 0) with a new open file description of the same file (fork child only).
/// The descriptor stays close-on-exec (`dup3` with `O_CLOEXEC`: `dup2`
/// would clear the flag, and a program the child executes would inherit
/// the description).
#[cfg(target_os = "linux")]
fn detach(fd: i32, addr: usize, len: usize, writable: bool) {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 12];
    let (mut n, mut i) = (fd as u32, digits.len());
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    path[14..14 + d.len()].copy_from_slice(d);
    let flags = libc::O_CLOEXEC
        | if writable {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
    // SAFETY: `path` is NUL-terminated (the buffer has room for 12 digits
    // and a zero after them). open, mmap, dup3 and close are
    // async-signal-safe. The new mapping replaces the old one at the same
    // address and length, with the same protection, over the same file, so
    // every pointer into it stays valid and sees the same bytes.
    unsafe {
        let new = libc::open(path.as_ptr() as *const libc::c_char, flags);
        if new < 0 {
            return;
        }
        let mapped = len == 0 || {
            let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
            let m = libc::mmap(
                addr as *mut libc::c_void,
                len,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                new,
                0,
            );
            m != libc::MAP_FAILED
        };
        if mapped {
            libc::dup3(new, fd, libc::O_CLOEXEC);
        }
        libc::close(new);
    }
}

/// Installs the fork handlers (once per process).
pub(crate) fn install_fork_handler() {
    ATFORK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: the handlers only take and release spin locks, re-point
        // descriptors and mappings with async-signal-safe calls (Linux), and
        // bump an atomic; they stay valid for the life of the process.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            );
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
    /// Regeneration locks held by this process.
    pub regen: crate::regen::RegenTable,
    /// Pins of detached guards (`OwnedGuard`), in a slot of the process.
    pub detached: crate::readers::ProcessPins,
    /// `file` is a descriptor of its own, registered for the fork handler
    /// (a fork child's description; in the opening process `file` is the
    /// mapping's descriptor, registered by `shared`).
    #[cfg(target_os = "linux")]
    lock_fd_registered: bool,
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
            regen: Default::default(),
            detached: Default::default(),
            #[cfg(target_os = "linux")]
            lock_fd_registered: false,
        }
    }

    /// The state of a fork child: `file` is the child's own open file
    /// description ([`Process::reopen_for_child`]), registered so that the
    /// child's own children detach from it when they fork in turn (a
    /// grandchild that never uses the cache would otherwise keep the
    /// child's locks alive after the child dies).
    pub(crate) fn for_child(file: Arc<File>, stripes: u32, reader_slots: u32) -> Process {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let writable = {
                // SAFETY: F_GETFL on a descriptor `file` keeps open.
                let fl = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
                fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY
            };
            register_lock_file(file.as_raw_fd(), writable);
            let mut p = Process::new(file, stripes, reader_slots);
            p.lock_fd_registered = true;
            p
        }
        #[cfg(not(target_os = "linux"))]
        Process::new(file, stripes, reader_slots)
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

#[cfg(target_os = "linux")]
impl Drop for Process {
    fn drop(&mut self) {
        if self.lock_fd_registered {
            use std::os::fd::AsRawFd;
            unregister_open_file(self.file.as_raw_fd(), 0);
        }
    }
}

/// Holds the write locks of a batch's stripes: every stripe mutex from the
/// lowest to the highest stripe of the batch, and the file locks.
pub(crate) struct BatchLock<'p> {
    process: &'p Process,
    file_locks: BatchFileLocks,
    _mutexes: Vec<std::sync::MutexGuard<'p, ()>>,
}

/// Which file locks a [`BatchLock`] holds.
enum BatchFileLocks {
    /// One range over the lock bytes of stripes `lo..=hi` (one system call
    /// to take, one to release).
    Range { off: u64, len: u64 },
    /// One lock per stripe of the batch, taken one by one in ascending order.
    Each(Vec<u32>),
}

impl Process {
    /// Takes the write locks of `stripes` (ascending, distinct, non-empty)
    /// for one batch. The in-process mutexes of every stripe from the first
    /// to the last are taken in ascending order, because the file locks of
    /// one process do not exclude each other and a range covers them all.
    /// Then one non-blocking lock over the whole range of lock bytes: a
    /// batch that touches 41 of 64 stripes makes 2 system calls instead of
    /// 82. If another process holds any stripe of the range, the batch
    /// falls back to locking its own stripes one by one, blocking, in
    /// ascending order (as single-stripe writers and other batches do), so
    /// a range never waits, never starves behind busy stripes it does not
    /// need, and cannot deadlock.
    pub(crate) fn lock_stripes(&self, stripes: &[u32]) -> std::io::Result<BatchLock<'_>> {
        let (lo, hi) = (stripes[0], stripes[stripes.len() - 1]);
        let mutexes = (lo..=hi)
            .map(|s| {
                self.stripe_mutex[s as usize]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            })
            .collect();
        let (off, len) = (lk::WRITE + lo as u64, (hi - lo) as u64 + 1);
        let mut batch = BatchLock {
            process: self,
            file_locks: BatchFileLocks::Each(Vec::with_capacity(stripes.len())),
            _mutexes: mutexes,
        };
        if stripes.len() > 1
            && locks::lock_range(&self.file, off, len, locks::Mode::Exclusive, false)?
        {
            batch.file_locks = BatchFileLocks::Range { off, len };
            return Ok(batch);
        }
        for &s in stripes {
            locks::lock(
                &self.file,
                lk::WRITE + s as u64,
                locks::Mode::Exclusive,
                true,
            )?;
            if let BatchFileLocks::Each(held) = &mut batch.file_locks {
                held.push(s);
            }
        }
        Ok(batch)
    }
}

impl Drop for BatchLock<'_> {
    fn drop(&mut self) {
        // File locks first, then the mutexes (field drop order), as for
        // `StripeLock`.
        let file = &self.process.file;
        match &self.file_locks {
            BatchFileLocks::Range { off, len } => {
                let _ = locks::unlock_range(file, *off, *len);
            }
            BatchFileLocks::Each(held) => {
                for &s in held {
                    let _ = locks::unlock(file, lk::WRITE + s as u64);
                }
            }
        }
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
