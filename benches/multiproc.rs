//! Multi-process scaling of slotcache: many processes reading and writing
//! one cache file at the same time.
//!
//! # What it measures
//!
//! One cache file holds [`KEYS`] (1M) keys with 100-byte values, sized with
//! [`roomy_options`] so nothing is ever evicted by the population. Then, one
//! phase at a time, worker processes (this same executable, started again)
//! hammer it for a fixed duration:
//!
//! - **Readers**: `n` reader processes, each doing `get::<Raw>` of uniformly
//!   random keys (its own precomputed permutation of all keys, a different
//!   seed per process) and checking every value it gets (length, the key's
//!   index in the first 8 bytes, the fixed pattern after). Run without and
//!   with one concurrent writer process that overwrites uniformly random
//!   keys with `set` (`Raw`) as fast as it can (same bytes, so readers can
//!   still check values); the writer's own throughput is reported too. The
//!   speedup is the aggregate gets/s over the same configuration with one
//!   reader.
//! - **Writers**: `w` writer processes doing `set` (`Raw`) overwrites of
//!   100-byte values, in three key assignments:
//!   - `disjoint`: writer `i` writes only keys whose
//!     `cache.key_placement(key).stripe % w == i` (each stripe has one
//!     writer: no lock contention, the best case);
//!   - `random`: every writer writes keys of all stripes (writers meet on
//!     stripe locks at random);
//!   - `one_stripe`: every writer writes only keys of stripe 0 (all of them
//!     contend for one lock: the worst case).
//!
//! Process counts are 1, 2, 4, … (doubling) and `N` itself, where `N` is
//! `SLOTCACHE_BENCH_PROCS` (`disjoint` skips counts above the file's
//! stripe count, 64).
//!
//! # Method
//!
//! - Setup in the parent: create the file, populate it with
//!   `set_many` (`Raw`) (batches of 4096), assert every key is live and
//!   nothing was evicted, read every key once (so the index's "visited"
//!   bits are set before any measurement instead of during the first one),
//!   then `flush`.
//! - Each phase starts all its processes together. A child gets its role and
//!   parameters in the `SLOTCACHE_BENCH_MULTIPROC_CHILD` environment
//!   variable (JSON; the file path in `SLOTCACHE_BENCH_MULTIPROC_PATH`),
//!   including a start time in wall-clock nanoseconds about a second in
//!   the future. It opens the cache, precomputes its key stream, then runs
//!   its workload as warm-up until the start time, and measured from the
//!   start time for the phase's duration (it checks the clock every 64
//!   operations). It prints one result line, which the parent parses.
//! - A child's rate is its measured operations divided by the time from
//!   the common start to its stop; aggregate throughput is the sum over the
//!   phase's processes (≈ total operations / duration). A child whose setup
//!   overran the start time only counts from when it was ready (its rate is
//!   diluted accordingly) and the parent warns about it.
//! - Write streams walk permutations, so a key is rewritten once per lap
//!   and its previous record is dead by the time eviction reaches it. The
//!   file is populated in the order of the readers' writer's permutation,
//!   and that writer continues the permutation from phase to phase (the
//!   parent passes on where the previous one stopped), so it never evicts
//!   a live key and readers should never miss: a miss without a writer
//!   fails the benchmark, a miss with a writer is reported. The writers of
//!   a writer phase walk a new permutation of their keys (several writers
//!   of the same keys from evenly spaced starting points); where a phase's
//!   order differs from the last one's, a key's old record can reach the
//!   tail of its ring while still live, and an unread one is then evicted;
//!   so can a key of writers that drift towards each other on one
//!   permutation (their gaps between rewrites of a key grow past the ring:
//!   the one-stripe phases with several writers evict the most). Evictions
//!   per phase are reported; they are part of a write's cost in a full
//!   cache anyway.
//! - The parent waits for every child and panics if one fails; a drop guard
//!   kills and reaps the children if the parent panics, and on Linux a
//!   child is killed when its parent dies.
//!
//! # Knobs
//!
//! - `SLOTCACHE_BENCH_PROCS`: the largest process count `N` (default: the
//!   number of CPUs, at least 2), for both the reader and the writer
//!   phases, so the benchmark runs unchanged on a larger machine (counts
//!   1, 2, 4, … and `N`).
//! - `SLOTCACHE_BENCH_STRIPES`: the file's stripe count (default: the
//!   default for its capacity, 64); raise it with `N` (e.g. to `4 × N`) so
//!   that `disjoint` runs at every count and `random` writers meet on a
//!   stripe as rarely as on a small machine.
//! - `SLOTCACHE_BENCH_SECS`: measured seconds per phase (default 3).
//! - `TMPDIR`: where the cache file lives ([`BenchDir`]);
//!   `TMPDIR=/dev/shm` puts it on tmpfs, away from disk writeback.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench multiproc              # the full run
//! cargo bench --bench multiproc -- --test    # smoke test: 20,000 keys, 2 processes,
//!                                            # 0.1 s per phase, no results file
//! SLOTCACHE_BENCH_PROCS=8 SLOTCACHE_BENCH_SECS=5 cargo bench --bench multiproc
//! ```
//!
//! Run time: setup (a few seconds), then 5 × (number of process counts)
//! phases of about `SECS + 1.1` seconds each: about 45 s with the defaults
//! on 2 CPUs (10 phases), about 2 minutes for `N = 16` (25 phases). The
//! smoke test takes about 5 s.
//!
//! Results: a table on stdout (with diagnostics: misses, evictions,
//! reinserts, pin waits, writes that failed with `Error::Pinned`) and
//! `target/slotcache-bench/multiproc.json`:
//!
//! ```text
//! {"procs_max": N, "secs": D, "cores": C,
//!  "readers": [{"procs": n, "writer": bool, "gets_per_sec": f, "speedup": f,
//!               "writer_sets_per_sec": f | null}, ...],
//!  "writers": [{"procs": w, "mode": "disjoint" | "random" | "one_stripe",
//!               "sets_per_sec": f}, ...]}
//! ```
//!
//! # Caveats
//!
//! - Processes are not pinned to CPUs. With more busy processes than CPUs
//!   the scheduler time-slices them: on 2 CPUs, 2 readers plus a writer are
//!   3 busy processes, so "with a writer" also measures CPU sharing, and no
//!   speedup beyond the CPU count is possible. Compare process counts up to
//!   `cores` (reported) only.
//! - With the file on a disk-backed file system, writers dirty pages of the
//!   shared mapping; the kernel's writeback and the page faults that follow
//!   it (pages are write-protected again once clean) add noise. tmpfs has
//!   none.
//! - Other load on the machine shows up directly in these numbers.

