//! slotcache::tiered against a real `redis-server` (one per test, on a free
//! loopback port, killed at the end). Hosts are separate cache files;
//! several processes of a host are re-executions of this binary
//! (`child_entry`).
#![cfg(feature = "redis")]

mod common;
use common::{KillOnDrop, TempDir};
use slotcache::tiered::{TieredCache, TieredOptions};
use slotcache::{Cache, Options};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `redis-server` of this test, killed when dropped.
struct Server {
    port: u16,
    child: Option<KillOnDrop>,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Server { port, child: None };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts the server on the same port; waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(KillOnDrop(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ok.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        self.child = None;
    }

    fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }
}

fn host(dir: &Path, name: &str, opts: TieredOptions) -> TieredCache {
    let l1 = Cache::open(dir.join(name), Options::new().capacity(8 << 20).stripes(4)).unwrap();
    TieredCache::open(l1, opts).unwrap()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn opts(s: &Server) -> TieredOptions {
    TieredOptions::new(s.url(), "t:")
}

fn owned(v: Option<slotcache::tiered::TieredValue<'_>>) -> Option<Vec<u8>> {
    v.map(|v| v.to_vec())
}

#[test]
fn a_write_on_one_host_is_seen_on_another_with_a_lag_histogram() {
    let s = Server::start();
    let d = TempDir::new("tiered", "inval");
    let a = host(d.path(), "a", opts(&s));
    let b = host(d.path(), "b", opts(&s));
    wait_until("both streams up", Duration::from_secs(5), || {
        a.stream_up() && b.stream_up()
    });
    a.set("k", b"v0", None).unwrap();
    assert_eq!(owned(b.get("k").unwrap()).unwrap(), b"v0");
    let near = b.get("k").unwrap().unwrap();
    assert!(near.is_near(), "second read is an L1 hit");
    drop(near);
    let mut lags = Vec::new();
    for i in 1..=200 {
        let v = format!("v{i}");
        let t = Instant::now();
        a.set("k", v.as_bytes(), None).unwrap();
        // B's entry goes (invalidated), then B reads the new value.
        wait_until("B sees the write", Duration::from_secs(3), || {
            owned(b.get("k").unwrap()).as_deref() == Some(v.as_bytes())
        });
        lags.push(t.elapsed());
        // ... and it is then served from B's L1.
        wait_until("B's L1 hit", Duration::from_secs(3), || {
            b.get("k").unwrap().is_some_and(|g| g.is_near())
        });
    }
    lags.sort();
    let p = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "invalidation lag A->B over {} writes: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        lags.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        lags[lags.len() - 1]
    );
    let st = b.stats();
    assert!(st.invalidations >= 200, "{st:?}");
    assert!(st.l1_hits >= 200, "{st:?}");
    // A delete is seen too.
    a.delete("k").unwrap();
    wait_until("B sees the delete", Duration::from_secs(3), || {
        b.get("k").unwrap().is_none()
    });
}

#[test]
fn an_invalidation_racing_a_fill_prevents_the_stale_fill() {
    let s = Server::start();
    let d = TempDir::new("tiered", "race");
    let a = host(d.path(), "a", opts(&s));
    // B holds the L2 reply 30 ms before filling L1: the race window.
    let b = Arc::new(host(
        d.path(),
        "b",
        opts(&s).fill_delay(Some(Duration::from_millis(30))),
    ));
    wait_until("both streams up", Duration::from_secs(5), || {
        a.stream_up() && b.stream_up()
    });
    let inval = |b: &TieredCache| b.stats().invalidations;
    for i in 0..200 {
        let (old, new) = (format!("old{i}"), format!("new{i}"));
        let seen = inval(&b);
        a.set("k", old.as_bytes(), None).unwrap();
        wait_until("B's invalidation of old", Duration::from_secs(3), || {
            inval(&b) > seen
        });
        let reader = {
            let b = b.clone();
            std::thread::spawn(move || owned(b.get("k").unwrap()))
        };
        std::thread::sleep(Duration::from_millis(10)); // B's GET has been answered
        let seen = inval(&b);
        a.set("k", new.as_bytes(), None).unwrap();
        wait_until("B's invalidation of new", Duration::from_secs(3), || {
            inval(&b) > seen
        });
        let got = reader.join().unwrap().unwrap();
        assert!(
            got == old.as_bytes() || got == new.as_bytes(),
            "iteration {i}: read {:?}",
            String::from_utf8_lossy(&got)
        );
        // Whatever the reader got, L1 must not keep the old value.
        let now = owned(b.get("k").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&now),
            new,
            "iteration {i}: a stale fill survived the invalidation"
        );
    }
    let st = b.stats();
    println!("fill race: {st:?}");
    assert!(st.fills_refused > 0, "the window was hit: {st:?}");
}

