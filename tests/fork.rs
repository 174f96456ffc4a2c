//! Fork safety: pre-fork servers open the cache and then fork. The child
//! must get its own lock description, reader slot and liveness lock, must
//! not release the parent's pins, and must not keep a dead parent's locks
//! alive.
//!
//! Linux only: Windows has no `fork()`, and the tests check Linux's
//! handling (a child re-opens the file through `/proc/self/fd` so that it
//! holds no reference to the parent's open file description and its OFD
//! locks). Other Unix systems use per-process `fcntl` locks, which a child
//! does not inherit at all.
#![cfg(target_os = "linux")]

mod common;
use common::{churn, TempDir};
use slotcache::{Cache, Error, Options, PinHolder, Raw};
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

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status),
        "child died of signal {}",
        libc::WTERMSIG(status)
    );
    libc::WEXITSTATUS(status)
}

#[test]
fn child_respects_parent_pins_and_has_its_own_slot_and_locks() {
    let d = TempDir::new("fork", "pins");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("held", &Raw(b"parent's value")).unwrap();
    let guard = c.get::<Raw>("held").unwrap().unwrap();
    // SAFETY: the child runs only cache operations and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Dropping the inherited guard must not unpin the parent's read.
            drop(guard);
            // The child reads and writes with a slot and locks of its own.
            c.set("child", &Raw(b"hello")).unwrap();
            assert_eq!(&*c.get::<Raw>("child").unwrap().unwrap(), b"hello");
            // The parent's pin (a live process) must stop the child's writer.
            match churn(&c, 3, "c") {
                Err(Error::Pinned { holder, .. }) => {
                    assert!(!matches!(holder, PinHolder::CallingThread(_)), "{holder}")
                }
                other => panic!("child overwrote a segment the parent pins: {other:?}"),
            }
            0
        }))
        .unwrap_or(1);
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    assert_eq!(wait(pid), 0, "child checks failed");
    assert_eq!(&*guard, b"parent's value", "pinned bytes changed");
    assert_eq!(&*c.get::<Raw>("child").unwrap().unwrap(), b"hello");
    // The parent's own thread slot is still its own: its pin stops the
    // parent's writer at once.
    match churn(&c, 3, "p") {
        Err(Error::Pinned { holder, .. }) => {
            assert!(matches!(holder, PinHolder::CallingThread(_)), "{holder}")
        }
        other => panic!("expected the parent's own pin to stop it: {other:?}"),
    }
    drop(guard);
    churn(&c, 3, "q").unwrap();
    drop(c);
}

#[test]
fn child_entry() {
    let Some((_forker, path)) = common::child_role() else {
        return;
    };
    let c = Cache::open(&path, opts()).unwrap();
    let g = c.get::<Raw>("held").unwrap().unwrap();
    // SAFETY: the grandchild only sleeps and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        std::thread::sleep(Duration::from_secs(30));
        // SAFETY: leaving without destructors.
        unsafe { libc::_exit(0) };
    }
    println!("READY {pid} {}", g.len());
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_killed_parent_leaves_no_locks_behind_in_its_children() {
    let d = TempDir::new("fork", "dead-parent");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("held", &Raw(b"v")).unwrap();
    let mut forker = common::child("forker", &p)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(forker.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "forker exited early");
    }
    let grandchild: libc::pid_t = line
        .split_whitespace()
        .skip_while(|w| !w.ends_with("READY"))
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // The forker holds a guard: its pin is respected while it lives.
    assert!(matches!(churn(&c, 3, "a"), Err(Error::Pinned { .. })));
    forker.kill().unwrap();
    forker.wait().unwrap();
    // Its child still lives. Had it kept the parent's open file description,
    // the dead parent's reader-slot lock would still be held and its pin
    // would block this writer forever.
    let r = churn(&c, 3, "b");
    // SAFETY: killing the grandchild we were told about.
    unsafe { libc::kill(grandchild, libc::SIGKILL) };
    r.expect("a dead parent's pin must be reclaimable while its children live");
    drop(c);
}

