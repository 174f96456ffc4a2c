//! Dogpile protection under load: many processes and threads calling
//! `get_or_create` on one key whose value keeps expiring and takes a slow
//! creator to rebuild.
//!
//! # What it measures
//!
//! `P` processes × `T` threads all call `get_or_create_opt` on ONE key in
//! a tight loop. The value is stored with a TTL (`CreateOptions::ttl`, 200
//! ms) and its creator is slow (it sleeps 50 ms, then returns a `Report`
//! carrying a generation number, the creating process id and thread
//! number). Each call is timed and classified by the returned `Fetched`:
//!
//! - **created**: this call ran the creator (`is_created()`);
//! - **stale**: a stale value served at once while another caller
//!   regenerates (`Cached` and `is_stale()`); the table also splits these
//!   by whether a creator of the caller's own process was running
//!   (`stale_here`: the regeneration lock is found busy in memory) or not
//!   (`stale_elsewhere`: another process holds it, which the caller learns
//!   by trying the file lock);
//! - **waited**: the first value, created after the call began: the call
//!   found nothing and blocked on the regeneration lock until the creator
//!   stored it (only at the very start);
//! - **fresh**: any other `Cached` value (a fresh hit). Some of these are
//!   of a value created during the call: calls preempted across the
//!   store, and calls that found the stale value, won the regeneration lock
//!   just as the creator released it and re-read the new value. They are
//!   counted (and printed) but stay fresh hits: after the start no call
//!   blocks under the default `StalePolicy::ServeStale`.
//!
//! Before that, the same threads do a phase of plain `get::<Report>` hits
//! on a key that never expires: the **plain hit** baseline.
//!
//! Reported: creator calls (each process counts its creator runs), expiries
//! (distinct generations created: the first from a missing key, each later
//! one replacing an expired value; two concurrent creators for the same
//! expiry produce the same generation number), creator calls per expiry
//! (ideal: 1.0), and p50 / p99 / p99.9 / max / count of the latency of
//! stale, fresh and plain hits, with stale p99 / plain-hit p99 (the
//! project's target is ≤ 5) and stale p99 / fresh-hit p99.
//!
//! # Method
//!
//! - The parent creates a small cache file, stores the plain key (no TTL)
//!   and leaves the dogpile key missing, then starts `P` copies of this
//!   executable with `SLOTCACHE_BENCH_DOGPILE_CHILD` (JSON: process number,
//!   threads, phase start times in wall-clock nanoseconds, durations, TTL,
//!   creator time) and the file path in `SLOTCACHE_BENCH_DOGPILE_PATH`.
//! - Every thread of every process starts the plain phase at the same
//!   instant, runs it for `D` seconds, then starts the dogpile phase at the
//!   same instant everywhere, for `D` seconds.
//! - A call's latency is `Instant` before the call to `Instant` after the
//!   value was looked at (generation and payload copied out) and the
//!   guard dropped; it includes about 20-40 ns of clock reads. Latencies go
//!   into a log-linear histogram per thread and class (exact below 128 ns,
//!   then 128 buckets per power of two: under 0.8% relative error),
//!   merged per process and sent to the parent on the child's result line
//!   as sparse bucket counts, where they are merged again; quantiles come
//!   from the merged histogram (a bucket's midpoint), the maximum is exact.
//! - Every value seen is checked (payload pattern of its generation), and
//!   every thread's generations must never go backwards. A creator reads
//!   the value it replaces (`get_stale`) to number the next generation and
//!   notes whether that value was still fresh (a creator that should not
//!   have run).
//! - The parent waits for every child and panics if one fails; a drop
//!   guard kills and reaps the children if the parent panics, and on Linux
//!   a child is killed when its parent dies.
//!
//! # Knobs
//!
//! - `SLOTCACHE_BENCH_DOGPILE_PROCS`: processes `P` (default 2).
//! - `SLOTCACHE_BENCH_DOGPILE_THREADS`: threads per process `T` (default 4).
//! - `SLOTCACHE_BENCH_DOGPILE_SECS`: seconds per phase `D` (default 5).
//! - `TMPDIR`: where the cache file lives.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench dogpile             # the full run, about 12 s
//! cargo bench --bench dogpile -- --test   # smoke test: 2 × 2 threads, 0.5 s phases,
//!                                         # 100 ms TTL, 20 ms creator; no results file
//! ```
//!
//! Results: a table on stdout and `target/slotcache-bench/dogpile.json`:
//!
//! ```text
//! {"procs": P, "threads": T, "secs": D, "ttl_ms": 200, "creator_ms": 50,
//!  "expiries": e, "creator_calls": c, "creator_calls_per_expiry": f,
//!  "stale_ns": {"n", "p50", "p99", "p999", "max"}, "fresh_ns": {...},
//!  "plain_hit_ns": {...},
//!  "stale_p99_over_plain_p99": f, "stale_p99_over_fresh_p99": f}
//! ```
//!
//! # Caveats
//!
//! - `P × T` busy threads (8 by default) on fewer CPUs are time-sliced: a
//!   thread preempted inside a call makes that call take milliseconds.
//!   This inflates p99.9 and max of every class alike; with far more
//!   threads than CPUs it reaches p99 too. Both phases run the same threads,
//!   so the ratios stay comparable.
//! - A stale call in a process that is not the creator's tries the
//!   regeneration lock of the file (a system call) unless another thread
//!   of its process is already trying; a fresh hit reads the clock (the
//!   value has a TTL), a plain hit does not (its value has none).
//! - Expiry uses the wall clock; the expected number of expiries is about
//!   `D / (TTL + creator time)` (a new value's TTL starts when it is
//!   stored).

