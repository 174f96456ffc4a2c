//! Hit ratio of slotcache versus an exact LRU holding the same number of
//! entries, on the same request streams.
//!
//! # What it measures
//!
//! A cache-aside client: for each request `i`, `get::<Raw>(key(i))`; a hit
//! counts (and its value is checked), a miss is followed by
//! `set(key(i), &Raw(value(i)))`. The same stream is fed to
//!
//! - **slotcache**: the real engine, one thread, one file;
//! - **an exact LRU**: an O(1) simulation over key indices (a `HashMap`
//!   from key to node and an intrusive doubly linked list in a `Vec`);
//! - three **models** of eviction policies (pure simulations, labelled as
//!   such everywhere; see below). They are never a substitute for the
//!   engine's numbers: they say where the engine's numbers come from.
//!
//! # Equal sizes
//!
//! slotcache is sized for 10% of the key space: its data region holds
//! `keys / 10` records of `align16(align16(48 + 20) + 100) = 192` bytes in
//! `segments - 1.5` of its 16 segments per stripe (one segment is always
//! kept free ahead of the writer, and the head segment is half full on
//! average), rounded up to whole 4 KiB pages per segment; stripes are the
//! default for the capacity. A log-structured cache does not hold exactly
//! what it was sized for, so the number of live entries slotcache
//! **actually** holds is measured: `stats().entries` sampled every
//! `sample_every` requests during the second half of the measured part of
//! the stream, averaged (`entries_held`). The exact LRU (and each model)
//! then gets exactly that capacity, rounded to an entry, so both hold the
//! same number of items: the comparison is of policies at equal item
//! counts, not of memory efficiency.
//!
//! The index is sized two ways; the data region is identical in both:
//!
//! - `4x` (rows named after the stream): `max_entries` = 4 × the intended
//!   entries, so that full index buckets never decide what is evicted;
//! - `1x` (rows suffixed ` tight-index`): `max_entries` = the intended
//!   entries, to show what an index sized to the entry count costs. A key
//!   may live in either of two 8-slot buckets of its stripe and a new key
//!   takes the emptier one; only when both are full does a write evict the
//!   victim of the two (the oldest of the first non-empty class of
//!   probation-unread, probation-read, main-unread, main-read: format.md
//!   §5.2).
//!
//! # Streams (default run)
//!
//! Key space 1,000,000 keys (`key(i)`, 20 bytes), 100-byte values
//! (`fill_value`). Every stream has a warm-up that is fed to every cache but
//! not counted, then the measured part:
//!
//! - `zipf-0.8`, `zipf-0.99`: `zipf_stream(1M, s, 6M, SEED)`; the first 1M
//!   requests are the warm-up, the next 5M are measured.
//! - `zipf-0.99+scans` (the scan-mixed stream of the project's target): the
//!   `zipf-0.99` stream above, cut into blocks of 200,000 requests, with a
//!   one-time scan of 100,000 keys before every block but the first. Scan
//!   keys have indices from 1,000,000 up and each is requested exactly once
//!   in the whole stream, so every scan request is a miss in any cache and
//!   leaves a useless entry behind. A scan is as long as the cache is large,
//!   and scans are a third of all requests. Warm-up: the first 5 Zipf blocks
//!   and the 4 scans between them (1.4M requests); measured: 25 scans and 25
//!   blocks (7.5M requests, 5M of them Zipf: exactly the requests measured
//!   in `zipf-0.99`). The hit ratio is reported over all measured requests
//!   and over the non-scan requests only.
//! - `zipf-0.99+scans50k`: the same with scans of 50,000 keys (the other
//!   end of the range of scan lengths the benchmark was specified with;
//!   scans are a fifth of the requests), with the `4x` index only: how
//!   much the result depends on the scan length.
//!
//! Hit ratios do not depend on the machine's speed: one thread, fixed
//! stream seeds, and nothing in slotcache's eviction depends on time. The
//! only randomness is each new file's hash seed, which decides the stripe
//! and buckets of every key and so the order in which segments evict them;
//! it moves slotcache's ratios by about 0.01 percentage points from file to
//! file (compare a stream's `4x` and `tight-index` rows). The simulations
//! are exactly reproducible.
//!
//! # Engine counters
//!
//! Over the measured part: inserts, evictions, reinserts (second chances)
//! from `stats()`. `stats()` does not say why an entry was evicted, so
//! after every `set` the benchmark compares `stats()` with the previous
//! snapshot: a `set` that entered no new segment (`bytes_used` grew by
//! exactly one record, no reinsert) and raised `evictions` evicted the
//! victim of a key's two full index buckets (`bucket_overflows`, exact for
//! those sets). The sets that entered a new segment also ran the log
//! eviction, so their overflows cannot be told apart;
//! `bucket_overflows_estimated` scales the exact count to all sets.
//!
//! # Models (pure simulations, not the engine)
//!
//! At the same entry capacity as the LRU, entry-granular, one queue, no
//! stripes, segments, index buckets or reinsertion budget:
//!
//! - `model_clock`: slotcache's policy as documented — FIFO with
//!   reinsertion and one visited bit (CLOCK). slotcache minus this model is
//!   what the implementation (whole-segment eviction, per-stripe rings,
//!   bucket overflow, the reinsertion budget) adds or takes away.
//! - `model_clock2`: the same with a 2-bit counter instead of the bit (a
//!   hit adds one, up to 3; the tail reinserts an entry whose counter is
//!   non-zero, decremented): an entry hit several times survives several
//!   laps without hits, for example a whole scan.
//! - `model_s3fifo`: S3-FIFO-like — new keys enter a small FIFO of 10% of
//!   the capacity; leaving it, an entry hit while there moves to the main
//!   queue (90%, FIFO with reinsertion and a 2-bit counter as in
//!   `model_clock2`), others are dropped and remembered in a ghost FIFO of
//!   keys (as many as the main queue holds); a missed key found in the
//!   ghost goes straight to the main queue.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench hitratio             # full run, writes target/slotcache-bench/hitratio.json
//! cargo bench --bench hitratio -- --test   # tiny run (20K keys, 200K requests), checks, writes nothing
//! ```
//!
//! The full run takes about two and a half minutes (seven engine runs of 6M
//! to 8.9M requests; the simulations take a few seconds); `--test` a few
//! seconds. Other arguments are ignored.
//!
//! # Checks
//!
//! Every hit's value is compared with the expected bytes; after each engine
//! run, `stats()` hits and misses must equal the client's counts,
//! `verify()` must be clean with no entry-count drift, the measured entry
//! count must be within a factor of two of the intended one, and scan keys
//! must never hit. In `--test` mode the O(1) LRU is also checked against a
//! naive O(n) LRU on a short stream, hit for hit.