use serde_json::{json, Value};
use slotcache::{Cache, Error, Raw};
use slotcache_bench::{
    key, permutation, roomy_options, value, write_result, BenchDir, Children, Key, KEYS, SEED,
    VALUE_LEN,
};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The environment variable that makes this executable a child process; it
/// holds the child's [`Spec`] as JSON.
const CHILD_ENV: &str = "SLOTCACHE_BENCH_MULTIPROC_CHILD";
/// The environment variable that gives a child the cache file's path.
const PATH_ENV: &str = "SLOTCACHE_BENCH_MULTIPROC_PATH";
/// What a child's result line starts with (the rest is JSON).
const RESULT_PREFIX: &str = "slotcache-multiproc-result ";
/// Operations between two looks at the clock in the timed loops.
const CHECK_EVERY: u64 = 64;
/// Keys per `set_many` (`Raw`) call when populating.
const POPULATE_BATCH: usize = 4096;
/// Seed of the write permutations (readers derive theirs from [`SEED`]).
const WRITE_SEED: u64 = SEED ^ 0x0057_0217_E000_0001;
/// A late child is worth a warning when it missed the start by more than
/// this fraction of the phase.
const LATE_WARNING: f64 = 0.05;

/// Settings of a run, from the environment and the arguments.
#[derive(Clone, Debug)]
struct Config {
    /// `--test`: the smoke run.
    test: bool,
    /// The largest process count, `N`.
    procs: usize,
    /// Measured seconds per phase, `D`.
    secs: f64,
    /// Keys in the cache file.
    keys: usize,
    /// Seconds from spawning a phase's children to its start: their setup
    /// and warm-up.
    lead: f64,
    /// `std::thread::available_parallelism`.
    cores: usize,
    /// Stripes of the cache file (`SLOTCACHE_BENCH_STRIPES`; 0: the
    /// default for its capacity, 64).
    stripes: u32,
}

