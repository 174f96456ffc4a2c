//! Locking: the operating system's byte-range locks on the cache file
//! (stripe write locks of byte-range files, regeneration locks,
//! reader-slot liveness locks and read-only pins), the lock held while a
//! file is opened ([`OpenLock`]), the stripe write locks themselves
//! ([`stripe`]: one stripe, or a batch's stripes; byte-range locks with
//! their in-process halves, or robust mutexes) and the robust
//! process-shared mutexes of Linux with glibc (`robust`, with `holders`:
//! which threads of this process hold or are taking one). Which kind a
//! file's stripe locks are is recorded in its header ([`check_kind`]).
//!
//! Each lock is one byte at an offset far beyond the data
//! ([`crate::layout::locks`]), so it never covers bytes anyone reads or
//! writes. The kernel drops every lock of a process that dies, which is what
//! makes a crash harmless.
//!
//! - **Linux**: open-file-description locks (`F_OFD_SETLK[W]`,
//!   `F_OFD_GETLK`). They belong to the open file description, not to the
//!   process, so closing an unrelated descriptor of the same file does not
//!   drop them (the classic `fcntl` trap), and two descriptions in one
//!   process exclude each other like two processes do.
//! - **macOS and other Unix**: classic `fcntl` locks (`F_SETLK[W]`,
//!   `F_GETLK`). They belong to the process and are all dropped when *any*
//!   descriptor of the file is closed, so slotcache keeps exactly one
//!   descriptor per file per process (the registry of open files in
//!   `crate::open`) and closes it only
//!   when the last handle goes; exclusion between threads of one process
//!   comes from the in-process mutex taken first.
//! - **Windows**: `LockFileEx`/`UnlockFileEx` on the same offsets (beyond
//!   the end of the file, which Windows allows). Locks belong to the file
//!   handle: two handles in one process exclude each other like two
//!   processes, and the system releases a process's locks when it ends.
//!   Windows has no "who holds this" query, so [`held_by_other`] tries a
//!   non-blocking lock and undoes it; that probe also conflicts with the
//!   caller's own handle's locks, so callers check the reader slots their
//!   handle owns in memory first (`readers::find_pin`). The lock taken
//!   while opening is one more byte ([`OpenLock`]), not a lock over the
//!   whole file, which would cover all the others.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod holders;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) mod robust;
pub(crate) mod stripe;

pub(crate) use stripe::{BatchLock, StripeLock, StripeLocks};

use crate::error::{Error, Result};
use crate::layout::mutex::LockWord;
use std::path::Path;

/// The stripe lock kind a file created by this process records: robust
/// mutexes where this build lays them out and the system accepts them
/// (Linux with glibc), unless `byte_range` asks for byte-range locks;
/// byte-range locks everywhere else.
pub(crate) fn kind_for_new_file(byte_range: bool) -> LockWord {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !byte_range {
        if let Some(w) = robust::available() {
            return w;
        }
    }
    let _ = byte_range;
    LockWord::BYTE_RANGE
}

/// What this process can take, in words, for errors.
fn supported() -> String {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if let Some(w) = robust::native() {
        return format!("byte-range stripe locks and {w}");
    }
    "byte-range stripe locks only (robust process-shared mutexes need Linux with glibc on x86_64 or aarch64)".into()
}

/// `Ok` when a writable handle of this process can take the stripe locks
/// a file records (`kind`); else [`Error::StripeLockKind`] naming what the
/// file uses and what this process supports. Byte-range locks work
/// everywhere; a robust-mutex file needs the very ABI that laid its
/// mutexes out (never guessed: another C library or size could lay the
/// same bytes out differently, and falling back to byte-range locks would
/// not exclude the processes that use the mutexes).
pub(crate) fn check_kind(path: &Path, kind: LockWord) -> Result<()> {
    if kind == LockWord::BYTE_RANGE {
        return Ok(());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if robust::native() == Some(kind) {
        return Ok(());
    }
    Err(Error::StripeLockKind {
        path: path.to_path_buf(),
        file_uses: kind.to_string(),
        supported: supported(),
    })
}

use std::fs::File;
use std::io;

/// Whether a lock excludes everyone or only exclusive holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A read lock: excludes exclusive holders only.
    Shared,
    /// A write lock: excludes everyone else.
    Exclusive,
}

#[cfg(unix)]
mod sys {
    use super::Mode;
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    #[cfg(target_os = "linux")]
    const SET: libc::c_int = libc::F_OFD_SETLK;
    #[cfg(target_os = "linux")]
    const SET_WAIT: libc::c_int = libc::F_OFD_SETLKW;
    #[cfg(target_os = "linux")]
    const GET: libc::c_int = libc::F_OFD_GETLK;
    #[cfg(not(target_os = "linux"))]
    const SET: libc::c_int = libc::F_SETLK;
    #[cfg(not(target_os = "linux"))]
    const SET_WAIT: libc::c_int = libc::F_SETLKW;
    #[cfg(not(target_os = "linux"))]
    const GET: libc::c_int = libc::F_GETLK;

