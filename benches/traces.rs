//! Hit ratios on real traces and Zipf streams, for exact LRU, moka 0.12,
//! S3-FIFO, a model of slotcache's current eviction and models of candidate
//! designs in slotcache's layout (research for issue #14, section 3; the
//! findings are in `benches/TRACES.md`).
//!
//! # What runs
//!
//! Every workload is replayed cache-aside (look up; on a miss, insert) at
//! 3–5 cache sizes, in entries, through every policy of
//! [`slotcache_bench::sim`]:
//!
//! - ARC traces OLTP, P3, P6 (Megiddo and Modha, FAST 2003) at sizes from
//!   the ARC paper's tables (OLTP: 1,000–15,000 pages; P3/P6: powers of two
//!   from 4,096 to 262,144 pages);
//! - LIRS traces loop, multi1, sprite (Jiang and Zhang, SIGMETRICS 2002) at
//!   sizes from about 4% to 90% of each trace's footprint (loop: 1,011
//!   blocks, multi1: 2,606, sprite: 7,075), all below it so that eviction
//!   decides the result, avoiding the cliff at the footprint itself (where
//!   an entry-count difference of 1% flips the loop from 0% to 99%);
//! - Zipf 0.8 and 0.99 over 1M keys (the streams of `benches/hitratio.rs`:
//!   1M warm-up + 5M measured requests) at 1%, 5% and 10% of the key space,
//!   and `zipf-0.99+scans` (100K-key one-time scans before every 200K Zipf
//!   requests) at 10%.
//!
//! The log-structured models do not hold an exact number of entries: each
//! is sized from the target entry count, replayed, and, if the entries it
//! held on average over the second half of the measured requests differ
//! from the LRU's by more than 1.5%, resized in proportion and replayed
//! again (up to twice; the replay closest to the LRU's count is kept), so
//! every policy is compared at the same entry count.
//!
//! The model of today's engine is checked against the real engine (the
//! same geometry, read from `info()`) on two or three streams; the
//! difference is printed and written to the JSON.
//!
//! # Output
//!
//! `target/slotcache-bench/traces.json` (every ratio, entry count, rewrite
//! count) and one SVG plot per workload, `traces-NAME.svg` (hit ratio
//! against cache size, one line per policy).
//!
//! # Running
//!
//! ```text
//! nice -n 10 cargo bench --bench traces            # full run, ~25 min on 2 shared cores
//! cargo bench --bench traces -- --test             # first 50K requests of OLTP, seconds
//! SLOTCACHE_TRACES=/some/dir cargo bench --bench traces
//! ```
//!
//! Traces come from `$SLOTCACHE_TRACES` (default `../shared/traces` beside
//! the workspace root); a missing trace is skipped with a message.
//! `SLOTCACHE_BENCH_THREADS` (default 2) sets how many replays run at once.
//!
//! # The engine run (`-- --engine`)
//!
//! Replays every workload through the **real engine** (`Cache`, one file
//! per size, cache-aside with `get`/`set`) and, at the number of entries
//! the engine held on average over the second half of the measured
//! requests, through exact LRU, moka 0.12 and the S3-FIFO simulation: the
//! comparison issue #14 §3 asks for. Also records the engine's write
//! amplification (`rewritten_bytes` per hit: reinsertions and promotions)
//! and its promotion, ghost and reinsertion counters. Writes
//! `target/slotcache-bench/traces-engine.json` and one SVG per workload to
//! `target/slotcache-bench/engine-NAME.svg`.
//!
//! ```text
//! nice -n 10 cargo bench --bench traces -- --engine            # every workload, every size
//! SLOTCACHE_TRACES_ONLY=OLTP,loop SLOTCACHE_TRACES_SIZES=table \
//!     cargo bench --bench traces -- --engine                   # a subset, table sizes only
//! SLOTCACHE_TRACES_CUT=3000000 ...                             # first N requests of each trace
//! cargo bench --bench traces -- --engine --test                # smoke: OLTP's first 50K requests
//! ```

use plotters::prelude::*;
use serde_json::{json, Value};
use slotcache::{Cache, Options, Raw};
use slotcache_bench::sim::{check_lru, Design, Lru, Moka, Policy, S3Fifo, SlotModel, SlotShape};
use slotcache_bench::traces::{self, Format, TraceSpec, TRACES};
use slotcache_bench::{
    fill_value, key, results_dir, scan_stream, write_result, zipf_stream, BenchDir, KEY_LEN, SEED,
    VALUE_LEN,
};
use std::sync::Mutex;
use std::time::Instant;

// ---------------------------------------------------------------------------
// The engine's API, in one place.

/// Looks `k` up in the real engine; a hit's value must be `id`'s.
fn engine_get(cache: &Cache, k: &[u8], id: u64) -> bool {
    match cache.get::<Raw>(k).expect("engine get") {
        Some(v) => {
            assert_eq!(v[..8], id.to_le_bytes(), "value of id {id}");
            true
        }
        None => false,
    }
}