use serde_json::{json, Value};
use slotcache::{Cache, CreateOptions, Fetched, Options, WriteOptions};
use slotcache_bench::{write_result, BenchDir, Children};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that makes this executable a child process; it
/// holds the child's [`Spec`] as JSON.
const CHILD_ENV: &str = "SLOTCACHE_BENCH_DOGPILE_CHILD";
/// The environment variable that gives a child the cache file's path.
const PATH_ENV: &str = "SLOTCACHE_BENCH_DOGPILE_PATH";
/// What a child's result line starts with (the rest is JSON).
const RESULT_PREFIX: &str = "slotcache-dogpile-result ";
/// The key every thread regenerates.
const DOGPILE_KEY: &str = "dogpile:report";
/// The never-expiring key of the plain-hit baseline.
const PLAIN_KEY: &str = "dogpile:plain";
/// How long a caller with no value waits for another's creator before the
/// run fails with `Error::LockTimeout`.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Plain-hit calls between two looks at the clock.
const CHECK_EVERY: usize = 16;

/// The cached value: a generation number, who created it, and a payload
/// that depends on the generation (checked on every read).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
struct Report {
    /// 1 for the first value, then one more per regeneration (0: the plain
    /// key's value).
    generation: u64,
    /// The creating process.
    pid: u32,
    /// The creating thread's number in its process.
    thread: u32,
    /// When the creator finished, wall-clock ns.
    created_ns: u64,
    /// `payload(generation)`.
    payload: [u8; 64],
}

/// The payload of generation `g`.
fn payload(g: u64) -> [u8; 64] {
    std::array::from_fn(|j| (g as u8).wrapping_mul(31).wrapping_add(j as u8))
}

impl Report {
    /// Generation `generation`, created now by thread `thread` of this
    /// process.
    fn new(generation: u64, thread: u32) -> Report {
        Report {
            generation,
            pid: std::process::id(),
            thread,
            created_ns: wall_ns(),
            payload: payload(generation),
        }
    }
}

/// What a call's value held, copied out before the guard is dropped and
/// checked after the clock stopped.
#[derive(Clone, Copy)]
struct Seen {
    /// The value's generation.
    generation: u64,
    /// The creating process.
    pid: u32,
    /// The value's payload.
    payload: [u8; 64],
}

impl Seen {
    /// From a cached value.
    fn archived(r: &ArchivedReport) -> Seen {
        Seen {
            generation: r.generation.to_native(),
            pid: r.pid.to_native(),
            payload: r.payload,
        }
    }

    /// From a created value.
    fn owned(r: &Report) -> Seen {
        Seen {
            generation: r.generation,
            pid: r.pid,
            payload: r.payload,
        }
    }

