//! Opening a cache file (format.md §4): create and initialise it, or
//! validate an existing one; replace a damaged one when asked
//! (`OnCorrupt::Reset`); and the process-wide registry of open files, so
//! that a second open of the same file shares the first one's [`Shared`].
//! The whole-file lock held meanwhile is an [`OpenLock`], released on every
//! path out.

use crate::clock::now_ns;
use crate::codec::rkyv_flags;
use crate::error::{Error, Result};
use crate::fork;
use crate::layout::{Geometry, Header, HEADER_SIZE, MAGIC, MAGIC_INIT};
use crate::locks::OpenLock;
use crate::map::Map;
use crate::options::{saturating_ns, OnCorrupt, Options};
use crate::shared::Shared;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;
#[cfg(unix)]
use std::sync::{Mutex, Weak};

/// Identity of an open file, for sharing one `Shared` per file.
#[cfg(unix)]
fn file_key(f: &File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Whether `path` currently names the file with identity `key`.
#[cfg(unix)]
fn names(path: &Path, key: (u64, u64)) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == key)
}

/// Open files of this process, so a second `open` of the same file shares
/// the descriptor (required by classic `fcntl` locks: closing any descriptor
/// drops all the process's locks on the file) and the in-process mutexes.
#[cfg(unix)]
static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// A registry entry: (device, inode) and the shared state.
#[cfg(unix)]
type Registered = ((u64, u64), Weak<Shared>);

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_ns());
    h.write_u32(std::process::id());
    h.finish()
}

/// Opens the file: read-write (creating it if allowed), or read-only when
/// asked or when the file cannot be written. Returns the file, whether this
/// call created it, and why it is read-only, if it is.
fn open_file(path: &Path, opts: &Options) -> Result<(File, bool, Option<&'static str>)> {
    let err = |op, e| Error::io(op, path, e);
    if opts.read_only {
        let f = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| err("opening read-only", e))?;
        return Ok((f, false, Some("opened with Options::read_only")));
    }
    if opts.create {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, opts.mode);
        match o.open(path) {
            Ok(f) => {
                // The umask may have cleared bits the caller asked for.
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    f.set_permissions(std::fs::Permissions::from_mode(opts.mode))
                        .map_err(|e| err("setting permissions", e))?;
                }
                return Ok((f, true, None));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("creating", e)),
        }
    }
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok((f, false, None)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied || is_read_only_fs(&e) => {
            let f = OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(|e| err("opening read-only", e))?;
            Ok((f, false, Some("the file is not writable by this process")))
        }
        Err(e) => Err(err("opening", e)),
    }
}

/// Writes a new header and preallocates the file. Called with the
/// whole-file lock held, on an empty file or one whose creator died before
/// publishing the magic.
fn initialize(file: &File, path: &Path, opts: &Options) -> Result<Geometry> {
    let geo = opts.plan()?;
    let ttl = opts.default_ttl.map_or(0, |d| saturating_ns(d).max(1));
    let header = Header {
        geo,
        seed: random_seed(),
        rkyv_flags: rkyv_flags(),
        created: now_ns(),
        default_ttl: ttl,
        regen_stripes: opts.regen_stripes,
        lock: crate::locks::kind_for_new_file(opts.byte_range_locks),
    };
    let h = header.encode(MAGIC_INIT);
    let err = |op, e| Error::io(op, path, e);
    // Start from zero bytes so nothing a crashed creator wrote survives.
    file.set_len(0)
        .map_err(|e| err("truncating a half-created file", e))?;
    write_at(file, &h, 0).map_err(|e| err("writing the header", e))?;
    if let Err(e) = preallocate(file, geo.file_size) {
        let _ = file.set_len(0);
        return Err(Error::io(
            if is_disk_full(&e) {
                "preallocating the file (the disk is full)"
            } else {
                "preallocating the file"
            },
            path,
            e,
        ));
    }
    if file.metadata().map_err(|e| err("stat", e))?.len() != geo.file_size {
        file.set_len(geo.file_size)
            .map_err(|e| err("sizing the file", e))?;
    }
    if header.lock != crate::layout::mutex::LockWord::BYTE_RANGE {
        init_mutexes(file, &geo).map_err(|e| err("initialising the stripe mutexes", e))?;
    }
    // Publish: the magic goes last.
    write_at(file, &MAGIC, 0).map_err(|e| err("publishing the header", e))?;
    Ok(geo)
}

