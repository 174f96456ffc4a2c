//! Detached guards (`Guard::detach` → `OwnedGuard`): the value stays
//! zero-copy and protected while the guard moves between threads and
//! outlives its `Cache` handle; writers of every process respect its pin;
//! when eviction already passed the record, the value is copied instead.

mod common;
use common::{churn, KillOnDrop, TempDir};
use slotcache::{Cache, Error, Options, OwnedGuard, PinHolder, Raw};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

fn opts() -> Options {
    Options::new()
        .capacity(1 << 20)
        .stripes(1)
        .segments(8)
        .pin_wait(Duration::from_millis(30))
}

#[test]
fn a_detached_guard_moves_between_threads_and_keeps_its_bytes() {
    let d = TempDir::new("detach", "threads");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("k", &Raw(b"pinned by the process")).unwrap();
    let owned: OwnedGuard<[u8]> = c.get::<Raw>("k").unwrap().unwrap().detach().unwrap();
    // Held by another thread now: the writer (this thread) must respect it.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        assert_eq!(&*owned, b"pinned by the process");
        rx.recv().unwrap();
        assert_eq!(
            &*owned, b"pinned by the process",
            "bytes changed under the guard"
        );
        drop(owned); // unpinned on this thread
    });
    match churn(&c, 3, "a") {
        Err(Error::Pinned {
            holder: PinHolder::Reader(_),
            ..
        }) => {}
        other => panic!("a detached guard's pin was not respected: {other:?}"),
    }
    tx.send(()).unwrap();
    holder.join().unwrap();
    churn(&c, 3, "b").expect("dropped on another thread, the pin is gone");
    drop(c);
}

#[test]
fn a_detached_guard_outlives_its_handle() {
    let d = TempDir::new("detach", "outlives");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("typed", &vec!["a".to_string(), "bc".to_string()])
        .unwrap();
    let owned = c
        .get::<Vec<String>>("typed")
        .unwrap()
        .unwrap()
        .detach()
        .unwrap();
    drop(c);
    assert_eq!(owned.len(), 2);
    assert_eq!(owned[1].as_str(), "bc");
    assert!(!owned.meta().is_stale());
    drop(owned);
}

/// A writer already evicted the record's segment and waits for the
/// guard's pin: detaching then must not trust a new pin (the writer may be
/// past it in its scan) and copies the value, which stays intact after the
/// writer reuses the space.
#[test]
fn detaching_after_eviction_passed_the_record_copies_it() {
    let d = TempDir::new("detach", "copy");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let value = vec!["x".repeat(300), "y".repeat(5)];
    c.set("held", &value).unwrap();
    let guard = c.get::<Vec<String>>("held").unwrap().unwrap();
    let waits = c.stats().pin_waits;
    let writer = {
        let c2 = Cache::open(d.join("c"), opts().pin_wait(Duration::from_secs(60))).unwrap();
        std::thread::spawn(move || churn(&c2, 3, "w"))
    };
    let t = std::time::Instant::now();
    while c.stats().pin_waits == waits {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the writer never waited"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let owned = guard.detach().unwrap(); // the thread's pin goes here
    writer
        .join()
        .unwrap()
        .expect("the writer went on after the detach");
    assert_eq!(owned.len(), 2);
    assert_eq!(owned[0].as_str(), value[0]);
    assert_eq!(owned[1].as_str(), value[1]);
    drop(owned);
    drop(c);
}

#[test]
fn child_entry() {
    let Some((_writer, path)) = common::child_role() else {
        return;
    };
    let c = Cache::open(&path, opts()).unwrap();
    match churn(&c, 3, "child") {
        Err(Error::Pinned { .. }) => println!("PINNED"),
        Ok(()) => println!("WROTE"),
        Err(e) => println!("ERROR {e}"),
    }
}

fn child_writes(path: &std::path::Path) -> String {
    let mut kid = KillOnDrop(
        common::child("writer", path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = BufReader::new(kid.0.stdout.take().unwrap());
    let lines: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    let line = lines
        .into_iter()
        .find(|l| l.contains("PINNED") || l.contains("WROTE") || l.contains("ERROR"))
        .expect("the child said what happened");
    assert!(kid.0.wait().unwrap().success());
    ["PINNED", "WROTE"]
        .into_iter()
        .find(|w| line.contains(w))
        .unwrap_or(&line)
        .to_string()
}

#[test]
fn writers_of_other_processes_respect_detached_guards() {
    let d = TempDir::new("detach", "process");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    let owned = c.get::<Raw>("k").unwrap().unwrap().detach().unwrap();
    assert_eq!(child_writes(&p), "PINNED");
    drop(owned);
    assert_eq!(child_writes(&p), "WROTE");
    drop(c);
}

/// A read-only handle's pin is a shared lock on the segment: a detached
/// guard keeps one reference to it, so writers still wait for it after the
/// thread's guard is gone, and not after the detached one is dropped.
#[cfg(unix)]
#[test]
fn read_only_handles_detach_their_pin_lock() {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("detach", "read-only");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    drop(c);
    // A file this process cannot write is opened read-only (as root, the
    // permission bits do not stop us: open read-only explicitly instead).
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
    let ro = Cache::open(&p, opts().read_only(true)).unwrap();
    assert!(ro.info().read_only);
    let owned = ro.get::<Raw>("k").unwrap().unwrap().detach().unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(child_writes(&p), "PINNED");
    assert_eq!(&*owned, b"v");
    drop(owned);
    assert_eq!(child_writes(&p), "WROTE");
    drop(ro);
}
