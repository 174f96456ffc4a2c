//! slotcache in front of Redis (`slotcache::tiered`): what a near-cache hit
//! saves over a Redis round trip, and what the fleet dogpile saves the
//! origin. Needs the bench crate's `redis` feature and a `redis-server`
//! on the `PATH`; without either it says so loudly and measures nothing.
//!
//! # What it measures (one run, one `redis-server` on loopback)
//!
//! Criterion group `tiered_get` (a 100-byte value):
//! - `l1_hit`: [`TieredCache::get`] of a verified L1 entry (zero-copy from
//!   the host's mapping, no Redis call);
//! - `l1_plain_get`: the same entry read with `Cache::get::<Raw>` (what the
//!   tier adds to a hit is the difference);
//! - `redis_get`: a plain `GET` with redis-rs on one connection, one round
//!   trip per value;
//! - `redis_get_pipelined`: `GET`s in pipelines of 64, time per value;
//! - `l2_hit_via_tier`: [`TieredCache::get`] when L1 cannot be trusted (a
//!   handle on a file whose invalidation stream never came up): `GET` and
//!   `PTTL` in one transaction, then the fill of L1.
//!
//! The expiry storm (`target/slotcache-bench/tiered.json`): `M` hosts (cache
//! files) × `P` processes each call `get_or_create` on one hot key in a
//! loop for `D` seconds; its value lives `TTL` in Redis and the origin (a
//! Redis `INCR`, then a sleep of `C`) makes a new one. Redis reports every
//! expiry of the key (keyspace notifications, `Ex`), counted by the parent.
//! Every value created expires once (the run waits for the last one), so
//! the ideal is one origin call per expiry. Reported: origin calls,
//! expiries, their ratio, and the calls a plain cache-aside client would
//! have made (one per process per expiry).
//!
//! # Running
//!
//! ```text
//! cargo bench -p slotcache-bench --features redis --bench tiered
//! cargo bench -p slotcache-bench --features redis --bench tiered -- --test  # smoke: checked, nothing written
//! ```
//!
//! Knobs: `SLOTCACHE_BENCH_TIERED_HOSTS` (`M`, default 3),
//! `SLOTCACHE_BENCH_TIERED_PROCS` (`P`, default 3),
//! `SLOTCACHE_BENCH_TIERED_SECS` (`D`, default 5); TTL 200 ms, creator
//! 50 ms.

/// Says loudly that nothing was measured, and why.
fn skipped(because: &str) {
    let bar = "!".repeat(72);
    eprintln!("\n{bar}\n!!! SKIPPED: benchmark tiered (slotcache in front of Redis)");
    eprintln!("!!! because: {because}\n{bar}\n");
}

#[cfg(not(feature = "redis"))]
fn main() {
    skipped(
        "built without the bench crate's `redis` feature; run \
         cargo bench -p slotcache-bench --features redis --bench tiered",
    );
}

#[cfg(feature = "redis")]
fn main() {
    with_redis::main();
}

#[cfg(feature = "redis")]
mod with_redis {
    use criterion::Criterion;
    use serde_json::json;
    use slotcache::tiered::{TieredCache, TieredOptions};
    use slotcache::{Cache, Options};
    use slotcache_bench::{write_result, BenchDir, Children};
    use std::hint::black_box;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const CHILD_ENV: &str = "SLOTCACHE_BENCH_TIERED_CHILD";
    const RESULT_PREFIX: &str = "TIERED_RESULT ";
    const PREFIX: &str = "tb:";
    const TTL: Duration = Duration::from_millis(200);
    const CREATOR: Duration = Duration::from_millis(50);

    /// A `redis-server` on a free loopback port, no persistence; killed
    /// when dropped.
    struct Server {
        port: u16,
        child: std::process::Child,
    }

