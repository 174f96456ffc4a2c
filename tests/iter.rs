//! Enumeration (`Cache::iter`): exactly the live entries, with their
//! values, metadata, kind and schema; prefixes; stale and invalidated
//! entries; and walks concurrent with writers in another thread or another
//! process (every value yielded must be the one written for its key: values
//! are derived from their keys), on read-write and read-only handles.

mod common;
use common::{KillOnDrop, TempDir};
use slotcache::{
    schema_fingerprint, Cache, Error, Invalidation, Options, Raw, ValueKind, WriteOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The value written under `key` in generation `gen`: the key, the
/// generation, then bytes derived from both, 40..=400 bytes long.
fn value_for(key: &[u8], gen: u64) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(format!("|{gen}|").as_bytes());
    let len = 40 + (gen as usize * 7 + key.len() * 13) % 361;
    let mut x = gen.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.len() as u64;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Panics unless `value` is `value_for(key, gen)` for some generation.
fn check_value(key: &[u8], value: &[u8]) {
    let rest = value
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix(b"|"))
        .unwrap_or_else(|| {
            panic!(
                "value of {:?} is not derived from it",
                String::from_utf8_lossy(key)
            )
        });
    let end = rest.iter().position(|&b| b == b'|').expect("generation");
    let gen: u64 = std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap();
    assert!(
        value == value_for(key, gen),
        "torn or foreign value under {:?}",
        String::from_utf8_lossy(key)
    );
}