    /// Panics unless the value is well formed.
    fn check(&self, what: &str) {
        assert!(
            self.pid != 0 && self.payload == payload(self.generation),
            "{what}: a malformed value (generation {}, pid {})",
            self.generation,
            self.pid
        );
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch: the one clock all
/// processes share for phase times (and the cache's for expiry).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64
}

/// Sleeps until wall-clock time `ns` (the last stretch spinning).
fn wait_until(ns: u64) {
    loop {
        let now = wall_ns();
        if now >= ns {
            return;
        }
        let left = ns - now;
        if left > 2_000_000 {
            std::thread::sleep(Duration::from_nanos(left - 1_000_000));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The number in environment variable `name`, or `default` when unset.
fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, found {s:?}")),
        Err(_) => default,
    }
}

/// A log-linear latency histogram in nanoseconds: exact below 128, then 128
/// buckets per power of two. Histograms add up exactly, so threads' and
/// processes' samples merge without loss (unlike their quantiles).
#[derive(Clone, Debug)]
struct Hist {
    /// Count per bucket.
    counts: Vec<u64>,
    /// Samples.
    n: u64,
    /// The largest sample.
    max: u64,
}

impl Hist {
    /// Bits of the sub-bucket index: 2^7 = 128 buckets per power of two.
    const SUB_BITS: u32 = 7;
    /// Buckets for every `u64`.
    const BUCKETS: usize = (64 - Self::SUB_BITS as usize + 1) << Self::SUB_BITS;

    /// An empty histogram.
    fn new() -> Hist {
        Hist {
            counts: vec![0; Self::BUCKETS],
            n: 0,
            max: 0,
        }
    }

    /// The bucket of `v`.
    fn bucket(v: u64) -> usize {
        if v < 1 << Self::SUB_BITS {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // ≥ SUB_BITS
        let shift = e - Self::SUB_BITS;
        let mantissa = (v >> shift) as usize & ((1 << Self::SUB_BITS) - 1);
        ((shift as usize + 1) << Self::SUB_BITS) | mantissa
    }

    /// The smallest value in bucket `b`, and the bucket's width.
    fn bounds(b: usize) -> (u64, u64) {
        let block = b >> Self::SUB_BITS;
        if block == 0 {
            return (b as u64, 1);
        }
        let mantissa = (b & ((1 << Self::SUB_BITS) - 1)) as u64;
        let shift = block as u32 - 1;
        (((1 << Self::SUB_BITS) + mantissa) << shift, 1 << shift)
    }

    /// Panics unless every bucket's lower bound maps back to it and the
    /// buckets tile the numbers without gaps (run by the smoke test).
    fn self_check() {
        let mut next = 0u64;
        for b in 0..Self::BUCKETS {
            let (lo, width) = Self::bounds(b);
            assert_eq!(lo, next, "bucket {b} starts where bucket {} ended", b - 1);
            assert_eq!(Self::bucket(lo), b, "bucket of {lo}");
            assert_eq!(
                Self::bucket(lo + (width - 1)),
                b,
                "bucket of {}",
                lo + width - 1
            );
            next = lo.wrapping_add(width);
        }
        assert_eq!(next, 0, "the buckets end at u64::MAX");
    }

    /// Adds one sample.
    fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.n += 1;
        self.max = self.max.max(ns);
    }

    /// Adds every sample of `other`.
    fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    /// The `q`-quantile: the sample of rank `round((n - 1) q)`, as
    /// `slotcache_bench::quantile` picks it from sorted samples, reported as
    /// its bucket's midpoint (at most the maximum).
    fn quantile(&self, q: f64) -> u64 {
        assert!(self.n > 0, "quantile of an empty histogram");
        let rank = ((self.n - 1) as f64 * q).round() as u64;
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let (lo, width) = Self::bounds(b);
                return (lo + (width - 1) / 2).min(self.max);
            }
        }
        self.max
    }

    /// `{"n", "p50", "p99", "p999", "max"}` (quantiles `null` when empty).
    fn summary(&self) -> Value {
        let q = |q: f64| (self.n > 0).then(|| self.quantile(q));
        json!({"n": self.n, "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": self.max})
    }