use slotcache::{Cache, Options, Raw, Stats};
use slotcache_bench::sim::{Clock, Lru, Policy, S3Fifo};
use slotcache_bench::{
    fill_value, key, scan_stream, write_result, zipf_stream, BenchDir, KEY_LEN, SEED,
};
use std::time::Instant;

/// Size in the log of a record with a `key_len`-byte key and a
/// `value_len`-byte value: a 48-byte header, the key padded to 16 bytes,
/// the value, padded to 16 (`src/record.rs`).
const fn record_size(key_len: usize, value_len: usize) -> u64 {
    let value_off = (48 + key_len).next_multiple_of(16);
    (value_off + value_len).next_multiple_of(16) as u64
}

/// Value length of every entry.
const VALUE_LEN: usize = slotcache_bench::VALUE_LEN;

/// Bytes of one record in the log (192).
const RECORD: u64 = record_size(KEY_LEN, VALUE_LEN);

/// Segments per stripe (slotcache's default, checked against `info()`).
const SEGMENTS: u64 = 16;

/// The parameters of one run: the full one or the `--test` one.
#[derive(Clone, Copy, Debug)]
struct Params {
    /// Size of the Zipf key space.
    keys: usize,
    /// Entries slotcache is sized for (10% of the key space).
    intended: usize,
    /// Zipf requests in the warm-up (not counted).
    warmup: usize,
    /// Zipf requests measured.
    measured: usize,
    /// Zipf requests between two scans.
    scan_every: usize,
    /// Keys per scan in `zipf-0.99+scans`.
    scan_len: usize,
    /// Keys per scan in `zipf-0.99+scans50k`.
    short_scan_len: usize,
    /// Requests between two samples of `stats().entries`.
    sample_every: usize,
}