/// Initialises every stripe mutex of a file being created (robust kind,
/// format.md §4 step 3), in a mapping of its own: the file still starts
/// with `SLOTINIT` and the open lock is held, so nobody else uses them.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn init_mutexes(file: &File, geo: &Geometry) -> io::Result<()> {
    let raw = memmap2::MmapOptions::new()
        .len(geo.file_size as usize)
        .map_raw(file)?;
    let map = crate::map::Map::new(raw, *geo, true);
    for s in 0..geo.stripes {
        // SAFETY: the file is not yet published (magic `SLOTINIT`) and we
        // hold its open lock, so no process uses the mutex; the mapping is
        // shared and writable.
        unsafe { crate::locks::robust::init(map.stripe_mutex(s))? };
    }
    Ok(())
}

/// Only Linux with glibc creates robust-mutex files.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn init_mutexes(_: &File, _: &Geometry) -> io::Result<()> {
    unreachable!("kind_for_new_file gives byte-range locks here")
}

/// Reserves disk space for the first `len` bytes of `file`, so that a full
/// disk fails here rather than when a page of the mapping is first written
/// (`SIGBUS` on Unix, `EXCEPTION_IN_PAGE_ERROR` on Windows).
#[cfg(unix)]
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    fs4::FileExt::allocate(file, len)
}

/// Windows: `fs4` sets `FileAllocationInfo`, then the end of file. Where the
/// file system (or Wine, whose `NtSetInformationFile` does not implement
/// `FileAllocationInformation` in 8.0: see `.ci/wine/README.md`) refuses
/// that class, setting the end of file is enough: NTFS, ReFS and FAT
/// allocate clusters when a non-sparse file is extended, and fail with
/// `ERROR_DISK_FULL` when they cannot.
#[cfg(windows)]
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use windows_sys::Win32::Foundation::{
        ERROR_CALL_NOT_IMPLEMENTED, ERROR_INVALID_FUNCTION, ERROR_INVALID_PARAMETER,
        ERROR_NOT_SUPPORTED,
    };
    match fs4::FileExt::allocate(file, len) {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error().map(|c| c as u32),
                Some(
                    ERROR_CALL_NOT_IMPLEMENTED
                        | ERROR_INVALID_FUNCTION
                        | ERROR_INVALID_PARAMETER
                        | ERROR_NOT_SUPPORTED
                )
            ) =>
        {
            file.set_len(len)
        }
        Err(e) => Err(e),
    }
}

/// Whether `e` says the file system is mounted read-only (`EROFS`).
#[cfg(unix)]
fn is_read_only_fs(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EROFS)
}

/// Whether `e` says the medium is write-protected (`ERROR_WRITE_PROTECT`).
#[cfg(windows)]
fn is_read_only_fs(e: &io::Error) -> bool {
    use windows_sys::Win32::Foundation::ERROR_WRITE_PROTECT;
    e.raw_os_error().map(|c| c as u32) == Some(ERROR_WRITE_PROTECT)
}

/// Whether `e` says the disk is full (`ENOSPC`).
#[cfg(unix)]
fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// Whether `e` says the disk is full (`ERROR_DISK_FULL`,
/// `ERROR_HANDLE_DISK_FULL`).
#[cfg(windows)]
fn is_disk_full(e: &io::Error) -> bool {
    use windows_sys::Win32::Foundation::{ERROR_DISK_FULL, ERROR_HANDLE_DISK_FULL};
    matches!(
        e.raw_os_error().map(|c| c as u32),
        Some(ERROR_DISK_FULL | ERROR_HANDLE_DISK_FULL)
    )
}

fn write_at(file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            done +=
                std::os::windows::fs::FileExt::seek_write(file, &buf[done..], off + done as u64)?;
        }
        Ok(())
    }
}

fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::FileExt::seek_read(file, buf, off)
    }
}