    /// The sparse JSON form sent by a child: `[[bucket, count], ...]`.
    fn to_json(&self) -> Value {
        let buckets: Vec<Value> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(b, &c)| json!([b, c]))
            .collect();
        json!({"max": self.max, "buckets": buckets})
    }

    /// Parses [`Hist::to_json`]'s output.
    fn from_json(v: &Value) -> Hist {
        let mut h = Hist::new();
        for pair in v["buckets"].as_array().expect("histogram buckets") {
            let b = pair[0].as_u64().expect("bucket") as usize;
            let c = pair[1].as_u64().expect("count");
            h.counts[b] += c;
            h.n += c;
        }
        h.max = v["max"].as_u64().expect("histogram max");
        h
    }
}

/// Kinds of calls, each with its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `get` of the never-expiring key (plain phase).
    Plain,
    /// A fresh cached value.
    Fresh,
    /// A stale value served while a thread of the same process
    /// regenerates.
    StaleHere,
    /// A stale value served while another process regenerates.
    StaleElsewhere,
    /// This call ran the creator.
    Created,
    /// The first value, created after the call began: the call blocked
    /// on the creator.
    Waited,
}

impl Class {
    /// Every class, in histogram order.
    const ALL: [Class; 6] = [
        Class::Plain,
        Class::Fresh,
        Class::StaleHere,
        Class::StaleElsewhere,
        Class::Created,
        Class::Waited,
    ];

    /// The class's name in result lines and tables.
    fn name(self) -> &'static str {
        match self {
            Class::Plain => "plain",
            Class::Fresh => "fresh",
            Class::StaleHere => "stale_here",
            Class::StaleElsewhere => "stale_elsewhere",
            Class::Created => "created",
            Class::Waited => "waited",
        }
    }
}

/// One histogram per [`Class`], indexed by `Class as usize`.
type Hists = Vec<Hist>;

/// A fresh set of histograms.
fn new_hists() -> Hists {
    Class::ALL.iter().map(|_| Hist::new()).collect()
}

/// Settings of a run.
#[derive(Clone, Debug)]
struct Config {
    /// `--test`: the smoke run.
    test: bool,
    /// Processes.
    procs: usize,
    /// Threads per process.
    threads: usize,
    /// Seconds per phase.
    secs: f64,
    /// The dogpile value's TTL.
    ttl_ms: u64,
    /// How long the creator sleeps.
    creator_ms: u64,
    /// Seconds from spawning the children to the first phase's start.
    lead: f64,
}

impl Config {
    /// Reads the knobs (see the module documentation).
    fn new() -> Config {
        let test = std::env::args().any(|a| a == "--test");
        if test {
            return Config {
                test,
                procs: 2,
                threads: 2,
                secs: 0.5,
                ttl_ms: 100,
                creator_ms: 20,
                lead: 0.3,
            };
        }
        let whole = |name: &str, default: usize| {
            let v = env_number(name, default as f64);
            assert!(
                v >= 1.0 && v.fract() == 0.0,
                "{name} must be a whole number ≥ 1, found {v}"
            );
            v as usize
        };
        let secs = env_number("SLOTCACHE_BENCH_DOGPILE_SECS", 5.0);
        assert!(secs > 0.0, "SLOTCACHE_BENCH_DOGPILE_SECS must be > 0");
        Config {
            test,
            procs: whole("SLOTCACHE_BENCH_DOGPILE_PROCS", 2),
            threads: whole("SLOTCACHE_BENCH_DOGPILE_THREADS", 4),
            secs,
            ttl_ms: 200,
            creator_ms: 50,
            lead: 1.0,
        }
    }
}

/// A child's assignment, passed to it as JSON in [`CHILD_ENV`].
#[derive(Clone, Debug)]
struct Spec {
    /// This process's number.
    index: usize,
    /// Threads to run.
    threads: usize,
    /// Start of the plain phase, wall-clock ns.
    plain_start_ns: u64,
    /// Start of the dogpile phase, wall-clock ns.
    dogpile_start_ns: u64,
    /// Length of each phase in ns.
    phase_ns: u64,
    /// The dogpile value's TTL.
    ttl_ms: u64,
    /// How long the creator sleeps.
    creator_ms: u64,
}

impl Spec {
    /// The JSON form.
    fn to_json(&self) -> Value {
        json!({
            "index": self.index,
            "threads": self.threads,
            "plain_start_ns": self.plain_start_ns,
            "dogpile_start_ns": self.dogpile_start_ns,
            "phase_ns": self.phase_ns,
            "ttl_ms": self.ttl_ms,
            "creator_ms": self.creator_ms,
        })
    }