    impl Server {
        fn start() -> Option<Server> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--notify-keyspace-events", "Ex"])
                .stdout(Stdio::null())
                .spawn()
                .ok()?;
            let s = Server { port, child };
            let deadline = Instant::now() + Duration::from_secs(10);
            while s.con().is_none() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(s)
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        fn con(&self) -> Option<redis::Connection> {
            let mut c = redis::Client::open(self.url())
                .ok()?
                .get_connection_with_timeout(Duration::from_millis(500))
                .ok()?;
            redis::cmd("PING").query::<String>(&mut c).ok()?;
            Some(c)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn l1(path: &std::path::Path) -> Cache {
        Cache::open(path, Options::new().capacity(16 << 20).stripes(4)).expect("open the L1 file")
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn bench_gets(c: &mut Criterion, s: &Server, dir: &BenchDir) {
        let value = vec![0x5a_u8; 100];
        let near = TieredCache::open(
            l1(&dir.path().join("near")),
            TieredOptions::new(s.url(), PREFIX),
        )
        .expect("open the tier");
        wait_until("the invalidation stream", || near.stream_up());
        near.set("k", &value, Some(Duration::from_secs(3600)))
            .expect("set");
        // A handle whose stream never comes up: L1 is never trusted, every
        // read goes to Redis (and fills).
        let far = TieredCache::open(
            l1(&dir.path().join("far")),
            TieredOptions::new(s.url(), PREFIX).subscriber(false),
        )
        .expect("open the tier");
        // The tracking stream also delivers the invalidation of this
        // handle's own write, which may land after `set` returned and drop
        // the L1 copy; the next read refills it. Wait for a verified copy.
        wait_until("an L1 hit", || {
            near.get("k")
                .expect("get")
                .is_some_and(|v| v.is_near() && *v == *value)
        });
        let got = far.get("k").expect("get").expect("a value");
        assert!(!got.is_near() && *got == *value, "an L2 read");
        drop(got);
        let mut con = s.con().expect("a connection");
        let key = format!("{PREFIX}k");
        let mut g = c.benchmark_group("tiered_get");
        g.bench_function("l1_hit", |b| {
            b.iter(|| {
                let v = near.get(black_box("k")).expect("get").expect("a value");
                assert!(v.is_near());
                black_box(v.len())
            })
        });
        let full = near.full_key("k");
        g.bench_function("l1_plain_get", |b| {
            b.iter(|| {
                let v = near
                    .l1()
                    .get::<slotcache::Raw>(black_box(&full))
                    .expect("get")
                    .expect("a value");
                black_box(v.len())
            })
        });
        g.bench_function("redis_get", |b| {
            b.iter(|| {
                let v: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).expect("GET");
                black_box(v.len())
            })
        });
        g.bench_function("redis_get_pipelined", |b| {
            const BATCH: u64 = 64;
            let mut pipe = redis::pipe();
            for _ in 0..BATCH {
                pipe.cmd("GET").arg(&key);
            }
            b.iter_custom(|iters| {
                let batches = iters.div_ceil(BATCH);
                let t = Instant::now();
                for _ in 0..batches {
                    let v: Vec<Vec<u8>> = pipe.query(&mut con).expect("pipelined GETs");
                    assert_eq!(v.len() as u64, BATCH);
                    black_box(v);
                }
                // Scaled to `iters` values.
                t.elapsed().mul_f64(iters as f64 / (batches * BATCH) as f64)
            })
        });
        g.bench_function("l2_hit_via_tier", |b| {
            b.iter(|| {
                let v = far.get(black_box("k")).expect("get").expect("a value");
                assert!(!v.is_near());
                black_box(v.len())
            })
        });
        g.finish();
        assert!(near.stats().l2_errors == 0 && far.stats().l2_errors == 0);
    }

    /// A process of one host in the storm: `get_or_create` of the hot key
    /// until `end` (wall-clock ms), then its counts on one line.
    fn child(spec: &str) {
        let v: serde_json::Value = serde_json::from_str(spec).expect("the child's spec");
        let url = v["url"].as_str().expect("url").to_string();
        let path = v["path"].as_str().expect("path");
        let end = v["end_ms"].as_u64().expect("end_ms");
        let t = TieredCache::open(
            l1(std::path::Path::new(path)),
            TieredOptions::new(url.clone(), PREFIX),
        )
        .expect("open the tier");
        wait_until("the invalidation stream", || t.stream_up());
        let mut origin = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("the origin's connection");
        let (mut calls, mut created) = (0u64, 0u64);
        while wall_ms() < end {
            let v = t
                .get_or_create("hot", Some(TTL), || {
                    let n: u64 = redis::cmd("INCR").arg("origin-calls").query(&mut origin)?;
                    created += 1;
                    std::thread::sleep(CREATOR);
                    Ok::<_, redis::RedisError>(format!("generation {n}").into_bytes())
                })
                .expect("get_or_create");
            assert!(v.starts_with(b"generation "), "{:?}", &*v);
            calls += 1;
        }
        let st = t.stats();
        println!(
            "{RESULT_PREFIX}{}",
            json!({"calls": calls, "created": created, "l1_hits": st.l1_hits,
                   "stale_served": st.stale_served, "leases_won": st.leases_won})
        );
    }

    fn wall_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64
    }

