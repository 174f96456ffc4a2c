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

/// Hosts "a" and "b" with default options, both streams up.
fn two_hosts(s: &Server, name: &str) -> (TempDir, TieredCache, TieredCache) {
    let d = TempDir::new("tiered", name);
    let a = host(d.path(), "a", opts(s));
    let b = host(d.path(), "b", opts(s));
    wait_until("both streams up", Duration::from_secs(5), || {
        a.stream_up() && b.stream_up()
    });
    (d, a, b)
}

fn owned(v: Option<slotcache::tiered::TieredValue<'_>>) -> Option<Vec<u8>> {
    v.map(|v| v.to_vec())
}

#[test]
fn a_write_on_one_host_is_seen_on_another_with_a_lag_histogram() {
    let s = Server::start();
    let (_d, a, b) = two_hosts(&s, "inval");
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
        assert_reads(&b, &new, &format!("iteration {i}"));
    }
    let st = b.stats();
    println!("fill race: {st:?}");
    assert!(st.fills_refused > 0, "the window was hit: {st:?}");
}

/// `b` reads `want` under "k": no stale fill survived.
fn assert_reads(b: &TieredCache, want: &str, what: &str) {
    let now = owned(b.get("k").unwrap()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&now),
        want,
        "{what}: a stale fill survived the invalidation"
    );
}