/// Replaces a damaged cache file with a new, empty one: built under a
/// temporary name next to it, then renamed over it. Processes that still
/// map the damaged file keep their mapping (it stays valid; they no longer
/// share with new openers); new openers get the new file. Nothing is done
/// if another process already replaced it.
fn replace_damaged(path: &Path, damaged: &File, opts: &Options) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        let ours = file_key(damaged).map_err(|e| Error::io("stat", path, e))?;
        if (now.dev(), now.ino()) != ours {
            return Ok(());
        }
    }
    #[cfg(not(unix))]
    let _ = damaged;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.reset-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let fresh = opts.clone().read_only(false).create(true);
    let (file, _, _) = open_file(&tmp, &fresh)?;
    let built = initialize(&file, &tmp, &fresh).and_then(|_| {
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io("replacing a damaged cache file", path, e))
    });
    if built.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    built.map(|_| ())
}

/// Opens or creates the cache file at `path`.
pub(crate) fn open(path: &Path, opts: &Options) -> Result<Arc<Shared>> {
    opts.validate()?;
    fork::install_fork_handler();
    // The registry stays locked for the whole open, so two threads opening
    // the same file cannot both miss it and end with two descriptors; the
    // open gate around it keeps `fork()` out meanwhile (see `crate::fork`).
    #[cfg(unix)]
    let _gate = fork::OpenGate::enter();
    #[cfg(unix)]
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    #[cfg(not(unix))]
    let mut reg = ();
    open_registered(path, opts, &mut reg)
}

/// The registry guard (Unix) or nothing.
#[cfg(unix)]
type Reg<'a> = std::sync::MutexGuard<'a, Vec<Registered>>;
/// The registry guard (Unix) or nothing.
#[cfg(not(unix))]
type Reg<'a> = ();

fn open_registered(path: &Path, opts: &Options, reg: &mut Reg<'_>) -> Result<Arc<Shared>> {
    // An open file is found by identity *before* opening a descriptor: with
    // classic `fcntl` locks, opening and closing a second descriptor would
    // drop every lock this process holds on the file. A read-only request on
    // a file this process has open read-write shares that state (the
    // `Cache` handle refuses writes); a read-write request on a file open
    // read-only here gets the read-only state.
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        if let Some(s) = reg
            .iter()
            .find(|(k, _)| *k == (m.dev(), m.ino()))
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(s);
        }
    }
    #[cfg(not(unix))]
    let _ = &reg;
    // Options that cannot make a file are refused before one is created.
    if opts.create && !opts.read_only && !path.exists() {
        opts.plan()?;
    }
    let (file, created, read_only) = open_file(path, opts)?;
    #[cfg(unix)]
    let key = file_key(&file).map_err(|e| Error::io("stat", path, e))?;
    #[cfg(not(unix))]
    let key = ();
    let err = |op, e| Error::io(op, path, e);
    // Whole-file lock while creating or validating, so that two processes
    // racing to create the same path end with one file: the loser waits,
    // then finds the magic and validates instead of initialising.
    let outcome = {
        let _open_lock =
            OpenLock::take(&file).map_err(|e| err("locking the file for opening", e))?;
        locked(path, opts, &file, key, created, read_only)
    };
    // Released: an opener that starts over takes the lock again.
    let result = match outcome {
        Locked::Retry(opts) => return open_registered(path, &opts, reg),
        Locked::Done(result) => *result,
    };
    let (header, map) = result?;
    #[cfg(target_os = "linux")]
    let fd = {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        fork::register_open_file(fd, map.addr(), map.len(), map.writable());
        fd
    };
    #[cfg(not(target_os = "linux"))]
    let fd = ();
    let shared = Arc::new(Shared::new(
        path.to_path_buf(),
        map,
        header,
        read_only,
        Arc::new(file),
        fd,
    ));
    #[cfg(unix)]
    {
        reg.retain(|(_, w)| w.strong_count() > 0);
        reg.push((key, Arc::downgrade(&shared)));
    }
    Ok(shared)
}

/// Identity of an open file: (device, inode) on Unix, nothing elsewhere.
#[cfg(unix)]
type FileId = (u64, u64);
/// Identity of an open file: (device, inode) on Unix, nothing elsewhere.
#[cfg(not(unix))]
type FileId = ();

