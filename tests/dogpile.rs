//! Dogpile protection across threads and processes: one creator per expiry,
//! stale values served meanwhile, waiters served the created value, locks
//! per key inside a process and per regeneration stripe across processes,
//! errors, panics, killed creators, timeouts, invalidation, memoization.

mod common;
use common::{KillOnDrop, TempDir};
use slotcache::{
    Cache, CreateError, CreateOptions, Error, Fetched, Invalidation, Memo, Options, StalePolicy,
    WriteOptions,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn opts() -> Options {
    Options::new().capacity(8 << 20).stripes(4)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn child(role: &str, path: &Path, extra: &[(&str, String)]) -> Command {
    let mut c = common::child(role, path);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// Reads the child's stdout until a line containing `word`; returns it.
fn wait_for(out: &mut impl BufRead, word: &str) -> String {
    let mut line = String::new();
    while !line.contains(word) {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "child exited before saying {word}"
        );
    }
    line
}

fn value_of(f: Fetched<'_, u64>) -> u64 {
    f.into_owned().unwrap()
}

#[test]
fn child_entry() {
    let Some((role, path)) = common::child_role() else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap();
    match role.as_str() {
        "hammer" => {
            // Several threads call get_or_create on one expiring key until
            // `until`; every creator run appends "start end value" to a log
            // opened O_APPEND (one write per line, so lines never mix).
            let c = Cache::open(&path, opts()).unwrap();
            let log = PathBuf::from(env("DOGPILE_LOG"));
            let start: u64 = env("DOGPILE_START").parse().unwrap();
            let until: u64 = env("DOGPILE_UNTIL").parse().unwrap();
            let ttl = Duration::from_millis(env("DOGPILE_TTL_MS").parse().unwrap());
            while now_ns() < start {
                std::thread::sleep(Duration::from_millis(1));
            }
            let seq = Arc::new(AtomicU64::new(0));
            let hs: Vec<_> = (0..3)
                .map(|t| {
                    let (c, log, seq) = (c.clone(), log.clone(), seq.clone());
                    std::thread::spawn(move || {
                        let mut first = None;
                        let o = CreateOptions::new().ttl(Some(ttl));
                        while now_ns() < until {
                            let v = c
                                .get_or_create_opt("shared-key", &o, || {
                                    let s = now_ns();
                                    std::thread::sleep(Duration::from_millis(60));
                                    let v = (std::process::id() as u64) << 32
                                        | (t << 16)
                                        | seq.fetch_add(1, Ordering::SeqCst);
                                    let line = format!("{s} {} {v}\n", now_ns());
                                    let mut f = std::fs::OpenOptions::new()
                                        .append(true)
                                        .open(&log)
                                        .unwrap();
                                    f.write_all(line.as_bytes()).unwrap();
                                    v
                                })
                                .unwrap();
                            let v = value_of(v);
                            first.get_or_insert(v);
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        first.unwrap()
                    })
                })
                .collect();
            for h in hs {
                println!("FIRST {}", h.join().unwrap());
            }
        }
        "slow-creator" => {
            let c = Cache::open(&path, opts()).unwrap();
            let _ = c.get_or_create("k", || {
                println!("CREATING");
                std::io::stdout().flush().unwrap();
                std::thread::sleep(Duration::from_secs(600));
                0u64
            });
        }
        "meet" => {
            // Regenerates `DOGPILE_KEY`; its creator announces itself with a
            // marker file and waits for the other process's marker, so both
            // creators must run at the same time for either to finish.
            let c = Cache::open(&path, opts()).unwrap();
            let (me, other) = (env("DOGPILE_KEY"), env("DOGPILE_OTHER"));
            let dir = path.parent().unwrap().to_path_buf();
            let v = c
                .get_or_create(&me, || {
                    std::fs::write(dir.join(format!("{me}.in")), b"").unwrap();
                    let t = Instant::now();
                    while !dir.join(format!("{other}.in")).exists() {
                        assert!(
                            t.elapsed() < Duration::from_secs(60),
                            "{other}'s creator never ran alongside"
                        );
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    1u64
                })
                .unwrap();
            assert!(v.is_created());
            println!("MET");
        }
        "invalidate" => {
            let c = Cache::open(&path, opts()).unwrap();
            let how = if env("DOGPILE_HOW") == "hard" {
                Invalidation::Hard
            } else {
                Invalidation::Soft
            };
            c.invalidate(how).unwrap();
        }
        "memo-key" => {
            let c = Cache::open(&path, opts()).unwrap();
            let m = Memo::new(&c, "ns", |a: &(u32, String)| a.0 as u64);
            let k = m.key(&(7, "seven".to_string())).unwrap();
            println!("KEY {k:?}");
        }
        "bg-hammer" => {
            // Threads call get_or_create_background on one key with a short
            // TTL and a fast creator until `until`; every creator run (on
            // whichever thread runs it) appends "start end" to the log.
            let ttl = Duration::from_millis(env("DOGPILE_TTL_MS").parse().unwrap());
            let c = Cache::open(&path, opts().default_ttl(ttl)).unwrap();
            let log = PathBuf::from(env("DOGPILE_LOG"));
            let start: u64 = env("DOGPILE_START").parse().unwrap();
            let until: u64 = env("DOGPILE_UNTIL").parse().unwrap();
            while now_ns() < start {
                std::thread::sleep(Duration::from_millis(1));
            }
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let (c, log) = (c.clone(), log.clone());
                    std::thread::spawn(move || {
                        let mut background = Vec::new();
                        while now_ns() < until {
                            let log = log.clone();
                            let (f, h) = c
                                .get_or_create_background("bg-key", move || {
                                    let s = now_ns();
                                    let line = format!("{s} {}\n", now_ns());
                                    let mut f = std::fs::OpenOptions::new()
                                        .append(true)
                                        .open(&log)
                                        .unwrap();
                                    f.write_all(line.as_bytes()).unwrap();
                                    1u64
                                })
                                .unwrap();
                            drop(f);
                            background.extend(h);
                        }
                        for h in background {
                            h.join().unwrap().unwrap();
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            println!("DONE");
        }
        "many-slow" => {
            // get_or_create_many over a fresh key and a missing one, with a
            // creator that waits until the parent has churned the whole log.
            let c = Cache::open(&path, opts()).unwrap();
            let dir = path.parent().unwrap().to_path_buf();
            let calls = AtomicU64::new(0);
            let got = c.get_or_create_many::<u64, _>(&["fresh", "new"], |ks| {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    println!("CREATING");
                    std::io::stdout().flush().unwrap();
                    let t = Instant::now();
                    while !dir.join("go").exists() {
                        assert!(t.elapsed() < Duration::from_secs(60), "never told to go");
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                ks.iter().map(|k| k.len() as u64).collect()
            });
            match got {
                Ok(v) => {
                    let vals: Vec<u64> = v.into_iter().map(value_of).collect();
                    println!("GOT {} {}", vals[0], vals[1]);
                }
                Err(e) => println!("FAILED {e}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn threads_one_creator_per_expiry_and_stale_never_waits() {
    let d = TempDir::new("dogpile", "threads");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let ttl = Duration::from_millis(600);
    for round in 0..3u64 {
        let waits_before = c.stats().waits;
        let barrier = Arc::new(Barrier::new(8));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let (c, runs, barrier) = (c.clone(), runs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let o = CreateOptions::new().ttl(Some(ttl));
                    let f = c
                        .get_or_create_opt("k", &o, || {
                            std::thread::sleep(Duration::from_millis(100));
                            runs.fetch_add(1, Ordering::SeqCst);
                            round
                        })
                        .unwrap();
                    (f.is_created(), f.is_stale(), value_of(f))
                })
            })
            .collect();
        let got: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            round + 1,
            "round {round}: exactly one creator: {got:?}"
        );
        assert_eq!(got.iter().filter(|g| g.0).count(), 1);
        if round == 0 {
            // Nobody had a value: everybody waited for and got the created one.
            assert!(got.iter().all(|g| g.2 == 0), "{got:?}");
        } else {
            // Everybody had a stale value: the losers got it back without waiting.
            assert_eq!(
                c.stats().waits,
                waits_before,
                "stale callers waited: {got:?}"
            );
            for g in got.iter().filter(|g| !g.0) {
                assert!(g.1 && g.2 == round - 1 || g.2 == round, "{got:?}");
            }
        }
        std::thread::sleep(ttl + Duration::from_millis(100));
    }
    let st = c.stats();
    assert_eq!(st.creates, 3);
    assert!(st.stale_served > 0, "{st:?}");
    drop(c);
}

/// Three child processes in `role` ("hammer" or "bg-hammer") calling
/// get_or_create on one key with TTL `ttl_ms` from `start` to `until` (ns),
/// logging their creator runs to `log`.
fn hammers(
    role: &str,
    p: &Path,
    log: &Path,
    start: u64,
    until: u64,
    ttl_ms: u64,
) -> Vec<KillOnDrop> {
    (0..3)
        .map(|_| {
            KillOnDrop(
                child(
                    role,
                    p,
                    &[
                        ("DOGPILE_LOG", log.display().to_string()),
                        ("DOGPILE_START", start.to_string()),
                        ("DOGPILE_UNTIL", until.to_string()),
                        ("DOGPILE_TTL_MS", ttl_ms.to_string()),
                    ],
                )
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
            )
        })
        .collect()
}

#[test]
fn processes_never_run_two_creators_at_once() {
    let d = TempDir::new("dogpile", "procs");
    let p = d.join("c");
    let log = d.join("creators.log");
    std::fs::write(&log, b"").unwrap();
    let c = Cache::open(&p, opts()).unwrap();
    let start = now_ns() + 400_000_000;
    let until = start + 2_400_000_000;
    let ttl_ms = 400u64;
    let kids = hammers("hammer", &p, &log, start, until, ttl_ms);
    let mut firsts = Vec::new();
    for mut k in kids {
        let out = BufReader::new(k.0.stdout.take().unwrap());
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(v) = line.split("FIRST ").nth(1) {
                firsts.push(v.trim().parse::<u64>().unwrap());
            }
        }
        assert!(k.0.wait().unwrap().success());
    }
    assert_eq!(firsts.len(), 9);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut runs: Vec<(u64, u64, u64)> = text
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    runs.sort();
    // Never two creators at once, across 3 processes x 3 threads.
    for w in runs.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping creators: {w:?}");
    }
    // At most one creator per expiry (the key lives ttl_ms after each creation).
    let window_ms = (until - start) / 1_000_000;
    assert!(
        runs.len() as u64 >= 2 && runs.len() as u64 <= window_ms / ttl_ms + 1,
        "{} creator runs",
        runs.len()
    );
    // Every caller started with no value and was served the first created one.
    assert!(
        firsts.iter().all(|&f| f == runs[0].2),
        "firsts {firsts:?}, first creation {:?}",
        runs[0]
    );
    let st = c.stats();
    assert_eq!(st.creates, runs.len() as u64);
    assert!(st.stale_served > 0, "{st:?}");
    drop(c);
}

#[test]
fn many_keys_on_few_stripes_never_deadlock() {
    let d = TempDir::new("dogpile", "stripes");
    let c = Cache::open(d.join("c"), opts().regen_stripes(2)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut hs = Vec::new();
    for t in 0..6u64 {
        let (c, tx) = (c.clone(), tx.clone());
        hs.push(std::thread::spawn(move || {
            let o = CreateOptions::new().ttl(Some(Duration::from_millis(5)));
            let mut x = t + 1;
            for _ in 0..300 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = format!("k{}", (x >> 33) % 40);
                let k2 = format!("k{}", (x >> 40) % 40);
                let r = c.get_or_create_opt(&k, &o, || {
                    // A creator that needs another key, maybe on the same stripe.
                    match c.get_or_create_opt(&k2, &o, || 2u64) {
                        Ok(f) => value_of(f) + 1,
                        Err(Error::Reentrant { .. }) => 1, // k2 == k
                        Err(e) => panic!("{e}"),
                    }
                });
                r.unwrap();
            }
            tx.send(()).unwrap();
        }));
    }
    for _ in 0..6 {
        rx.recv_timeout(Duration::from_secs(120))
            .expect("a thread is stuck: deadlock");
    }
    for h in hs {
        h.join().unwrap();
    }
    drop(c);
}

/// Two keys whose creators must run at the same time to finish: proves
/// unrelated keys regenerate concurrently.
#[test]
fn unrelated_keys_regenerate_concurrently() {
    let d = TempDir::new("dogpile", "concurrent");
    let p = d.join("c");
    // In one process, even on one shared regeneration stripe (per-key locks).
    let c = Cache::open(&p, opts().regen_stripes(1)).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let hs: Vec<_> = ["x", "y"]
        .into_iter()
        .map(|k| {
            let (c, b) = (c.clone(), barrier.clone());
            std::thread::spawn(move || {
                c.get_or_create(k, || {
                    b.wait(); // both creators inside at once, or this never returns
                    1u64
                })
                .map(|f| f.is_created())
            })
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(
            hs.into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    let created = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("creators of different keys were serialised");
    assert_eq!(created, vec![true, true]);
    drop(c);
    // Across processes, on different regeneration stripes.
    let p2 = d.join("c2");
    let c2 = Cache::open(&p2, opts().regen_stripes(1024)).unwrap();
    // Two keys on different regeneration stripes.
    let a = "m0".to_string();
    let b = (1..)
        .map(|i| format!("m{i}"))
        .find(|k| c2.key_placement(k).regen_stripe != c2.key_placement(&a).regen_stripe)
        .unwrap();
    let kids: Vec<_> = [(&a, &b), (&b, &a)]
        .into_iter()
        .map(|(me, other)| {
            KillOnDrop(
                child(
                    "meet",
                    &p2,
                    &[
                        ("DOGPILE_KEY", me.clone()),
                        ("DOGPILE_OTHER", other.clone()),
                    ],
                )
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
            )
        })
        .collect();
    for mut k in kids {
        let out = k.0.wait_with_output_ref();
        assert!(out.0.success() && out.1.contains("MET"), "{}", out.1);
    }
    drop(c2);
}

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitOutput for std::process::Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        let mut s = String::new();
        std::io::Read::read_to_string(self.stdout.as_mut().unwrap(), &mut s).unwrap();
        (self.wait().unwrap(), s)
    }
}

#[test]
fn nested_keys_share_a_stripe_and_same_key_reentry_is_an_error() {
    let d = TempDir::new("dogpile", "nested");
    let c = Cache::open(d.join("c"), opts().regen_stripes(1)).unwrap();
    let v = c
        .get_or_create("a", || {
            let b = value_of(c.get_or_create("b", || 20u64).unwrap());
            let again = c.get_or_create("a", || 0u64);
            assert!(matches!(again, Err(Error::Reentrant { .. })), "{again:?}");
            b + 1
        })
        .unwrap();
    assert_eq!(value_of(v), 21);
    assert_eq!(*c.get::<u64>("b").unwrap().unwrap(), 20);
    // A non-blocking try really does not block: another thread holds "x"
    // (a missing value would make us wait, so give it a stale one).
    c.set_opt(
        "x",
        &1u64,
        &WriteOptions::new().ttl(Some(Duration::from_millis(1))),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let (c2, c3) = (c.clone(), c.clone());
    let holder = std::thread::spawn(move || {
        c2.get_or_create("x", || {
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            2u64
        })
        .map(value_of)
    });
    rx.recv().unwrap();
    let f = c3.get_or_create("x", || 3u64).unwrap();
    assert!(
        !f.is_created() && f.is_stale(),
        "served the stale value: {f:?}"
    );
    drop(f);
    assert_eq!(holder.join().unwrap().unwrap(), 2);
    drop((c, c3));
}

#[test]
fn creator_errors_and_panics_release_the_lock_and_store_nothing() {
    let d = TempDir::new("dogpile", "errors");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let r = c.get_or_try_create("k", || Err::<u64, _>("boom"));
    assert!(matches!(r, Err(CreateError::Creator("boom"))), "{r:?}");
    drop(r);
    assert!(c.get::<u64>("k").unwrap().is_none());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = c.get_or_create::<u64, _>("k", || panic!("creator panicked"));
    }));
    assert!(caught.is_err());
    assert!(c.get::<u64>("k").unwrap().is_none());
    // Had the lock leaked, this same thread would now get Reentrant.
    let f = c.get_or_try_create("k", || Ok::<u64, ()>(5)).unwrap();
    assert!(f.is_created());
    drop(f);
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 5);
    drop(c);
}

#[test]
fn should_cache_false_returns_without_storing() {
    let d = TempDir::new("dogpile", "should");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let no_zero = |v: &u64| *v != 0;
    let o = CreateOptions::new().should_cache(&no_zero);
    assert_eq!(value_of(c.get_or_create_opt("z", &o, || 0u64).unwrap()), 0);
    assert!(c.get::<u64>("z").unwrap().is_none());
    assert_eq!(value_of(c.get_or_create_opt("z", &o, || 9u64).unwrap()), 9);
    assert_eq!(*c.get::<u64>("z").unwrap().unwrap(), 9);
    drop(c);
}

#[test]
fn killed_creator_process_hands_over_and_timeouts_are_typed() {
    let d = TempDir::new("dogpile", "killed");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    let mut kid = KillOnDrop(
        child("slow-creator", &p, &[])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(kid.0.stdout.take().unwrap());
    wait_for(&mut out, "CREATING");
    // Missing value, someone else creating: a bounded wait ends in a typed error.
    let o = CreateOptions::new().lock_timeout(Duration::from_millis(100));
    let r = c.get_or_create_opt("k", &o, || 1u64);
    assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    drop(r);
    assert_eq!(c.stats().lock_timeouts, 1);
    // An unbounded waiter becomes the creator when the creator is killed.
    let c2 = c.clone();
    let waiter = std::thread::spawn(move || {
        c2.get_or_create("k", || 7u64)
            .map(|f| (f.is_created(), value_of(f)))
    });
    std::thread::sleep(Duration::from_millis(100));
    kid.0.kill().unwrap();
    kid.0.wait().unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), (true, 7));
    assert!(c.stats().waits >= 2);
    drop(c);
}

#[test]
fn invalidation_in_another_process_applies_here() {
    let d = TempDir::new("dogpile", "invalidate");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    c.set("k", &1u64).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    assert!(child("invalidate", &p, &[("DOGPILE_HOW", "soft".into())])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(c.get::<u64>("k").unwrap().is_none(), "soft: a miss for get");
    let stale = c.get_stale::<u64>("k").unwrap().unwrap();
    assert!(stale.meta().is_stale());
    drop(stale);
    let f = c.get_or_create("k", || 2u64).unwrap();
    assert!(f.is_created(), "soft-invalidated values are regenerated");
    drop(f);
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 2);
    std::thread::sleep(Duration::from_millis(2));
    assert!(child("invalidate", &p, &[("DOGPILE_HOW", "hard".into())])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success());
    assert!(
        c.get_stale::<u64>("k").unwrap().is_none(),
        "hard: gone even for get_stale"
    );
    drop(c);
}

#[test]
fn block_policy_waits_for_the_new_value() {
    let d = TempDir::new("dogpile", "block");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set_opt(
        "k",
        &1u64,
        &WriteOptions::new().ttl(Some(Duration::from_millis(1))),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let (tx, rx) = std::sync::mpsc::channel();
    let c2 = c.clone();
    let creator = std::thread::spawn(move || {
        c2.get_or_create("k", || {
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            2u64
        })
        .map(value_of)
    });
    rx.recv().unwrap();
    let o = CreateOptions::new()
        .stale_policy(StalePolicy::Block)
        .ttl(None);
    let f = c.get_or_create_opt("k", &o, || 3u64).unwrap();
    assert!(!f.is_created() && !f.is_stale());
    assert_eq!(value_of(f), 2, "waited for the other caller's new value");
    assert_eq!(creator.join().unwrap().unwrap(), 2);
    drop(c);
}

#[test]
fn background_regeneration_serves_stale_at_once() {
    let d = TempDir::new("dogpile", "background");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set_opt(
        "k",
        &1u64,
        &WriteOptions::new().ttl(Some(Duration::from_millis(1))),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let main = std::thread::current().id();
    let (tx, rx) = std::sync::mpsc::channel();
    let (f, handle) = c
        .get_or_create_background("k", move || {
            tx.send(std::thread::current().id()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            2u64
        })
        .unwrap();
    assert!(f.is_stale() && !f.is_created());
    assert_eq!(value_of(f), 1);
    // Meanwhile the lock is held by the background thread: others get stale too.
    let f2 = c.get_or_create("k", || 3u64).unwrap();
    assert!(f2.is_stale(), "{f2:?}");
    drop(f2);
    assert_ne!(rx.recv().unwrap(), main, "regenerated on another thread");
    handle
        .expect("a background thread")
        .join()
        .unwrap()
        .unwrap();
    let g = c.get::<u64>("k").unwrap().unwrap();
    assert_eq!(*g, 2);
    assert!(!g.meta().is_stale());
    drop(g);
    drop(c);
}

#[test]
fn get_or_create_many_calls_the_creator_once() {
    let d = TempDir::new("dogpile", "many");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("b", &200u64).unwrap();
    let calls = AtomicU64::new(0);
    let keys = ["a", "b", "c", "a"];
    let got = c
        .get_or_create_many::<u64, _>(&keys, |ks| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut sorted: Vec<&[u8]> = ks.to_vec();
            sorted.sort();
            assert_eq!(sorted, vec![&b"a"[..], &b"c"[..]]);
            ks.iter()
                .map(|k| if *k == b"a" { 100 } else { 300 })
                .collect()
        })
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let vals: Vec<u64> = got.into_iter().map(value_of).collect();
    assert_eq!(vals, vec![100, 200, 300, 100]);
    drop(c);
}

#[test]
fn memo_caches_by_stable_argument_keys() {
    let d = TempDir::new("dogpile", "memo");
    let p = d.join("c");
    let c = Cache::open(&p, opts()).unwrap();
    let calls = AtomicU64::new(0);
    let m = Memo::new(&c, "ns", |a: &(u32, String)| {
        calls.fetch_add(1, Ordering::SeqCst);
        a.0 as u64 * 10 + a.1.len() as u64
    });
    let args = (7u32, "seven".to_string());
    assert_eq!(value_of(m.call(&args).unwrap()), 75);
    assert_eq!(value_of(m.call(&args).unwrap()), 75);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(*m.get(&args).unwrap().unwrap(), 75);
    m.set(&args, &1).unwrap();
    assert_eq!(*m.get(&args).unwrap().unwrap(), 1);
    assert_eq!(m.refresh(&args).unwrap(), 75);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(m.invalidate(&args).unwrap());
    assert!(m.get(&args).unwrap().is_none());
    // Long arguments are hashed into the key.
    let long = (1u32, "x".repeat(5000));
    assert_eq!(value_of(m.call(&long).unwrap()), 5010);
    assert!(m.key(&long).unwrap().len() <= slotcache::MAX_KEY_LEN);
    // The same arguments give the same key in another process (another run).
    let out = child("memo-key", &p, &[])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let theirs = text
        .split("KEY ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(theirs, format!("{:?}", m.key(&args).unwrap()));
    drop(m);
    drop(c);
}

#[test]
fn stale_wait_free_timing_is_not_asserted_but_counted() {
    // Counters for the dogpile path are summed across processes like the others.
    let d = TempDir::new("dogpile", "stats");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let _ = value_of(c.get_or_create("k", || 1u64).unwrap());
    let st = c.stats();
    assert_eq!((st.creates, st.waits, st.lock_timeouts), (1, 0, 0));
    drop(c);
}

/// `expiration` (dogpile.cache's `expiration_time`): a value without a TTL
/// older than the age is regenerated by the first caller, and served stale,
/// marked stale, to callers that find its regeneration lock held.
#[test]
fn expiration_age_regenerates_values_without_a_ttl_and_marks_stale_serves() {
    let d = TempDir::new("dogpile", "expiration");
    let age = Duration::from_millis(200);
    let c = &Cache::open(d.join("c"), opts().expiration(age)).unwrap();
    let first = c.get_or_create("k", || 1u64).unwrap();
    assert!(first.is_created());
    drop(first);
    let again = c.get_or_create("k", || 2u64).unwrap();
    assert!(
        !again.is_created() && !again.is_stale(),
        "fresh within the age"
    );
    assert_eq!(value_of(again), 1);
    std::thread::sleep(age + Duration::from_millis(50));

    // A regeneration of "k" in progress in another thread: this caller is
    // served the aged value at once, and is told it is stale.
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let f = c
                .get_or_create("k", || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    3u64
                })
                .unwrap();
            assert!(f.is_created(), "the aged value is regenerated");
        });
        started
            .recv_timeout(Duration::from_secs(30))
            .expect("a value older than `expiration` was not regenerated");
        let served = c.get_or_create("k", || 4u64).unwrap();
        assert!(!served.is_created());
        assert!(served.is_stale(), "an aged value is reported stale");
        assert!(served.meta().unwrap().age() >= age);
        assert_eq!(value_of(served), 1);
        release.send(()).unwrap();
    });
    let now = c.get_or_create("k", || 5u64).unwrap();
    assert!(!now.is_stale());
    assert_eq!(value_of(now), 3);
}

/// Several processes x threads call `get_or_create_background` on one
/// expiring key with a fast creator. A caller that saw the stale value and
/// then won the regeneration lock after the previous creator released it
/// must find the fresh value and stop: every creator run starts at least
/// one TTL after the previous run ended (its value was created after that
/// end, and a creator only runs once the value has expired).
#[test]
fn background_regeneration_runs_one_creator_per_expiry_across_processes() {
    let d = TempDir::new("dogpile", "bg-procs");
    let p = d.join("c");
    let log = d.join("creators.log");
    std::fs::write(&log, b"").unwrap();
    let c = Cache::open(&p, opts()).unwrap();
    let start = now_ns() + 400_000_000;
    let until = start + 1_500_000_000;
    let ttl_ms = 30u64;
    let kids = hammers("bg-hammer", &p, &log, start, until, ttl_ms);
    for mut k in kids {
        let mut out = BufReader::new(k.0.stdout.take().unwrap());
        wait_for(&mut out, "DONE");
        assert!(k.0.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut runs: Vec<(u64, u64)> = text
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1])
        })
        .collect();
    runs.sort();
    assert!(runs.len() >= 5, "only {} creator runs", runs.len());
    let early: Vec<_> = runs
        .windows(2)
        .filter(|w| w[1].0 < w[0].1 + ttl_ms * 1_000_000)
        .collect();
    assert!(
        early.is_empty(),
        "{} of {} creator runs started while the previous value was still fresh: {:?}",
        early.len(),
        runs.len(),
        &early[..early.len().min(5)]
    );
    drop(c);
}

/// A slow `get_or_create_many` creator holds no read guard: another process
/// can rewrite the whole log (the fresh value it found included) while the
/// creator runs, and the batch still completes with correct values.
#[test]
fn get_or_create_many_pins_nothing_while_its_creator_runs() {
    let d = TempDir::new("dogpile", "many-pins");
    let p = d.join("c");
    let c = Cache::open(&p, opts().pin_wait(Duration::from_millis(50))).unwrap();
    c.set("fresh", &5u64).unwrap();
    let mut kid = KillOnDrop(
        child("many-slow", &p, &[])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(kid.0.stdout.take().unwrap());
    wait_for(&mut out, "CREATING");
    // Two laps of every stripe's ring: every segment is reused, including
    // the one holding "fresh".
    let churned = common::churn(&c, 2, "churn");
    std::fs::write(d.join("go"), b"").unwrap();
    let mut line = String::new();
    while !line.starts_with("GOT") && !line.starts_with("FAILED") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "child exited early");
    }
    assert!(kid.0.wait().unwrap().success());
    churned.expect("a writer of another process was blocked by the creator's pins");
    assert!(
        line.contains("GOT 5 3"),
        "the batch failed or returned wrong values: {line}"
    );
    drop(c);
}