/// The test's plan for the fill hook: at which stage A writes which value.
type Plan = Arc<std::sync::Mutex<Option<(slotcache::tiered::FillStage, Vec<u8>)>>>;

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
    let mut o = TieredOptions::new(url.clone(), "t:").lease(Duration::from_millis(
        env("TIERED_LEASE_MS").parse().unwrap(),
    ));
    if let Ok(ms) = std::env::var("TIERED_STREAM_TIMEOUT_MS") {
        o = o.stream_timeout(Duration::from_millis(ms.parse().unwrap()));
    }
    // The origin's call counter (and the rounds' coordination) live on a
    // server of their own when the test has one, so that killing or
    // flushing the L2 server does not lose them.
    let coord_url = std::env::var("TIERED_COORD").unwrap_or_else(|_| url.clone());
    let coord = || {
        redis::Client::open(coord_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    };
    let origin = || {
        redis::cmd("INCR")
            .arg("origin-calls")
            .query::<u64>(&mut coord())
            .unwrap()
    };
    if role == "rounds" {
        // The fleet dogpile: in each round (the driver sets `round`), one
        // get_or_create of the hot key, its value pushed to `values:<r>`.
        let rounds: u64 = env("TIERED_ROUNDS").parse().unwrap();
        let t = TieredCache::open(l1, o.serve_stale(false)).unwrap();
        let mut c = coord();
        for r in 1..=rounds {
            loop {
                let at: Option<u64> = redis::cmd("GET").arg("round").query(&mut c).unwrap();
                if at.unwrap_or(0) >= r {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let v = t
                .get_or_create("hot", Some(Duration::from_millis(400)), || {
                    let n = origin();
                    std::thread::sleep(Duration::from_millis(150));
                    Ok::<_, ()>(format!("call {n}").into_bytes())
                })
                .unwrap();
            redis::pipe()
                .cmd("RPUSH")
                .arg(format!("values:{r}"))
                .arg(&*v)
                .cmd("INCR")
                .arg("done")
                .query::<()>(&mut c)
                .unwrap();
        }
        return;
    }
    let t = TieredCache::open(l1, o).unwrap();
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
                origin();
                println!("CREATING");
                let ms = env("TIERED_CREATE_MS").parse().unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                Ok::<_, ()>(b"from the slow holder".to_vec())
            });
            let v = v.map(|v| String::from_utf8_lossy(&v).into_owned()).ok();
            println!("DONE {v:?} voided={}", t.stats().leases_voided);
        }
        "subscriber" => {
            // A process of a host that says when it holds the subscriber
            // role, then lives until killed.
            wait_until("the subscriber role", Duration::from_secs(10), || {
                t.stats().subscriber && t.stream_up()
            });
            println!("SUBSCRIBED");
            std::thread::sleep(Duration::from_secs(60));
        }
        "fork-subscriber" => {
            // The host's subscriber forks a child that does not exec, says
            // its pid, and lives until killed; the child sleeps.
            wait_until("the subscriber role", Duration::from_secs(10), || {
                t.stats().subscriber && t.stream_up()
            });
            // SAFETY: the child only calls async-signal-safe functions
            // (sleep, _exit).
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // SAFETY: as above.
                unsafe {
                    libc::sleep(60);
                    libc::_exit(0);
                }
            }
            println!("FORKED {pid}");
            std::thread::sleep(Duration::from_secs(60));
        }
        "fork-drop" => {
            // A worker forked from a process whose subscriber runs drops
            // its copy of the cache and exits; this process reports
            // whether the child got out.
            wait_until("the subscriber role", Duration::from_secs(10), || {
                t.stats().subscriber && t.stream_up()
            });
            // SAFETY: fork; the child drops the cache (glibc's allocator
            // is fork-safe) and leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                drop(t);
                // SAFETY: leaving the child without running the harness.
                unsafe { libc::_exit(7) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            loop {
                // SAFETY: reaping our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    println!("CHILD exit {}", libc::WEXITSTATUS(status));
                    break;
                }
                if Instant::now() > deadline {
                    // SAFETY: killing our own hung child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    println!("CHILD hung");
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
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
    let mut c = child_cmd(role, s, path, lease_ms);
    c.env("TIERED_GO_MS", go_ms.to_string());
    KillOnDrop(c.spawn().unwrap())
}

/// This binary as one process of the host whose cache file is `path`
/// (`child_entry`), in `role`; its stdout piped.
fn child_cmd(role: &str, s: &Server, path: &Path, lease_ms: u64) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("TIERED_CREATE_MS", "30000")
        .env("TIERED_ROLE", role)
        .env("TIERED_URL", s.url())
        .env("TIERED_PATH", path)
        .env("TIERED_LEASE_MS", lease_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
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
        .get_or_create("slow", None, || {
            redis::cmd("INCR")
                .arg("origin-calls")
                .query::<u64>(&mut s.con())
                .unwrap();
            Ok::<_, ()>(b"from host 1".to_vec())
        })
        .unwrap();
    assert_eq!(&*v, b"from host 1");
    let waited = killed.elapsed();
    println!("replaced {waited:?} after the kill (lease 1 s)");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(b.stats().leases_won, 1);
    let calls: u64 = redis::cmd("GET")
        .arg("origin-calls")
        .query(&mut s.con())
        .unwrap();
    assert_eq!(calls, 2, "the killed holder's call, then one more");
}

#[test]
fn a_paused_lease_holder_cannot_overwrite_a_newer_value() {
    let s = Server::start();
    let d = TempDir::new("tiered", "paused");
    // Lease 300 ms (extended every 100 ms while the creator runs), creator
    // 1.5 s: stopped, the holder cannot extend its lease.
    let mut holder = KillOnDrop(
        child_cmd("slow-holder", &s, &d.path().join("h0"), 300)
            .env("TIERED_CREATE_MS", "1500")
            .spawn()
            .unwrap(),
    );
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

/// A hook that, inside B's fill, has A write a new value and waits until
/// B's subscriber has applied its invalidation: every iteration lands in
/// the window, at one of the two stages in turn.
#[test]
fn an_invalidation_inside_every_fill_window_prevents_the_stale_fill() {
    use slotcache::tiered::{FillHook, FillStage};
    let s = Server::start();
    let d = TempDir::new("tiered", "race-hook");
    let a = Arc::new(host(d.path(), "a", opts(&s)));
    // (stage to act at, the value A writes there), set per iteration.
    let plan: Plan = Arc::default();
    let b_cell: Arc<std::sync::OnceLock<Arc<TieredCache>>> = Arc::default();
    let hook = {
        let (a, plan, b_cell) = (a.clone(), plan.clone(), b_cell.clone());
        FillHook(Arc::new(move |stage| {
            let mut p = plan.lock().unwrap();
            if p.as_ref().is_some_and(|(at, _)| *at == stage) {
                let (_, v) = p.take().unwrap();
                let b = b_cell.get().unwrap();
                let seen = b.stats().invalidations;
                a.set("k", &v, None).unwrap();
                wait_until("B's invalidation", Duration::from_secs(3), || {
                    b.stats().invalidations > seen
                });
            }
        }))
    };
    let b = Arc::new(host(d.path(), "b", opts(&s).fill_hook(Some(hook))));
    assert!(b_cell.set(b.clone()).is_ok());
    wait_until("both streams up", Duration::from_secs(5), || {
        a.stream_up() && b.stream_up()
    });
    let n = 3000;
    for i in 0..n {
        let (old, new) = (format!("old{i}"), format!("new{i}"));
        let seen = b.stats().invalidations;
        a.set("k", old.as_bytes(), None).unwrap();
        wait_until("B's invalidation of old", Duration::from_secs(3), || {
            b.stats().invalidations > seen
        });
        let stage = if i % 2 == 0 {
            FillStage::Arrived
        } else {
            FillStage::Written
        };
        *plan.lock().unwrap() = Some((stage, new.clone().into_bytes()));
        // B reads old from Redis; inside its fill A writes new.
        let got = owned(b.get("k").unwrap()).unwrap();
        assert_eq!(got, old.as_bytes(), "iteration {i}: the read itself");
        assert!(plan.lock().unwrap().is_none(), "iteration {i}: hook ran");
        assert_reads(&b, &new, &format!("iteration {i} ({stage:?})"));
    }
    let st = b.stats();
    println!("fill race with the hook: {st:?}");
    assert_eq!(
        st.fills_refused, n,
        "every fill in the window refused: {st:?}"
    );
}

/// Starts `procs` processes on each of `hosts` cache files in `role`.
fn fleet(
    role: &str,
    s: &Server,
    coord: &Server,
    dir: &Path,
    hosts: usize,
    procs: usize,
    extra: &[(&str, String)],
) -> Vec<KillOnDrop> {
    let mut kids = Vec::new();
    for h in 0..hosts {
        for _ in 0..procs {
            let mut c = child_cmd(role, s, &dir.join(format!("h{h}")), 2000);
            c.env("TIERED_COORD", coord.url()).stdout(Stdio::null());
            for (k, v) in extra {
                c.env(k, v);
            }
            kids.push(KillOnDrop(c.spawn().unwrap()));
        }
    }
    kids
}

fn get_u64(con: &mut redis::Connection, key: &str) -> u64 {
    redis::cmd("GET")
        .arg(key)
        .query::<Option<u64>>(con)
        .unwrap()
        .unwrap_or(0)
}

/// Runs `rounds` rounds of the `rounds` role: sets `round`, waits until
/// every process has its value; between rounds, waits for the hot key to
/// expire in Redis (when `l2` is given).
fn run_rounds(coord: &Server, l2: Option<&Server>, kids: usize, rounds: u64) {
    let mut c = coord.con();
    for r in 1..=rounds {
        redis::cmd("SET")
            .arg("round")
            .arg(r)
            .query::<()>(&mut c)
            .unwrap();
        wait_until("every process's value", Duration::from_secs(20), || {
            get_u64(&mut c, "done") >= r * kids as u64
        });
        if let Some(l2) = l2 {
            let mut l = l2.con();
            wait_until("the hot key's expiry", Duration::from_secs(5), || {
                redis::cmd("PTTL")
                    .arg("t:hot")
                    .query::<i64>(&mut l)
                    .unwrap()
                    == -2
            });
        }
    }
}

fn round_values(coord: &Server, r: u64) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("values:{r}"))
        .arg(0)
        .arg(-1)
        .query(&mut coord.con())
        .unwrap()
}

#[test]
fn an_expiring_hot_key_costs_one_origin_call_per_expiry_across_the_fleet() {
    let s = Server::start();
    let coord = Server::start();
    let d = TempDir::new("tiered", "expiry");
    let (hosts, procs, rounds) = (3, 3, 4);
    let rounds_env = [("TIERED_ROUNDS", rounds.to_string())];
    let mut kids = fleet("rounds", &s, &coord, d.path(), hosts, procs, &rounds_env);
    run_rounds(&coord, Some(&s), kids.len(), rounds);
    for k in &mut kids {
        assert!(k.0.wait().unwrap().success());
    }
    let calls = get_u64(&mut coord.con(), "origin-calls");
    assert_eq!(calls, rounds, "one origin call per expiry, fleet-wide");
    for r in 1..=rounds {
        let values = round_values(&coord, r);
        assert_eq!(values.len(), hosts * procs);
        assert!(
            values.iter().all(|v| *v == format!("call {r}")),
            "round {r}: {values:?}"
        );
    }
}

#[test]
fn with_redis_down_a_hot_key_costs_at_most_one_origin_call_per_host() {
    let mut s = Server::start();
    let coord = Server::start();
    let d = TempDir::new("tiered", "fleet-down");
    let (hosts, procs) = (3, 3);
    let rounds_env = [("TIERED_ROUNDS", "1".to_string())];
    let mut kids = fleet("rounds", &s, &coord, d.path(), hosts, procs, &rounds_env);
    // Every process has opened its cache (each host's file exists), then
    // Redis goes away.
    for h in 0..hosts {
        let p = d.path().join(format!("h{h}"));
        wait_until("the host's file", Duration::from_secs(10), || p.exists());
    }
    std::thread::sleep(Duration::from_millis(500));
    s.kill();
    run_rounds(&coord, None, kids.len(), 1);
    for k in &mut kids {
        assert!(k.0.wait().unwrap().success());
    }
    let calls = get_u64(&mut coord.con(), "origin-calls");
    assert!(
        (1..=hosts as u64).contains(&calls),
        "{calls} origin calls for {hosts} hosts"
    );
    // Within a host, its processes share the one value created there.
    let values = round_values(&coord, 1);
    assert_eq!(values.len(), hosts * procs);
    let mut distinct = values.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, calls, "{values:?}");
}