impl Config {
    /// Reads the knobs (see the module documentation).
    fn new() -> Config {
        let test = std::env::args().any(|a| a == "--test");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if test {
            return Config {
                test,
                procs: 2,
                secs: 0.1,
                keys: 20_000,
                lead: 0.3,
                cores,
                stripes: 0,
            };
        }
        let procs = env_number("SLOTCACHE_BENCH_PROCS", cores.max(2) as f64);
        let secs = env_number("SLOTCACHE_BENCH_SECS", 3.0);
        assert!(
            procs >= 1.0 && procs.fract() == 0.0,
            "SLOTCACHE_BENCH_PROCS must be a whole number ≥ 1, found {procs}"
        );
        assert!(secs > 0.0, "SLOTCACHE_BENCH_SECS must be > 0, found {secs}");
        let stripes = env_number("SLOTCACHE_BENCH_STRIPES", 0.0);
        assert!(
            (0.0..=4096.0).contains(&stripes) && stripes.fract() == 0.0,
            "SLOTCACHE_BENCH_STRIPES must be a whole number in 1..=4096 (0: default), found {stripes}"
        );
        Config {
            test,
            procs: procs as usize,
            secs,
            keys: KEYS,
            lead: 1.0,
            cores,
            stripes: stripes as u32,
        }
    }

    /// The process counts to measure: 1, 2, 4, … below `N`, then `N`.
    fn counts(&self) -> Vec<usize> {
        let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n < self.procs)
            .collect();
        v.push(self.procs);
        v
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

/// Wall-clock time in nanoseconds since the Unix epoch: the one clock all
/// processes share for start and stop times.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as u64
}

/// What a child process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `get::<Raw>` of random keys, checking every value.
    Reader,
    /// `set` (`Raw`) overwrites.
    Writer,
}

/// Which keys a writer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Keys of every stripe (readers always use this).
    Random,
    /// Keys of the stripes `s` with `s % count == index`.
    Disjoint,
    /// Keys of stripe 0 only.
    OneStripe,
}

impl Mode {
    /// The name used in the JSON results and the child spec.
    fn name(self) -> &'static str {
        match self {
            Mode::Random => "random",
            Mode::Disjoint => "disjoint",
            Mode::OneStripe => "one_stripe",
        }
    }

    /// The mode called `name`.
    fn from_name(name: &str) -> Mode {
        match name {
            "random" => Mode::Random,
            "disjoint" => Mode::Disjoint,
            "one_stripe" => Mode::OneStripe,
            other => panic!("unknown writer mode {other:?}"),
        }
    }
}

/// A child's assignment, passed to it as JSON in [`CHILD_ENV`].
#[derive(Clone, Debug)]
struct Spec {
    /// Reader or writer.
    role: Role,
    /// Which keys a writer writes ([`Mode::Random`] for readers).
    mode: Mode,
    /// Keys in the file (`0..keys` are present).
    keys: usize,
    /// This child's number among the `count` children of its role.
    index: usize,
    /// Children of this role in the phase.
    count: usize,
    /// Seed of the child's permutation.
    seed: u64,
    /// Where in its stream the child starts (before the per-writer spacing).
    offset: u64,
    /// The common start, in wall-clock ns.
    start_ns: u64,
    /// Measured seconds.
    secs: f64,
}