impl Params {
    /// The default run: 1M keys, 1M warm-up + 5M measured Zipf requests,
    /// a 100K (or 50K) scan before every 200K-request block.
    fn full() -> Params {
        Params {
            keys: slotcache_bench::KEYS,
            intended: slotcache_bench::KEYS / 10,
            warmup: 1_000_000,
            measured: 5_000_000,
            scan_every: 200_000,
            scan_len: 100_000,
            short_scan_len: 50_000,
            sample_every: 1_000,
        }
    }

    /// The `--test` run: the key space, cache and scans scaled down by 50
    /// (20K keys), 40K warm-up + 200K measured Zipf requests.
    fn test() -> Params {
        Params {
            keys: 20_000,
            intended: 2_000,
            warmup: 40_000,
            measured: 200_000,
            scan_every: 4_000,
            scan_len: 2_000,
            short_scan_len: 1_000,
            sample_every: 100,
        }
    }
}

/// One request stream, fed identically to every cache.
struct Stream {
    /// Name in the table and the JSON.
    name: String,
    /// Key indices; indices `>= keys` are scan keys (requested once).
    requests: Vec<u32>,
    /// Leading requests not counted.
    warmup: usize,
    /// Whether the stream contains scans.
    scans: bool,
}

/// `zipf_stream(keys, s, warmup + measured, SEED)`, warm-up first.
fn zipf(p: &Params, s: f64) -> Stream {
    Stream {
        name: format!("zipf-{s}"),
        requests: zipf_stream(p.keys, s, p.warmup + p.measured, SEED),
        warmup: p.warmup,
        scans: false,
    }
}

/// The Zipf stream `z` cut into blocks of `scan_every` requests, with a
/// scan of `scan_len` never-repeated keys (indices from `keys` up) before
/// every block but the first. The warm-up ends just before the scan that
/// precedes the block starting at Zipf request `warmup`.
fn with_scans(p: &Params, z: &Stream, scan_len: usize, name: &str) -> Stream {
    let (out, warmup) = scan_stream(&z.requests, p.keys, p.warmup, p.scan_every, scan_len);
    assert_eq!(
        out.len() - warmup,
        p.measured + p.measured / p.scan_every * scan_len,
        "measured part of {name}"
    );
    Stream {
        name: name.to_string(),
        requests: out,
        warmup,
        scans: true,
    }
}

/// Hits counted by a cache over the measured part of a stream.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Measured requests.
    requests: u64,
    /// Measured hits.
    hits: u64,
    /// Measured requests that were not scan requests.
    non_scan_requests: u64,
    /// Hits among them.
    non_scan_hits: u64,
}

impl Counts {
    /// Counts one measured request.
    fn add(&mut self, scan: bool, hit: bool) {
        self.requests += 1;
        self.hits += hit as u64;
        if !scan {
            self.non_scan_requests += 1;
            self.non_scan_hits += hit as u64;
        }
    }

    /// Hit ratio over all measured requests.
    fn ratio(&self) -> f64 {
        self.hits as f64 / self.requests as f64
    }

    /// Hit ratio over the non-scan requests.
    fn non_scan_ratio(&self) -> f64 {
        self.non_scan_hits as f64 / self.non_scan_requests as f64
    }
}

/// Feeds `stream` to a simulated cache and counts its measured hits.
fn simulate(policy: &mut impl Policy, stream: &Stream, keys: usize) -> Counts {
    let mut c = Counts::default();
    for (n, &k) in stream.requests.iter().enumerate() {
        let hit = policy.access(k as u64);
        if n >= stream.warmup {
            c.add(k as usize >= keys, hit);
        }
    }
    c
}

/// The two index sizings of the engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndexSize {
    /// `max_entries` = 4 × the intended entries.
    Roomy,
    /// `max_entries` = the intended entries.
    Tight,
}

impl IndexSize {
    /// Name in the JSON.
    fn name(self) -> &'static str {
        match self {
            IndexSize::Roomy => "4x",
            IndexSize::Tight => "1x",
        }
    }

    /// `max_entries` for `intended` entries.
    fn max_entries(self, intended: usize) -> u64 {
        match self {
            IndexSize::Roomy => 4 * intended as u64,
            IndexSize::Tight => intended as u64,
        }
    }
}

