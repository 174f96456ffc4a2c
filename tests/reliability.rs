//! Integrity checking, reset of damaged files, and unlucky environments:
//! a file deleted and recreated under running processes, tmpfs, a file size
//! limit (a full disk, as far as one process can tell) at creation.

mod common;
use common::{patch, TempDir};
use slotcache::{Cache, Error, OnCorrupt, Options, Raw};
use std::io::Read;
use std::path::Path;

fn small() -> Options {
    Options::new().capacity(4 << 20).stripes(4)
}

fn find(path: &Path, needle: &[u8]) -> u64 {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("bytes in file") as u64
}

#[test]
fn verify_is_clean_after_churn_and_reports_damage() {
    let d = TempDir::new("reliability", "verify");
    let p = d.join("c");
    let c = Cache::open(&p, small().segments(6)).unwrap();
    for i in 0..20_000u32 {
        c.set(
            format!("k{i}"),
            &Raw(&vec![i as u8; (i as usize * 13) % 700]),
        )
        .unwrap();
        if i % 3 == 0 {
            let _ = c.get::<Raw>(format!("k{}", i / 2)).unwrap();
        }
        if i % 11 == 0 {
            c.delete(format!("k{}", i / 3)).unwrap();
        }
    }
    let r = c.verify().unwrap();
    assert!(r.is_clean(), "{r:?}");
    assert!(r.records_scanned > 0 && r.live_entries > 0, "{r:?}");
    assert_eq!(r.live_entries, c.stats().entries);
    assert_eq!(r.entries_drift, 0);
    assert_eq!(r.live_pins, 0);
    let g = c.get::<Raw>("k19999").unwrap().unwrap();
    assert_eq!(c.verify().unwrap().live_pins, 1, "the guard's pin is seen");
    drop(g);
    // Damage a record's value behind the cache's back.
    c.set("victim", &Raw(b"VICTIM-VALUE-0123456789")).unwrap();
    let at = find(&p, b"VICTIM-VALUE-0123456789");
    patch(&p, at + 2, b"#");
    let r = c.verify().unwrap();
    assert_eq!(r.bad_checksums, 1, "{r:?}");
    assert!(!r.is_clean());
    assert!(
        c.get::<Raw>("victim").unwrap().is_none(),
        "and reads miss it"
    );
    drop(c);
}

#[test]
fn damaged_files_are_reset_on_request_and_foreign_files_never() {
    let d = TempDir::new("reliability", "reset");
    let make = |name: &str| common::file_with_one_entry(d.join(name), small());
    // A flipped header byte: an error by default, a fresh file on request.
    let p = make("header");
    patch(&p, 30, &[0x55]);
    assert!(matches!(
        Cache::open(&p, small()),
        Err(Error::CorruptHeader { .. })
    ));
    let c = Cache::open(&p, small().on_corrupt(OnCorrupt::Reset)).unwrap();
    assert!(
        c.get::<Raw>("k").unwrap().is_none(),
        "the damaged data is gone"
    );
    c.set("k", &Raw(b"new")).unwrap();
    assert!(c.verify().unwrap().is_clean());
    drop(c);
    assert_eq!(
        &*Cache::open(&p, small())
            .unwrap()
            .get::<Raw>("k")
            .unwrap()
            .unwrap(),
        b"new"
    );
    // Truncated by someone else.
    let p = make("truncated");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    assert!(Cache::open(&p, small().on_corrupt(OnCorrupt::Reset)).is_ok());
    // A newer format version is left alone (newer software may use it).
    let p = make("newer");
    patch(&p, 8, &7u32.to_le_bytes());
    assert!(matches!(
        Cache::open(&p, small().on_corrupt(OnCorrupt::Reset)),
        Err(Error::UnsupportedVersion { found: 7, .. })
    ));
    // A file that is not ours is never touched.
    let p = d.join("foreign");
    std::fs::write(&p, vec![b'x'; 10_000]).unwrap();
    assert!(matches!(
        Cache::open(&p, small().on_corrupt(OnCorrupt::Reset)),
        Err(Error::NotSlotcache { .. })
    ));
    assert_eq!(std::fs::read(&p).unwrap(), vec![b'x'; 10_000]);
}