impl Spec {
    /// The JSON form.
    fn to_json(&self) -> Value {
        json!({
            "role": match self.role { Role::Reader => "reader", Role::Writer => "writer" },
            "mode": self.mode.name(),
            "keys": self.keys,
            "index": self.index,
            "count": self.count,
            "seed": self.seed,
            "offset": self.offset,
            "start_ns": self.start_ns,
            "secs": self.secs,
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
            role: match v["role"].as_str() {
                Some("reader") => Role::Reader,
                Some("writer") => Role::Writer,
                other => panic!("child spec: bad role {other:?}"),
            },
            mode: Mode::from_name(v["mode"].as_str().expect("child spec: mode")),
            keys: u("keys") as usize,
            index: u("index") as usize,
            count: u("count") as usize,
            seed: u("seed"),
            offset: u("offset"),
            start_ns: u("start_ns"),
            secs: v["secs"].as_f64().expect("child spec: secs"),
        }
    }
}

/// What a child reports on its result line.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    /// Operations in the measured window.
    ops: u64,
    /// Operations including the warm-up (the writers' stream position moves
    /// by this much).
    total_ops: u64,
    /// Seconds from the common start to the child's stop.
    secs: f64,
    /// Seconds by which the child's setup overran the common start.
    late: f64,
    /// Reads that found nothing (warm-up included).
    misses: u64,
    /// Writes that failed with `Error::Pinned` (warm-up included).
    pinned: u64,
}

impl Outcome {
    /// Operations per second over the common window.
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }

    /// The JSON form (the result line).
    fn to_json(self) -> Value {
        json!({
            "ops": self.ops,
            "total_ops": self.total_ops,
            "secs": self.secs,
            "late": self.late,
            "misses": self.misses,
            "pinned": self.pinned,
        })
    }

    /// Parses [`Outcome::to_json`]'s output.
    fn from_json(text: &str) -> Outcome {
        let v: Value = serde_json::from_str(text).expect("the result line is JSON");
        let u = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("result: {k} in {text}"))
        };
        let f = |k: &str| {
            v[k].as_f64()
                .unwrap_or_else(|| panic!("result: {k} in {text}"))
        };
        Outcome {
            ops: u("ops"),
            total_ops: u("total_ops"),
            secs: f("secs"),
            late: f("late"),
            misses: u("misses"),
            pinned: u("pinned"),
        }
    }
}

/// A precomputed request stream: key indices and their keys, in visiting
/// order, so the timed loop only walks two arrays.
struct Walk {
    /// Key indices.
    idx: Vec<u32>,
    /// `key(idx[i])`.
    keys: Vec<Key>,
}

impl Walk {
    /// The keys `chosen`, visited in the order of a permutation of them.
    fn over(chosen: &[u32], seed: u64) -> Walk {
        assert!(!chosen.is_empty(), "a child has no keys to work on");
        let idx: Vec<u32> = permutation(chosen.len(), seed)
            .into_iter()
            .map(|p| chosen[p as usize])
            .collect();
        let keys = idx.iter().map(|&i| key(i as usize)).collect();
        Walk { idx, keys }
    }
}

/// Runs `op` on successive stream positions (wrapping at `len`): as warm-up
/// until the spec's start time, then measured for its duration.
fn drive(spec: &Spec, len: usize, start_pos: usize, mut op: impl FnMut(usize)) -> Outcome {
    let start = spec.start_ns;
    let end = start + (spec.secs * 1e9) as u64;
    let ready = wall_ns();
    let mut pos = start_pos % len;
    let mut step = |pos: &mut usize| {
        for _ in 0..CHECK_EVERY {
            op(*pos);
            *pos += 1;
            if *pos == len {
                *pos = 0;
            }
        }
    };
    let mut warm = 0u64;
    while wall_ns() < start {
        step(&mut pos);
        warm += CHECK_EVERY;
    }
    let mut ops = 0u64;
    let stop = loop {
        step(&mut pos);
        ops += CHECK_EVERY;
        let now = wall_ns();
        if now >= end {
            break now;
        }
    };
    Outcome {
        ops,
        total_ops: warm + ops,
        secs: (stop - start) as f64 / 1e9,
        late: ready.saturating_sub(start) as f64 / 1e9,
        ..Outcome::default()
    }
}