    /// Parses [`Spec::to_json`]'s output.
    fn from_json(text: &str) -> Spec {
        let v: Value = serde_json::from_str(text).expect("the child spec is JSON");
        let u = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("child spec: {k} missing in {text}"))
        };
        Spec {
            index: u("index") as usize,
            threads: u("threads") as usize,
            plain_start_ns: u("plain_start_ns"),
            dogpile_start_ns: u("dogpile_start_ns"),
            phase_ns: u("phase_ns"),
            ttl_ms: u("ttl_ms"),
            creator_ms: u("creator_ms"),
        }
    }
}

/// What the threads of one child process share.
#[derive(Default)]
struct ProcState {
    /// Creator runs in this process.
    creator_calls: AtomicU64,
    /// Creators of this process running now.
    creating: AtomicU64,
    /// Per creator run: the generation it created, and whether the value it
    /// replaced was still fresh (it should not have run).
    created: Mutex<Vec<(u64, bool)>>,
}

/// What one thread did.
struct ThreadOut {
    /// Latencies per class.
    hists: Hists,
    /// How many times a generation older than one already seen came back.
    regressions: u64,
    /// Fresh hits of a value (after the first) created during the call.
    late_fresh: u64,
}

/// One thread of a child: the plain phase, then the dogpile phase.
fn thread_main(cache: &Cache, spec: &Spec, thread: u32, state: &ProcState) -> ThreadOut {
    let mut hists = new_hists();
    let what = format!("process {} thread {thread}", spec.index);

    // Untimed warm-up: the thread's first read claims its reader slot
    // (locks, a file lock) and faults the pages in.
    for _ in 0..1000 {
        let g = cache.get::<Report>(PLAIN_KEY).expect("get");
        assert!(g.is_some(), "{what}: the plain key is missing");
    }

    // Plain hits on the never-expiring key.
    wait_until(spec.plain_start_ns);
    let end = spec.plain_start_ns + spec.phase_ns;
    'plain: loop {
        for _ in 0..CHECK_EVERY {
            let t0 = Instant::now();
            let g = cache
                .get::<Report>(PLAIN_KEY)
                .expect("get")
                .expect("the plain key is present");
            let seen = Seen::archived(&g);
            drop(g);
            let ns = t0.elapsed().as_nanos() as u64;
            hists[Class::Plain as usize].record(ns);
            seen.check(&what);
            assert_eq!(seen.generation, 0, "{what}: the plain key changed");
        }
        if wall_ns() >= end {
            break 'plain;
        }
    }

    // Everybody on the expiring key.
    let opts = CreateOptions::new().ttl(Some(Duration::from_millis(spec.ttl_ms)));
    let creator_sleep = Duration::from_millis(spec.creator_ms);
    let creator = || {
        state.creator_calls.fetch_add(1, Ordering::Relaxed);
        state.creating.fetch_add(1, Ordering::Relaxed);
        let (prev, prev_fresh) = match cache.get_stale::<Report>(DOGPILE_KEY).expect("get_stale") {
            Some(g) => (g.generation.to_native(), !g.meta().is_stale()),
            None => (0, false),
        };
        std::thread::sleep(creator_sleep);
        let generation = prev + 1;
        state
            .created
            .lock()
            .expect("not poisoned")
            .push((generation, prev_fresh));
        state.creating.fetch_sub(1, Ordering::Relaxed);
        Report::new(generation, thread)
    };
    wait_until(spec.dogpile_start_ns);
    let end = spec.dogpile_start_ns + spec.phase_ns;
    let mut last = 0u64;
    let mut regressions = 0u64;
    let mut late_fresh = 0u64;
    loop {
        let began = wall_ns();
        if began >= end {
            break;
        }
        let t0 = Instant::now();
        let f = cache
            .get_or_create_opt(DOGPILE_KEY, &opts, creator)
            .unwrap_or_else(|e| panic!("{what}: get_or_create: {e}"));
        // Copied out before the guard goes; classified after the clock stops.
        let (created, stale, meta) = (f.is_created(), f.is_stale(), f.meta());
        let seen = match &f {
            Fetched::Cached(g) => Seen::archived(g),
            Fetched::Created(v) => Seen::owned(v),
        };
        drop(f);
        let ns = t0.elapsed().as_nanos() as u64;
        let class = match meta {
            None => {
                assert!(created, "{what}: a value neither cached nor created");
                Class::Created
            }
            Some(_) if stale => {
                // The creator's lock outlives the closure by the store: a
                // call in that window counts as "elsewhere".
                if state.creating.load(Ordering::Relaxed) > 0 {
                    Class::StaleHere
                } else {
                    Class::StaleElsewhere
                }
            }
            Some(m) => {
                let created_ns = m
                    .created()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |c| c.as_nanos() as u64);
                if created_ns < began {
                    Class::Fresh
                } else if seen.generation == 1 {
                    // The first value did not exist when the call began.
                    Class::Waited
                } else {
                    // A later value created during the call: the call was
                    // preempted across the store, or won the lock just as
                    // the creator released it and re-read. A fresh hit.
                    late_fresh += 1;
                    Class::Fresh
                }
            }
        };
        hists[class as usize].record(ns);
        seen.check(&what);
        if seen.generation < last {
            regressions += 1;
            eprintln!(
                "slotcache bench: {what}: generation {} after generation {last} ({class:?})",
                seen.generation
            );
        }
        last = last.max(seen.generation);
    }
    ThreadOut {
        hists,
        regressions,
        late_fresh,
    }
}

