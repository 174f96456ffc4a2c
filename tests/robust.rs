//! Stripe lock kinds (format.md §6): the kind a file records in its header,
//! the errors of a file this build cannot write (an older format version, a
//! lock kind of another platform), and writers killed with `SIGKILL` while
//! they hold a stripe lock — in the middle of a write and in the middle of
//! an eviction — after which the next writer gets the lock, repairs the
//! stripe, counts the dead owner (robust mutexes) and the file verifies
//! clean.

mod common;

use common::{child, child_role, patch, KillOnDrop, TempDir};
use slotcache::{__StallPoint as StallPoint, __stall_at, Cache, Error, Options, Raw};
use std::path::Path;
use std::time::{Duration, Instant};

/// Offset of the header's lock word (format.md §2.1).
const LOCK_WORD: u64 = 124;

fn opts(byte_range: bool) -> Options {
    Options::new()
        .capacity(2 << 20)
        .stripes(4)
        .segments(4)
        .byte_range_locks(byte_range)
}

fn lock_word(p: &Path) -> [u8; 4] {
    std::fs::read(p).unwrap()[LOCK_WORD as usize..LOCK_WORD as usize + 4]
        .try_into()
        .unwrap()
}

/// CRC-32 (IEEE), as the header uses, bit by bit.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for b in parts.iter().flat_map(|p| p.iter()) {
        c ^= *b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Writes `word` as the lock word of `p` and fixes the header CRC (CRC32
/// of bytes 8..120 and 124..128).
fn set_lock_word(p: &Path, word: [u8; 4]) {
    patch(p, LOCK_WORD, &word);
    let h = std::fs::read(p).unwrap();
    patch(p, 120, &crc32(&[&h[8..120], &h[124..128]]).to_le_bytes());
}

#[test]
fn the_header_records_the_lock_kind() {
    let d = TempDir::new("robust", "kind");
    let robust = d.join("robust");
    let c = Cache::open(&robust, opts(false)).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    drop(c);
    let w = lock_word(&robust);
    if cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        let arch = if cfg!(target_arch = "x86_64") { 1 } else { 2 };
        let size = if cfg!(target_arch = "x86_64") { 40 } else { 48 };
        assert_eq!(w, [1, 1, arch, size], "robust glibc mutexes");
    } else {
        assert_eq!(w, [0; 4], "byte-range locks elsewhere");
    }
    let ranged = d.join("ranged");
    let c = Cache::open(&ranged, opts(true)).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    drop(c);
    assert_eq!(lock_word(&ranged), [0; 4]);
    // Each kind reopens and works.
    for p in [&robust, &ranged] {
        let c = Cache::open(p, opts(false)).unwrap();
        assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
        c.set("k2", &Raw(b"w")).unwrap();
        assert!(c.verify().unwrap().is_clean());
    }
}

#[test]
fn an_older_version_gets_the_version_error() {
    let d = TempDir::new("robust", "version");
    for (name, found) in [("v2", 2u32), ("v1", 1)] {
        let p = common::file_with_one_entry(d.join(name), opts(false));
        patch(&p, 8, &found.to_le_bytes());
        let e = Cache::open(&p, opts(false)).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { expected: 3, found: f, .. } if f == found),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("format version {found}, this build of slotcache reads version 3 (the file is older")),
            "{msg}"
        );
    }
}

#[test]
fn a_foreign_lock_kind_is_refused_for_writing_and_reads_read_only() {
    let d = TempDir::new("robust", "foreign");
    let p = common::file_with_one_entry(d.join("c"), opts(true));
    // Robust glibc mutexes of the other architecture (another mutex size).
    let foreign = if cfg!(target_arch = "aarch64") {
        [1, 1, 1, 40]
    } else {
        [1, 1, 2, 48]
    };
    set_lock_word(&p, foreign);
    let e = Cache::open(&p, opts(false)).unwrap_err();
    assert!(matches!(e, Error::StripeLockKind { .. }), "{e}");
    let msg = e.to_string();
    let named = if cfg!(target_arch = "aarch64") {
        "robust pthread stripe mutexes (glibc, x86_64, 40-byte pthread_mutex_t)"
    } else {
        "robust pthread stripe mutexes (glibc, aarch64, 48-byte pthread_mutex_t)"
    };
    assert!(msg.contains(named), "{msg}");
    assert!(
        msg.contains("this process supports byte-range stripe locks"),
        "{msg}"
    );
    // Never a damage: `OnCorrupt::Reset` does not destroy a file other
    // processes use.
    let e = Cache::open(&p, opts(false).on_corrupt(slotcache::OnCorrupt::Reset)).unwrap_err();
    assert!(matches!(e, Error::StripeLockKind { .. }), "{e}");
    // Readers take no stripe lock: a read-only handle reads.
    let ro = Cache::open(&p, opts(false).read_only(true)).unwrap();
    assert_eq!(&*ro.get::<Raw>("k").unwrap().unwrap(), b"v");
    drop(ro);
    // An unknown kind is a damaged header.
    set_lock_word(&p, [9, 0, 0, 0]);
    let e = Cache::open(&p, opts(false)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CorruptHeader {
                field: "lock_word",
                ..
            }
        ),
        "{e}"
    );
}