/// The geometry slotcache was given, from `info()`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// `Options::capacity` asked for.
    capacity: u64,
    /// `max_entries` asked for.
    max_entries: u64,
    /// `info().file_size`.
    file_size: u64,
    /// `info().stripes`.
    stripes: u32,
    /// `info().segments`.
    segments: u32,
    /// `info().segment_size`.
    segment_size: u64,
    /// `info().index_slots`.
    index_slots: u64,
    /// Bytes of the data region: stripes × segments × segment size.
    data_bytes: u64,
}

impl Geometry {
    /// Reads the geometry of `cache`, opened with `capacity` and
    /// `max_entries`.
    fn of(cache: &Cache, capacity: u64, max_entries: u64) -> Geometry {
        let i = cache.info();
        Geometry {
            capacity,
            max_entries,
            file_size: i.file_size,
            stripes: i.stripes,
            segments: i.segments,
            segment_size: i.segment_size,
            index_slots: i.index_slots,
            data_bytes: i.stripes as u64 * i.segments as u64 * i.segment_size,
        }
    }
}

/// Opens a new cache file whose data region holds `intended` records in
/// `SEGMENTS - 1.5` segments per stripe (rounded up to whole 4 KiB pages
/// per segment), with an index for `max_entries` and the default stripe
/// count. What is not data depends on the stripe count, which depends on
/// the capacity: each file opened tells both, and the capacity is adjusted
/// until a file has exactly the planned data region, so both index
/// sizings get the same one.
fn open_sized(dir: &BenchDir, name: &str, intended: usize, max_entries: u64) -> (Cache, Geometry) {
    let want = (intended as f64 * RECORD as f64 * SEGMENTS as f64 / (SEGMENTS as f64 - 1.5)) as u64;
    let path = dir.path().join(name);
    let mut capacity = want + max_entries * 16 + (1 << 20);
    for _ in 0..8 {
        let cache = Cache::open(
            &path,
            Options::new().capacity(capacity).max_entries(max_entries),
        )
        .expect("create the cache file");
        let g = Geometry::of(&cache, capacity, max_entries);
        assert_eq!(g.segments as u64, SEGMENTS, "default segment count");
        let unit = g.stripes as u64 * g.segments as u64 * 4096;
        let data = want.next_multiple_of(unit);
        if g.data_bytes == data {
            return (cache, g);
        }
        drop(cache);
        std::fs::remove_file(&path).expect("remove the sizing probe");
        capacity = g.file_size - g.data_bytes + data;
    }
    panic!("no stable geometry for {intended} entries");
}

/// What one engine run measured.
#[derive(Clone, Copy, Debug)]
struct EngineRun {
    /// Index sizing.
    index: IndexSize,
    /// The file's geometry.
    geo: Geometry,
    /// Hits over the measured part.
    counts: Counts,
    /// Average `stats().entries` over the second half of the measured part.
    entries_held: f64,
    /// Smallest and largest sample of `stats().entries`.
    entries_range: (u64, u64),
    /// `stats()` at the start of the measured part.
    start: Stats,
    /// `stats()` at the end.
    end: Stats,
    /// Measured sets that entered no new segment and evicted the victim of
    /// a key's two full index buckets.
    bucket_overflows: u64,
    /// Measured sets that entered no new segment.
    plain_sets: u64,
    /// Measured sets that entered a new segment (and ran the log eviction).
    segment_sets: u64,
    /// Wall time of the run.
    secs: f64,
}

impl EngineRun {
    /// `end - start` of one counter.
    fn delta(&self, f: impl Fn(&Stats) -> u64) -> u64 {
        f(&self.end) - f(&self.start)
    }

    /// `bucket_overflows` scaled from the plain sets to all measured sets.
    fn bucket_overflows_estimated(&self) -> f64 {
        if self.plain_sets == 0 {
            return 0.0;
        }
        self.bucket_overflows as f64 * (self.plain_sets + self.segment_sets) as f64
            / self.plain_sets as f64
    }
}