/// The child side: does what [`CHILD_ENV`] says and prints one result line.
fn child(spec_json: &str) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let spec = Spec::from_json(spec_json);
    let path = std::env::var_os(PATH_ENV).expect("the cache path in the environment");
    // Geometry comes from the file; the options only matter for creation.
    let cache =
        Cache::open(&path, slotcache::Options::new().create(false)).expect("open the cache");
    let outcome = match spec.role {
        Role::Reader => read(&cache, &spec),
        Role::Writer => write(&cache, &spec),
    };
    println!("{RESULT_PREFIX}{}", outcome.to_json());
}

/// A reader child: `get::<Raw>` of its permutation of all keys, every value
/// checked; a wrong value panics (the parent then fails).
fn read(cache: &Cache, spec: &Spec) -> Outcome {
    let all: Vec<u32> = (0..spec.keys as u32).collect();
    let walk = Walk::over(&all, spec.seed);
    let expected = value(0, VALUE_LEN);
    let mut misses = 0u64;
    let mut out = drive(spec, walk.idx.len(), 0, |p| {
        let i = walk.idx[p];
        match cache.get::<Raw>(walk.keys[p]) {
            Ok(Some(g)) => {
                let ok = g.len() == VALUE_LEN
                    && g[..8] == (i as u64).to_le_bytes()
                    && g[8..] == expected[8..];
                assert!(ok, "key {i}: wrong value {:?}", &g[..]);
            }
            Ok(None) => misses += 1,
            Err(e) => panic!("get::<Raw> of key {i}: {e}"),
        }
    });
    out.misses = misses;
    out
}

/// A writer child: `set` (`Raw`) overwrites (the key's own value, so readers
/// can check it) of its share of the keys.
fn write(cache: &Cache, spec: &Spec) -> Outcome {
    let chosen: Vec<u32> = (0..spec.keys as u32)
        .filter(|&i| match spec.mode {
            Mode::Random => true,
            Mode::Disjoint => {
                cache.key_placement(key(i as usize)).stripe as usize % spec.count == spec.index
            }
            Mode::OneStripe => cache.key_placement(key(i as usize)).stripe == 0,
        })
        .collect();
    let walk = Walk::over(&chosen, spec.seed);
    let len = walk.idx.len();
    // Writers of one permutation start evenly spaced along it.
    let start_pos = spec.offset as usize % len
        + match spec.mode {
            Mode::Disjoint => 0,
            _ => spec.index * len / spec.count,
        };
    let mut buf = value(0, VALUE_LEN);
    let mut pinned = 0u64;
    let mut out = drive(spec, len, start_pos, |p| {
        let i = walk.idx[p];
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        match cache.set(walk.keys[p], &Raw(&buf)) {
            Ok(()) => {}
            Err(Error::Pinned { .. }) => pinned += 1,
            Err(e) => panic!("set of key {i}: {e}"),
        }
    });
    out.pinned = pinned;
    out
}

/// Starts one child per spec, all on the cache file at `path`.
fn spawn_children(path: &Path, specs: &[Spec]) -> Children {
    let mut kids = Children::default();
    for s in specs {
        let label = format!(
            "{} {}/{} ({})",
            match s.role {
                Role::Reader => "reader",
                Role::Writer => "writer",
            },
            s.index + 1,
            s.count,
            s.mode.name()
        );
        let spec = s.to_json().to_string();
        let env = [(CHILD_ENV, spec.as_ref()), (PATH_ENV, path.as_os_str())];
        kids.spawn(label, &env);
    }
    kids
}

/// Cache counters that tell whether a phase evicted anything.
#[derive(Clone, Copy, Debug)]
struct Counters {
    /// Entries evicted.
    evictions: u64,
    /// Entries copied forward on eviction (second chance).
    reinserts: u64,
    /// Writes that waited for a reader's pin.
    pin_waits: u64,
}

impl Counters {
    /// The file's counters now.
    fn of(cache: &Cache) -> Counters {
        let s = cache.stats();
        Counters {
            evictions: s.evictions,
            reinserts: s.reinserts,
            pin_waits: s.pin_waits,
        }
    }