/// The child side: runs the threads and prints one result line.
fn child(spec_json: &str) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let spec = Spec::from_json(spec_json);
    let path = std::env::var_os(PATH_ENV).expect("the cache path in the environment");
    let cache = Cache::open(
        &path,
        Options::new().create(false).lock_timeout(LOCK_TIMEOUT),
    )
    .expect("open the cache");
    let state = ProcState::default();
    let outs: Vec<ThreadOut> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|t| {
                let (cache, spec, state) = (&cache, &spec, &state);
                s.spawn(move || thread_main(cache, spec, t as u32, state))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a thread panicked"))
            .collect()
    });
    let mut hists = new_hists();
    let mut regressions = 0;
    let mut late_fresh = 0;
    for o in &outs {
        for (a, b) in hists.iter_mut().zip(&o.hists) {
            a.merge(b);
        }
        regressions += o.regressions;
        late_fresh += o.late_fresh;
    }
    let created = state.created.into_inner().expect("not poisoned");
    let hists: serde_json::Map<String, Value> = Class::ALL
        .iter()
        .map(|&c| (c.name().to_string(), hists[c as usize].to_json()))
        .collect();
    let result = json!({
        "creator_calls": state.creator_calls.load(Ordering::Relaxed),
        "created": created.iter().map(|&(g, fresh)| json!([g, fresh])).collect::<Vec<_>>(),
        "regressions": regressions,
        "late_fresh": late_fresh,
        "hists": hists,
    });
    println!("{RESULT_PREFIX}{result}");
}

/// Starts one child per spec on the cache file at `path`.
fn spawn_children(path: &Path, specs: &[Spec]) -> Children {
    let mut kids = Children::default();
    for s in specs {
        let spec = s.to_json().to_string();
        let env = [(CHILD_ENV, spec.as_ref()), (PATH_ENV, path.as_os_str())];
        kids.spawn(format!("process {}", s.index), &env);
    }
    kids
}

/// Everything the children reported, merged.
struct Merged {
    /// Latencies per class.
    hists: Hists,
    /// Creator runs, as the processes counted them.
    creator_calls: u64,
    /// Creator runs per generation number created.
    generations: BTreeMap<u64, u64>,
    /// Creator runs that replaced a value that was still fresh.
    redundant: u64,
    /// Generations that went backwards in some thread.
    regressions: u64,
    /// Fresh hits of a value (after the first) created during the call.
    late_fresh: u64,
}

