//! The async get_or_create family (feature `tokio`): one creator per key
//! across tasks, threads and processes, waits that never block an executor
//! thread, stale values served meanwhile, cancellation, lock timeouts,
//! creator errors, re-entry, and `Send` futures and results.
#![cfg(feature = "tokio")]

mod common;
use common::{KillOnDrop, TempDir};
use slotcache::{
    Cache, CreateError, CreateOptions, Error, Options, Raw, StalePolicy, WriteOptions,
};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn opts() -> Options {
    Options::new().capacity(8 << 20).stripes(4)
}

fn cache(t: &TempDir) -> Cache {
    Cache::open(t.path().join("c"), opts()).unwrap()
}

/// Stores `key = v` and lets it expire: a stale value.
fn stale(c: &Cache, key: &str, v: u64) {
    let short = WriteOptions::new().ttl(Some(Duration::from_millis(1)));
    c.set_opt(key, &v, &short).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(c.get_stale::<u64>(key).unwrap().unwrap().meta().is_stale());
}

/// Counts ticks of a task that wakes every millisecond, until dropped:
/// it can only tick while some executor thread is free.
struct Ticker(Arc<AtomicU64>, tokio::task::JoinHandle<()>);

impl Ticker {
    fn start() -> Ticker {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        let h = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                m.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ticker(n, h)
    }

    fn ticks(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.1.abort();
    }
}

// ---------------------------------------------------------------------------
// The creator in another process: this test binary run again as a child.
// ---------------------------------------------------------------------------