#[test]
fn redis_killed_and_restarted_under_load_never_fails_a_read() {
    let mut s = Server::start();
    let d = TempDir::new("tiered", "restart-load");
    let o = opts(&s).max_stale(Duration::from_secs(60));
    let hosts: Vec<Arc<TieredCache>> = (0..2)
        .map(|h| Arc::new(host(d.path(), &format!("h{h}"), o.clone())))
        .collect();
    wait_until("streams up", Duration::from_secs(5), || {
        hosts.iter().all(|h| h.stream_up())
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let served_down = Arc::new(AtomicU64::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for (n, h) in hosts.iter().enumerate() {
        for t in 0..2 {
            let (h, stop, served, served_down, down) = (
                h.clone(),
                stop.clone(),
                served.clone(),
                served_down.clone(),
                down.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("hot{}", i % 8);
                    let v = h
                        .get_or_create(&k, Some(Duration::from_millis(300)), || {
                            Ok::<_, ()>(format!("{k} by {n}.{t}").into_bytes())
                        })
                        .expect("get_or_create never fails because of Redis");
                    assert!(v.starts_with(k.as_bytes()), "{:?}", &*v);
                    drop(v);
                    // Plain reads never fail either.
                    let _ = h.get(&k).unwrap();
                    served.fetch_add(1, Ordering::Relaxed);
                    if down.load(Ordering::Relaxed) {
                        served_down.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }));
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    down.store(true, Ordering::Relaxed);
    s.kill();
    let at = served_down.load(Ordering::Relaxed);
    wait_until(
        "reads served while Redis is down",
        Duration::from_secs(10),
        || served_down.load(Ordering::Relaxed) > at + 100,
    );
    s.restart();
    down.store(false, Ordering::Relaxed);
    wait_until("streams back", Duration::from_secs(10), || {
        hosts.iter().all(|h| h.stream_up())
    });
    let at = served.load(Ordering::Relaxed);
    wait_until("reads after the restart", Duration::from_secs(10), || {
        served.load(Ordering::Relaxed) > at + 100
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Writes across hosts work again.
    wait_until("writes work again", Duration::from_secs(5), || {
        hosts[0].set("x", b"after", None).is_ok()
    });
    wait_until("host 1 sees it", Duration::from_secs(5), || {
        owned(hosts[1].get("x").unwrap()).as_deref() == Some(b"after".as_slice())
    });
    for h in &hosts {
        let st = h.stats();
        println!("restart under load: {st:?}");
        assert!(
            st.l2_errors > 0 && st.epoch_changes > 0 || !st.subscriber,
            "{st:?}"
        );
    }
}

/// The `CLIENT LIST` ids of tracking connections (flag `t`).
fn tracking_ids(con: &mut redis::Connection) -> Vec<u64> {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(con).unwrap();
    list.lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.strip_prefix("flags=").is_some_and(|f| f.contains('t')))
        })
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn a_killed_tracking_connection_loses_no_invalidation() {
    let s = Server::start();
    let d = TempDir::new("tiered", "client-kill");
    let a = host(d.path(), "a", opts(&s).subscriber(false));
    let b = host(d.path(), "b", opts(&s));
    wait_until("B's stream", Duration::from_secs(5), || b.stream_up());
    let mut con = s.con();
    for i in 0..20 {
        let (old, new) = (format!("old{i}"), format!("new{i}"));
        a.set("k", old.as_bytes(), None).unwrap();
        wait_until("B's verified copy", Duration::from_secs(5), || {
            b.get("k")
                .unwrap()
                .is_some_and(|v| v.is_near() && *v == *old.as_bytes())
        });
        let ids = tracking_ids(&mut con);
        assert_eq!(ids.len(), 1, "B's one tracking connection");
        let epoch = b.stats().epoch;
        // Kill it and write in one transaction: the write's invalidation
        // is lost for sure.
        redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(ids[0])
            .cmd("SET")
            .arg("t:k")
            .arg(new.as_bytes())
            .query::<()>(&mut con)
            .unwrap();
        wait_until("B's new epoch", Duration::from_secs(5), || {
            let st = b.stats();
            st.epoch != epoch && st.epoch % 2 == 0 && b.stream_up()
        });
        let got = b.get("k").unwrap().unwrap();
        assert!(!got.is_near(), "iteration {i}: the old copy is unverified");
        assert_eq!(&*got, new.as_bytes(), "iteration {i}");
    }
    println!("client kill: {:?}", b.stats());
}

#[test]
fn after_flushall_no_old_value_is_a_fresh_hit() {
    let s = Server::start();
    let (_d, a, b) = two_hosts(&s, "flushall");
    let mut con = s.con();
    for round in 0..5 {
        for i in 0..20 {
            a.set(format!("k{i}"), b"v", None).unwrap();
        }
        for h in [&a, &b] {
            for i in 0..20 {
                wait_until("a verified copy", Duration::from_secs(5), || {
                    h.get(format!("k{i}")).unwrap().is_some_and(|v| v.is_near())
                });
            }
        }
        let epochs = (a.stats().epoch, b.stats().epoch);
        redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
        wait_until("both epochs move", Duration::from_secs(5), || {
            a.stats().epoch != epochs.0 && b.stats().epoch != epochs.1
        });
        for h in [&a, &b] {
            for i in 0..20 {
                assert!(
                    h.get(format!("k{i}")).unwrap().is_none(),
                    "round {round}: an old value served after the flush"
                );
            }
        }
    }
    assert!(b.stats().flushes >= 5, "{:?}", b.stats());
}

/// The test process as a second process of a host whose subscriber is a
/// child: the child is (killed | stopped); what the test process serves.
fn host_with_child_subscriber(
    s: &Server,
    d: &TempDir,
    stream_timeout_ms: u64,
) -> (KillOnDrop, TieredCache) {
    let path = d.path().join("h0");
    let mut c = child_cmd("subscriber", s, &path, 2000);
    c.env("TIERED_STREAM_TIMEOUT_MS", stream_timeout_ms.to_string());
    let mut sub = KillOnDrop(c.spawn().unwrap());
    line_of(&mut sub, "SUBSCRIBED");
    let me = host(
        d.path(),
        "h0",
        opts(s).stream_timeout(Duration::from_millis(stream_timeout_ms)),
    );
    (sub, me)
}

#[test]
fn a_killed_subscriber_process_is_replaced_by_another_of_its_host() {
    let s = Server::start();
    let d = TempDir::new("tiered", "sub-killed");
    let (mut sub, me) = host_with_child_subscriber(&s, &d, 1000);
    let other = host(d.path(), "other", opts(&s).subscriber(false));
    other.set("k", b"v1", None).unwrap();
    wait_until("a verified copy", Duration::from_secs(5), || {
        me.get("k").unwrap().is_some_and(|v| v.is_near())
    });
    assert!(!me.stats().subscriber, "the child holds the role");
    let _ = sub.0.kill();
    let _ = sub.0.wait();
    // Written while the host has no subscriber: nobody applies it.
    other.set("k", b"v2", None).unwrap();
    wait_until("the takeover", Duration::from_secs(10), || {
        me.stats().subscriber && me.stream_up()
    });
    assert_eq!(owned(me.get("k").unwrap()).unwrap(), b"v2");
    // And the new subscriber applies invalidations.
    wait_until("a verified copy", Duration::from_secs(5), || {
        me.get("k").unwrap().is_some_and(|v| v.is_near())
    });
    other.set("k", b"v3", None).unwrap();
    wait_until("the invalidation", Duration::from_secs(5), || {
        owned(me.get("k").unwrap()).as_deref() == Some(b"v3".as_slice())
    });
}

/// Kills a process that is not our child (a grandchild) when dropped.
struct KillPid(i32);

impl Drop for KillPid {
    fn drop(&mut self) {
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[test]
fn a_child_forked_by_the_subscriber_does_not_keep_the_role_after_it_dies() {
    let s = Server::start();
    let d = TempDir::new("tiered", "sub-fork");
    let path = d.path().join("h0");
    let mut sub = KillOnDrop(
        child_cmd("fork-subscriber", &s, &path, 2000)
            .spawn()
            .unwrap(),
    );
    let forked = line_of(&mut sub, "FORKED");
    let _grandchild = KillPid(forked["FORKED ".len()..].parse().unwrap());
    let me = host(d.path(), "h0", opts(&s));
    assert!(!me.stats().subscriber, "the forking process holds the role");
    let _ = sub.0.kill();
    let _ = sub.0.wait();
    // Its forked child lives on; the role passes to this process anyway.
    wait_until("the takeover", Duration::from_secs(10), || {
        me.stats().subscriber && me.stream_up()
    });
    let other = host(d.path(), "other", opts(&s).subscriber(false));
    other.set("k", b"v1", None).unwrap();
    wait_until("a verified copy", Duration::from_secs(5), || {
        me.get("k").unwrap().is_some_and(|v| v.is_near())
    });
}

#[test]
fn a_forked_child_drops_its_copy_of_the_cache_without_hanging() {
    let s = Server::start();
    let d = TempDir::new("tiered", "fork-drop");
    let path = d.path().join("h0");
    let mut p = KillOnDrop(child_cmd("fork-drop", &s, &path, 2000).spawn().unwrap());
    assert_eq!(line_of(&mut p, "CHILD"), "CHILD exit 7");
    let _ = p.0.wait();
}

#[test]
fn a_stale_heartbeat_makes_entries_unverified() {
    let s = Server::start();
    let d = TempDir::new("tiered", "stale-hb");
    let (sub, me) = host_with_child_subscriber(&s, &d, 300);
    let other = host(d.path(), "other", opts(&s).subscriber(false));
    other.set("k", b"v1", None).unwrap();
    wait_until("a verified copy", Duration::from_secs(5), || {
        me.get("k").unwrap().is_some_and(|v| v.is_near())
    });
    let pid = sub.0.id() as i32;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // Its invalidation is never applied: the subscriber is stopped.
    other.set("k", b"v2", None).unwrap();
    wait_until("the heartbeat goes stale", Duration::from_secs(5), || {
        !me.stream_up()
    });
    for _ in 0..100 {
        let v = me.get("k").unwrap().unwrap();
        assert!(!v.is_near(), "an unverified entry served as a hit");
        assert_eq!(&*v, b"v2");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_until("the stream back", Duration::from_secs(10), || {
        me.stream_up()
    });
    wait_until("a verified copy again", Duration::from_secs(5), || {
        me.get("k")
            .unwrap()
            .is_some_and(|v| v.is_near() && *v == *b"v2")
    });
    drop(sub);
}

/// The async API (features `redis` and `tokio`).
#[cfg(feature = "tokio")]
mod async_api {
    use super::*;

    #[test]
    fn async_calls_mirror_the_sync_ones_on_a_current_thread_runtime() {
        let s = Server::start();
        let (_d, a, b) = two_hosts(&s, "async-basic");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            a.set_async("k", b"v1", None).await.unwrap();
            assert_eq!(b.get_async("k").await.unwrap().unwrap(), b"v1");
            // Now a verified L1 hit on B.
            let hits = b.stats().l1_hits;
            assert_eq!(b.get_async("k").await.unwrap().unwrap(), b"v1");
            assert_eq!(b.stats().l1_hits, hits + 1);
            a.set_async("k", b"v2", None).await.unwrap();
            let mut seen = None;
            for _ in 0..1000 {
                seen = b.get_async("k").await.unwrap();
                if seen.as_deref() == Some(b"v2".as_slice()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert_eq!(seen.unwrap(), b"v2", "B sees A's write");
            a.delete_async("k").await.unwrap();
            let mut gone = false;
            for _ in 0..1000 {
                if b.get_async("k").await.unwrap().is_none() {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(gone, "B sees A's delete");
            // A creator that fails gives its lease back at once.
            let failed = a
                .get_or_create_async("f", None, async { Err::<Vec<u8>, _>("origin down") })
                .await;
            assert!(matches!(
                failed,
                Err(slotcache::CreateError::Creator("origin down"))
            ));
            let raw: Option<Vec<u8>> = redis::cmd("GET").arg("t:f").query(&mut s.con()).unwrap();
            assert_eq!(raw, None, "the lease was given back");
        });
    }

    #[test]
    fn async_tasks_on_two_hosts_create_a_cold_key_once() {
        let s = Server::start();
        let (_d, a, b) = two_hosts(&s, "async-dogpile");
        let (a, b) = (Arc::new(a), Arc::new(b));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let calls = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            for round in 0..3 {
                let key = format!("cold{round}");
                let mut tasks = Vec::new();
                for n in 0..16 {
                    let h = if n % 2 == 0 { a.clone() } else { b.clone() };
                    let (calls, key) = (calls.clone(), key.clone());
                    tasks.push(tokio::spawn(async move {
                        h.get_or_create_async(&key, None, async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            Ok::<_, ()>(b"made once".to_vec())
                        })
                        .await
                        .unwrap()
                    }));
                }
                for t in tasks {
                    assert_eq!(t.await.unwrap(), b"made once");
                }
                assert_eq!(calls.load(Ordering::SeqCst), round + 1, "round {round}");
            }
        });
        let won = a.stats().leases_won + b.stats().leases_won;
        assert_eq!(won, 3, "{:?} {:?}", a.stats(), b.stats());
    }
}

/// `try_lease`/`set_leased`/`release_lease`: one holder across hosts, even
/// over an old value still in Redis; a writer's `set` or `delete` voids the
/// lease, so the holder's late fill writes nothing; a released lease can
/// be taken again.
#[test]
fn a_side_lease_is_exclusive_and_voided_by_writers() {
    let s = Server::start();
    let (_d, a, b) = two_hosts(&s, "side-lease");
    a.set("k", b"old", None).unwrap();
    let la = a.try_lease("k").unwrap().expect("a takes the lease");
    assert!(
        b.try_lease("k").unwrap().is_none(),
        "b must not get a's lease"
    );
    assert!(a.set_leased(&la, b"made by a", None).unwrap());
    assert_eq!(
        owned(b.get("k").unwrap()).as_deref(),
        Some(&b"made by a"[..])
    );
    a.release_lease(la).unwrap();

    for writer in ["set", "delete"] {
        let lb = b
            .try_lease("k")
            .unwrap()
            .expect("the filled lease is free again");
        match writer {
            "set" => a.set("k", b"newer", None).unwrap(),
            _ => a.delete("k").unwrap(),
        }
        assert!(
            !b.set_leased(&lb, b"late", None).unwrap(),
            "{writer} must void the lease"
        );
        b.release_lease(lb).unwrap();
        let want = (writer == "set").then_some(&b"newer"[..]);
        wait_until("a's write reaching b", Duration::from_secs(5), || {
            owned(b.get("k").unwrap()).as_deref() == want
        });
    }
    assert_eq!(b.stats().leases_voided, 2);
    assert_eq!(b.stats().leases_lost, 1);
}

/// `keep_local`: a value made while Redis is down is served from L1 while
/// it stays down, and never once it is back (it was never verified).
#[test]
fn a_value_kept_locally_is_served_only_while_redis_is_down() {
    let mut s = Server::start();
    let (_d, a, _b) = two_hosts(&s, "keep-local");
    a.set("k", b"in redis", None).unwrap();
    s.kill();
    assert!(a.set("k", b"made while down", None).is_err());
    a.keep_local("k", b"made while down", None).unwrap();
    let v = a.get("k").unwrap().expect("kept in L1");
    assert!(v.is_stale());
    assert_eq!(&*v, b"made while down");
    drop(v);
    s.restart();
    // Redis restarted empty (no persistence): once it answers, the kept
    // value is no longer served.
    wait_until("Redis back", Duration::from_secs(10), || {
        a.get("k").unwrap().is_none()
    });
    assert!(a.stats().stale_served >= 1);
}
