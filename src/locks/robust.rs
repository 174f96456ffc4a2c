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
    // Counted before the attempt: a thread of this process that owns the
    // lock word is counted (`holders`).
    super::holders::attempt();
    let r = lock_counted(m);
    if r.is_err() {
        super::holders::release();
    }
    r
}

/// [`lock`] once this thread is counted in `holders`.
fn lock_counted(m: &StripeMutex) -> io::Result<Locked> {
    // SAFETY: `lock`'s contract: an initialised robust mutex of our ABI.
    let mut r = unsafe { libc::pthread_mutex_trylock(ptr(m)) };
    let mut waited: libc::time_t = 0;
    while r == libc::EBUSY || r == libc::ETIMEDOUT {
        // A held mutex whose owner cannot be holding it was never on a
        // robust list the kernel could walk (its lock word was written
        // from outside): waiting would be forever.
        if owner_gone(m, waited) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the stripe mutex is damaged (its lock word names an owner that cannot hold it, and it was not marked owner-died)",
            ));
        }
        let mut deadline = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut deadline) };
        deadline.tv_sec += OWNER_CHECK_SECS;
        waited += OWNER_CHECK_SECS;
        // SAFETY: as above.
        r = unsafe { libc::pthread_mutex_timedlock(ptr(m), &deadline) };
    }
    match r {
        0 => Ok(Locked::Clean),
        libc::EOWNERDEAD => Ok(Locked::OwnerDied),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Seconds a locker waits for an owner whose `/proc` entry it cannot read
/// before it takes the lock word as damaged.
const UNINSPECTABLE_SECS: libc::time_t = 2;

/// The last uninspectable owner thread id found holding a stripe mutex
/// past [`UNINSPECTABLE_SECS`] (0: none).
static UNINSPECTABLE_DAMAGED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Seconds a locker waits between checks that the holder exists.
const OWNER_CHECK_SECS: libc::time_t = 1;

/// Whether `m`'s lock word names an owner that cannot be holding it:
/// waiter bits without an owner; a thread id (glibc's `__lock`, bytes
/// 0..4, low 30 bits) that does not exist; the checking thread; another
/// thread of this process while no other thread of it holds or attempts
/// a stripe mutex (`holders`); or a thread whose process does not map
/// the file `m` lies in (read from `/proc`; when that cannot be read, the
/// owner is presumed real until the locker has waited
/// [`UNINSPECTABLE_SECS`]). Thread ids are those of this PID namespace
/// (format.md §6). Called only after the lock was found busy.
fn owner_gone(m: &StripeMutex, waited: libc::time_t) -> bool {
    use std::sync::atomic::Ordering;
    let before = super::holders::snapshot();
    let word = m.raw[0].load(Ordering::SeqCst) as u32;
    let verdict = owner_verdict(m, word, waited);
    // The word is read again after the verdict: an owner that unlocked or
    // died meanwhile (the kernel marks a dead owner's mutexes before its
    // thread id and mappings disappear) has changed it, and what was seen
    // of the old owner proves nothing.
    let unchanged = || m.raw[0].load(Ordering::SeqCst) as u32 == word;
    match verdict {
        Owner::Possible => false,
        Owner::Impossible => unchanged(),
        // A thread of this process may have unlocked and locked again in
        // between (the same word): only a process that began no attempt
        // since `before` proves nothing was re-taken.
        Owner::ImpossibleIfQuiet => unchanged() && super::holders::snapshot().quiet_since(before),
    }
}

/// What one reading of a busy mutex's lock word says of its owner.
enum Owner {
    /// It may hold the mutex: wait.
    Possible,
    /// It cannot.
    Impossible,
    /// An idle thread of this process: it cannot, unless it re-took the
    /// mutex meanwhile.
    ImpossibleIfQuiet,
}

/// [`owner_gone`]'s verdict on one reading `word` of `m`'s lock word.
fn owner_verdict(m: &StripeMutex, word: u32, waited: libc::time_t) -> Owner {
    use std::sync::atomic::Ordering;
    let impossible = |yes: bool| {
        if yes {
            Owner::Impossible
        } else {
            Owner::Possible
        }
    };
    let tid = (word & 0x3fff_ffff) as libc::pid_t;
    if tid == 0 {
        // Free (0), or owner-died (the next lock takes it): fine. Waiter
        // bits with no owner and no owner-died mark are no state glibc or
        // the kernel leaves: nobody would ever wake the waiters.
        return impossible(word != 0 && word & 0x4000_0000 == 0);
    }
    // SAFETY: signal 0 only checks that the id exists; Linux's kill()
    // accepts any thread id.
    if unsafe { libc::kill(tid, 0) } == -1 {
        return impossible(io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH));
    }
    // SAFETY: gettid has no preconditions.
    if tid == unsafe { libc::gettid() } {
        // The checking thread, which is trying to take `m`, not holding it.
        return Owner::Impossible;
    }
    if std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
        // Another thread of this process: it can hold a stripe mutex only
        // while it is counted.
        return if super::holders::snapshot().others == 0 {
            Owner::ImpossibleIfQuiet
        } else {
            Owner::Possible
        };
    }
    let addr = m as *const StripeMutex as usize;
    let Some(file) = mapped_file("/proc/self/maps", |lo, hi| (lo..hi).contains(&addr)) else {
        return Owner::Possible;
    };
    match std::fs::read_to_string(format!("/proc/{tid}/maps")) {
        Ok(maps) => impossible(
            !maps
                .lines()
                .any(|l| map_file(l).is_some_and(|(_, _, f)| f == file)),
        ),
        // An owner this process may not inspect: a stripe write holds the
        // lock for microseconds, so one held past `UNINSPECTABLE_SECS` is
        // taken as damaged (format.md §6).
        // The verdict is remembered for that thread id, so the other
        // stripes it names are refused without waiting again.
        Err(_) => {
            if UNINSPECTABLE_DAMAGED.load(Ordering::Relaxed) == tid {
                return Owner::Impossible;
            }
            let damaged = waited >= UNINSPECTABLE_SECS;
            if damaged {
                UNINSPECTABLE_DAMAGED.store(tid, Ordering::Relaxed);
            }
            impossible(damaged)
        }
    }
}

/// The (device, inode) of the mapping of `path`'s first line whose address
/// range satisfies `pick`.
fn mapped_file(path: &str, pick: impl Fn(usize, usize) -> bool) -> Option<(String, u64)> {
    let maps = std::fs::read_to_string(path).ok()?;
    maps.lines()
        .filter_map(map_file)
        .find(|&(lo, hi, _)| pick(lo, hi))
        .map(|(_, _, f)| f)
}

/// One `/proc/*/maps` line: its address range and (device, inode), for a
/// mapping of a file (inode not 0).
fn map_file(line: &str) -> Option<(usize, usize, (String, u64))> {
    let mut f = line.split_ascii_whitespace();
    let (lo, hi) = f.next()?.split_once('-')?;
    let (_perms, _off, dev, ino) = (f.next()?, f.next()?, f.next()?, f.next()?);
    let ino: u64 = ino.parse().ok()?;
    (ino != 0).then_some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
        (dev.to_string(), ino),
    ))
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
    // After the unlock: until then the lock word names this thread, which
    // must still be counted (`owner_gone`).
    super::holders::release();
}