/// Re-executed as a child process: one process of one host.
#[test]
fn child_entry() {
    let Ok(role) = std::env::var("TIERED_ROLE") else {
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap();
    let url = env("TIERED_URL");
    let path = env("TIERED_PATH");
    let l1 = Cache::open(&path, Options::new().capacity(8 << 20).stripes(4)).unwrap();
    let o = TieredOptions::new(url.clone(), "t:").lease(Duration::from_millis(
        env("TIERED_LEASE_MS").parse().unwrap(),
    ));
    let t = TieredCache::open(l1, o).unwrap();
    let origin = || {
        let mut c = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("INCR")
            .arg("origin-calls")
            .query::<u64>(&mut c)
            .unwrap()
    };
    match role.as_str() {
        "dogpile" => {
            let go: u64 = env("TIERED_GO_MS").parse().unwrap();
            while (now_ms()) < go {
                std::thread::sleep(Duration::from_millis(1));
            }
            let v = t
                .get_or_create("cold", None, || {
                    let n = origin();
                    std::thread::sleep(Duration::from_millis(300));
                    Ok::<_, ()>(format!("made by call {n}").into_bytes())
                })
                .unwrap();
            println!("VALUE {}", String::from_utf8_lossy(&v));
        }
        "slow-holder" => {
            // Takes the lease, says so, then creates for a long time.
            let v = t.get_or_create("slow", None, || {
                println!("CREATING");
                let ms = env("TIERED_CREATE_MS").parse().unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                Ok::<_, ()>(b"from the slow holder".to_vec())
            });
            let v = v.map(|v| String::from_utf8_lossy(&v).into_owned()).ok();
            println!("DONE {v:?} voided={}", t.stats().leases_voided);
        }
        other => panic!("unknown role {other}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn child(role: &str, s: &Server, path: &Path, lease_ms: u64, go_ms: u64) -> KillOnDrop {
    child_creating(role, s, path, lease_ms, go_ms, 30_000)
}

fn child_creating(
    role: &str,
    s: &Server,
    path: &Path,
    lease_ms: u64,
    go_ms: u64,
    create_ms: u64,
) -> KillOnDrop {
    let c = Command::new(std::env::current_exe().unwrap())
        .env("TIERED_CREATE_MS", create_ms.to_string())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("TIERED_ROLE", role)
        .env("TIERED_URL", s.url())
        .env("TIERED_PATH", path)
        .env("TIERED_LEASE_MS", lease_ms.to_string())
        .env("TIERED_GO_MS", go_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    KillOnDrop(c)
}

/// Reads `child`'s stdout until a line containing `word`; returns it from
/// `word` on.
fn line_of(child: &mut KillOnDrop, word: &str) -> String {
    let out = child.0.stdout.as_mut().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            r.read_line(&mut line).unwrap(),
            0,
            "child ended before {word}"
        );
        // The harness may print "test child_entry ... " before it.
        if let Some(at) = line.find(word) {
            return line[at..].trim_end().to_string();
        }
    }
}

#[test]
fn a_cold_key_across_hosts_and_processes_is_created_once() {
    let s = Server::start();
    let d = TempDir::new("tiered", "fleet");
    let (hosts, procs) = (3, 3);
    let go = now_ms() + 1500; // every child has opened its cache by then
    let mut kids = Vec::new();
    for h in 0..hosts {
        for _ in 0..procs {
            kids.push(child(
                "dogpile",
                &s,
                &d.path().join(format!("h{h}")),
                2000,
                go,
            ));
        }
    }
    let values: Vec<String> = kids.iter_mut().map(|k| line_of(k, "VALUE")).collect();
    for k in &mut kids {
        assert!(k.0.wait().unwrap().success());
    }
    let calls: u64 = redis::cmd("GET")
        .arg("origin-calls")
        .query(&mut s.con())
        .unwrap();
    assert_eq!(calls, 1, "one origin call for {} processes", kids.len());
    assert!(
        values.iter().all(|v| v == "VALUE made by call 1"),
        "{values:?}"
    );
}

#[test]
fn a_killed_lease_holder_is_replaced_after_its_lease_expires() {
    let s = Server::start();
    let d = TempDir::new("tiered", "killed");
    let mut holder = child("slow-holder", &s, &d.path().join("h0"), 1000, 0);
    line_of(&mut holder, "CREATING");
    let mut con = s.con();
    let leased: Vec<u8> = redis::cmd("GET").arg("t:slow").query(&mut con).unwrap();
    assert!(leased.starts_with(b"\0slotcache-lease\0"));
    let _ = holder.0.kill();
    let _ = holder.0.wait();
    let killed = Instant::now();
    let b = host(d.path(), "h1", opts(&s).fleet_wait(Duration::from_secs(5)));
    let v = b
        .get_or_create("slow", None, || Ok::<_, ()>(b"from host 1".to_vec()))
        .unwrap();
    assert_eq!(&*v, b"from host 1");
    let waited = killed.elapsed();
    println!("replaced {waited:?} after the kill (lease 1 s)");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(b.stats().leases_won, 1);
}

#[test]
fn a_paused_lease_holder_cannot_overwrite_a_newer_value() {
    let s = Server::start();
    let d = TempDir::new("tiered", "paused");
    // Lease 300 ms (extended every 100 ms while the creator runs), creator
    // 1.5 s: stopped, the holder cannot extend its lease.
    let mut holder = child_creating("slow-holder", &s, &d.path().join("h0"), 300, 0, 1500);
    line_of(&mut holder, "CREATING");
    let pid = holder.0.id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(600)); // past the lease
    let w = host(d.path(), "h1", opts(&s));
    w.set("slow", b"newer", None).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    // The holder finishes its creator and tries its fill: refused.
    let done = line_of(&mut holder, "DONE");
    assert!(holder.0.wait().unwrap().success());
    assert_eq!(
        done, "DONE Some(\"from the slow holder\") voided=1",
        "the holder returns its value to its caller, but Redis refused it"
    );
    let v: Vec<u8> = redis::cmd("GET").arg("t:slow").query(&mut s.con()).unwrap();
    assert_eq!(v, b"newer");
    let w_now = w.get("slow").unwrap().unwrap();
    assert_eq!(&*w_now, b"newer");
}

#[test]
fn redis_down_reads_keep_being_served_and_creation_is_once_per_host() {
    let mut s = Server::start();
    let d = TempDir::new("tiered", "down");
    let o = opts(&s)
        .io_timeout(Duration::from_millis(1000))
        .max_stale(Duration::from_secs(60));
    let a = Arc::new(host(d.path(), "a", o.clone()));
    let b = Arc::new(host(d.path(), "b", o));
    wait_until("streams up", Duration::from_secs(5), || {
        a.stream_up() && b.stream_up()
    });
    for i in 0..50 {
        a.set(format!("k{i}"), format!("v{i}").as_bytes(), None)
            .unwrap();
        wait_until("B's fill", Duration::from_secs(5), || {
            b.get(format!("k{i}")).unwrap().is_some()
        });
    }
    // Every key verified in B's L1 (a fill may have been undone by the
    // write's own invalidation arriving late: read again).
    for i in 0..50 {
        wait_until("B's L1 hit", Duration::from_secs(5), || {
            b.get(format!("k{i}")).unwrap().is_some_and(|v| v.is_near())
        });
    }
    s.kill();
    // Reads keep being served, from L1 (B filled all 50 keys).
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        for i in 0..50 {
            let v = b.get(format!("k{i}")).unwrap().expect("served from L1");
            assert_eq!(&*v, format!("v{i}").as_bytes());
        }
    }
    assert!(!b.stream_up(), "the stream is down");
    // Creation: at most one origin call per host, however many callers.
    let calls = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for h in [a.clone(), b.clone()] {
        for _ in 0..4 {
            let (h, calls) = (h.clone(), calls.clone());
            threads.push(std::thread::spawn(move || {
                let v = h
                    .get_or_create("cold", None, || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok::<_, ()>(b"made while down".to_vec())
                    })
                    .unwrap();
                assert_eq!(&*v, b"made while down");
            }));
        }
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(calls.load(Ordering::SeqCst) <= 2, "at most once per host");
    assert!(a.stats().l2_errors > 0 && b.stats().creates_degraded <= 1);
    // Recovery: Redis comes back (empty), the streams resume, reads go to
    // Redis again and writes are seen across hosts.
    s.restart();
    wait_until("streams back", Duration::from_secs(10), || {
        a.stream_up() && b.stream_up()
    });
    wait_until("writes work again", Duration::from_secs(5), || {
        a.set("k0", b"after", None).is_ok()
    });
    wait_until("B sees the new value", Duration::from_secs(5), || {
        owned(b.get("k0").unwrap()).as_deref() == Some(b"after".as_slice())
    });
    assert!(
        b.get("k1").unwrap().is_none(),
        "an unverified entry is not served while Redis answers"
    );
    println!("down/recovery: a {:?}\nb {:?}", a.stats(), b.stats());
}