/// Stores `v` under `k` in the real engine.
fn engine_set(cache: &Cache, k: &[u8], v: &[u8]) {
    cache.set(k, &Raw(v)).expect("engine set");
}

// ---------------------------------------------------------------------------
// Workloads

/// Log bytes of one record: 20-byte key, 100-byte value (`src/record.rs`).
const RECORD: u64 = (((48 + KEY_LEN).next_multiple_of(16) + VALUE_LEN).next_multiple_of(16)) as u64;

/// Segments per stripe (the engine's default).
const SEGMENTS: u32 = 16;

/// Segments of the candidates' probation ring.
const PROB_SEGMENTS: u32 = 8;

/// Probation's share of the entries in the candidate designs.
const PROB_SHARE: f64 = 0.10;

/// One request stream and the sizes it is replayed at.
struct Workload {
    /// Name in tables and file names.
    name: String,
    /// Where it comes from (for the JSON and the plot title).
    source: &'static str,
    /// Requested ids.
    ids: Vec<u64>,
    /// Leading requests fed to every cache but not counted.
    warmup: usize,
    /// Ids at or above this are one-time scan keys (`u64::MAX`: none).
    scan_from: u64,
    /// Cache sizes (entries) replayed and plotted.
    sizes: Vec<usize>,
    /// The two sizes of the summary table.
    table: [usize; 2],
}

/// ARC and LIRS sizes (see the module documentation).
fn trace_sizes(name: &str) -> (Vec<usize>, [usize; 2]) {
    match name {
        "OLTP" => (vec![1_000, 2_000, 5_000, 10_000, 15_000], [1_000, 10_000]),
        "P3" | "P6" => (
            vec![4_096, 16_384, 65_536, 131_072, 262_144],
            [16_384, 65_536],
        ),
        "loop" => (vec![128, 256, 512, 768, 900], [256, 512]),
        "multi1" => (vec![250, 500, 1_000, 1_500, 2_000], [500, 1_000]),
        "sprite" => (vec![250, 500, 1_000, 2_000, 4_000], [1_000, 2_000]),
        _ => unreachable!("unknown trace {name}"),
    }
}

fn source(spec: &TraceSpec) -> &'static str {
    match spec.format {
        Format::Arc => "ARC trace (Megiddo and Modha, FAST 2003)",
        Format::Lirs => "LIRS trace (Jiang and Zhang, SIGMETRICS 2002)",
    }
}

/// The Zipf workloads of `benches/hitratio.rs` (same generator, seed and
/// split), over `keys` keys.
fn zipf_workloads(keys: usize, warmup: usize, measured: usize) -> Vec<Workload> {
    let pct = |f: f64| (keys as f64 * f) as usize;
    let mut out = Vec::new();
    let z99 = zipf_stream(keys, 0.99, warmup + measured, SEED);
    for (s, z) in [
        (0.8, zipf_stream(keys, 0.8, warmup + measured, SEED)),
        (0.99, z99.clone()),
    ] {
        out.push(Workload {
            name: format!("zipf-{s}"),
            source: "Zipf stream of benches/hitratio.rs",
            ids: z.into_iter().map(u64::from).collect(),
            warmup,
            scan_from: u64::MAX,
            sizes: vec![pct(0.01), pct(0.05), pct(0.10)],
            table: [pct(0.01), pct(0.10)],
        });
    }
    let scan_every = warmup / 5;
    let (ids, w) = scan_stream(&z99, keys, warmup, scan_every, pct(0.10));
    out.push(Workload {
        name: "zipf-0.99+scans".into(),
        source: "zipf-0.99 with one-time scans, as in benches/hitratio.rs",
        ids: ids.into_iter().map(u64::from).collect(),
        warmup: w,
        scan_from: keys as u64,
        sizes: vec![pct(0.10)],
        table: [pct(0.10), pct(0.10)],
    });
    out
}

// ---------------------------------------------------------------------------
// Policies

/// Every policy replayed, in table order.
const POLICIES: [&str; 8] = [
    "lru",
    "moka",
    "s3fifo",
    "slot-current",
    "slot-a-s3",
    "slot-b-sketch-w",
    "slot-c-ghostfilter-w",
    "slot-c-ghostfilter-r",
];

fn design(name: &str) -> Option<Design> {
    Some(match name {
        "slot-current" => Design::Current,
        "slot-a-s3" => Design::Probation,
        "slot-b-sketch-w" => Design::Sketch { reader: false },
        "slot-c-ghostfilter-w" => Design::GhostFilter { reader: false },
        "slot-c-ghostfilter-r" => Design::GhostFilter { reader: true },
        _ => return None,
    })
}

/// The stripe count the engine gives a file sized for `entries` records
/// with an index for `2 * entries` (`Options::effective_stripes`: one per
/// MiB of capacity, a power of two, 1..=64).
fn engine_stripes(entries: usize) -> u32 {
    let data = entries as f64 * RECORD as f64 * SEGMENTS as f64 / (SEGMENTS as f64 - 1.5);
    let cap = data as u64 + 2 * entries as u64 * 16 + (1 << 20);
    let per_mib = (cap >> 20).clamp(1, 64) as u32;
    1 << (31 - per_mib.leading_zeros())
}