    /// What happened since `before`.
    fn since(self, before: Counters) -> Counters {
        Counters {
            evictions: self.evictions - before.evictions,
            reinserts: self.reinserts - before.reinserts,
            pin_waits: self.pin_waits - before.pin_waits,
        }
    }
}

/// Runs one phase: starts `specs` (their start time filled in) together
/// and returns their outcomes and the file's counters over the phase.
fn phase(cfg: &Config, cache: &Cache, specs: &mut [Spec]) -> (Vec<Outcome>, Counters) {
    let before = Counters::of(cache);
    let start_ns = wall_ns() + (cfg.lead * 1e9) as u64;
    for s in specs.iter_mut() {
        s.start_ns = start_ns;
        s.secs = cfg.secs;
    }
    let outcomes: Vec<Outcome> = spawn_children(cache.path(), specs)
        .finish(RESULT_PREFIX)
        .iter()
        .map(|l| Outcome::from_json(l))
        .collect();
    for (s, o) in specs.iter().zip(&outcomes) {
        assert!(o.ops > 0, "a {:?} child did nothing: {o:?}", s.role);
        if o.late > LATE_WARNING * cfg.secs {
            eprintln!(
                "slotcache bench: warning: a {:?} child was ready {:.0} ms after the start \
                 (machine busy?); its rate only counts from then",
                s.role,
                o.late * 1e3
            );
        }
    }
    (outcomes, Counters::of(cache).since(before))
}

/// A spec with the parent's defaults; [`phase`] fills in the times.
fn spec(cfg: &Config, role: Role, mode: Mode, index: usize, count: usize, seed: u64) -> Spec {
    Spec {
        role,
        mode,
        keys: cfg.keys,
        index,
        count,
        seed,
        offset: 0,
        start_ns: 0,
        secs: cfg.secs,
    }
}

/// The seed of reader `index`'s permutation.
fn reader_seed(index: usize) -> u64 {
    SEED.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1))
}

/// Creates and populates the cache file, checks it, sets every key's
/// "visited" bit by reading it once, and flushes.
fn populate(cfg: &Config, path: &Path) -> Cache {
    let mut opts = roomy_options(cfg.keys, VALUE_LEN);
    if cfg.stripes > 0 {
        opts = opts.stripes(cfg.stripes);
    }
    let cache = Cache::open(path, opts).expect("create the cache");
    let info = cache.info();
    let t = Instant::now();
    // In the order the readers' writer will overwrite them, so that its
    // first lap finds every key's old record one lap behind, like every
    // later lap (see `reader_phases`).
    let mut batch: Vec<(Key, Raw)> = Vec::with_capacity(POPULATE_BATCH);
    for chunk in permutation(cfg.keys, WRITE_SEED).chunks(POPULATE_BATCH) {
        batch.clear();
        batch.extend(
            chunk
                .iter()
                .map(|&i| (key(i as usize), Raw(value(i as usize, VALUE_LEN)))),
        );
        cache
            .set_many(batch.iter().map(|(k, v)| (k, v)))
            .expect("populate");
    }
    let populated = t.elapsed();
    let st = cache.stats();
    assert_eq!(
        (st.entries, st.evictions, st.inserts),
        (cfg.keys as u64, 0, cfg.keys as u64),
        "the population does not fit: {st:?}"
    );
    let t = Instant::now();
    for &i in &permutation(cfg.keys, SEED) {
        let g = cache
            .get::<Raw>(key(i as usize))
            .expect("get")
            .expect("present");
        assert_eq!(&g[..], &value(i as usize, VALUE_LEN)[..], "key {i}");
    }
    let read = t.elapsed();
    let t = Instant::now();
    cache.flush().expect("flush");
    eprintln!(
        "slotcache bench: {} keys in a {} MiB file ({} stripes × {} segments of {} KiB): \
         populated in {populated:.2?}, read back in {read:.2?}, flushed in {:.2?}",
        cfg.keys,
        info.file_size >> 20,
        info.stripes,
        info.segments,
        info.segment_size >> 10,
        t.elapsed()
    );
    cache
}