/// `fork()` while another thread is inside `Cache::open`: the process-wide
/// registry of open files is held for the whole open, and a child that
/// inherited it locked (by a thread that does not exist in the child) would
/// hang in its first `open`. The open gate makes `fork()` wait for an open
/// in progress instead. Each child opens a cache and exits; a child still
/// running after 30 s is killed and fails the test.
#[test]
fn fork_while_another_thread_opens_leaves_open_usable_in_the_child() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = TempDir::new("fork", "gate");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let c = Cache::open(d.join(format!("busy{}", i % 4)), opts()).unwrap();
                drop(c);
                i += 1;
            }
        });
        for round in 0..40 {
            // SAFETY: the child only opens a cache (allocation is fork-safe
            // with glibc) and leaves with `_exit`, running no destructors or
            // test-harness code.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let ok = Cache::open(d.join(format!("child{round}")), opts()).is_ok();
                // SAFETY: ends the child without unwinding into the harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            assert!(pid > 0, "fork failed");
            let start = std::time::Instant::now();
            let status = loop {
                let mut status = 0;
                // SAFETY: polling our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    break status;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    // SAFETY: killing and reaping our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    stop.store(true, Ordering::Relaxed);
                    panic!("round {round}: the child hung in Cache::open after fork");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "round {round}: child status {status:#x}"
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
}

/// Waits (polling) for our own child `pid` to exit; `false` if it is still
/// running after `limit`.
fn exited_within(pid: libc::pid_t, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills and reaps our own child.
fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Pre-fork, one level deeper: a worker forked from the opener uses the
/// cache (so it has lock descriptors of its own), forks an idle helper that
/// never touches the cache, and is killed while holding a regeneration lock
/// and while holding a stripe write lock. Neither lock may outlive the
/// worker because the helper inherited its descriptors.
#[test]
fn a_killed_worker_leaves_no_locks_behind_in_its_idle_child() {
    let d = TempDir::new("fork", "grandchild");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("held", &Raw(b"v")).unwrap();
    let helper_file = d.join("helper.pid");
    let marker = d.join("creating");

    // 1. A regeneration lock.
    // SAFETY: the child runs cache operations, fork and sleeps, and leaves
    // with _exit (it is killed first).
    let worker = unsafe { libc::fork() };
    assert!(worker >= 0);
    if worker == 0 {
        let _ = c.get_or_create("regen-key", || {
            // SAFETY: the helper only sleeps and exits.
            let helper = unsafe { libc::fork() };
            if helper == 0 {
                std::thread::sleep(Duration::from_secs(60));
                // SAFETY: leaving without destructors.
                unsafe { libc::_exit(0) };
            }
            std::fs::write(&helper_file, helper.to_string()).unwrap();
            std::fs::write(&marker, b"").unwrap();
            std::thread::sleep(Duration::from_secs(600));
            0u64
        });
        // SAFETY: leaving without destructors.
        unsafe { libc::_exit(1) };
    }
    let t = std::time::Instant::now();
    while !marker.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "worker never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let helper: libc::pid_t = std::fs::read_to_string(&helper_file)
        .unwrap()
        .parse()
        .unwrap();
    kill_and_reap(worker);
    let o = slotcache::CreateOptions::new().lock_timeout(Duration::from_secs(10));
    let r = c.get_or_create_opt("regen-key", &o, || 7u64);
    let created = matches!(&r, Ok(f) if f.is_created());
    drop(r);
    kill_and_reap(helper);
    assert!(
        created,
        "the killed worker's regeneration lock stayed held by its idle child"
    );

    // 2. A stripe write lock: the worker waits for a pin (ours) while
    // holding the stripe's write lock, and is killed there.
    std::fs::remove_file(&helper_file).unwrap();
    let guard = c.get::<Raw>("held").unwrap().unwrap();
    let waits_before = c.stats().pin_waits;
    // SAFETY: as above.
    let worker = unsafe { libc::fork() };
    assert!(worker >= 0);
    if worker == 0 {
        drop(guard);
        // SAFETY: the helper only sleeps and exits.
        let helper = unsafe { libc::fork() };
        if helper == 0 {
            std::thread::sleep(Duration::from_secs(60));
            // SAFETY: leaving without destructors.
            unsafe { libc::_exit(0) };
        }
        std::fs::write(&helper_file, helper.to_string()).unwrap();
        let patient = Cache::open(&p, opts().pin_wait(Duration::from_secs(600))).unwrap();
        let _ = churn(&patient, 3, "w");
        // SAFETY: leaving without destructors.
        unsafe { libc::_exit(1) };
    }
    let t = std::time::Instant::now();
    while c.stats().pin_waits == waits_before {
        assert!(t.elapsed() < Duration::from_secs(60), "worker never waited");
        std::thread::sleep(Duration::from_millis(2));
    }
    let helper: libc::pid_t = std::fs::read_to_string(&helper_file)
        .unwrap()
        .parse()
        .unwrap();
    kill_and_reap(worker);
    drop(guard);
    let (tx, rx) = std::sync::mpsc::channel();
    let c2 = c.clone();
    let writer = std::thread::spawn(move || {
        let r = c2.set("after", &Raw(b"x"));
        tx.send(()).unwrap();
        r
    });
    let done = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    kill_and_reap(helper);
    writer.join().unwrap().unwrap();
    assert!(
        done,
        "the killed worker's stripe lock stayed held by its idle child"
    );
    drop(c);
}

/// Descriptors stay close-on-exec in every generation: a program a fork
/// child executes holds no descriptor of the cache file (it would keep the
/// child's locks alive for as long as it runs).
#[test]
fn descriptors_stay_close_on_exec_across_fork() {
    let d = TempDir::new("fork", "cloexec");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    let listing = d.join("fds");
    let script = format!(
        "ls -l /proc/self/fd > '{}'",
        listing.display().to_string().replace('\'', "")
    );
    let sh = std::ffi::CString::new("/bin/sh").unwrap();
    let args = [
        sh.clone(),
        std::ffi::CString::new("-c").unwrap(),
        std::ffi::CString::new(script).unwrap(),
    ];
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    for generation in 1..=2 {
        let _ = std::fs::remove_file(&listing);
        // SAFETY: the child uses the cache, maybe forks once more, then execs
        // (or leaves with _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Use the cache in this generation: its own lock descriptor.
            c.set("child", &Raw(b"x")).unwrap();
            if generation == 2 {
                // SAFETY: the grandchild uses the cache and execs.
                let pid2 = unsafe { libc::fork() };
                if pid2 != 0 {
                    let mut status = 0;
                    // SAFETY: our own child.
                    unsafe { libc::waitpid(pid2, &mut status, 0) };
                    // SAFETY: leaving without destructors.
                    unsafe { libc::_exit(0) };
                }
                c.set("grandchild", &Raw(b"x")).unwrap();
            }
            // SAFETY: argv is NULL-terminated and its strings outlive the call.
            unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
            // SAFETY: exec failed; leave without destructors.
            unsafe { libc::_exit(127) };
        }
        assert!(exited_within(pid, Duration::from_secs(60)), "child hung");
        let t = std::time::Instant::now();
        while !listing.exists() {
            assert!(t.elapsed() < Duration::from_secs(60), "no listing");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&listing).unwrap();
        assert!(
            !text.contains(&p.display().to_string()),
            "generation {generation}: an executed program inherited a cache descriptor:\n{text}"
        );
    }
    drop(c);
}