    fn knob(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn storm(s: &Server, dir: &BenchDir, test: bool) -> serde_json::Value {
        let hosts = knob("SLOTCACHE_BENCH_TIERED_HOSTS", if test { 2 } else { 3 });
        let procs = knob("SLOTCACHE_BENCH_TIERED_PROCS", if test { 2 } else { 3 });
        let secs = if test {
            1
        } else {
            knob("SLOTCACHE_BENCH_TIERED_SECS", 5)
        };
        // Count the hot key's expiries as Redis reports them.
        let mut sub = s.con().expect("a connection");
        let expiries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counter = {
            let (expiries, stop) = (expiries.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut ps = sub.as_pubsub();
                ps.subscribe("__keyevent@0__:expired").expect("SUBSCRIBE");
                ps.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("a read timeout");
                ready_tx.send(()).expect("the parent waits");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = ps.get_message() {
                        let key: Vec<u8> = m.get_payload().unwrap_or_default();
                        if key == format!("{PREFIX}hot").as_bytes() {
                            expiries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        ready_rx.recv().expect("subscribed");
        // Children start at once but work until the same end; each waits
        // for its stream first.
        let end = wall_ms() + 1500 + secs * 1000;
        let mut kids = Children::default();
        for h in 0..hosts {
            for p in 0..procs {
                let spec = json!({"url": s.url(),
                    "path": dir.path().join(format!("host{h}")), "end_ms": end})
                .to_string();
                kids.spawn(
                    format!("host {h} process {p}"),
                    &[(CHILD_ENV, spec.as_ref())],
                );
            }
        }
        let results: Vec<serde_json::Value> = kids
            .finish(RESULT_PREFIX)
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        // Every value created has expired (the last one too): an access
        // expires it at the latest, which notifies.
        let mut con = s.con().expect("a connection");
        wait_until("the last value's expiry", || {
            redis::cmd("EXISTS")
                .arg(format!("{PREFIX}hot"))
                .query::<u64>(&mut con)
                .expect("EXISTS")
                == 0
        });
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        counter.join().expect("the expiry counter");
        let sum = |k: &str| {
            results
                .iter()
                .map(|r| r[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let origin: u64 = redis::cmd("GET")
            .arg("origin-calls")
            .query(&mut con)
            .expect("GET");
        let expiries = expiries.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(origin, sum("created"), "every origin call counted once");
        let per = origin as f64 / expiries.max(1) as f64;
        let naive = hosts * procs * expiries;
        println!(
            "tiered expiry storm: {hosts} hosts × {procs} processes, {secs} s, TTL {TTL:?}, \
             creator {CREATOR:?}: {} calls, {origin} origin calls, {expiries} expiries \
             -> {per:.3} origin calls per expiry (cache-aside without the tier: up to {naive})",
            sum("calls")
        );
        assert!(expiries >= 1, "the hot key expired at least once");
        assert!(
            origin <= expiries,
            "{origin} origin calls for {expiries} expiries"
        );
        json!({"hosts": hosts, "procs": procs, "secs": secs, "ttl_ms": TTL.as_millis() as u64,
               "creator_ms": CREATOR.as_millis() as u64, "calls": sum("calls"),
               "origin_calls": origin, "expiries": expiries, "origin_per_expiry": per,
               "cache_aside_calls": naive, "stale_served": sum("stale_served"),
               "l1_hits": sum("l1_hits")})
    }

    pub fn main() {
        if let Ok(spec) = std::env::var(CHILD_ENV) {
            child(&spec);
            return;
        }
        let test = std::env::args().any(|a| a == "--test");
        let Some(s) = Server::start() else {
            super::skipped("redis-server could not be started (is it installed?)");
            return;
        };
        let dir = BenchDir::new("tiered");
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        bench_gets(&mut c, &s, &dir);
        let storm = storm(&s, &dir, test);
        if !test {
            write_result("tiered", &storm);
        }
        c.final_summary();
    }
}