/// One row of the readers table.
struct ReaderRow {
    /// Reader processes.
    procs: usize,
    /// Whether a writer ran alongside.
    writer: bool,
    /// Aggregate gets/s.
    gets: f64,
    /// The writer's sets/s.
    writer_sets: Option<f64>,
    /// Reads that missed.
    misses: u64,
    /// The file's counters over the phase.
    counters: Counters,
}

/// One row of the writers table.
struct WriterRow {
    /// Writer processes.
    procs: usize,
    /// Key assignment.
    mode: Mode,
    /// Aggregate sets/s.
    sets: f64,
    /// Writes that failed with `Error::Pinned`.
    pinned: u64,
    /// The file's counters over the phase.
    counters: Counters,
}

/// The reader phases: `n` readers for each count, without then with a
/// writer.
fn reader_phases(cfg: &Config, cache: &Cache) -> Vec<ReaderRow> {
    let mut rows = Vec::new();
    // Where the readers' writer is in its permutation: each phase's writer
    // continues where the previous one stopped.
    let mut write_pos = 0u64;
    for writer in [false, true] {
        for n in cfg.counts() {
            let mut specs: Vec<Spec> = (0..n)
                .map(|i| spec(cfg, Role::Reader, Mode::Random, i, n, reader_seed(i)))
                .collect();
            if writer {
                let mut w = spec(cfg, Role::Writer, Mode::Random, 0, 1, WRITE_SEED);
                w.offset = write_pos;
                specs.push(w);
            }
            let (out, counters) = phase(cfg, cache, &mut specs);
            let (readers, w) = out.split_at(n);
            let misses: u64 = readers.iter().map(|o| o.misses).sum();
            if let Some(w) = w.first() {
                write_pos += w.total_ops;
            }
            assert!(
                writer || misses == 0,
                "{misses} reads missed with no writer running: keys vanished ({counters:?})"
            );
            if misses > 0 {
                eprintln!(
                    "slotcache bench: note: {misses} reads missed while a writer overwrote keys \
                     ({} evictions in the phase)",
                    counters.evictions
                );
            }
            let row = ReaderRow {
                procs: n,
                writer,
                gets: readers.iter().map(Outcome::rate).sum(),
                writer_sets: w.first().map(Outcome::rate),
                misses,
                counters,
            };
            eprintln!(
                "slotcache bench: {n} reader(s){}: {:.0} gets/s",
                if writer { " + 1 writer" } else { "" },
                row.gets
            );
            rows.push(row);
        }
    }
    rows
}

/// The writer phases: `w` writers for each count, in each key assignment.
fn writer_phases(cfg: &Config, cache: &Cache) -> Vec<WriterRow> {
    let mut rows = Vec::new();
    let stripes = cache.info().stripes as usize;
    for mode in [Mode::Disjoint, Mode::Random, Mode::OneStripe] {
        for w in cfg.counts() {
            if mode == Mode::Disjoint && w > stripes {
                eprintln!(
                    "slotcache bench: skipping {w} disjoint writers: the file has {stripes} stripes"
                );
                continue;
            }
            let mut specs: Vec<Spec> = (0..w)
                .map(|i| spec(cfg, Role::Writer, mode, i, w, WRITE_SEED ^ w as u64))
                .collect();
            let (out, counters) = phase(cfg, cache, &mut specs);
            let row = WriterRow {
                procs: w,
                mode,
                sets: out.iter().map(Outcome::rate).sum(),
                pinned: out.iter().map(|o| o.pinned).sum(),
                counters,
            };
            eprintln!(
                "slotcache bench: {w} writer(s), {}: {:.0} sets/s",
                mode.name(),
                row.sets
            );
            rows.push(row);
        }
    }
    rows
}

/// A rate in millions per second.
fn m(rate: f64) -> String {
    format!("{:.3} M/s", rate / 1e6)
}