#[cfg(unix)]
#[test]
fn a_file_deleted_under_running_users_keeps_working_for_them() {
    let d = TempDir::new("reliability", "deleted");
    let p = d.join("c");
    let old = Cache::open(&p, small()).unwrap();
    old.set("k", &Raw(b"old")).unwrap();
    std::fs::remove_file(&p).unwrap();
    // The old handle keeps working on its (now unlinked) file.
    old.set("k2", &Raw(b"still")).unwrap();
    assert_eq!(&*old.get::<Raw>("k").unwrap().unwrap(), b"old");
    // A new opener creates a new file and does not see the old one.
    let new = Cache::open(&p, small()).unwrap();
    assert!(new.get::<Raw>("k").unwrap().is_none());
    new.set("k", &Raw(b"new")).unwrap();
    assert_eq!(&*old.get::<Raw>("k").unwrap().unwrap(), b"old");
    assert_eq!(&*new.get::<Raw>("k").unwrap().unwrap(), b"new");
    drop((old, new));
}

/// A read-only directory: creating a cache there is a typed I/O error; a
/// cache file already in it opens and works (the directory is not written).
#[cfg(unix)]
#[test]
fn read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("reliability", "rodir");
    let existing = d.join("existing");
    Cache::open(&existing, small())
        .unwrap()
        .set("k", &Raw(b"v"))
        .unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let r = Cache::open(d.join("new"), small());
    if !root {
        // (root may write anywhere, so this half only means something
        // for other users)
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        assert!(e.to_string().contains("creating"), "{e}");
    }
    let c = Cache::open(&existing, small()).unwrap();
    assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
    c.set("k2", &Raw(b"v2")).unwrap();
    drop(c);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn works_on_tmpfs() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm on this machine: tmpfs case not exercised");
        return;
    }
    let p = shm.join(format!("slotcache-test-{}", std::process::id()));
    let c = Cache::open(&p, small()).unwrap();
    for i in 0..5000u32 {
        c.set(i.to_le_bytes(), &Raw(&[1u8; 500])).unwrap();
    }
    assert!(c.get::<Raw>(4999u32.to_le_bytes()).unwrap().is_some());
    assert!(c.verify().unwrap().is_clean());
    drop(c);
    std::fs::remove_file(&p).unwrap();
}

/// A full disk at creation fails then, with a clear error, and leaves no
/// file behind (the next opener creates it anew). Simulated with a file-size limit
/// (RLIMIT_FSIZE), which makes preallocation fail like a full disk would.
/// The limited process is a child started from this test binary (not a
/// `fork()` of it: other test threads may hold locks at that moment).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_at_creation_not_later() {
    let d = TempDir::new("reliability", "full");
    let p = d.join("c");
    let out = common::child("full-disk", &p).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("FULL-DISK-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !p.exists(),
        "no half-made or empty file left behind by the failed create"
    );
    let c = Cache::open(&p, Options::new().capacity(8 << 20)).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    drop(c);
}

/// The body of the child processes (does nothing in a normal test run).
#[test]
fn child_entry() {
    let Some((role, path)) = common::child_role() else {
        return;
    };
    match role.as_str() {
        #[cfg(target_os = "linux")]
        "full-disk" => full_disk_child(&path),
        other => panic!("unknown role {other} (file {})", path.display()),
    }
}

/// The child side of `a_full_disk_fails_at_creation_not_later`.
#[cfg(target_os = "linux")]
fn full_disk_child(path: &std::path::Path) {
    // SAFETY: plain libc calls on this process's own settings.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    match Cache::open(path, Options::new().capacity(8 << 20)) {
        Err(e @ Error::Io { .. }) => {
            assert!(e.to_string().contains("preallocating"), "{e}");
            println!("FULL-DISK-OK");
        }
        other => panic!("expected a preallocation error, got {other:?}"),
    }
}