/// The model shape for `entries` entries (times `scale`, the calibration):
/// the engine's stripes and 16 segments, an index of 4 slots per entry
/// (`max_entries` = 2 × entries), records per segment so that the rings'
/// average live records add up to the entries; candidates put
/// [`PROB_SHARE`] of them in an 8-segment probation ring, count hits in two
/// set-only bits and keep a sketch of 8 bits per entry.
fn shape(d: Design, entries: usize, scale: f64) -> SlotShape {
    let stripes = engine_stripes(entries);
    let per_stripe = entries as f64 * scale / stripes as f64;
    let buckets = (4 * entries as u64).div_ceil(8 * stripes as u64).max(1) as u32;
    let live =
        |share: f64, segs: u32| ((per_stripe * share / (segs as f64 - 1.5)).round() as u32).max(1);
    let (rps, prob_rps, prob_segments, max_freq) = if d == Design::Current {
        (live(1.0, SEGMENTS), 0, 0, 1)
    } else {
        (
            live(1.0 - PROB_SHARE, SEGMENTS),
            live(PROB_SHARE, PROB_SEGMENTS),
            PROB_SEGMENTS,
            2,
        )
    };
    SlotShape {
        stripes,
        buckets,
        segments: SEGMENTS,
        rps,
        prob_segments,
        prob_rps,
        max_freq,
        sketch_counters: ((2.0 * per_stripe) as u32).next_power_of_two(),
        seed: SEED,
    }
}

/// What one replay measured.
#[derive(Clone, Debug, Default)]
struct Outcome {
    requests: u64,
    hits: u64,
    /// Requests that were not scan requests, and their hits.
    non_scan_requests: u64,
    non_scan_hits: u64,
    /// Average entries held over the second half of the measured part.
    held: f64,
    /// Records rewritten (reinsertions + promotions) over the measured part.
    rewrites: u64,
    /// Scale the model was finally sized with (1 = uncalibrated).
    scale: f64,
    /// Model counters, as JSON.
    extra: Value,
    secs: f64,
}

impl Outcome {
    fn ratio(&self) -> f64 {
        self.hits as f64 / self.requests.max(1) as f64
    }
}

/// Replays `w` through `p`.
fn replay(p: &mut dyn Policy, w: &Workload) -> Outcome {
    let t0 = Instant::now();
    let measured = w.ids.len() - w.warmup;
    let half = w.warmup + measured / 2;
    let step = (measured / 4_000).max(1);
    let (mut o, mut samples, mut sum) = (Outcome::default(), 0u64, 0f64);
    let mut rewrites_at_start = 0;
    for (n, &k) in w.ids.iter().enumerate() {
        if n == w.warmup {
            rewrites_at_start = p.rewrites();
        }
        let hit = p.access(k);
        if n >= w.warmup {
            o.requests += 1;
            o.hits += hit as u64;
            if k < w.scan_from {
                o.non_scan_requests += 1;
                o.non_scan_hits += hit as u64;
            }
            if n >= half && (n - half).is_multiple_of(step) {
                samples += 1;
                sum += p.len() as f64;
            }
        }
    }
    o.held = sum / samples.max(1) as f64;
    o.rewrites = p.rewrites() - rewrites_at_start;
    o.scale = 1.0;
    o.extra = Value::Null;
    o.secs = t0.elapsed().as_secs_f64();
    o
}

/// Replays `w` through policy `name` at `entries` entries; `lru_held` is
/// the LRU's average entries (the log models are calibrated to it).
fn run_policy(name: &str, w: &Workload, entries: usize, lru_held: f64) -> Outcome {
    match name {
        "lru" => replay(&mut Lru::new(entries), w),
        "moka" => replay(&mut Moka::new(entries, MOKA_EVERY), w),
        "s3fifo" => replay(&mut S3Fifo::new(entries), w),
        _ => {
            let d = design(name).expect("a slot design");
            let mut scale = 1.0;
            let mut best: Option<Outcome> = None;
            let mut secs = 0.0;
            for _ in 0..3 {
                let mut m = SlotModel::new(d, shape(d, entries, scale));
                let mut o = replay(&mut m, w);
                assert_eq!(m.len(), m.live_slots(), "{name}: entry count");
                o.scale = scale;
                let c = m.counters;
                o.extra = json!({
                    "shape": format!("{:?}", m.shape()),
                    "reinserts": c.reinserts,
                    "promotions": c.promotions,
                    "index_evictions": c.index_evictions,
                    "ghost_hits": c.ghost_hits,
                    "rejected": c.rejected,
                    "reader_sketch_adds": c.reader_sketch_adds,
                });
                secs += o.secs;
                let off = o.held / lru_held - 1.0;
                let better = best
                    .as_ref()
                    .is_none_or(|b| off.abs() < (b.held / lru_held - 1.0).abs());
                if better {
                    best = Some(o);
                }
                if off.abs() <= 0.015 || lru_held < 1.0 {
                    break;
                }
                scale /= 1.0 + off;
            }
            let mut best = best.expect("one replay");
            best.secs = secs;
            best
        }
    }
}