/// Runs `stream` cache-aside against a new slotcache file.
fn run_engine(dir: &BenchDir, p: &Params, stream: &Stream, index: IndexSize) -> EngineRun {
    let t0 = Instant::now();
    let name = format!("{}-{}", stream.name, index.name());
    let (cache, geo) = open_sized(dir, &name, p.intended, index.max_entries(p.intended));
    let sample_from = stream.warmup + (stream.requests.len() - stream.warmup) / 2;
    let mut counts = Counts::default();
    let (mut all_hits, mut all_misses) = (0u64, 0u64);
    let mut samples = Vec::new();
    let mut value = vec![0u8; VALUE_LEN];
    let mut prev = cache.stats();
    let mut start = prev;
    let (mut overflows, mut plain, mut segment) = (0u64, 0u64, 0u64);
    for (n, &i) in stream.requests.iter().enumerate() {
        if n == stream.warmup {
            start = cache.stats();
        }
        let measured = n >= stream.warmup;
        let k = key(i as usize);
        fill_value(i as usize, &mut value);
        let hit = match cache.get::<Raw>(k).expect("get::<Raw>") {
            Some(guard) => {
                assert_eq!(&*guard, &value[..], "value of key {i}");
                true
            }
            None => false,
        };
        if hit {
            all_hits += 1;
        } else {
            all_misses += 1;
            cache.set(k, &Raw(&value)).expect("set");
            let cur = cache.stats();
            if measured {
                let grew = cur.bytes_used.wrapping_sub(prev.bytes_used);
                if grew == RECORD && cur.reinserts == prev.reinserts {
                    plain += 1;
                    overflows += cur.evictions - prev.evictions;
                } else {
                    segment += 1;
                }
            }
            prev = cur;
        }
        if measured {
            counts.add(i as usize >= p.keys, hit);
        }
        if n >= sample_from && (n - sample_from).is_multiple_of(p.sample_every) {
            samples.push(cache.stats().entries);
        }
    }
    let end = cache.stats();
    assert_eq!(
        (end.hits, end.misses),
        (all_hits, all_misses),
        "stats() counts every lookup of the client"
    );
    let report = cache.verify().expect("verify");
    assert!(report.is_clean(), "verify after the run: {report:?}");
    assert_eq!(
        (report.live_entries, report.entries_drift),
        (end.entries, 0),
        "entry count of {name}: {report:?}"
    );
    assert!(!samples.is_empty());
    let entries_held = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    let lo = *samples.iter().min().expect("samples");
    let hi = *samples.iter().max().expect("samples");
    assert!(
        entries_held > p.intended as f64 / 2.0 && entries_held < p.intended as f64 * 2.0,
        "slotcache holds {entries_held} entries, sized for {}",
        p.intended
    );
    drop(cache);
    EngineRun {
        index,
        geo,
        counts,
        entries_held,
        entries_range: (lo, hi),
        start,
        end,
        bucket_overflows: overflows,
        plain_sets: plain,
        segment_sets: segment,
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// The models' hit counts at the LRU's capacity.
#[derive(Clone, Copy, Debug)]
struct Models {
    /// CLOCK (one visited bit): slotcache's documented policy.
    clock: Counts,
    /// FIFO with reinsertion and a 2-bit counter.
    clock2: Counts,
    /// S3-FIFO-like.
    s3fifo: Counts,
}

/// One row of the results: the engine run and the simulations at its size.
struct Row {
    /// Stream name.
    stream: String,
    /// Whether the stream has scans.
    scans: bool,
    /// The engine run.
    engine: EngineRun,
    /// LRU capacity (entries): the engine's average entries, rounded.
    lru_cap: usize,
    /// Exact LRU.
    lru: Counts,
    /// The models (run for the `4x` rows only).
    models: Option<Models>,
}

impl Row {
    /// Name in the table and the JSON: the stream, suffixed ` tight-index`
    /// for the `1x` index.
    fn name(&self) -> String {
        match self.engine.index {
            IndexSize::Roomy => self.stream.clone(),
            IndexSize::Tight => format!("{} tight-index", self.stream),
        }
    }

    /// `c`'s hit ratio over the non-scan requests, or null for a stream
    /// without scans.
    fn non_scan(&self, c: &Counts) -> serde_json::Value {
        if self.scans {
            serde_json::json!(c.non_scan_ratio())
        } else {
            serde_json::Value::Null
        }
    }

    /// A model's hit ratio (all requests), or null.
    fn model(&self, f: impl Fn(&Models) -> Counts) -> serde_json::Value {
        self.models
            .as_ref()
            .map_or(serde_json::Value::Null, |m| serde_json::json!(f(m).ratio()))
    }

    /// A model's hit ratio over the non-scan requests, or null.
    fn model_non_scan(&self, f: impl Fn(&Models) -> Counts) -> serde_json::Value {
        self.models
            .as_ref()
            .map_or(serde_json::Value::Null, |m| self.non_scan(&f(m)))
    }

    /// The row as JSON.
    fn json(&self) -> serde_json::Value {
        let e = &self.engine;
        let g = &e.geo;
        serde_json::json!({
            "name": self.name(),
            "requests": e.counts.requests,
            "entries_held": e.entries_held,
            "max_entries": g.max_entries,
            "slotcache": e.counts.ratio(),
            "lru": self.lru.ratio(),
            "diff_pp": 100.0 * (e.counts.ratio() - self.lru.ratio()),
            "slotcache_non_scan": self.non_scan(&e.counts),
            "lru_non_scan": self.non_scan(&self.lru),
            "stream": self.stream,
            "index": e.index.name(),
            "non_scan_requests": e.counts.non_scan_requests,
            "lru_capacity": self.lru_cap,
            "entries_held_min": e.entries_range.0,
            "entries_held_max": e.entries_range.1,
            "inserts": e.delta(|s| s.inserts),
            "evictions": e.delta(|s| s.evictions),
            "reinserts": e.delta(|s| s.reinserts),
            "bucket_overflows": e.bucket_overflows,
            "bucket_overflows_estimated": e.bucket_overflows_estimated(),
            "sets_without_segment_change": e.plain_sets,
            "sets_entering_a_segment": e.segment_sets,
            "model_clock": self.model(|m| m.clock),
            "model_clock_non_scan": self.model_non_scan(|m| m.clock),
            "model_clock2": self.model(|m| m.clock2),
            "model_clock2_non_scan": self.model_non_scan(|m| m.clock2),
            "model_s3fifo": self.model(|m| m.s3fifo),
            "model_s3fifo_non_scan": self.model_non_scan(|m| m.s3fifo),
            "geometry": {
                "capacity": g.capacity,
                "file_size": g.file_size,
                "stripes": g.stripes,
                "segments": g.segments,
                "segment_size": g.segment_size,
                "index_slots": g.index_slots,
                "data_bytes": g.data_bytes,
            },
            "seconds": e.secs,
        })
    }
}

/// Runs one stream with one index sizing: the engine, then the LRU (and,
/// for the `4x` index, the models) at the entry count the engine held.
fn row(dir: &BenchDir, p: &Params, stream: &Stream, index: IndexSize) -> Row {
    let engine = run_engine(dir, p, stream, index);
    let lru_cap = engine.entries_held.round() as usize;
    let lru = simulate(&mut Lru::new(lru_cap), stream, p.keys);
    assert_eq!(lru.requests, engine.counts.requests);
    let models = (index == IndexSize::Roomy).then(|| Models {
        clock: simulate(&mut Clock::new(lru_cap, 1), stream, p.keys),
        clock2: simulate(&mut Clock::new(lru_cap, 3), stream, p.keys),
        s3fifo: simulate(&mut S3Fifo::new(lru_cap), stream, p.keys),
    });
    let r = Row {
        stream: stream.name.clone(),
        scans: stream.scans,
        engine,
        lru_cap,
        lru,
        models,
    };
    print_row(&r);
    r
}

/// Formats a ratio as a percentage.
fn pct(r: f64) -> String {
    format!("{:.2}%", 100.0 * r)
}

/// Prints the header of the table.
fn print_header() {
    println!(
        "{:<30} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} | {:>8} {:>8} | {:>9} {:>9} {:>8} {:>5}",
        "stream",
        "requests",
        "held",
        "max_ent",
        "slotcache",
        "lru",
        "diff_pp",
        "sc_nscan",
        "lru_nscn",
        "evictions",
        "reinserts",
        "bkt_ovfl",
        "secs"
    );
}

/// Prints one row of the table.
fn print_row(r: &Row) {
    let e = &r.engine;
    let (sn, ln) = if r.scans {
        (pct(e.counts.non_scan_ratio()), pct(r.lru.non_scan_ratio()))
    } else {
        ("-".into(), "-".into())
    };
    println!(
        "{:<30} {:>9} {:>7.0} {:>7} {:>9} {:>7} {:>+7.2} | {:>8} {:>8} | {:>9} {:>9} {:>8} {:>5.1}",
        r.name(),
        e.counts.requests,
        e.entries_held,
        e.geo.max_entries,
        pct(e.counts.ratio()),
        pct(r.lru.ratio()),
        100.0 * (e.counts.ratio() - r.lru.ratio()),
        sn,
        ln,
        e.delta(|s| s.evictions),
        e.delta(|s| s.reinserts),
        e.bucket_overflows,
        e.secs,
    );
}

/// Prints the models' table (hit ratio over all requests, and over the
/// non-scan ones for the scan streams).
fn print_models(rows: &[Row]) {
    println!();
    println!("MODELS (pure simulations at the LRU's capacity, not the engine):");
    println!(
        "{:<30} {:>17} {:>17} {:>17} {:>17} {:>17}",
        "stream", "slotcache", "lru", "model_clock", "model_clock2", "model_s3fifo"
    );
    let cell = |r: &Row, c: &Counts| {
        if r.scans {
            format!("{} ({})", pct(c.ratio()), pct(c.non_scan_ratio()))
        } else {
            pct(c.ratio())
        }
    };
    for r in rows {
        let Some(m) = &r.models else { continue };
        println!(
            "{:<30} {:>17} {:>17} {:>17} {:>17} {:>17}",
            r.name(),
            cell(r, &r.engine.counts),
            cell(r, &r.lru),
            cell(r, &m.clock),
            cell(r, &m.clock2),
            cell(r, &m.s3fifo),
        );
    }
    println!("(scan streams: all requests (non-scan requests))");
}

/// Checks the O(1) LRU against a naive one (a `Vec` in recency order) on
/// a short Zipf stream, hit for hit and, at the end, order for order.
fn check_lru() {
    let stream: Vec<u64> = zipf_stream(5_000, 0.9, 50_000, SEED ^ 1)
        .into_iter()
        .map(u64::from)
        .collect();
    slotcache_bench::sim::check_lru(&stream);
}

fn main() {
    let test = std::env::args().any(|a| a == "--test");
    let p = if test { Params::test() } else { Params::full() };
    let t0 = Instant::now();
    if test {
        check_lru();
    }
    let dir = BenchDir::new("hitratio");
    let z08 = zipf(&p, 0.8);
    let z99 = zipf(&p, 0.99);
    let scans = with_scans(&p, &z99, p.scan_len, "zipf-0.99+scans");
    let scans50 = with_scans(&p, &z99, p.short_scan_len, "zipf-0.99+scans50k");
    println!(
        "hit ratio, cache-aside: {} keys, {}-byte values ({} bytes per record), slotcache sized \
         for {} entries; warm-up {} Zipf requests, {} measured; scans of {} (or {}) one-time keys \
         before every block of {} Zipf requests; the LRU and the models get the entries \
         slotcache held",
        p.keys,
        VALUE_LEN,
        RECORD,
        p.intended,
        p.warmup,
        p.measured,
        p.scan_len,
        p.short_scan_len,
        p.scan_every
    );
    print_header();
    let mut rows = Vec::new();
    for s in [&z08, &z99, &scans, &scans50] {
        rows.push(row(&dir, &p, s, IndexSize::Roomy));
    }
    for s in [&z08, &z99, &scans] {
        rows.push(row(&dir, &p, s, IndexSize::Tight));
    }
    print_models(&rows);
    for r in &rows {
        let c = &r.engine.counts;
        assert!(c.hits <= c.requests && r.lru.hits <= r.lru.requests);
        if r.scans {
            let mut all = vec![r.engine.counts, r.lru];
            if let Some(m) = &r.models {
                all.extend([m.clock, m.clock2, m.s3fifo]);
            }
            for c in all {
                assert_eq!(c.hits, c.non_scan_hits, "{}: scan keys never hit", r.name());
                assert_eq!(c.non_scan_requests, p.measured as u64);
            }
        }
    }
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
    if test {
        println!("test mode: checks passed, no results written");
        return;
    }
    let json = serde_json::json!({
        "keys": p.keys,
        "value_len": VALUE_LEN,
        "record_bytes": RECORD,
        "intended_entries": p.intended,
        "warmup_zipf_requests": p.warmup,
        "measured_zipf_requests": p.measured,
        "scan_every_zipf_requests": p.scan_every,
        "scan_len": p.scan_len,
        "short_scan_len": p.short_scan_len,
        "seed": SEED,
        "streams": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    write_result("hitratio", &json);
}
