//! Fork handling: the fork generation, the `pthread_atfork` handlers and
//! the list of descriptors they detach a child from.
//!
//! Locks, reader slots and in-process mutexes belong to a process. A child
//! created by `fork()` inherits copies of all of them: the parent's open
//! file description (so OFD locks taken through it are *shared* with the
//! parent, silently breaking mutual exclusion), the parent's reader slots
//! (so the child's pins would land in the parent's slot) and mutexes that
//! may be locked by parent threads that do not exist in the child.
//!
//! A `pthread_atfork` child handler bumps [`generation`]. Every operation
//! compares the generation its [`Process`](crate::process::Process) was built in with the current one
//! — one relaxed load of a process-local word — and a child builds itself a
//! fresh `Process` (new open file description from [`reopen_for_child`],
//! new mutexes, no reader slots; `crate::shared` does) before doing
//! anything. The parent's `Process` is leaked in the child: it
//! must not unlock anything the parent still holds.
//!
//! On Linux the child handler also re-points each cache file's descriptor
//! and mapping at a new open file description: otherwise the child would
//! keep the parent's description alive, and with it every OFD lock the
//! parent holds, even after the parent is killed.

use std::fs::File;
#[cfg(unix)]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

/// Held by every `Cache::open` for as long as it holds the registry of open
/// files (`crate::open`), and by the `prepare` fork handler until the parent and
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
/// file description, see [`reopen_for_child`]) so that the
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
    // and a zero after them). open, dup3 and close are async-signal-safe,
    // and so is the remapping (one `mmap`); `addr` and `len` are those of
    // a live mapping of this file (registered by `register_open_file`, and
    // unregistered before the mapping goes).
    unsafe {
        let new = libc::open(path.as_ptr() as *const libc::c_char, flags);
        if new < 0 {
            return;
        }
        let mapped = len == 0 || crate::map::remap_in_child(addr, len, new, writable);
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