/// What the part of an open that holds the open lock decided.
enum Locked {
    /// Start over with these options: the path names another file now, or
    /// a damaged file was just replaced.
    Retry(Options),
    /// The validated header and the mapping, or why not.
    Done(Box<Result<(Header, Map)>>),
}

/// The part of an open that holds the open lock (`file` is the file just
/// opened, `key` its identity): initialises a new or half-made file,
/// validates the header and maps the file; replaces a damaged file when
/// the options say so; removes a file this open created and could not
/// finish.
fn locked(
    path: &Path,
    opts: &Options,
    file: &File,
    key: FileId,
    created: bool,
    read_only: Option<&'static str>,
) -> Locked {
    // A creator that failed removed the file while we waited for the lock
    // (or someone replaced it): what we hold is no longer the file at
    // `path`. Start over with whatever is there now.
    #[cfg(unix)]
    if !names(path, key) {
        return Locked::Retry(opts.clone());
    }
    let result = validate_and_map(path, opts, file, read_only);
    if let Err(e) = &result {
        if opts.on_corrupt == OnCorrupt::Reset && read_only.is_none() && e.is_damage() {
            // Still holding the damaged file's open lock, so racing openers
            // wait here and then find the replacement.
            return match replace_damaged(path, file, opts) {
                Ok(()) => Locked::Retry(opts.clone().on_corrupt(OnCorrupt::Error)),
                Err(e) => Locked::Done(Box::new(Err(e))),
            };
        }
    }
    if created && result.is_err() {
        // Nothing usable was made: leave no empty or half-made file behind
        // (openers waiting for the lock see that the path no longer names
        // their file and start over).
        #[cfg(unix)]
        let ours = names(path, key);
        #[cfg(not(unix))]
        let ours = {
            let () = key;
            true
        };
        if ours {
            let _ = std::fs::remove_file(path);
        }
    }
    Locked::Done(Box::new(result))
}

/// Initialises `file` if it is empty or half-made (and writable), then
/// validates its header and maps it.
fn validate_and_map(
    path: &Path,
    opts: &Options,
    file: &File,
    read_only: Option<&'static str>,
) -> Result<(Header, Map)> {
    let err = |op, e| Error::io(op, path, e);
    let mut first = [0u8; MAGIC.len()];
    let n = read_at(file, &mut first, 0).map_err(|e| err("reading the header", e))?;
    let len = file.metadata().map_err(|e| err("stat", e))?.len();
    if len == 0 || (n == MAGIC.len() && first == MAGIC_INIT) {
        if let Some(why) = read_only {
            return Err(Error::ReadOnly {
                path: path.to_path_buf(),
                op: "create",
                why,
            });
        }
        initialize(file, path, opts)?;
    } else if n < MAGIC.len() || first != MAGIC {
        let mut found = [0u8; MAGIC.len()];
        found[..n].copy_from_slice(&first[..n]);
        return Err(Error::NotSlotcache {
            path: path.to_path_buf(),
            expected: MAGIC,
            found,
        });
    }
    let len = file.metadata().map_err(|e| err("stat", e))?.len();
    if len < HEADER_SIZE {
        return Err(Error::SizeMismatch {
            path: path.to_path_buf(),
            expected: HEADER_SIZE,
            found: len,
        });
    }
    let mut h = vec![0u8; HEADER_SIZE as usize];
    read_at(file, &mut h, 0).map_err(|e| err("reading the header", e))?;
    let header = Header::decode(path, &h, len)?;
    if read_only.is_none() {
        // Read-only handles never take a stripe lock: any kind reads.
        crate::locks::check_kind(path, header.lock)?;
    }
    let flags = rkyv_flags();
    if header.rkyv_flags != flags {
        return Err(Error::FormatFlags {
            path: path.to_path_buf(),
            expected: flags,
            found: header.rkyv_flags,
        });
    }
    let raw = if read_only.is_some() {
        memmap2::MmapOptions::new()
            .len(len as usize)
            .map_raw_read_only(file)
    } else {
        memmap2::MmapOptions::new().len(len as usize).map_raw(file)
    }
    .map_err(|e| err("mapping the file", e))?;
    Ok((header, Map::new(raw, header.geo, read_only.is_none())))
}