/// moka's pending tasks (admission, eviction) run every this many requests.
const MOKA_EVERY: u64 = 1;

// ---------------------------------------------------------------------------
// The real engine, for the model check

/// A cache file whose data region holds `entries` records in 14.5 of its
/// 16 segments per stripe (whole 4 KiB pages per segment), with an index of
/// 4 slots per entry, as the models assume.
fn open_engine(dir: &BenchDir, name: &str, entries: usize) -> Cache {
    let want = (entries as f64 * RECORD as f64 * SEGMENTS as f64 / (SEGMENTS as f64 - 1.5)) as u64;
    let max_entries = 2 * entries as u64;
    let path = dir.path().join(name);
    let mut capacity = want + max_entries * 16 + (1 << 20);
    for _ in 0..8 {
        let opts = Options::new().capacity(capacity).max_entries(max_entries);
        let cache = Cache::open(&path, opts).expect("create the cache file");
        let i = cache.info();
        assert_eq!(i.segments, SEGMENTS, "default segment count");
        let data = i.stripes as u64 * i.segments as u64 * i.segment_size;
        let unit = i.stripes as u64 * i.segments as u64 * 4096;
        let target = want.next_multiple_of(unit);
        if data == target {
            return cache;
        }
        drop(cache);
        std::fs::remove_file(&path).expect("remove the sizing probe");
        capacity = i.file_size - data + target;
    }
    panic!("no stable geometry for {entries} entries");
}

/// Replays `w` through the real engine at `entries` and through the model
/// of today's policy with the engine's very geometry.
fn validate(dir: &BenchDir, w: &Workload, entries: usize) -> Value {
    let t0 = Instant::now();
    let cache = open_engine(dir, &format!("{}-{entries}", w.name), entries);
    let info = cache.info();
    let mut value = vec![0u8; VALUE_LEN];
    let measured = w.ids.len() - w.warmup;
    let half = w.warmup + measured / 2;
    let step = (measured / 4_000).max(1);
    let (mut hits, mut requests, mut samples, mut sum) = (0u64, 0u64, 0u64, 0f64);
    for (n, &id) in w.ids.iter().enumerate() {
        let k = key(id as usize);
        let hit = engine_get(&cache, &k, id);
        if !hit {
            fill_value(id as usize, &mut value);
            engine_set(&cache, &k, &value);
        }
        if n >= w.warmup {
            requests += 1;
            hits += hit as u64;
            if n >= half && (n - half).is_multiple_of(step) {
                samples += 1;
                sum += cache.stats().entries as f64;
            }
        }
    }
    let engine_secs = t0.elapsed().as_secs_f64();
    let engine = hits as f64 / requests as f64;
    let engine_held = sum / samples.max(1) as f64;
    let stats = cache.stats();
    drop(cache);
    let model_shape = SlotShape {
        stripes: info.stripes,
        buckets: (info.index_slots / 8 / info.stripes as u64) as u32,
        segments: info.segments,
        rps: (info.segment_size / RECORD) as u32,
        prob_segments: 0,
        prob_rps: 0,
        max_freq: 1,
        sketch_counters: 0,
        seed: SEED,
    };
    let mut m = SlotModel::new(Design::Current, model_shape);
    let o = replay(&mut m, w);
    let lru = replay(&mut Lru::new(engine_held.round() as usize), w);
    let diff = 100.0 * (o.ratio() - engine);
    println!(
        "model check {:<16} {:>7} entries: engine {:6.2}% (held {:.0}) model {:6.2}% (held {:.0}) \
         diff {:+.2} pp; LRU at the engine's entries {:6.2}%; engine {:.1} s",
        w.name,
        entries,
        100.0 * engine,
        engine_held,
        100.0 * o.ratio(),
        o.held,
        diff,
        100.0 * lru.ratio(),
        engine_secs
    );
    json!({
        "workload": w.name,
        "entries": entries,
        "requests": requests,
        "engine": engine,
        "engine_held": engine_held,
        "engine_reinserts": stats.reinserts,
        "engine_index_evictions": stats.index_evictions,
        "model": o.ratio(),
        "model_held": o.held,
        "model_reinserts": m.counters.reinserts,
        "model_index_evictions": m.counters.index_evictions,
        "diff_pp": diff,
        "lru_at_engine_entries": lru.ratio(),
        "geometry": {
            "stripes": info.stripes,
            "segments": info.segments,
            "segment_size": info.segment_size,
            "index_slots": info.index_slots,
        },
    })
}

// ---------------------------------------------------------------------------
// Plots

/// One colour per policy.
const COLORS: [RGBColor; 9] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 25, 75),
    RGBColor(60, 180, 75),
    RGBColor(0, 130, 200),
    RGBColor(245, 130, 48),
    RGBColor(145, 30, 180),
    RGBColor(70, 240, 240),
    RGBColor(128, 128, 0),
    RGBColor(170, 110, 40),
];