const VALUE: [u8; 100] = [7; 100];

#[test]
fn child_entry() {
    let Some((role, path)) = child_role() else {
        return;
    };
    let (point, byte_range) = match role.as_str() {
        "before-head" => (StallPoint::BeforeHead, false),
        "before-slot" => (StallPoint::BeforeSlot, false),
        "mid-eviction" => (StallPoint::MidEviction, false),
        "mid-eviction-ranged" => (StallPoint::MidEviction, true),
        r => panic!("unknown role {r}"),
    };
    let c = Cache::open(&path, opts(byte_range)).unwrap();
    __stall_at(point, path.with_extension("stalled"));
    // Every write stores VALUE; the stall stops the first one to reach the
    // point, holding its stripe lock.
    for i in 0u64.. {
        c.set(format!("key{i}"), &Raw(VALUE)).unwrap();
    }
}

/// Starts a child in `role` on the file at `p`, waits until it has stalled
/// holding a stripe lock, and kills it with `SIGKILL` (reaped).
fn kill_while_holding(role: &str, p: &Path) {
    let kid = spawn_stalled(role, p);
    drop(kid); // SIGKILL, then wait
    std::fs::remove_file(p.with_extension("stalled")).unwrap();
}

/// Starts a child in `role` on the file at `p` and waits until it has
/// stalled holding a stripe lock (it created `p.stalled`).
fn spawn_stalled(role: &str, p: &Path) -> KillOnDrop {
    let mut kid = KillOnDrop(child(role, p).spawn().unwrap());
    let announce = p.with_extension("stalled");
    let start = Instant::now();
    while !announce.exists() {
        if let Some(st) = kid.0.try_wait().unwrap() {
            panic!("the {role} child exited ({st}) before stalling");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the {role} child never stalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    kid
}

/// After a writer was killed holding a stripe lock: every stripe takes a
/// write (the dead owner's among them), every key the child wrote reads
/// back whole or is a miss, and the file verifies clean. With
/// `verify_first`, `verify` is the first to take the dead owner's lock: it
/// counts the death, leaves the data as found and reports it clean.
fn check_after_kill(p: &Path, byte_range: bool, verify_first: bool) {
    let c = Cache::open(p, opts(byte_range)).unwrap();
    let robust = !byte_range && lock_word(p) != [0; 4];
    if verify_first {
        let report = c.verify().unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(c.stats().lock_owner_deaths, robust as u64);
    }
    let before = c.stats();
    let stripes = c.info().stripes;
    let mut seen = vec![false; stripes as usize];
    let mut i = 0u64;
    while seen.contains(&false) {
        let k = format!("after{i}");
        seen[c.key_placement(&k).stripe as usize] = true;
        c.set(&k, &Raw(VALUE)).unwrap();
        assert_eq!(&*c.get::<Raw>(&k).unwrap().unwrap(), &VALUE[..]);
        i += 1;
    }
    let after = c.stats();
    assert_eq!(
        after.lock_owner_deaths, robust as u64,
        "one dead owner found, counted once"
    );
    assert_eq!(
        before.lock_owner_deaths,
        (robust && verify_first) as u64,
        "found by verify, or else by a writer"
    );
    assert_eq!(
        c.stripe_stats()
            .iter()
            .map(|s| s.lock_owner_deaths)
            .sum::<u64>(),
        after.lock_owner_deaths
    );
    let mut found = 0;
    for j in 0..100_000u64 {
        if let Some(v) = c.get::<Raw>(format!("key{j}")).unwrap() {
            assert_eq!(&*v, &VALUE[..], "key{j}");
            found += 1;
        }
    }
    assert!(found > 0, "the child's earlier writes survive");
    let report = c.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    // The lock works on: more writes, no further death counted.
    c.set("last", &Raw(VALUE)).unwrap();
    assert_eq!(c.stats().lock_owner_deaths, after.lock_owner_deaths);
}

fn killed_at(role: &str, byte_range: bool, verify_first: bool) {
    let d = TempDir::new("robust", &format!("{role}-{verify_first}"));
    let p = d.join("c");
    // Some entries first, so that the child's write replaces or joins them.
    let c = Cache::open(&p, opts(byte_range)).unwrap();
    for i in 0..50u64 {
        c.set(format!("key{i}"), &Raw(VALUE)).unwrap();
    }
    drop(c);
    kill_while_holding(role, &p);
    check_after_kill(&p, byte_range, verify_first);
}

#[test]
fn killed_after_writing_a_record_before_moving_the_head() {
    killed_at("before-head", false, false);
}

#[test]
fn killed_after_moving_the_head_before_storing_the_slot() {
    killed_at("before-slot", false, false);
}

#[test]
fn killed_in_the_middle_of_an_eviction() {
    killed_at("mid-eviction", false, false);
}

#[test]
fn killed_in_the_middle_of_an_eviction_then_verified() {
    killed_at("mid-eviction", false, true);
}

#[test]
fn killed_in_the_middle_of_an_eviction_with_byte_range_locks() {
    killed_at("mid-eviction-ranged", true, false);
}

/// A key that lands on stripe `s`.
fn key_on(c: &Cache, s: u32, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}{i}"))
        .find(|k| c.key_placement(k).stripe == s)
        .unwrap()
}

#[test]
fn a_batch_waits_for_a_stripe_a_dying_process_holds_and_repairs_it() {
    let d = TempDir::new("robust", "batch");
    let p = d.join("c");
    let c = Cache::open(&p, opts(false)).unwrap();
    // The child's first write is `key0`: it stalls holding that stripe.
    let held = c.key_placement("key0").stripe;
    let other = (held + 1) % c.info().stripes;
    let (a, b) = (key_on(&c, held, "a"), key_on(&c, other, "b"));
    let mut kid = spawn_stalled("before-slot", &p);
    // A batch over the other stripe alone goes through.
    c.set_many([(b.as_str(), &Raw(VALUE))]).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let t = scope.spawn(|| {
            c.set_many([(a.as_str(), &Raw(VALUE)), (b.as_str(), &Raw(VALUE))])
                .unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "a batch wrote a stripe another process holds"
        );
        kid.0.kill().unwrap();
        kid.0.wait().unwrap();
        t.join().unwrap();
    });
    std::fs::remove_file(p.with_extension("stalled")).unwrap();
    let robust = lock_word(&p) != [0; 4];
    assert_eq!(c.stats().lock_owner_deaths, robust as u64);
    assert_eq!(&*c.get::<Raw>(&a).unwrap().unwrap(), &VALUE[..]);
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn a_batch_over_more_stripes_than_one_thread_may_hold_writes_them_all() {
    // Robust mutexes: at most 1024 held at once (the kernel walks 2048
    // entries of a dead thread's robust list), so this batch is written in
    // ascending chunks; byte-range locks take it whole.
    let d = TempDir::new("robust", "wide");
    let wide = |byte_range| {
        Options::new()
            .capacity(96 << 20)
            .stripes(2048)
            .segments(4)
            .max_entries(40_000)
            .byte_range_locks(byte_range)
    };
    for byte_range in [false, true] {
        let p = d.join(format!("c-{byte_range}"));
        let c = Cache::open(&p, wide(byte_range)).unwrap();
        let keys: Vec<String> = (0..12_000).map(|i| format!("wide{i}")).collect();
        let stripes: std::collections::BTreeSet<u32> =
            keys.iter().map(|k| c.key_placement(k).stripe).collect();
        assert!(stripes.len() > 1024, "{} stripes", stripes.len());
        c.set_many(keys.iter().map(|k| (k, &Raw(VALUE)))).unwrap();
        for k in &keys {
            assert_eq!(&*c.get::<Raw>(k).unwrap().unwrap(), &VALUE[..], "{k}");
        }
        assert!(c.verify().unwrap().is_clean());
    }
}