    fn flock(kind: libc::c_int, off: u64) -> libc::flock {
        flock_range(kind, off, 1)
    }

    fn flock_range(kind: libc::c_int, off: u64, len: u64) -> libc::flock {
        // SAFETY: `flock` is a plain C struct for which all-zero is valid
        // (OFD locks even require `l_pid == 0`).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_start = off as libc::off_t;
        fl.l_len = len as libc::off_t;
        fl
    }

    fn fcntl(file: &File, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
        loop {
            // SAFETY: the descriptor is open for the life of `file`, and `fl`
            // is a valid, exclusively borrowed `flock` for the call.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
            if r != -1 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    // The lock types are `c_short` on some platforms and `c_int` on others.
    #[allow(clippy::unnecessary_cast)]
    pub(super) fn lock(
        file: &File,
        off: u64,
        len: u64,
        mode: Mode,
        wait: bool,
    ) -> io::Result<bool> {
        let kind = match mode {
            Mode::Shared => libc::F_RDLCK as libc::c_int,
            Mode::Exclusive => libc::F_WRLCK as libc::c_int,
        };
        let mut fl = flock_range(kind, off, len);
        match fcntl(file, if wait { SET_WAIT } else { SET }, &mut fl) {
            Ok(()) => Ok(true),
            Err(e)
                if !wait && matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    #[allow(clippy::unnecessary_cast)]
    pub(super) fn unlock(file: &File, off: u64, len: u64) -> io::Result<()> {
        fcntl(
            file,
            SET,
            &mut flock_range(libc::F_UNLCK as libc::c_int, off, len),
        )
    }

    #[allow(clippy::unnecessary_cast)]
    pub(super) fn held_by_other(file: &File, off: u64) -> io::Result<bool> {
        let mut fl = flock(libc::F_WRLCK as libc::c_int, off);
        fcntl(file, GET, &mut fl)?;
        Ok(fl.l_type as libc::c_int != libc::F_UNLCK as libc::c_int)
    }
}

#[cfg(windows)]
mod sys {
    use super::Mode;
    use std::fs::File;
    use std::io;
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::Foundation::{ERROR_IO_PENDING, ERROR_LOCK_VIOLATION, HANDLE};
    use windows_sys::Win32::Storage::FileSystem::{
        LockFileEx, UnlockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    fn overlapped(off: u64) -> OVERLAPPED {
        // SAFETY: OVERLAPPED is a plain C struct; all-zero is its documented
        // initial state.
        let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
        ov.Anonymous.Anonymous.Offset = off as u32;
        ov.Anonymous.Anonymous.OffsetHigh = (off >> 32) as u32;
        ov
    }

    pub(super) fn lock(
        file: &File,
        off: u64,
        len: u64,
        mode: Mode,
        wait: bool,
    ) -> io::Result<bool> {
        let mut flags = 0;
        if mode == Mode::Exclusive {
            flags |= LOCKFILE_EXCLUSIVE_LOCK;
        }
        if !wait {
            flags |= LOCKFILE_FAIL_IMMEDIATELY;
        }
        let mut ov = overlapped(off);
        // SAFETY: the handle is open for the life of `file`; `ov` outlives
        // the call, which is synchronous because the file is not opened
        // for overlapped I/O.
        let ok = unsafe {
            LockFileEx(
                file.as_raw_handle() as HANDLE,
                flags,
                0,
                len as u32,
                (len >> 32) as u32,
                &mut ov,
            )
        };
        if ok != 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(c)
                if !wait && (c == ERROR_LOCK_VIOLATION as i32 || c == ERROR_IO_PENDING as i32) =>
            {
                Ok(false)
            }
            _ => Err(e),
        }
    }

    pub(super) fn unlock(file: &File, off: u64, len: u64) -> io::Result<()> {
        let mut ov = overlapped(off);
        // SAFETY: as in `lock`.
        let ok = unsafe {
            UnlockFileEx(
                file.as_raw_handle() as HANDLE,
                0,
                len as u32,
                (len >> 32) as u32,
                &mut ov,
            )
        };
        if ok != 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn held_by_other(file: &File, off: u64) -> io::Result<bool> {
        if lock(file, off, 1, Mode::Exclusive, false)? {
            unlock(file, off, 1)?;
            Ok(false)
        } else {
            Ok(true)
        }
    }
}

/// Windows only: the byte locked while a file is created or validated
/// (`BASE + 4·2^32`, after the read-only pins).
///
/// On Unix that lock is a whole-file `flock`, which lives apart from
/// `fcntl` byte-range locks. `fs4`'s whole-file lock on Windows is
/// `LockFileEx` over every byte offset instead, which conflicts with every
/// stripe, regeneration, reader-slot and pin lock of other handles: an
/// opener would wait for as long as any other process (or handle) has a
/// thread holding a reader slot, and other processes would find their locks
/// refused while someone opens.
#[cfg(windows)]
const OPEN: u64 = crate::layout::locks::OPEN;

/// The lock that serialises creating and validating the file (see
/// `format.md` §4), held until dropped: on every path out of an open,
/// early returns and panics included.
pub(crate) struct OpenLock<'f> {
    file: &'f File,
}

impl<'f> OpenLock<'f> {
    /// Takes the lock, waiting for it.
    pub(crate) fn take(file: &'f File) -> io::Result<OpenLock<'f>> {
        #[cfg(unix)]
        fs4::FileExt::lock(file)?;
        #[cfg(windows)]
        sys::lock(file, OPEN, 1, Mode::Exclusive, true)?;
        Ok(OpenLock { file })
    }
}

impl Drop for OpenLock<'_> {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = fs4::FileExt::unlock(self.file);
        #[cfg(windows)]
        let _ = sys::unlock(self.file, OPEN, 1);
    }
}

/// Takes the one-byte lock at `off`. With `wait`, blocks until it is
/// granted and returns `true`; without, returns `false` when someone else
/// holds a conflicting lock.
pub(crate) fn lock(file: &File, off: u64, mode: Mode, wait: bool) -> io::Result<bool> {
    sys::lock(file, off, 1, mode, wait)
}

/// Releases the lock at `off` held through `file`.
pub(crate) fn unlock(file: &File, off: u64) -> io::Result<()> {
    sys::unlock(file, off, 1)
}

/// Like [`lock`], for the `len` bytes at `off` in one system call. The
/// kernel grants the whole range or nothing. A range is released with
/// [`unlock_range`] over exactly the same bytes (Windows requires it).
pub(crate) fn lock_range(
    file: &File,
    off: u64,
    len: u64,
    mode: Mode,
    wait: bool,
) -> io::Result<bool> {
    sys::lock(file, off, len, mode, wait)
}

/// Releases a range taken with [`lock_range`].
pub(crate) fn unlock_range(file: &File, off: u64, len: u64) -> io::Result<()> {
    sys::unlock(file, off, len)
}

/// Whether anyone other than `file`'s own lock owner holds a lock on the
/// byte at `off` (a live process holding a reader slot or a read-only pin).
pub(crate) fn held_by_other(file: &File, off: u64) -> io::Result<bool> {
    sys::held_by_other(file, off)
}

// Classic `fcntl` locks (macOS) do not exclude a second descriptor of the
// same process, which is what this test is about.
#[cfg(all(test, any(target_os = "linux", windows)))]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn open(p: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap()
    }

    #[test]
    fn two_descriptions_exclude_each_other() {
        let dir = crate::testing::TestDir::new("locks");
        let p = dir.path().join("f");
        let a = open(&p);
        let b = open(&p);
        let off = crate::layout::locks::WRITE + 3;
        assert!(lock(&a, off, Mode::Exclusive, false).unwrap());
        assert!(
            !lock(&b, off, Mode::Exclusive, false).unwrap(),
            "second description must be refused"
        );
        assert!(held_by_other(&b, off).unwrap());
        #[cfg(unix)]
        assert!(
            !held_by_other(&a, off).unwrap(),
            "own lock is not someone else's"
        );
        // Windows has no "who holds it" query: the probe is a try-lock, and
        // a handle's own exclusive lock conflicts with it. Callers therefore
        // check the slots their process owns before probing
        // (`readers::find_pin`).
        #[cfg(windows)]
        assert!(
            held_by_other(&a, off).unwrap(),
            "the probe sees the caller's own lock"
        );
        assert!(
            lock(&b, off + 1, Mode::Exclusive, false).unwrap(),
            "other bytes are independent"
        );
        unlock(&a, off).unwrap();
        assert!(!held_by_other(&b, off).unwrap());
        assert!(lock(&b, off, Mode::Exclusive, false).unwrap());
        assert!(!lock(&a, off, Mode::Shared, false).unwrap());
        unlock(&b, off).unwrap();
        assert!(lock(&a, off, Mode::Shared, false).unwrap());
        assert!(
            lock(&b, off, Mode::Shared, false).unwrap(),
            "shared locks coexist"
        );
        drop(a);
        // Closing `a` must not drop `b`'s lock (OFD semantics; on Windows
        // locks belong to the handle, the same holds).
        #[cfg(any(target_os = "linux", windows))]
        assert!(held_by_other(&open(&p), off).unwrap());
        // Closing the last handle releases the lock.
        drop(b);
        assert!(!held_by_other(&open(&p), off).unwrap());
    }
}