/// Prints both tables.
fn print_tables(cfg: &Config, readers: &[ReaderRow], writers: &[WriterRow]) {
    println!(
        "\nmultiproc: {} keys, {}-byte values, {} s per phase, {} CPUs",
        cfg.keys, VALUE_LEN, cfg.secs, cfg.cores
    );
    println!(
        "\n{:>7} {:>7} {:>14} {:>8} {:>14} {:>14} {:>8} {:>10}",
        "readers",
        "writer",
        "gets/s",
        "speedup",
        "per reader",
        "writer sets/s",
        "misses",
        "evictions"
    );
    for r in readers {
        let base = readers
            .iter()
            .find(|b| b.writer == r.writer && b.procs == 1)
            .map_or(f64::NAN, |b| b.gets);
        println!(
            "{:>7} {:>7} {:>14} {:>7.2}x {:>14} {:>14} {:>8} {:>10}",
            r.procs,
            if r.writer { "yes" } else { "no" },
            m(r.gets),
            r.gets / base,
            m(r.gets / r.procs as f64),
            r.writer_sets.map_or("-".into(), m),
            r.misses,
            r.counters.evictions
        );
    }
    println!(
        "\n{:>10} {:>7} {:>14} {:>8} {:>14} {:>10} {:>10} {:>9} {:>7}",
        "mode",
        "writers",
        "sets/s",
        "speedup",
        "per writer",
        "evictions",
        "reinserts",
        "pin_waits",
        "pinned"
    );
    for r in writers {
        let base = writers
            .iter()
            .find(|b| b.mode == r.mode && b.procs == 1)
            .map_or(f64::NAN, |b| b.sets);
        println!(
            "{:>10} {:>7} {:>14} {:>7.2}x {:>14} {:>10} {:>10} {:>9} {:>7}",
            r.mode.name(),
            r.procs,
            m(r.sets),
            r.sets / base,
            m(r.sets / r.procs as f64),
            r.counters.evictions,
            r.counters.reinserts,
            r.counters.pin_waits,
            r.pinned
        );
    }
    println!();
}

/// The results as the JSON `write_result` stores.
fn results_json(cfg: &Config, readers: &[ReaderRow], writers: &[WriterRow]) -> Value {
    let readers: Vec<Value> = readers
        .iter()
        .map(|r| {
            let base = readers
                .iter()
                .find(|b| b.writer == r.writer && b.procs == 1)
                .expect("a one-reader phase")
                .gets;
            json!({
                "procs": r.procs,
                "writer": r.writer,
                "gets_per_sec": r.gets,
                "speedup": r.gets / base,
                "writer_sets_per_sec": r.writer_sets,
            })
        })
        .collect();
    let writers: Vec<Value> = writers
        .iter()
        .map(|r| json!({"procs": r.procs, "mode": r.mode.name(), "sets_per_sec": r.sets}))
        .collect();
    json!({
        "procs_max": cfg.procs,
        "secs": cfg.secs,
        "cores": cfg.cores,
        "readers": readers,
        "writers": writers,
    })
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let cfg = Config::new();
    let counts = cfg.counts();
    eprintln!(
        "slotcache bench: multiproc{}: process counts {counts:?}, {} s per phase, {} phases",
        if cfg.test { " (smoke test)" } else { "" },
        cfg.secs,
        5 * counts.len()
    );
    let t = Instant::now();
    let dir = BenchDir::new("multiproc");
    let cache = populate(&cfg, &dir.path().join("multiproc.cache"));
    let readers = reader_phases(&cfg, &cache);
    let writers = writer_phases(&cfg, &cache);
    let st = cache.stats();
    eprintln!(
        "slotcache bench: end: {} entries, {} inserts, {} evictions, {} reinserts, {} hits, \
         {} misses, {} corrupt, {} pin waits; {:.1?} in all",
        st.entries,
        st.inserts,
        st.evictions,
        st.reinserts,
        st.hits,
        st.misses,
        st.corrupt,
        st.pin_waits,
        t.elapsed()
    );
    assert_eq!(st.corrupt, 0, "corrupt records were read: {st:?}");
    print_tables(&cfg, &readers, &writers);
    if !cfg.test {
        write_result("multiproc", &results_json(&cfg, &readers, &writers));
    }
}
