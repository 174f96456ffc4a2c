//! Soak: several processes run mixed reads, writes, deletes, batches,
//! evictions and regenerations on one small file for a bounded time, while
//! every value read is checked; the parent runs `verify()` on the live file
//! as they go. Reports operations done and violations (must be zero).
//!
//! Duration per run: `SLOTCACHE_SOAK_SECS` (default 8 s, so `cargo test`
//! stays quick); processes: `SLOTCACHE_SOAK_PROCS` (default 3).

mod common;
use common::{KillOnDrop, TempDir};
use slotcache::{Cache, CreateOptions, Options, Raw};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn opts() -> Options {
    Options::new()
        .capacity(3 << 20)
        .stripes(4)
        .segments(6)
        .pin_wait(Duration::from_secs(2))
}

fn env_u64(k: &str, default: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `key ‖ seq ‖ filler(key, seq)`: a reader can tell whose and whether whole.
fn value(key: &str, seq: u64) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(&seq.to_le_bytes());
    let n = (seq.wrapping_mul(2654435761) % 900) as usize;
    v.extend((0..n).map(|i| (i as u64 ^ seq ^ key.len() as u64) as u8));
    v
}

fn check(key: &str, v: &[u8]) -> bool {
    let k = key.len();
    if v.len() < k + 9 || &v[..k] != key.as_bytes() || v[k] != 0 {
        return false;
    }
    let seq = u64::from_le_bytes(v[k + 1..k + 9].try_into().unwrap());
    v == value(key, seq).as_slice()
}

#[test]
fn child_entry() {
    let Some((_worker, path)) = common::child_role() else {
        return;
    };
    let until = Instant::now() + Duration::from_secs(env_u64("SOAK_SECS", 8));
    let me = env_u64("SOAK_ID", 0);
    let c = Cache::open(path, opts()).unwrap();
    let (mut ops, mut bad) = (0u64, 0u64);
    let mut x = me * 7919 + 1;
    let ttl = CreateOptions::new().ttl(Some(Duration::from_millis(30)));
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("key{}", x % 3000);
        match x % 10 {
            0..=3 => {
                if let Some(g) = c.get::<Raw>(&key).unwrap() {
                    bad += !check(&key, &g) as u64;
                }
            }
            4..=5 => c.set(&key, &Raw(&value(&key, x))).unwrap(),
            6 => {
                c.delete(&key).unwrap();
            }
            7 => {
                let keys: Vec<String> = (0..8)
                    .map(|i| format!("key{}", (x >> 8).wrapping_add(i) % 3000))
                    .collect();
                let items: Vec<(String, Raw)> =
                    keys.iter().map(|k| (k.clone(), Raw(value(k, x)))).collect();
                c.set_many(items.iter().map(|(k, v)| (k, v))).unwrap();
                for (k, g) in keys.iter().zip(c.get_many::<Raw>(&keys).unwrap()) {
                    if let Some(g) = g {
                        bad += !check(k, &g) as u64;
                    }
                }
            }
            _ => {
                let k = format!("regen{}", x % 16);
                let v = c
                    .get_or_create_opt(&k, &ttl, || x % 1000 + 1_000_000)
                    .unwrap()
                    .into_owned()
                    .unwrap();
                bad += !(1_000_000..1_001_000).contains(&v) as u64;
            }
        }
        ops += 1;
    }
    println!("SOAK ops={ops} bad={bad}");
}

#[test]
fn soak_mixed_processes() {
    let d = TempDir::new("soak", "mixed");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    let secs = env_u64("SLOTCACHE_SOAK_SECS", 8);
    let procs = env_u64("SLOTCACHE_SOAK_PROCS", 3);
    let kids: Vec<_> = (0..procs)
        .map(|i| {
            KillOnDrop(
                common::child("worker", &p)
                    .env("SOAK_SECS", secs.to_string())
                    .env("SOAK_ID", (i + 1).to_string())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // While they run, check the live file's invariants now and then.
    let start = Instant::now();
    let mut verifies = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let r = c.verify().unwrap();
        assert!(r.is_clean(), "integrity violated mid-run: {r:?}");
        verifies += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let (mut ops, mut bad) = (0u64, 0u64);
    for mut k in kids {
        let out = BufReader::new(k.0.stdout.take().unwrap());
        let lines: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
        let line = lines
            .into_iter()
            .find(|l| l.contains("SOAK "))
            .expect("child report");
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("ops=") {
                ops += v.parse::<u64>().unwrap();
            }
            if let Some(v) = part.strip_prefix("bad=") {
                bad += v.parse::<u64>().unwrap();
            }
        }
        assert!(k.0.wait().unwrap().success());
    }
    let st = c.stats();
    let r = c.verify().unwrap();
    println!("soak: {procs} processes x {secs} s: {ops} operations, {bad} violations, {verifies} live verifies, {st:?}");
    assert_eq!(bad, 0, "invalid values read");
    assert!(r.is_clean(), "{r:?}");
    assert_eq!(st.corrupt, 0);
    assert!(
        st.evictions > 0 && st.creates > 0,
        "the run exercised eviction and regeneration: {st:?}"
    );
    drop(c);
}
