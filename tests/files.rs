//! Creating and opening files: the create race, validation errors that say
//! what was expected and found, read-only access, corrupt records.

use slotcache::{Cache, Error, Options, Raw};
mod common;
use common::{patch, TempDir};
use std::io::Read;
use std::path::Path;
use std::process::Command;

fn dir(name: &str) -> TempDir {
    TempDir::new("files", name)
}

fn small() -> Options {
    Options::new().capacity(4 << 20).stripes(4)
}

/// Runs this test binary again as a child with `role` in the environment.
fn child(role: &str, path: &Path, extra: &str) -> Command {
    let mut c = common::child(role, path);
    c.env("SLOTCACHE_EXTRA", extra);
    c
}

#[test]
fn child_entry() {
    let Some((role, path)) = common::child_role() else {
        return;
    };
    let extra = std::env::var("SLOTCACHE_EXTRA").unwrap();
    match role.as_str() {
        "create" => {
            let c = Cache::open(&path, small()).expect("open in racing child");
            c.set(format!("from-{extra}"), &Raw(extra.as_bytes()))
                .unwrap();
        }
        // Dropping privileges with setuid is Unix-only; Windows checks the
        // same path with the read-only attribute instead.
        #[cfg(unix)]
        "nobody" => {
            // SAFETY: dropping privileges in a child process of our own.
            unsafe {
                assert_eq!(libc::setgid(65534), 0);
                assert_eq!(libc::setuid(65534), 0);
            }
            let c = Cache::open(&path, small()).expect("open a file we cannot write");
            assert!(c.info().read_only);
            assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
            let e = c.set("k", &Raw(b"w")).unwrap_err();
            assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
            println!("NOBODY-OK");
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn racing_creators_end_with_one_valid_file() {
    for round in 0..5 {
        let d = dir(&format!("race{round}"));
        let p = d.join("c");
        let kids: Vec<_> = (0..6)
            .map(|i| {
                child("create", &p, &i.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut k in kids {
            assert!(k.wait().unwrap().success());
        }
        let c = Cache::open(&p, small()).unwrap();
        for i in 0..6 {
            let g = c.get::<Raw>(format!("from-{i}")).unwrap();
            assert_eq!(
                g.as_deref(),
                Some(i.to_string().as_bytes()),
                "round {round}: writer {i} lost"
            );
        }
        drop(c);
    }
}

/// The lock an opener takes while it validates the file must not conflict
/// with the byte-range locks of processes using the file. (On Windows a
/// whole-file `LockFileEx`, as `fs4` takes, covers the reader-slot bytes:
/// the child below would wait for as long as this thread holds its slot.)
#[test]
fn opening_does_not_wait_for_readers_of_other_processes() {
    let d = dir("open-busy");
    let p = d.join("c");
    let c = Cache::open(&p, small()).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    // This thread now holds a reader slot (and its lock) until it exits.
    let g = c.get::<Raw>("k").unwrap().unwrap();
    let mut kid = child("create", &p, "7")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = kid.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let _ = kid.kill();
            let _ = kid.wait();
            panic!("a child opening the file waited 60 s for this process's reader slot");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert!(status.success());
    assert_eq!(&*g, b"v");
    drop(g);
    assert_eq!(&*c.get::<Raw>("from-7").unwrap().unwrap(), b"7");
    drop(c);
}

#[test]
fn existing_file_keeps_its_geometry() {
    let d = dir("geometry");
    let p = d.join("c");
    let a = Cache::open(&p, Options::new().capacity(8 << 20).stripes(8)).unwrap();
    a.set("k", &Raw(b"v")).unwrap();
    let info = a.info();
    drop(a);
    let b = Cache::open(&p, Options::new().capacity(64 << 20).stripes(2)).unwrap();
    assert_eq!(b.info(), info);
    assert_eq!(&*b.get::<Raw>("k").unwrap().unwrap(), b"v");
    drop(b);
}

#[test]
fn preallocates_the_whole_file() {
    let d = dir("prealloc");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20)).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    assert_eq!(len, c.info().file_size);
    assert!(len <= 8 << 20 && len > 7 << 20);
    // Allocated blocks and mode bits are Unix notions. (On Windows the space
    // is reserved with `FileAllocationInfo`, or by extending the file, which
    // NTFS allocates; Wine extends with `ftruncate`, so under Wine the file
    // is sparse on the host's disk and this check would not hold.)
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&p).unwrap().blocks() * 512;
        assert!(blocks >= len, "only {blocks} of {len} bytes allocated");
        assert_eq!(
            std::fs::metadata(&p).unwrap().mode() & 0o777,
            0o600,
            "private by default"
        );
    }
    drop(c);
}

#[test]
fn bad_files_are_typed_errors() {
    let d = dir("bad");
    // Not ours.
    let p = d.join("text");
    std::fs::write(&p, b"hello, this is not a cache file at all").unwrap();
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(matches!(e, Error::NotSlotcache { .. }), "{e}");
    assert!(e.to_string().contains("not a slotcache file"), "{e}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        b"hello, this is not a cache file at all",
        "left untouched"
    );

    let make = |name: &str| common::file_with_one_entry(d.join(name), small());
    // Newer format version (bytes 8..12).
    let p = make("newer");
    patch(&p, 8, &99u32.to_le_bytes());
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedVersion {
                expected: slotcache::FORMAT_VERSION,
                found: 99,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("newer"), "{e}");

    // A version-2 file (before reader slots recorded how their owner
    // publishes pins): the same clear error, saying the file is older.
    let p = make("v2");
    patch(&p, 8, &2u32.to_le_bytes());
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedVersion {
                expected: slotcache::FORMAT_VERSION,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("older"), "{e}");

    // Truncated and extended.
    let p = make("truncated");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(
        matches!(e, Error::SizeMismatch { expected, found, .. } if expected == len && found == len / 2),
        "{e}"
    );
    let p = make("extended");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    assert!(matches!(
        Cache::open(&p, small()).unwrap_err(),
        Error::SizeMismatch { .. }
    ));

    // A flipped geometry byte fails the header checksum.
    let p = make("corrupt-header");
    patch(&p, 24, &[0x7f]);
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CorruptHeader {
                field: "header_crc",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("expected") && e.to_string().contains("found"),
        "{e}"
    );

    // Shorter than a header.
    let p = d.join("tiny");
    std::fs::write(&p, b"SLOTCACH").unwrap();
    assert!(matches!(
        Cache::open(&p, small()).unwrap_err(),
        Error::SizeMismatch { .. }
    ));

    // Missing, with create off.
    let e = Cache::open(d.join("missing"), small().create(false)).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

/// A file of format version 2 (one log ring per stripe, before the
/// probation ring) gets the error any foreign version gets, and is left as
/// it was.
#[test]
fn a_version_2_file_gets_the_foreign_version_error() {
    let d = dir("v2");
    let p = common::file_with_one_entry(d.join("v2"), small());
    patch(&p, 8, &2u32.to_le_bytes());
    let before = std::fs::read(&p).unwrap();
    let e = Cache::open(&p, small()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedVersion {
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(slotcache::FORMAT_VERSION, 3);
    let msg = e.to_string();
    assert!(msg.contains("version 2") && msg.contains("older"), "{msg}");
    assert!(std::fs::read(&p).unwrap() == before, "left untouched");
}

#[test]
fn half_created_file_is_initialised_by_the_next_opener() {
    let d = dir("half");
    let p = d.join("c");
    // What a creator killed before publishing the magic leaves behind.
    let mut h = vec![0u8; 4096];
    h[..8].copy_from_slice(b"SLOTINIT");
    std::fs::write(&p, &h).unwrap();
    let c = Cache::open(&p, small()).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
    // And an empty file (killed right after creating it).
    let p2 = d.join("empty");
    std::fs::write(&p2, b"").unwrap();
    assert!(Cache::open(&p2, small()).is_ok());
    // Windows refuses to delete a file that is mapped: close first.
    drop(c);
}

#[test]
fn invalid_options_are_typed_errors() {
    let d = dir("opts");
    let cases = [
        (Options::new().stripes(0), "stripes"),
        (Options::new().stripes(5000), "stripes"),
        (Options::new().segments(2), "segments"),
        (Options::new().reader_slots(0), "reader_slots"),
        (Options::new().capacity(64 << 10), "capacity"),
        (Options::new().mode(0o10000), "mode"),
    ];
    for (i, (o, field)) in cases.into_iter().enumerate() {
        let e = Cache::open(d.join(format!("c{i}")), o).unwrap_err();
        match &e {
            Error::InvalidOptions { option, .. } => assert_eq!(*option, field, "{e}"),
            other => panic!("expected InvalidOptions for {field}, got {other}"),
        }
        assert!(e.to_string().contains("expected"), "{e}");
    }
}

#[test]
fn read_only_handles_read_and_refuse_writes() {
    let d = dir("ro");
    let p = d.join("c");
    let rw = Cache::open(&p, small()).unwrap();
    rw.set("k", &Raw(b"v")).unwrap();
    let ro = Cache::open(&p, small().read_only(true)).unwrap();
    assert!(ro.info().read_only);
    let g = ro.get::<Raw>("k").unwrap().unwrap();
    assert_eq!(&*g, b"v");
    for e in [
        ro.set("k", &Raw(b"w")).unwrap_err(),
        ro.delete("k").map(|_| ()).unwrap_err(),
        ro.clear().unwrap_err(),
    ] {
        assert!(matches!(e, Error::ReadOnly { .. }), "{e}");
    }
    // The read-only guard pins its segment: a writer wrapping the ring
    // must not overwrite it.
    let val = vec![9u8; 2000];
    let mut pinned = false;
    for i in 0..20_000 {
        match rw.set(format!("fill{i}"), &Raw(&val)) {
            Ok(()) => {}
            Err(Error::Pinned { .. }) => {
                pinned = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pinned, "the writer must stop at the read-only pin");
    assert_eq!(&*g, b"v", "pinned bytes unchanged");
    drop(g);
    for i in 0..5_000 {
        rw.set(format!("again{i}"), &Raw(&val)).unwrap();
    }
    assert!(ro.stats().hits >= 1);
    drop((ro, rw));

    // A file this process cannot write is opened read-only automatically.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let c = Cache::open(&p, small()).unwrap();
        c.set("k", &Raw(b"v")).unwrap();
        drop(c);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root may write anything: check as `nobody` in a child.
            let out = child("nobody", &p, "").output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("NOBODY-OK"),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
            let c = Cache::open(&p, small()).unwrap();
            assert!(c.info().read_only);
            assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
            assert!(matches!(
                c.set("k", &Raw(b"w")),
                Err(Error::ReadOnly { .. })
            ));
        }
    }
    // Windows: the read-only attribute refuses write access to everyone
    // (`ERROR_ACCESS_DENIED`), administrators included.
    #[cfg(windows)]
    {
        let c = Cache::open(&p, small()).unwrap();
        c.set("k", &Raw(b"v")).unwrap();
        drop(c);
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        perm.set_readonly(true);
        std::fs::set_permissions(&p, perm.clone()).unwrap();
        if std::fs::OpenOptions::new().write(true).open(&p).is_ok() {
            // Wine keeps the attribute as the Unix permission bits, which
            // root ignores, so under Wine run as root (as CI does) the file
            // stays writable. Reproduction: `.ci/wine/repro/readonly.c`.
            eprintln!(
                "note: this Windows host does not enforce FILE_ATTRIBUTE_READONLY \
                 (Wine run as root); the read-only fallback is not checked here"
            );
        } else {
            let c = Cache::open(&p, small()).unwrap();
            assert!(c.info().read_only);
            assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
            assert!(matches!(
                c.set("k", &Raw(b"w")),
                Err(Error::ReadOnly { .. })
            ));
        }
        // A read-only file cannot be deleted.
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&p, perm).unwrap();
    }
}

#[test]
fn corrupt_record_is_a_counted_miss() {
    let d = dir("record");
    let p = d.join("c");
    let c = Cache::open(&p, small()).unwrap();
    let marker = b"MARKER-0123456789-MARKER";
    c.set("victim", &Raw(marker)).unwrap();
    c.set("bystander", &Raw(b"fine")).unwrap();
    // Find the value in the file and flip one byte of it behind the cache's
    // back (the shared mapping sees the change).
    let mut bytes = Vec::new();
    std::fs::File::open(&p)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("value in file");
    patch(&p, at as u64 + 3, b"#");
    assert!(c.get::<Raw>("victim").unwrap().is_none());
    assert_eq!(c.stats().corrupt, 1);
    assert_eq!(&*c.get::<Raw>("bystander").unwrap().unwrap(), b"fine");
    // Rewriting the key heals it.
    c.set("victim", &Raw(b"new")).unwrap();
    assert_eq!(&*c.get::<Raw>("victim").unwrap().unwrap(), b"new");
    drop(c);
}