impl Merged {
    /// Merges the children's result lines.
    fn of(results: &[Value]) -> Merged {
        let mut m = Merged {
            hists: new_hists(),
            creator_calls: 0,
            generations: BTreeMap::new(),
            redundant: 0,
            regressions: 0,
            late_fresh: 0,
        };
        for r in results {
            m.creator_calls += r["creator_calls"].as_u64().expect("creator_calls");
            m.regressions += r["regressions"].as_u64().expect("regressions");
            m.late_fresh += r["late_fresh"].as_u64().expect("late_fresh");
            for c in r["created"].as_array().expect("created") {
                *m.generations
                    .entry(c[0].as_u64().expect("generation"))
                    .or_default() += 1;
                m.redundant += c[1].as_bool().expect("fresh flag") as u64;
            }
            for &class in &Class::ALL {
                m.hists[class as usize].merge(&Hist::from_json(&r["hists"][class.name()]));
            }
        }
        m
    }

    /// The histogram of `class`.
    fn hist(&self, class: Class) -> &Hist {
        &self.hists[class as usize]
    }

    /// Every stale value served, wherever the creator ran.
    fn stale(&self) -> Hist {
        let mut h = self.hist(Class::StaleHere).clone();
        h.merge(self.hist(Class::StaleElsewhere));
        h
    }

    /// The p99 of `h`, if it has samples.
    fn p99(h: &Hist) -> Option<u64> {
        (h.n > 0).then(|| h.quantile(0.99))
    }

    /// Stale p99 over plain-hit p99, and over fresh-hit p99.
    fn ratios(&self) -> (Option<f64>, Option<f64>) {
        let stale = Self::p99(&self.stale());
        (
            ratio(stale, Self::p99(self.hist(Class::Plain))),
            ratio(stale, Self::p99(self.hist(Class::Fresh))),
        )
    }

    /// Distinct generations created: the expiries handled.
    fn expiries(&self) -> u64 {
        self.generations.len() as u64
    }

    /// Creator runs beyond one per generation: concurrent duplicates.
    fn duplicates(&self) -> u64 {
        self.generations.values().map(|&n| n - 1).sum()
    }
}

/// `a / b` for two optional quantiles, `None` when either is missing.
fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    Some(a? as f64 / b?.max(1) as f64)
}

/// Prints the latency table and the creator counts.
fn print_report(cfg: &Config, m: &Merged, stats: &slotcache::Stats) {
    println!(
        "\ndogpile: {} processes × {} threads, {} s per phase, TTL {} ms, creator {} ms",
        cfg.procs, cfg.threads, cfg.secs, cfg.ttl_ms, cfg.creator_ms
    );
    let expected = cfg.secs * 1e3 / (cfg.ttl_ms + cfg.creator_ms) as f64;
    println!(
        "creator calls {}, expiries (distinct generations created) {}, calls per expiry {:.3} \
         (ideal 1.0); about {expected:.1} expiries expected",
        m.creator_calls,
        m.expiries(),
        m.creator_calls as f64 / m.expiries().max(1) as f64
    );
    println!(
        "duplicate creators (same generation twice) {}, creators that replaced a fresh value {}; \
         file counters: creates {}, stale served {}, waits {}, lock timeouts {}",
        m.duplicates(),
        m.redundant,
        stats.creates,
        stats.stale_served,
        stats.waits,
        stats.lock_timeouts
    );
    println!(
        "\n{:>15} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "class", "n", "p50 ns", "p99 ns", "p99.9 ns", "max ns"
    );
    let cell = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let stale = m.stale();
    let rows = Class::ALL
        .iter()
        .map(|&c| (c.name(), m.hist(c)))
        .chain([("stale", &stale)]);
    for (name, h) in rows {
        let q = |q: f64| (h.n > 0).then(|| h.quantile(q));
        println!(
            "{:>15} {:>10} {:>10} {:>10} {:>10} {:>12}",
            name,
            h.n,
            cell(q(0.5)),
            cell(q(0.99)),
            cell(q(0.999)),
            h.max
        );
    }
    println!(
        "(fresh includes {} hits of a value created during the call: preempted across the \
         store, or the lock won just after the creator released it)",
        m.late_fresh
    );
    let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}"));
    let (plain, fresh) = m.ratios();
    println!(
        "\nstale p99 / plain-hit p99 = {} (target ≤ 5), stale p99 / fresh-hit p99 = {}\n",
        fmt(plain),
        fmt(fresh)
    );
}