/// Plots hit ratio (%) against cache size, one line per policy. Text is
/// SVG `<text>` laid out by plotters' built-in estimate: no font files.
fn plot(path: &std::path::Path, title: &str, sizes: &[usize], rows: &[(String, Vec<f64>)]) {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let (lo, hi) = (sizes[0] as f64, *sizes.last().expect("sizes") as f64);
    let top = rows
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let ymax = ((top * 100.0 / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..ymax)
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc("cache size (entries, log scale)")
        .y_desc("hit ratio (%)")
        .x_label_formatter(&|x| format!("{:.0}", x))
        .draw()
        .expect("mesh");
    for (i, (name, ratios)) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = sizes
            .iter()
            .zip(ratios)
            .map(|(&s, &r)| (s as f64, 100.0 * r))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .expect("line")
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .expect("points");
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .expect("legend");
    root.present().expect("write the plot");
}

// ---------------------------------------------------------------------------

fn main() {
    let test = std::env::args().any(|a| a == "--test");
    if std::env::args().any(|a| a == "--engine") {
        engine_main(test);
        return;
    }
    let t0 = Instant::now();
    let dir = traces::traces_dir();
    println!(
        "traces from {} (SLOTCACHE_TRACES overrides); every policy cache-aside at equal entry \
         counts",
        dir.display()
    );
    let mut workloads = Vec::new();
    if test {
        check_lru(
            &zipf_stream(5_000, 0.9, 20_000, SEED ^ 1)
                .into_iter()
                .map(u64::from)
                .collect::<Vec<_>>(),
        );
        check_parse();
        if let Some(t) = traces::load(&dir, &TRACES[0], Some(50_000)) {
            assert_eq!(t.ids.len(), 50_000);
            workloads.push(Workload {
                name: t.name.to_string(),
                source: source(&TRACES[0]),
                ids: t.ids,
                warmup: 0,
                scan_from: u64::MAX,
                sizes: vec![500, 1_000, 2_000],
                table: [500, 2_000],
            });
        }
    } else {
        for spec in &TRACES {
            let t1 = Instant::now();
            if let Some(t) = traces::load(&dir, spec, None) {
                let (sizes, table) = trace_sizes(spec.name);
                println!(
                    "{}: {} requests, {} distinct ids (decoded in {:.1} s)",
                    t.name,
                    t.ids.len(),
                    t.distinct(),
                    t1.elapsed().as_secs_f64()
                );
                workloads.push(Workload {
                    name: t.name.to_string(),
                    source: source(spec),
                    ids: t.ids,
                    warmup: 0,
                    scan_from: u64::MAX,
                    sizes,
                    table,
                });
            }
        }
        workloads.extend(zipf_workloads(1_000_000, 1_000_000, 5_000_000));
    }

    // The model of today's policy against the real engine.
    let bench_dir = BenchDir::new("traces");
    let mut checks = Vec::new();
    if test {
        if let Some(w) = workloads.first() {
            checks.push(validate(&bench_dir, w, 1_000));
        }
    } else {
        let cut = |w: &Workload, n: usize| Workload {
            name: w.name.clone(),
            source: w.source,
            ids: w.ids[..n.min(w.ids.len())].to_vec(),
            warmup: w.warmup.min(n / 3),
            scan_from: w.scan_from,
            sizes: vec![],
            table: w.table,
        };
        for (name, entries, n) in [
            ("zipf-0.99", 100_000, 3_000_000),
            ("zipf-0.99+scans", 100_000, 4_000_000),
            ("OLTP", 10_000, usize::MAX),
            ("P6", 65_536, 3_000_000),
        ] {
            if let Some(w) = workloads.iter().find(|w| w.name == name) {
                checks.push(validate(&bench_dir, &cut(w, n), entries));
            }
        }
    }
    drop(bench_dir);

    // Every (workload, size, policy), spread over a few threads.
    let results = for_each_size(&workloads, |w, size| {
        let lru = run_policy("lru", w, size, 0.0);
        let mut outs = vec![lru.clone()];
        for p in &POLICIES[1..] {
            outs.push(run_policy(p, w, size, lru.held));
        }
        let line: Vec<String> = POLICIES
            .iter()
            .zip(&outs)
            .map(|(p, o)| format!("{p} {:.2}", 100.0 * o.ratio()))
            .collect();
        println!("{} @ {size}: {}", w.name, line.join(" | "));
        outs
    });

    // Table, JSON, plots.
    println!();
    println!("hit ratio (%), cache-aside, equal entry counts");
    print!("{:<16} {:>8}", "workload", "entries");
    for p in POLICIES {
        print!(" {:>11}", p.trim_start_matches("slot-"));
    }
    println!();
    let mut json_workloads = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        let mut sizes_json = Vec::new();
        let mut series: Vec<(String, Vec<f64>)> = POLICIES
            .iter()
            .map(|p| (p.to_string(), Vec::new()))
            .collect();
        for (_, size, outs) in results.iter().filter(|r| r.0 == wi) {
            print!("{:<16} {:>8}", w.name, size);
            let mut pol = serde_json::Map::new();
            for (i, (p, o)) in POLICIES.iter().zip(outs).enumerate() {
                print!(" {:>11.2}", 100.0 * o.ratio());
                series[i].1.push(o.ratio());
                pol.insert(
                    p.to_string(),
                    json!({
                        "hit_ratio": o.ratio(),
                        "non_scan_hit_ratio": (w.scan_from != u64::MAX)
                            .then(|| o.non_scan_hits as f64 / o.non_scan_requests.max(1) as f64),
                        "hits": o.hits,
                        "entries_held": o.held,
                        "rewrites": o.rewrites,
                        "rewrites_per_hit": o.rewrites as f64 / o.hits.max(1) as f64,
                        "rewrites_per_request": o.rewrites as f64 / o.requests.max(1) as f64,
                        "calibration_scale": o.scale,
                        "model": o.extra,
                        "seconds": o.secs,
                    }),
                );
            }
            println!();
            sizes_json.push(json!({
                "entries": size,
                "in_table": w.table.contains(size),
                "requests": outs[0].requests,
                "policies": pol,
            }));
        }
        json_workloads.push(json!({
            "name": w.name,
            "source": w.source,
            "requests": w.ids.len(),
            "warmup": w.warmup,
            "table_sizes": w.table,
            "sizes": sizes_json,
        }));
        if w.sizes.len() >= 2 {
            let file = if test {
                format!("traces-test-{}.svg", w.name)
            } else {
                format!("traces-{}.svg", w.name)
            };
            let path = results_dir().join(file);
            let title = format!("{} ({}): hit ratio vs cache size", w.name, w.source);
            plot(&path, &title, &w.sizes, &series);
            eprintln!("slotcache bench: plot written to {}", path.display());
        }
    }
    println!();
    println!(
        "write amplification: records rewritten (reinsertions + promotions) per hit; \
         x {RECORD} = bytes per hit"
    );
    print!("{:<16} {:>8}", "workload", "entries");
    for p in &POLICIES[2..] {
        print!(" {:>11}", p.trim_start_matches("slot-"));
    }
    println!();
    for (wi, size, outs) in &results {
        print!("{:<16} {:>8}", workloads[*wi].name, size);
        for o in &outs[2..] {
            print!(" {:>11.3}", o.rewrites as f64 / o.hits.max(1) as f64);
        }
        println!();
    }
    let out = json!({
        "record_bytes": RECORD,
        "segments": SEGMENTS,
        "probation_segments": PROB_SEGMENTS,
        "probation_share": PROB_SHARE,
        "moka_pending_tasks_every": MOKA_EVERY,
        "model_checks": checks,
        "workloads": json_workloads,
        "test_mode": test,
    });
    write_result(if test { "traces-test" } else { "traces" }, &out);
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}

