//! A batch write (`set_many`) over several stripes takes one byte-range lock
//! over its stripes' lock bytes when it can, and falls back to one lock per
//! stripe when another process holds a stripe of that range (format.md §6).
//! Linux only: the test holds a stripe's lock itself, through an open file
//! description of its own, exactly as another process would. The file is
//! created with byte-range stripe locks, the kind this protocol belongs to
//! (robust-mutex batches: `tests/robust.rs`).
#![cfg(target_os = "linux")]

use slotcache::{Cache, Options, Raw};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

mod common;

/// Offset of stripe 0's write lock (format.md §6).
const WRITE: u64 = 1 << 62;

/// Takes stripe `s`'s write lock through a new open file description.
fn hold_stripe(path: &std::path::Path, s: u32) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: all-zero is a valid `flock`; OFD locks require `l_pid == 0`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = (WRITE + s as u64) as libc::off_t;
    fl.l_len = 1;
    // SAFETY: the descriptor is open and `fl` is a valid `flock`.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "lock stripe {s}: {}", std::io::Error::last_os_error());
    f
}

/// A key that lands on stripe `s`.
fn key_on(c: &Cache, s: u32) -> String {
    (0..)
        .map(|i| format!("key{i}"))
        .find(|k| c.key_placement(k).stripe == s)
        .unwrap()
}

#[test]
fn batch_skips_a_busy_stripe_it_does_not_need_and_waits_for_one_it_needs() {
    let dir = common::TempDir::new("batch_locks", "range");
    let path = dir.join("c");
    let opts = Options::new()
        .capacity(16 << 20)
        .stripes(8)
        .byte_range_locks(true);
    let c = Cache::open(&path, opts).unwrap();
    let (k1, k3, k6) = (key_on(&c, 1), key_on(&c, 3), key_on(&c, 6));
    let held = hold_stripe(&path, 3);

    // Stripes 1 and 6: their range covers the busy stripe 3, so the range
    // lock is refused and the batch locks 1 and 6 alone, without waiting.
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        let c = &c;
        let (k1, k6) = (&k1, &k6);
        scope.spawn(move || {
            c.set_many([
                (k1.as_str(), &Raw(&b"one"[..])),
                (k6.as_str(), &Raw(&b"six"[..])),
            ])
            .unwrap();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("a batch waited for a stripe it does not write");
    });
    assert_eq!(c.get::<Raw>(&k1).unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(c.get::<Raw>(&k6).unwrap().as_deref(), Some(&b"six"[..]));

    // Stripes 1 and 3: the batch must wait for stripe 3.
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let t = scope.spawn(|| {
            c.set_many([
                (k1.as_str(), &Raw(&b"ONE"[..])),
                (k3.as_str(), &Raw(&b"THREE"[..])),
            ])
            .unwrap();
            done.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !done.load(Ordering::SeqCst),
            "a batch wrote stripe 3 while another description held its lock"
        );
        drop(held);
        t.join().unwrap();
    });
    assert_eq!(c.get::<Raw>(&k3).unwrap().as_deref(), Some(&b"THREE"[..]));
    assert_eq!(c.get::<Raw>(&k1).unwrap().as_deref(), Some(&b"ONE"[..]));

    // Uncontended, a batch over several stripes takes the range, and the
    // range is released afterwards: a single-stripe writer in another
    // description can take any stripe of it at once.
    c.set_many([
        (k1.as_str(), &Raw(&b"1"[..])),
        (k6.as_str(), &Raw(&b"6"[..])),
    ])
    .unwrap();
    for s in 1..=6 {
        drop(hold_stripe(&path, s));
    }
    assert!(c.verify().unwrap().is_clean());
}