/// The results as the JSON `write_result` stores.
fn results_json(cfg: &Config, m: &Merged) -> Value {
    let (over_plain, over_fresh) = m.ratios();
    json!({
        "procs": cfg.procs,
        "threads": cfg.threads,
        "secs": cfg.secs,
        "ttl_ms": cfg.ttl_ms,
        "creator_ms": cfg.creator_ms,
        "expiries": m.expiries(),
        "creator_calls": m.creator_calls,
        "creator_calls_per_expiry": m.creator_calls as f64 / m.expiries().max(1) as f64,
        "stale_ns": m.stale().summary(),
        "fresh_ns": m.hist(Class::Fresh).summary(),
        "plain_hit_ns": m.hist(Class::Plain).summary(),
        "stale_p99_over_plain_p99": over_plain,
        "stale_p99_over_fresh_p99": over_fresh,
    })
}

/// Checks what must hold whatever the timing; panics otherwise. Warns about
/// what depends on timing.
fn check(cfg: &Config, m: &Merged, stats: &slotcache::Stats) {
    let n = |c: Class| m.hist(c).n;
    let threads = (cfg.procs * cfg.threads) as u64;
    assert!(
        n(Class::Plain) >= threads,
        "too few plain hits: {}",
        n(Class::Plain)
    );
    assert!(
        n(Class::Created) >= 1,
        "nobody ran the creator in the dogpile phase"
    );
    assert_eq!(
        n(Class::Created),
        m.creator_calls,
        "calls that returned Created vs creator runs counted by the processes"
    );
    assert_eq!(
        m.regressions, 0,
        "some thread saw an older generation after a newer one"
    );
    assert!(
        n(Class::Fresh) > 0,
        "no fresh hit in the dogpile phase: the creator is slower than the TTL?"
    );
    if stats.creates != m.creator_calls {
        eprintln!(
            "slotcache bench: note: the file counts {} creates, the processes {} creator calls",
            stats.creates, m.creator_calls
        );
    }
    let stale = m.stale().n;
    if stats.stale_served != stale {
        eprintln!(
            "slotcache bench: note: the file counts {} stale values served, the threads {stale}",
            stats.stale_served
        );
    }
    if stale == 0 {
        eprintln!("slotcache bench: warning: no stale value was served (machine too busy?)");
    }
    if m.duplicates() > 0 || m.redundant > 0 {
        eprintln!(
            "slotcache bench: WARNING: dogpile protection let extra creators run: {} duplicate \
             generations, {} creators that replaced a fresh value",
            m.duplicates(),
            m.redundant
        );
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let cfg = Config::new();
    if cfg.test {
        Hist::self_check();
    }
    let t = Instant::now();
    eprintln!(
        "slotcache bench: dogpile{}: {} processes × {} threads, {} s per phase",
        if cfg.test { " (smoke test)" } else { "" },
        cfg.procs,
        cfg.threads,
        cfg.secs
    );
    let dir = BenchDir::new("dogpile");
    let path = dir.path().join("dogpile.cache");
    let threads = (cfg.procs * cfg.threads) as u32;
    let cache = Cache::open(
        &path,
        Options::new()
            .capacity(8 << 20)
            .reader_slots((threads + 16).max(256)),
    )
    .expect("create the cache");
    cache
        .set_opt(
            PLAIN_KEY,
            &Report::new(0, 0),
            &WriteOptions::new().ttl(None),
        )
        .expect("store the plain key");

    let phase_ns = (cfg.secs * 1e9) as u64;
    let plain_start_ns = wall_ns() + (cfg.lead * 1e9) as u64;
    let specs: Vec<Spec> = (0..cfg.procs)
        .map(|index| Spec {
            index,
            threads: cfg.threads,
            plain_start_ns,
            dogpile_start_ns: plain_start_ns + phase_ns + 200_000_000,
            phase_ns,
            ttl_ms: cfg.ttl_ms,
            creator_ms: cfg.creator_ms,
        })
        .collect();
    let results: Vec<Value> = spawn_children(&path, &specs)
        .finish(RESULT_PREFIX)
        .iter()
        .map(|l| serde_json::from_str(l).expect("the result line is JSON"))
        .collect();
    let merged = Merged::of(&results);
    let stats = cache.stats();
    print_report(&cfg, &merged, &stats);
    check(&cfg, &merged, &stats);
    eprintln!("slotcache bench: dogpile done in {:.1?}", t.elapsed());
    if !cfg.test {
        write_result("dogpile", &results_json(&cfg, &merged));
    }
}
