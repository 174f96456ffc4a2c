//! A robust stripe mutex whose lock word was written from outside (format.md
//! §6, "A damaged lock word"): a writer of that stripe gets
//! `Error::StripeLockDamaged` instead of waiting forever, reads keep
//! working, and the stripe writes again once the word is cleared.
//!
//! One test in its own binary: the "idle thread of this process" case
//! relies on no other thread of the process holding a stripe mutex.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use common::{patch, KillOnDrop, TempDir};
use slotcache::{Cache, Error, Options, Raw};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The header's size and a stripe entry's (format.md §2.1, §2.2): the
/// stripe mutex table starts at the first 64-byte boundary after the
/// stripe table, 64 bytes a stripe, the lock word in its first 4 bytes.
const HEADER: u64 = 4096;
const STRIPE_ENTRY: u64 = 192;

fn mutex_offset(stripes: u32, stripe: u32) -> u64 {
    (HEADER + stripes as u64 * STRIPE_ENTRY).next_multiple_of(64) + stripe as u64 * 64
}

/// Writes `word` as `stripe`'s lock word, then expects a `set` on that
/// stripe to fail with `StripeLockDamaged` (within 60 s; the slowest
/// verdict waits 2 s), a read of it to work, and — the word cleared — the `set`
/// to succeed.
fn damaged_then_repaired(c: &Arc<Cache>, p: &Path, key: &str, word: u32, case: &str) {
    let stripe = c.key_placement(key).stripe;
    let off = mutex_offset(c.info().stripes, stripe);
    patch(p, off, &word.to_le_bytes());
    // The write runs on its own thread, so that a wait forever fails the
    // test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = Arc::clone(c);
    let k = key.to_string();
    std::thread::spawn(move || tx.send(writer.set(&k, &Raw([2u8; 16]))));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::StripeLockDamaged { stripe: s, .. })) => assert_eq!(s, stripe, "{case}"),
        Ok(other) => panic!("{case}: expected StripeLockDamaged, got {other:?}"),
        Err(_) => panic!("{case}: the write still waits after 60 s"),
    }
    assert_eq!(
        &*c.get::<Raw>(key).unwrap().unwrap(),
        &[1u8; 16][..],
        "{case}: reads keep working"
    );
    patch(p, off, &0u32.to_le_bytes());
    c.set(key, &Raw([1u8; 16])).unwrap();
}

#[test]
fn a_lock_word_written_from_outside_fails_writes_instead_of_blocking_them() {
    let dir = TempDir::new("lock-word", "cases");
    let p = dir.path().join("c");
    let c = Arc::new(Cache::open(&p, Options::new().capacity(2 << 20).stripes(4)).unwrap());
    let key = "k";
    c.set(key, &Raw([1u8; 16])).unwrap();
    let header = std::fs::read(&p).unwrap();
    assert_ne!(
        header[124..128],
        [0; 4],
        "a robust-mutex file (header lock word)"
    );

    // A thread id that no longer exists: a child, reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    damaged_then_repaired(&c, &p, key, gone_pid, "owner does not exist");

    // Waiter bits with no owner and no owner-died mark.
    damaged_then_repaired(&c, &p, key, 0x8000_0000, "waiters without an owner");

    // This process's main thread, which holds no stripe mutex.
    damaged_then_repaired(
        &c,
        &p,
        key,
        std::process::id(),
        "idle thread of this process",
    );

    // A live process that does not map the file.
    let other = KillOnDrop(Command::new("sleep").arg("60").spawn().unwrap());
    damaged_then_repaired(&c, &p, key, other.0.id(), "process not mapping the file");
    drop(other);

    // Every other stripe was never affected, and the file verifies clean.
    assert!(c.verify().unwrap().is_clean());
    assert_eq!(c.stats().lock_owner_deaths, 0);
}
