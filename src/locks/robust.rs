//! Process-shared robust pthread mutexes (Linux with glibc): the stripe
//! write locks of files whose header says so (format.md §6). The
//! uncontended lock and unlock are one atomic instruction each in the C
//! library; the kernel's robust-futex list hands `EOWNERDEAD` to the next
//! locker when an owner dies holding one.

use crate::layout::mutex::{
    LockWord, StripeMutex, ARCH_AARCH64, ARCH_X86_64, KIND_ROBUST, LIBC_GLIBC, MUTEX_BYTES,
};
use std::io;

/// What [`lock`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The previous owner released it.
    Clean,
    /// The previous owner died holding it (`EOWNERDEAD`): the caller holds
    /// it, must repair what the owner protected, then call [`consistent`].
    OwnerDied,
}

/// The lock word of a file whose stripe mutexes this build lays out, if
/// it can use robust mutexes at all (x86-64 or AArch64, glibc).
pub(crate) fn native() -> Option<LockWord> {
    let arch = if cfg!(target_arch = "x86_64") {
        ARCH_X86_64
    } else if cfg!(target_arch = "aarch64") {
        ARCH_AARCH64
    } else {
        return None;
    };
    let size = std::mem::size_of::<libc::pthread_mutex_t>();
    if size > MUTEX_BYTES {
        return None;
    }
    Some(LockWord {
        kind: KIND_ROBUST,
        libc: LIBC_GLIBC,
        arch,
        mutex_size: size as u8,
    })
}

fn ptr(m: &StripeMutex) -> *mut libc::pthread_mutex_t {
    m.raw.as_ptr() as *mut libc::pthread_mutex_t
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Initialises `m` as a process-shared robust mutex.
///
/// # Safety
/// Nobody may use the mutex while it is initialised (the file is being
/// created under the open lock, with the magic `SLOTINIT`), and the line
/// must be in a writable shared mapping.
pub(crate) unsafe fn init(m: &StripeMutex) -> io::Result<()> {
    // SAFETY: `attr` is initialised by `pthread_mutexattr_init` before any
    // other use and destroyed at the end; `ptr(m)` points to MUTEX_BYTES
    // (>= sizeof(pthread_mutex_t), checked by `native`) writable bytes that
    // only the C library touches, 8-aligned, and nobody else uses the
    // mutex now (the caller's contract).
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        check(libc::pthread_mutexattr_init(&mut attr))?;
        let r = (|| {
            check(libc::pthread_mutexattr_setpshared(
                &mut attr,
                libc::PTHREAD_PROCESS_SHARED,
            ))?;
            check(libc::pthread_mutexattr_setrobust(
                &mut attr,
                libc::PTHREAD_MUTEX_ROBUST,
            ))?;
            check(libc::pthread_mutex_init(ptr(m), &attr))
        })();
        libc::pthread_mutexattr_destroy(&mut attr);
        r
    }
}

/// Whether this process can make robust process-shared mutexes: the build
/// lays them out ([`native`]) and the C library and kernel accept the
/// attributes (tried on a mutex of our own memory).
pub(crate) fn available() -> Option<LockWord> {
    let word = native()?;
    // SAFETY: an all-zero line is valid storage for `init`; it is ours
    // alone and destroyed before it goes.
    unsafe {
        let probe: StripeMutex = std::mem::zeroed();
        init(&probe).ok()?;
        libc::pthread_mutex_destroy(ptr(&probe));
    }
    Some(word)
}

/// Byte offset of glibc's `__kind` word in a `pthread_mutex_t` (its
/// `struct __pthread_mutex_s` on 64-bit targets: `__lock`, `__count`,
/// `__owner`, `__nusers`, then `__kind`). Known because the file's lock
/// word records the C library and architecture that laid the mutex out.
const KIND_OFFSET: usize = 16;

fn kind_word(m: &StripeMutex) -> u32 {
    use std::sync::atomic::Ordering;
    let w = m.raw[KIND_OFFSET / 8].load(Ordering::Relaxed);
    (w >> ((KIND_OFFSET % 8) * 8)) as u32
}

/// The `__kind` word `init` writes (read from a mutex of our own), which
/// no lock or unlock changes.
fn expected_kind() -> u32 {
    static KIND: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *KIND.get_or_init(|| {
        // SAFETY: as in `available`.
        unsafe {
            let probe: StripeMutex = std::mem::zeroed();
            match init(&probe) {
                Ok(()) => {
                    let k = kind_word(&probe);
                    libc::pthread_mutex_destroy(ptr(&probe));
                    k
                }
                Err(_) => u32::MAX,
            }
        }
    })
}

/// Locks `m`, waiting for it. A mutex whose type word is not the one
/// [`init`] writes (bytes damaged from outside, or never initialised) is
/// refused with `InvalidData` instead of being handed to the C library,
/// which may abort on such a mutex.
///
/// # Safety
/// `m` was initialised by [`init`] in a file whose lock word is
/// [`native`]'s, and lies in a writable shared mapping that outlives the
/// hold.
pub(crate) unsafe fn lock(m: &StripeMutex) -> io::Result<Locked> {
    if kind_word(m) != expected_kind() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the stripe mutex is damaged (its type word is not a robust process-shared mutex's)",
        ));
    }
    // SAFETY: the caller's contract: an initialised robust mutex of our ABI.
    let mut r = unsafe { libc::pthread_mutex_trylock(ptr(m)) };
    while r == libc::EBUSY || r == libc::ETIMEDOUT {
        // A held mutex whose owner thread does not exist was never on a
        // robust list the kernel could walk (its lock word was written
        // from outside): waiting would be forever.
        if owner_gone(m) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the stripe mutex is damaged (its owner thread does not exist and it was not marked owner-died)",
            ));
        }
        let mut deadline = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut deadline) };
        deadline.tv_sec += OWNER_CHECK_SECS;
        // SAFETY: as above.
        r = unsafe { libc::pthread_mutex_timedlock(ptr(m), &deadline) };
    }
    match r {
        0 => Ok(Locked::Clean),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Seconds a locker waits between checks that the holder exists.
const OWNER_CHECK_SECS: libc::time_t = 1;

/// Whether `m`'s lock word names an owner thread that does not exist
/// (glibc's `__lock`, bytes 0..4: the owner's thread id in its low 30
/// bits). Thread ids are those of this PID namespace (format.md §6).
fn owner_gone(m: &StripeMutex) -> bool {
    use std::sync::atomic::Ordering;
    let tid = (m.raw[0].load(Ordering::Relaxed) as u32 & 0x3fff_ffff) as libc::pid_t;
    // SAFETY: signal 0 only checks that the id exists; Linux's kill()
    // accepts any thread id.
    tid != 0
        && unsafe { libc::kill(tid, 0) } == -1
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Marks `m`, held after [`Locked::OwnerDied`], consistent again.
///
/// # Safety
/// The calling thread holds `m` (as [`lock`] requires of `m`).
pub(crate) unsafe fn consistent(m: &StripeMutex) {
    // SAFETY: the caller's contract. It fails only if the mutex is not
    // robust or not inconsistent, and then there is nothing to do.
    unsafe {
        libc::pthread_mutex_consistent(ptr(m));
    }
}

/// Releases `m`.
///
/// # Safety
/// The calling thread holds `m`.
pub(crate) unsafe fn unlock(m: &StripeMutex) {
    // SAFETY: the caller's contract.
    unsafe {
        libc::pthread_mutex_unlock(ptr(m));
    }
}