/// Write `gen` of the churn: key `k{gen % 700}`, its derived value. A
/// write that finds its segment pinned by a walk's entry is skipped.
fn write_gen(c: &Cache, gen: u64) {
    let k = format!("k{}", gen % 700);
    match c.set(&k, &Raw(&value_for(k.as_bytes(), gen))) {
        Ok(()) | Err(Error::Pinned { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}

/// Walks `c` once, checking every value against its key and that no key
/// appears twice; returns how many entries were yielded.
fn walk(c: &Cache) -> u64 {
    let mut keys = BTreeSet::new();
    for e in c.iter() {
        let e = e.unwrap();
        check_value(e.key(), e.bytes());
        assert!(keys.insert(e.key().to_vec()), "a key twice in one walk");
    }
    keys.len() as u64
}

fn opts() -> Options {
    Options::new().capacity(4 << 20).stripes(8).segments(8)
}

#[test]
fn iter_yields_exactly_the_live_entries() {
    let d = TempDir::new("iter", "exact");
    let c = Cache::open(d.path().join("c"), opts()).unwrap();
    let mut want = BTreeMap::new();
    for i in 0..1500u64 {
        let k = format!("raw:{i}");
        let v = value_for(k.as_bytes(), i);
        c.set(&k, &Raw(&v)).unwrap();
        want.insert(k.into_bytes(), v);
    }
    for i in 0..300u64 {
        c.set_opt(
            format!("typed:{i}"),
            &i,
            &WriteOptions::new().ttl(Some(Duration::from_secs(3600))),
        )
        .unwrap();
    }
    for i in (0..1500u64).step_by(10) {
        assert!(c.delete(format!("raw:{i}")).unwrap());
        want.remove(format!("raw:{i}").as_bytes());
    }
    let stats = c.stats();
    let mut raw = BTreeMap::new();
    let mut typed = BTreeSet::new();
    let mut stripes = BTreeSet::new();
    for e in c.iter() {
        let e = e.unwrap();
        let key = e.key().to_vec();
        assert_eq!(e.stripe(), c.key_placement(&key).stripe);
        assert_eq!(e.value_len(), e.bytes().len());
        assert!(!e.meta().is_stale());
        stripes.insert(e.stripe());
        match e.kind() {
            ValueKind::Raw => {
                assert_eq!(e.schema(), 0);
                assert!(e.meta().expires().is_none());
                assert!(raw.insert(key, e.bytes().to_vec()).is_none(), "a key twice");
            }
            ValueKind::Archived => {
                assert_eq!(e.schema(), schema_fingerprint::<u64>());
                assert!(e.meta().expires().is_some());
                let n =
                    rkyv::access::<rkyv::Archived<u64>, rkyv::rancor::Error>(e.bytes()).unwrap();
                assert_eq!(key, format!("typed:{n}").into_bytes());
                assert!(typed.insert(key), "a key twice");
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    assert_eq!(raw, want);
    assert_eq!(typed.len(), 300);
    assert_eq!(stripes.len(), 8, "every stripe walked");
    let after = c.stats();
    assert_eq!(
        (after.hits, after.misses),
        (stats.hits, stats.misses),
        "iteration is not a lookup"
    );
    assert!(c.verify().unwrap().is_clean());
    assert_eq!(
        c.verify().unwrap().live_pins,
        0,
        "no pin outlives its entry"
    );
}

#[test]
fn iter_prefix_filters_keys() {
    let d = TempDir::new("iter", "prefix");
    let c = Cache::open(d.path().join("c"), opts()).unwrap();
    for i in 0..200 {
        c.set(format!("user:{i}"), &Raw(b"u")).unwrap();
        c.set(format!("session:{i}"), &Raw(b"s")).unwrap();
    }
    c.set("user", &Raw(b"not under user:")).unwrap();
    let keys: BTreeSet<Vec<u8>> = c
        .iter_prefix("user:")
        .map(|e| e.unwrap().key().to_vec())
        .collect();
    let want: BTreeSet<Vec<u8>> = (0..200).map(|i| format!("user:{i}").into_bytes()).collect();
    assert_eq!(keys, want);
    assert_eq!(c.iter_prefix("").count(), 401);
    assert_eq!(c.iter_prefix("nobody").count(), 0);
}

#[test]
fn stale_and_invalidated_entries() {
    let d = TempDir::new("iter", "stale");
    let c = Cache::open(d.path().join("c"), opts()).unwrap();
    let keys = |c: &Cache, stale: bool| -> BTreeSet<String> {
        c.iter()
            .include_stale(stale)
            .map(|e| String::from_utf8(e.unwrap().key().to_vec()).unwrap())
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    c.set("old", &Raw(b"1")).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.invalidate(Invalidation::Hard).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.set("soft", &Raw(b"2")).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.invalidate(Invalidation::Soft).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    c.set_opt(
        "expired",
        &Raw(b"3"),
        &WriteOptions::new().ttl(Some(Duration::from_nanos(1))),
    )
    .unwrap();
    c.set("fresh", &Raw(b"4")).unwrap();
    c.set("deleted", &Raw(b"5")).unwrap();
    c.delete("deleted").unwrap();
    assert_eq!(keys(&c, false), set(&["fresh"]));
    assert_eq!(
        keys(&c, true),
        set(&["fresh", "soft", "expired"]),
        "stale entries on request; hard-invalidated and deleted ones never"
    );
    for e in c.iter().include_stale(true) {
        let e = e.unwrap();
        let m = e.meta();
        match e.key() {
            b"fresh" => assert!(!m.is_stale()),
            b"soft" => assert!(m.is_stale() && !m.is_expired()),
            b"expired" => assert!(m.is_stale() && m.is_expired()),
            k => panic!("unexpected {k:?}"),
        }
    }
}

#[test]
fn iter_while_a_thread_churns_the_file() {
    let d = TempDir::new("iter", "thread");
    // Small rings: the writer wraps them many times during the walks.
    let c = Cache::open(
        d.path().join("c"),
        Options::new().capacity(1 << 20).stripes(4).segments(4),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, stop, writes) = (c.clone(), stop.clone(), writes.clone());
        std::thread::spawn(move || {
            let mut gen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                gen += 1;
                write_gen(&c, gen);
                if gen % 5 == 0 {
                    c.delete(format!("k{}", gen % 300)).unwrap();
                }
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Walk at least 200 times and until the writer has wrapped every ring
    // twice (every record is at least 112 bytes: 48-byte header, key,
    // 40-byte value), however fast this machine is.
    let wrapped = || {
        let st = c.stats();
        st.inserts * 112 > 2 * st.capacity
    };
    let (mut walks, mut yielded) = (0u64, 0u64);
    let start = std::time::Instant::now();
    while walks < 200 || !wrapped() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "the writer never wrapped the rings: {:?}",
            c.stats()
        );
        yielded += walk(&c);
        walks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(yielded > 0);
    assert!(writes.load(Ordering::Relaxed) > 0);
}

/// The body of the child processes (does nothing in a normal test run).
#[test]
fn child_entry() {
    let Some((role, path)) = common::child_role() else {
        return;
    };
    // SAFETY: prctl with PR_SET_PDEATHSIG has no memory-safety preconditions.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    match role.as_str() {
        // Churns the file until killed.
        "writer" => {
            let c = Cache::open(&path, Options::new()).unwrap();
            let mut gen = 0u64;
            loop {
                gen += 1;
                write_gen(&c, gen);
                if gen == 2000 {
                    println!("READY");
                }
            }
        }
        // Walks the file through a read-only handle and reports.
        "ro_iter" => {
            let c = Cache::open(&path, Options::new().read_only(true)).unwrap();
            assert!(c.info().read_only);
            println!("COUNT {}", walk(&c));
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, path: &Path) -> (KillOnDrop, BufReader<std::process::ChildStdout>) {
    let mut ch = common::child(role, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(ch.stdout.take().unwrap());
    (KillOnDrop(ch), out)
}

/// The next line of `out` containing `what`.
fn line_with(out: &mut impl BufRead, what: &str) -> String {
    let mut line = String::new();
    while !line.contains(what) {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "child exited before {what}"
        );
    }
    line
}

#[test]
fn iter_while_another_process_writes() {
    let d = TempDir::new("iter", "process");
    let p = d.path().join("c");
    let c = Cache::open(&p, Options::new().capacity(1 << 20).stripes(4).segments(4)).unwrap();
    let (mut child, mut out) = spawn("writer", &p);
    line_with(&mut out, "READY");
    let inserts = c.stats().inserts;
    // At least 200 walks, and until the child has written two rings' worth
    // during them (records are at least 112 bytes), however fast it runs.
    let capacity = c.stats().capacity;
    let (mut walks, mut yielded) = (0u64, 0u64);
    let start = std::time::Instant::now();
    while walks < 200 || (c.stats().inserts - inserts) * 112 <= 2 * capacity {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "the child stopped writing during the walks"
        );
        yielded += walk(&c);
        walks += 1;
    }
    assert!(child.0.try_wait().unwrap().is_none(), "the writer died");
    drop(child);
    assert!(yielded > 0);
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn iter_on_read_only_handles() {
    let d = TempDir::new("iter", "ro");
    let p = d.path().join("c");
    let c = Cache::open(&p, opts()).unwrap();
    for i in 0..500u64 {
        let k = format!("k{i}");
        c.set(&k, &Raw(&value_for(k.as_bytes(), i))).unwrap();
    }
    // Another process, read-only: its pins are shared byte-range locks.
    let (mut child, mut out) = spawn("ro_iter", &p);
    let line = line_with(&mut out, "COUNT ");
    assert_eq!(
        line.split("COUNT ").nth(1).map(str::trim),
        Some("500"),
        "{line}"
    );
    assert!(child.0.wait().unwrap().success());
    // This process, read-only once the read-write handle is gone.
    drop(c);
    let ro = Cache::open(&p, Options::new().read_only(true)).unwrap();
    assert!(ro.info().read_only);
    assert_eq!(walk(&ro), 500);
    assert_eq!((ro.stats().hits, ro.stats().misses), (0, 0));
}