fn child(role: &str, path: &Path, key: &str) -> KillOnDrop {
    let c = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("ASYNC_ROLE", role)
        .env("ASYNC_PATH", path)
        .env("ASYNC_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    KillOnDrop(c)
}

/// Reads the child's stdout until a line containing `word`.
fn wait_for(kid: &mut KillOnDrop, word: &str) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(kid.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains(word) {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "child exited early");
    }
    out
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var("ASYNC_ROLE") else {
        return;
    };
    let path = std::path::PathBuf::from(std::env::var("ASYNC_PATH").unwrap());
    let key = std::env::var("ASYNC_KEY").unwrap();
    let c = Cache::open(&path, opts()).unwrap();
    // A blocking creator that holds the key's regeneration lock until the
    // file `<key>.release` exists (role "hold"), or until it is killed.
    let release = path.with_file_name(format!("{key}.release"));
    let f = c
        .get_or_create(&key, || {
            println!("CREATING");
            std::io::stdout().flush().unwrap();
            let t = Instant::now();
            while role != "hold" || !release.exists() {
                assert!(t.elapsed() < Duration::from_secs(60), "never released");
                std::thread::sleep(Duration::from_millis(1));
            }
            77u64
        })
        .unwrap();
    assert!(f.is_created());
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_creator_for_many_tasks_and_the_runtime_keeps_running() {
    let t = TempDir::new("async", "many");
    let c = cache(&t);
    let creators = Arc::new(AtomicU64::new(0));
    let ticker = Ticker::start();
    let ticks_while_creating = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (c, creators, ticks) = (c.clone(), creators.clone(), ticks_while_creating.clone());
            let ticker = ticker.0.clone();
            tokio::spawn(async move {
                let f = c
                    .get_or_create_async("k", async move {
                        creators.fetch_add(1, Ordering::SeqCst);
                        let before = ticker.load(Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        ticks.store(ticker.load(Ordering::Relaxed) - before, Ordering::SeqCst);
                        41u64 + 1
                    })
                    .await
                    .unwrap();
                (f.is_created(), f.into_owned().unwrap())
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let (was_created, v) = task.await.unwrap();
        assert_eq!(v, 42);
        created += was_created as u32;
    }
    assert_eq!(created, 1);
    assert_eq!(
        creators.load(Ordering::SeqCst),
        1,
        "exactly one creator ran"
    );
    // 49 tasks waited on 2 worker threads for 200 ms: with blocking waits
    // neither thread would have been left for the ticker (nor the creator).
    let ticks = ticks_while_creating.load(Ordering::SeqCst);
    assert!(
        ticks >= 20,
        "the runtime was starved: {ticks} ticks in 200 ms"
    );
    let s = c.stats();
    assert_eq!(s.creates, 1);
    assert!(s.waits >= 1, "{s:?}");
    assert_eq!(s.lock_timeouts, 0);
    drop(ticker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creator_in_another_process_is_awaited_without_blocking_and_stale_is_served() {
    let t = TempDir::new("async", "process");
    let p = t.path().join("c");
    let c = Cache::open(&p, opts()).unwrap();

    // Missing value: the child creates it; 20 tasks here wait for it.
    let mut kid = child("hold", &p, "k");
    let _out = wait_for(&mut kid, "CREATING");
    let ticker = Ticker::start();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let f = c
                    .get_or_create_async::<u64, _>("k", async { panic!("the child creates") })
                    .await
                    .unwrap();
                (f.is_created(), f.into_owned().unwrap())
            })
        })
        .collect();
    let ticks = ticker.ticks();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let ticked = ticker.ticks() - ticks;
    assert!(
        ticked >= 20,
        "waiting tasks starved the runtime: {ticked} ticks in 150 ms"
    );
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "they wait for the child"
    );
    std::fs::write(t.path().join("k.release"), b"").unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), (false, 77), "the child's value");
    }
    assert!(kid.0.wait().unwrap().success());

    // Stale value: served at once while the child regenerates it.
    stale(&c, "s", 1);
    let mut kid = child("hold", &p, "s");
    let _out = wait_for(&mut kid, "CREATING");
    let started = Instant::now();
    for _ in 0..10 {
        let f = c
            .get_or_create_async::<u64, _>("s", async { panic!("the child regenerates") })
            .await
            .unwrap();
        assert!(f.is_stale() && !f.is_created());
        assert_eq!(f.into_owned().unwrap(), 1);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.stats().stale_served, 10);
    std::fs::write(t.path().join("s.release"), b"").unwrap();
    assert!(kid.0.wait().unwrap().success());
    let f = c
        .get_or_create_async::<u64, _>("s", async { unreachable!("fresh now") })
        .await
        .unwrap();
    assert_eq!(f.into_owned().unwrap(), 77);
    drop(ticker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_creator_process_is_replaced_at_once_and_timeouts_are_typed() {
    let t = TempDir::new("async", "killed");
    let p = t.path().join("c");
    let c = Cache::open(&p, opts()).unwrap();
    let mut kid = child("forever", &p, "k");
    let _out = wait_for(&mut kid, "CREATING");
    // Bounded wait: a typed, counted error.
    let o = CreateOptions::new().lock_timeout(Duration::from_millis(50));
    let r = c.get_or_create_async_opt("k", &o, async { 1u64 }).await;
    assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    assert_eq!(c.stats().lock_timeouts, 1);
    // An unbounded waiter becomes the creator when the creator is killed:
    // at once, not after the second for which the killed process's
    // regeneration hint would be believed by a mere try.
    let c2 = c.clone();
    let waiter = tokio::spawn(async move {
        c2.get_or_create_async("k", async { 7u64 })
            .await
            .map(|f| f.is_created())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    kid.0.kill().unwrap();
    kid.0.wait().unwrap();
    let killed = Instant::now();
    assert!(waiter.await.unwrap().unwrap());
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(600),
        "took over after {took:?}"
    );
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 7);
    assert!(c.stats().waits >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_one_task_regenerates_the_others_get_the_stale_value() {
    let t = TempDir::new("async", "swr");
    let c = cache(&t);
    stale(&c, "k", 1);
    let done = Arc::new(AtomicBool::new(false));
    let creators = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (c, done, creators) = (c.clone(), done.clone(), creators.clone());
            tokio::spawn(async move {
                let f = c
                    .get_or_create_async("k", async {
                        creators.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        done.store(true, Ordering::SeqCst);
                        2u64
                    })
                    .await
                    .unwrap();
                // Served before the creator is done (or, for a task that
                // started after it, the fresh value).
                let before = !done.load(Ordering::SeqCst);
                (
                    f.is_created(),
                    f.is_stale(),
                    before,
                    f.into_owned().unwrap(),
                )
            })
        })
        .collect();
    let mut stale_served = 0;
    for task in tasks {
        match task.await.unwrap() {
            (true, false, false, 2) => {} // the creator
            (false, true, true, 1) => stale_served += 1,
            (false, false, _, 2) => {} // came after the regeneration
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(creators.load(Ordering::SeqCst), 1);
    assert!(
        stale_served >= 10,
        "{stale_served} of 19 got the stale value"
    );
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_creators_and_waiters_release_the_lock_and_store_nothing() {
    let t = TempDir::new("async", "cancel");
    let c = cache(&t);
    let bounded = CreateOptions::new().lock_timeout(Duration::from_millis(500));
    // Dropped mid-creator by a timeout.
    let slow = c.get_or_create_async("k", async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        1u64
    });
    assert!(tokio::time::timeout(Duration::from_millis(50), slow)
        .await
        .is_err());
    assert!(c.get_stale::<u64>("k").unwrap().is_none(), "nothing stored");
    let f = c
        .get_or_create_async_opt("k", &bounded, async { 2u64 })
        .await
        .unwrap();
    assert!(f.is_created(), "the next caller creates at once");

    // An aborted task, and a waiter dropped mid-wait.
    let c2 = c.clone();
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    let creator = tokio::spawn(async move {
        c2.get_or_create_async("j", async move {
            s2.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            1u64
        })
        .await
        .map(|_| ())
    });
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waiter = c.get_or_create_async("j", async { 3u64 });
    assert!(tokio::time::timeout(Duration::from_millis(20), waiter)
        .await
        .is_err());
    creator.abort();
    assert!(creator.await.unwrap_err().is_cancelled());
    assert!(c.get_stale::<u64>("j").unwrap().is_none(), "nothing stored");
    let f = c
        .get_or_create_async_opt("j", &bounded, async { 4u64 })
        .await
        .unwrap();
    assert!(f.is_created());
    assert_eq!(f.into_owned().unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeouts_and_creator_errors() {
    let t = TempDir::new("async", "errors");
    let c = cache(&t);
    // A creator holds the lock; a bounded waiter times out, typed and counted.
    let (c2, started) = (c.clone(), Arc::new(AtomicBool::new(false)));
    let s2 = started.clone();
    let holder = tokio::spawn(async move {
        c2.get_or_try_create_async::<u64, _, _>("k", async move {
            s2.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err("backend down")
        })
        .await
    });
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let o = CreateOptions::new().lock_timeout(Duration::from_millis(30));
    let t0 = Instant::now();
    let r = c.get_or_create_async_opt("k", &o, async { 0u64 }).await;
    assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    assert!(t0.elapsed() >= Duration::from_millis(30));
    assert_eq!(c.stats().lock_timeouts, 1);
    // An unbounded waiter meanwhile: the creator fails, the error goes to
    // its caller only, nothing is stored, and the waiter creates.
    let waiter = c.get_or_try_create_async("k", async { Ok::<_, &str>(9u64) });
    let (failed, waited) = tokio::join!(holder, waiter);
    assert!(matches!(
        failed.unwrap(),
        Err(CreateError::Creator("backend down"))
    ));
    let waited = waited.unwrap();
    assert!(waited.is_created());
    assert_eq!(waited.into_owned().unwrap(), 9);
    assert_eq!(c.stats().creates, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn tasks_sharing_a_thread_wait_and_a_creator_re_entering_its_key_is_refused() {
    let t = TempDir::new("async", "reentry");
    let c = cache(&t);
    // Two tasks on one thread: the second waits for the first's creator
    // (the lock has no owner thread between polls), it is not "re-entry".
    let (c2, c3) = (c.clone(), c.clone());
    let a = tokio::spawn(async move {
        c2.get_or_create_async("shared", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            1u64
        })
        .await
        .map(|f| f.is_created())
    });
    tokio::task::yield_now().await;
    let b = tokio::spawn(async move {
        c3.get_or_create_async("shared", async { 2u64 })
            .await
            .map(|f| (f.is_created(), f.into_owned().unwrap()))
    });
    assert!(a.await.unwrap().unwrap());
    assert_eq!(b.await.unwrap().unwrap(), (false, 1));

    // Inside its creator, a caller asking for its own key is refused, async
    // or blocking; another key is fine, even on the same stripe.
    let inner = c.clone();
    // (Bounded, so that a failure to detect re-entry fails instead of hanging.)
    let bounded = CreateOptions::new().lock_timeout(Duration::from_millis(20));
    let f = c
        .get_or_create_async("k", async {
            // Not in its first poll: the creator is polled again, by
            // whichever thread, and is still known by it.
            tokio::time::sleep(Duration::from_millis(2)).await;
            let again = inner
                .get_or_create_async_opt("k", &bounded, async { 0u64 })
                .await;
            assert!(matches!(again, Err(Error::Reentrant { .. })), "{again:?}");
            let blocking = inner.get_or_create_opt("k", &bounded, || 0u64);
            assert!(
                matches!(blocking, Err(Error::Reentrant { .. })),
                "{blocking:?}"
            );
            let other = inner
                .get_or_create_async("other", async { 5u64 })
                .await
                .unwrap();
            assert!(other.is_created());
            // A task it spawns is another task: it waits (here until its
            // lock timeout), so the creator must not await it.
            let inner = inner.clone();
            let spawned = tokio::spawn(async move {
                inner
                    .get_or_create_async_opt("k", &bounded, async { 0u64 })
                    .await
                    .map(|_| ())
            });
            let r = spawned.await.unwrap();
            assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
            3u64
        })
        .await
        .unwrap();
    assert!(f.is_created());
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_block_policy_should_cache_ttl_and_raw_values() {
    let t = TempDir::new("async", "options");
    let c = cache(&t);
    // Block policy: a stale value is not served; the caller regenerates.
    stale(&c, "b", 1);
    let block = CreateOptions::new().stale_policy(StalePolicy::Block);
    let f = c
        .get_or_create_async_opt("b", &block, async { 2u64 })
        .await
        .unwrap();
    assert!(f.is_created());
    // should_cache refuses: returned, not stored.
    let no_zero = |v: &u64| *v != 0;
    let o = CreateOptions::new().should_cache(&no_zero);
    assert_eq!(
        c.get_or_create_async_opt("z", &o, async { 0u64 })
            .await
            .unwrap()
            .into_owned()
            .unwrap(),
        0
    );
    assert!(c.get::<u64>("z").unwrap().is_none());
    // The call's TTL is stored with the value.
    let o = CreateOptions::new().ttl(Some(Duration::from_secs(60)));
    c.get_or_create_async_opt("ttl", &o, async { 1u64 })
        .await
        .unwrap();
    assert!(c
        .get::<u64>("ttl")
        .unwrap()
        .unwrap()
        .meta()
        .expires()
        .is_some());
    // Raw bytes; the cached answer is a detached zero-copy guard.
    c.get_or_create_async("raw", async { Raw(b"bytes".to_vec()) })
        .await
        .unwrap();
    let f = c
        .get_or_create_async::<Raw, _>("raw", async { unreachable!() })
        .await
        .unwrap();
    let slotcache::OwnedFetched::Cached(g) = f else {
        panic!("cached")
    };
    assert_eq!(
        &*tokio::spawn(async move { g.to_vec() }).await.unwrap(),
        b"bytes"
    );
}

#[test]
fn futures_and_results_are_send() {
    fn send<T: Send>(t: T) -> T {
        t
    }
    let t = TempDir::new("async", "send");
    let c = cache(&t);
    // Never polled: only their types matter.
    drop(send(c.get_or_create_async("k", async { 1u64 })));
    drop(send(c.get_or_create_async("k", async { Raw(vec![1u8]) })));
    let no = |_: &String| true;
    let o = CreateOptions::new().should_cache(&no);
    drop(send(
        c.get_or_create_async_opt("k", &o, async { String::new() }),
    ));
    drop(send(c.get_or_try_create_async("k", async {
        Ok::<u64, String>(1)
    })));
    fn send_output<F: Future>(_: &F)
    where
        F::Output: Send,
    {
    }
    send_output(&c.get_or_create_async("k", async { 1u64 }));
}