/// Checks the trace parser on inline text.
fn check_parse() {
    let arc = traces::parse("5 3 0 0\n\n9 1 0 1\n".as_bytes(), Format::Arc, None).expect("arc");
    assert_eq!(arc, [5, 6, 7, 9]);
    let cut = traces::parse("5 3 0 0\n".as_bytes(), Format::Arc, Some(2)).expect("arc");
    assert_eq!(cut, [5, 6]);
    assert!(traces::parse("x 1 0 0".as_bytes(), Format::Arc, None).is_err());
    let lirs = traces::parse("0\n1\n2\n1\n".as_bytes(), Format::Lirs, None).expect("lirs");
    assert_eq!(lirs, [0, 1, 2, 1]);
}

// ---------------------------------------------------------------------------
// The engine run

/// Runs `f` on every (workload, size), spread over `SLOTCACHE_BENCH_THREADS`
/// threads (default 2); the results sorted by workload, then size.
fn for_each_size<T: Send>(
    workloads: &[Workload],
    f: impl Fn(&Workload, usize) -> T + Sync,
) -> Vec<(usize, usize, T)> {
    let threads: usize = std::env::var("SLOTCACHE_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let jobs: Vec<(usize, usize)> = workloads
        .iter()
        .enumerate()
        .flat_map(|(wi, w)| w.sizes.iter().map(move |&s| (wi, s)))
        .collect();
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| loop {
                let j = {
                    let mut n = next.lock().expect("lock");
                    *n += 1;
                    *n - 1
                };
                let Some(&(wi, size)) = jobs.get(j) else {
                    break;
                };
                let out = f(&workloads[wi], size);
                results.lock().expect("lock").push((wi, size, out));
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|r: &(usize, usize, T)| (r.0, r.1));
    results
}

/// References replayed beside the engine, at its entry count.
const REFERENCES: [&str; 3] = ["lru", "moka", "s3fifo"];

/// What one engine replay measured.
struct EngineOutcome {
    /// Hits and entries, as for the simulations.
    o: Outcome,
    /// `stats()` deltas over the measured part.
    rewritten_bytes: u64,
    promotions: u64,
    reinserts: u64,
    ghosts: u64,
    ghost_hits: u64,
    /// Of `ghost_hits`, those the admission sketch sent to probation.
    ghost_rejections: u64,
    index_evictions: u64,
    /// The file's geometry.
    info: slotcache::Info,
}

/// Replays `w` cache-aside through a new engine file whose main rings hold
/// about 90% of `entries` records (probation holds about a tenth more).
fn engine_replay(dir: &BenchDir, w: &Workload, entries: usize) -> EngineOutcome {
    let t0 = Instant::now();
    let target = ((entries as f64 * 0.9) as usize).max(64);
    let cache = open_engine(dir, &format!("engine-{}-{entries}", w.name), target);
    let info = cache.info();
    let mut value = vec![0u8; VALUE_LEN];
    let measured = w.ids.len() - w.warmup;
    let half = w.warmup + measured / 2;
    let step = (measured / 4_000).max(1);
    let (mut o, mut samples, mut sum) = (Outcome::default(), 0u64, 0f64);
    let mut start = cache.stats();
    for (n, &id) in w.ids.iter().enumerate() {
        if n == w.warmup {
            start = cache.stats();
        }
        let k = key(id as usize);
        let hit = engine_get(&cache, &k, id);
        if !hit {
            fill_value(id as usize, &mut value);
            engine_set(&cache, &k, &value);
        }
        if n >= w.warmup {
            o.requests += 1;
            o.hits += hit as u64;
            if id < w.scan_from {
                o.non_scan_requests += 1;
                o.non_scan_hits += hit as u64;
            }
            if n >= half && (n - half).is_multiple_of(step) {
                samples += 1;
                sum += cache.stats().entries as f64;
            }
        }
    }
    let end = cache.stats();
    o.held = sum / samples.max(1) as f64;
    o.rewrites = end.promotions + end.reinserts - start.promotions - start.reinserts;
    o.scale = 1.0;
    o.secs = t0.elapsed().as_secs_f64();
    drop(cache);
    EngineOutcome {
        o,
        rewritten_bytes: end.rewritten_bytes - start.rewritten_bytes,
        promotions: end.promotions - start.promotions,
        reinserts: end.reinserts - start.reinserts,
        ghosts: end.ghosts - start.ghosts,
        ghost_hits: end.ghost_hits - start.ghost_hits,
        ghost_rejections: end.ghost_rejections - start.ghost_rejections,
        index_evictions: end.index_evictions - start.index_evictions,
        info,
    }
}

/// A comma-separated list from the environment, if set.
fn env_list(name: &str) -> Option<Vec<String>> {
    let v = std::env::var(name).ok()?;
    Some(v.split(',').map(|s| s.trim().to_string()).collect())
}

/// `-- --engine`: the real engine against LRU, moka and S3-FIFO at the
/// engine's entry count (see the module documentation).
fn engine_main(test: bool) {
    let t0 = Instant::now();
    let dir = traces::traces_dir();
    let only = env_list("SLOTCACHE_TRACES_ONLY");
    let cut: Option<usize> = std::env::var("SLOTCACHE_TRACES_CUT")
        .ok()
        .and_then(|v| v.parse().ok());
    let table_only = std::env::var("SLOTCACHE_TRACES_SIZES").is_ok_and(|v| v == "table");
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let mut workloads = Vec::new();
    if test {
        if let Some(t) = traces::load(&dir, &TRACES[0], Some(50_000)) {
            workloads.push(Workload {
                name: t.name.to_string(),
                source: source(&TRACES[0]),
                ids: t.ids,
                warmup: 0,
                scan_from: u64::MAX,
                sizes: vec![500, 2_000],
                table: [500, 2_000],
            });
        }
    } else {
        for spec in TRACES.iter().filter(|s| wanted(s.name)) {
            if let Some(t) = traces::load(&dir, spec, cut) {
                let (sizes, table) = trace_sizes(spec.name);
                workloads.push(Workload {
                    name: t.name.to_string(),
                    source: source(spec),
                    ids: t.ids,
                    warmup: 0,
                    scan_from: u64::MAX,
                    sizes,
                    table,
                });
            }
        }
        workloads.extend(
            zipf_workloads(1_000_000, 1_000_000, 5_000_000)
                .into_iter()
                .filter(|w| wanted(&w.name)),
        );
    }
    if table_only {
        for w in &mut workloads {
            w.sizes = w.table.to_vec();
            w.sizes.dedup();
        }
    }
    let bench_dir = BenchDir::new("traces-engine");
    let results = for_each_size(&workloads, |w, size| {
        let e = engine_replay(&bench_dir, w, size);
        let held = (e.o.held.round() as usize).max(1);
        let refs: Vec<Outcome> = REFERENCES
            .iter()
            .map(|p| run_policy(p, w, held, 0.0))
            .collect();
        println!(
            "{} @ {size}: engine {:.2} (held {:.0}) | lru {:.2} | moka {:.2} | s3fifo {:.2} | \
                     {:.3} bytes rewritten per hit; engine {:.1} s",
            w.name,
            100.0 * e.o.ratio(),
            e.o.held,
            100.0 * refs[0].ratio(),
            100.0 * refs[1].ratio(),
            100.0 * refs[2].ratio(),
            e.rewritten_bytes as f64 / e.o.hits.max(1) as f64,
            e.o.secs
        );
        (e, refs)
    });
    drop(bench_dir);
    println!();
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "workload",
        "size",
        "held",
        "engine",
        "lru",
        "moka",
        "s3fifo",
        "-lru pp",
        "-moka pp",
        "B/hit"
    );
    let mut json_workloads = Vec::new();
    for (wi, w) in workloads.iter().enumerate() {
        let mut series: Vec<(String, Vec<f64>)> = ["slotcache"]
            .iter()
            .chain(REFERENCES.iter())
            .map(|p| (p.to_string(), Vec::new()))
            .collect();
        let mut sizes_json = Vec::new();
        for (_, size, (e, refs)) in results.iter().filter(|r| r.0 == wi) {
            let ratio = e.o.ratio();
            println!(
                "{:<16} {:>8} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>+8.2} {:>+8.2} {:>10.1}",
                w.name,
                size,
                e.o.held,
                100.0 * ratio,
                100.0 * refs[0].ratio(),
                100.0 * refs[1].ratio(),
                100.0 * refs[2].ratio(),
                100.0 * (ratio - refs[0].ratio()),
                100.0 * (ratio - refs[1].ratio()),
                e.rewritten_bytes as f64 / e.o.hits.max(1) as f64
            );
            series[0].1.push(ratio);
            for (i, r) in refs.iter().enumerate() {
                series[i + 1].1.push(r.ratio());
            }
            let non_scan = |o: &Outcome| {
                (w.scan_from != u64::MAX)
                    .then(|| o.non_scan_hits as f64 / o.non_scan_requests.max(1) as f64)
            };
            let mut refs_json = serde_json::Map::new();
            for (p, r) in REFERENCES.iter().zip(refs) {
                refs_json.insert(
                    p.to_string(),
                    json!({
                        "hit_ratio": r.ratio(),
                        "non_scan_hit_ratio": non_scan(r),
                        "entries_held": r.held,
                        "seconds": r.secs,
                    }),
                );
            }
            sizes_json.push(json!({
                "entries": size,
                "in_table": w.table.contains(size),
                "requests": e.o.requests,
                "engine": {
                    "hit_ratio": ratio,
                    "non_scan_hit_ratio": non_scan(&e.o),
                    "hits": e.o.hits,
                    "entries_held": e.o.held,
                    "rewritten_bytes": e.rewritten_bytes,
                    "rewritten_bytes_per_hit": e.rewritten_bytes as f64 / e.o.hits.max(1) as f64,
                    "records_rewritten_per_hit": e.o.rewrites as f64 / e.o.hits.max(1) as f64,
                    "promotions": e.promotions,
                    "reinserts": e.reinserts,
                    "ghosts": e.ghosts,
                    "ghost_hits": e.ghost_hits,
                    "ghost_rejections": e.ghost_rejections,
                    "index_evictions": e.index_evictions,
                    "seconds": e.o.secs,
                    "geometry": {
                        "stripes": e.info.stripes,
                        "segments": e.info.segments,
                        "segment_size": e.info.segment_size,
                        "index_slots": e.info.index_slots,
                        "file_size": e.info.file_size,
                    },
                },
                "references": refs_json,
            }));
        }
        if sizes_json.is_empty() {
            continue;
        }
        json_workloads.push(json!({
            "name": w.name,
            "source": w.source,
            "requests": w.ids.len(),
            "warmup": w.warmup,
            "table_sizes": w.table,
            "sizes": sizes_json,
        }));
        if w.sizes.len() >= 2 {
            let file = format!("engine-{}{}.svg", if test { "test-" } else { "" }, w.name);
            let path = results_dir().join(file);
            let title = format!("{} ({}): slotcache engine vs references", w.name, w.source);
            plot(&path, &title, &w.sizes, &series);
            eprintln!("slotcache bench: plot written to {}", path.display());
        }
    }
    let out = json!({
        "record_bytes": RECORD,
        "moka_pending_tasks_every": MOKA_EVERY,
        "cut": cut,
        "only": only,
        "table_sizes_only": table_only,
        "workloads": json_workloads,
        "test_mode": test,
    });
    // Subsets merge into the JSON of earlier runs, workload by workload.
    let name = if test {
        "traces-engine-test"
    } else {
        "traces-engine"
    };
    write_result(name, &merge_engine_json(name, out));
    println!("total {:.1} s", t0.elapsed().as_secs_f64());
}

/// `new` with the workloads of an earlier `name.json` that `new` does not
/// replay kept, so subset runs add up to one file.
fn merge_engine_json(name: &str, mut new: Value) -> Value {
    let path = results_dir().join(format!("{name}.json"));
    let Some(old) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return new;
    };
    let names: Vec<String> = new["workloads"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if let (Some(old_w), Some(new_w)) =
        (old["workloads"].as_array(), new["workloads"].as_array_mut())
    {
        for w in old_w {
            if w["name"]
                .as_str()
                .is_some_and(|n| !names.iter().any(|m| m == n))
            {
                new_w.push(w.clone());
            }
        }
    }
    new
}
