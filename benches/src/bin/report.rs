//! Prints the tables of `BENCHMARKS.md` from the results of the last
//! `cargo bench`: criterion's estimates (`target/criterion/**/new/`) and the
//! JSON the other benchmarks write (`target/slotcache-bench/*.json`).
//!
//! ```text
//! cargo bench                                   # everything (~25 min)
//! cargo run --release -p slotcache-bench --bin report
//! ```
//!
//! Every time is criterion's median estimate; `±` is half the width of its
//! 95% confidence interval, relative to the median. Every ratio compares two
//! figures of the same run. The first table checks the project's targets;
//! a target whose inputs are missing (its benchmark was not run) is listed
//! as `not measured`. The report is also written to
//! `target/slotcache-bench/report.md`.

use serde_json::Value;
use slotcache_bench::{results_dir, target_dir};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One criterion benchmark's median and its relative 95% half-interval.
#[derive(Clone, Copy, Debug)]
struct Estimate {
    /// Median time per iteration, ns.
    ns: f64,
    /// Half the width of the median's 95% confidence interval / median.
    noise: f64,
}

/// Every criterion benchmark found, by `(group, id)`.
type Estimates = BTreeMap<(String, String), Estimate>;

/// Reads every `new/benchmark.json` + `new/estimates.json` pair under
/// `target/criterion`.
fn read_criterion(dir: &Path) -> Estimates {
    let mut out = Estimates::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_some_and(|n| n == "new") {
                if let Some((k, v)) = read_one(&p) {
                    out.insert(k, v);
                }
            } else {
                stack.push(p);
            }
        }
    }
    out
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn read_one(new: &Path) -> Option<((String, String), Estimate)> {
    let b = read_json(&new.join("benchmark.json"))?;
    let e = read_json(&new.join("estimates.json"))?;
    let group = b["group_id"].as_str()?.to_string();
    let mut id = b["function_id"].as_str().unwrap_or("").to_string();
    if let Some(v) = b["value_str"].as_str() {
        id = if id.is_empty() {
            v.to_string()
        } else {
            format!("{id}/{v}")
        };
    }
    let m = &e["median"];
    let ns = m["point_estimate"].as_f64()?;
    let lo = m["confidence_interval"]["lower_bound"].as_f64()?;
    let hi = m["confidence_interval"]["upper_bound"].as_f64()?;
    Some((
        (group, id),
        Estimate {
            ns,
            noise: (hi - lo) / 2.0 / ns,
        },
    ))
}

/// A time for a table: ns below 10 µs, µs above.
fn time(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

fn est(e: &Estimate) -> String {
    format!("{} ±{:.0}%", time(e.ns), e.noise * 100.0)
}

/// The report being built, and the target verdicts.
struct Report {
    est: Estimates,
    out: String,
    misses: usize,
}

impl Report {
    fn get(&self, group: &str, id: &str) -> Option<Estimate> {
        self.est.get(&(group.to_string(), id.to_string())).copied()
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.out.push_str(s.as_ref());
        self.out.push('\n');
    }

    /// One target row: `what`, the measured figure, the target, the verdict.
    fn target(&mut self, what: &str, measured: Option<(String, bool)>, target: &str) {
        let (figure, verdict) = match measured {
            Some((f, true)) => (f, "met"),
            Some((f, false)) => {
                self.misses += 1;
                (f, "**missed**")
            }
            None => ("not measured".to_string(), "—"),
        };
        self.line(format!("| {what} | {figure} | {target} | {verdict} |"));
    }

    /// A ratio target `a / b ≤ max` between two criterion benchmarks.
    fn ratio_target(&mut self, what: &str, a: (&str, &str), b: (&str, &str), max: f64) {
        let m = match (self.get(a.0, a.1), self.get(b.0, b.1)) {
            (Some(x), Some(y)) => {
                let r = x.ns / y.ns;
                Some((
                    format!("{} / {} = **{r:.3}×**", time(x.ns), time(y.ns)),
                    r <= max,
                ))
            }
            _ => None,
        };
        self.target(what, m, &format!("≤ {max}×"));
    }

    /// A table of one criterion group, each row with its ratio to `base`.
    fn group_table(&mut self, title: &str, group: &str, ids: &[(&str, &str)], base: &str) {
        let Some(b) = self.get(group, base) else {
            self.line(format!("\n{title}: not measured (`{group}`).\n"));
            return;
        };
        self.line(format!("\n#### {title} (`{group}`)\n"));
        self.line(format!("| store / operation | median | ÷ `{base}` |"));
        self.line("|---|---|---|");
        for (id, label) in ids {
            if let Some(e) = self.get(group, id) {
                let r = e.ns / b.ns;
                self.line(format!("| {label} (`{id}`) | {} | {r:.2}× |", est(&e)));
            }
        }
    }
}

/// The scaling target of the multi-process benchmark: `field` of the row
/// with 2 processes over that of the row with 1, among `rows` that `pick`
/// selects; met at ≥ 1.8×. Rates are shown divided by `scale` with `unit`.
fn two_over_one(
    rows: &Value,
    pick: impl Fn(&Value) -> bool,
    field: &str,
    scale: f64,
    unit: &str,
) -> Option<(String, bool)> {
    let rows = rows.as_array()?;
    let rate = |n: u64| {
        rows.iter()
            .find(|x| x["procs"] == n && pick(x))
            .and_then(|x| json_f(x, field))
    };
    let (a, b) = (rate(1)?, rate(2)?);
    let s = b / a;
    Some((
        format!(
            "{:.2} {unit}/s ÷ {:.2} {unit}/s = **{s:.2}×**",
            b / scale,
            a / scale
        ),
        s >= 1.8,
    ))
}

fn json_f(v: &Value, k: &str) -> Option<f64> {
    v.get(k)?.as_f64()
}

/// The real engine's and the references' hit ratios at one size of one
/// workload of `traces-engine.json` (`cargo bench --bench traces --
/// --engine`): (engine, LRU, moka, entries held).
fn engine_cell(e: &Value, workload: &str, size: u64) -> Option<(f64, f64, f64, f64)> {
    let w = e["workloads"]
        .as_array()?
        .iter()
        .find(|w| w["name"] == workload)?;
    let c = w["sizes"]
        .as_array()?
        .iter()
        .find(|c| c["entries"] == size)?;
    let refs = &c["references"];
    Some((
        json_f(&c["engine"], "hit_ratio")?,
        json_f(&refs["lru"], "hit_ratio")?,
        json_f(&refs["moka"], "hit_ratio")?,
        json_f(&c["engine"], "entries_held")?,
    ))
}

/// Issue #14 §3's targets, from the engine run: Zipf streams against
/// exact LRU, real traces against LRU and moka (each at the entries the
/// engine held).
fn engine_targets(r: &mut Report, e: Option<&Value>) {
    let zipf = [
        ("zipf-0.99+scans", 100_000, 8.0),
        ("zipf-0.8", 100_000, 6.0),
        ("zipf-0.99", 100_000, 3.5),
        ("zipf-0.8", 10_000, 9.0),
    ];
    for (w, size, need) in zipf {
        let cell = e
            .and_then(|e| engine_cell(e, w, size))
            .map(|(sc, lru, _, held)| {
                let pp = (sc - lru) * 100.0;
                (
                    format!(
                        "{:.2}% − {:.2}% = **{pp:+.2} pp** ({held:.0} entries)",
                        sc * 100.0,
                        lru * 100.0
                    ),
                    pp >= need,
                )
            });
        r.target(
            &format!("engine hit ratio `{w}` at {size} entries − exact LRU"),
            cell,
            &format!("≥ +{need} pp"),
        );
    }
    let traces = [
        ("OLTP", [1_000, 10_000]),
        ("P3", [16_384, 65_536]),
        ("P6", [16_384, 65_536]),
        ("loop", [256, 512]),
        ("multi1", [500, 1_000]),
        ("sprite", [1_000, 2_000]),
    ];
    for (w, sizes) in traces {
        for size in sizes {
            let cell = e
                .and_then(|e| engine_cell(e, w, size))
                .map(|(sc, lru, moka, held)| {
                    let (dl, dm) = ((sc - lru) * 100.0, (sc - moka) * 100.0);
                    (
                        format!(
                            "{:.2}%: **{dl:+.2} pp** vs LRU, **{dm:+.2} pp** vs moka ({held:.0} entries)",
                            sc * 100.0
                        ),
                        dl >= 0.0 && dm >= -1.0,
                    )
                });
            r.target(
                &format!("engine hit ratio, trace `{w}` at {size} entries"),
                cell,
                "≥ LRU and ≥ moka − 1 pp",
            );
        }
    }
}

/// Every cell of the engine run, with the write amplification.
fn engine_table(r: &mut Report, e: &Value) {
    r.line("\n### Eviction: the engine against exact LRU, moka and S3-FIFO (same entries)\n");
    r.line("| workload | size | entries held | engine | LRU | moka | S3-FIFO (sim) | − LRU | − moka | bytes rewritten per hit | promotions | reinserts | ghost hits | ghost rejections |");
    r.line("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for w in e["workloads"].as_array().into_iter().flatten() {
        for c in w["sizes"].as_array().into_iter().flatten() {
            let en = &c["engine"];
            let refs = &c["references"];
            let h = |v: &Value| json_f(v, "hit_ratio").unwrap_or(f64::NAN) * 100.0;
            let (sc, lru, moka) = (h(en), h(&refs["lru"]), h(&refs["moka"]));
            r.line(format!(
                "| {} | {} | {:.0} | {sc:.2}% | {lru:.2}% | {moka:.2}% | {:.2}% | {:+.2} pp | {:+.2} pp | {:.1} | {} | {} | {} | {} |",
                w["name"].as_str().unwrap_or("?"),
                c["entries"],
                json_f(en, "entries_held").unwrap_or(f64::NAN),
                h(&refs["s3fifo"]),
                sc - lru,
                sc - moka,
                json_f(en, "rewritten_bytes_per_hit").unwrap_or(f64::NAN),
                en["promotions"],
                en["reinserts"],
                en["ghost_hits"],
                en["ghost_rejections"],
            ));
        }
    }
}

fn main() {
    let crit = target_dir().join("criterion");
    let res = results_dir();
    let mut r = Report {
        est: read_criterion(&crit),
        out: String::new(),
        misses: 0,
    };
    let multiproc = read_json(&res.join("multiproc.json"));
    let dogpile = read_json(&res.join("dogpile.json"));
    let hitratio = read_json(&res.join("hitratio.json"));
    let memory = read_json(&res.join("memory.json"));
    let tiered = read_json(&res.join("tiered.json"));
    let engine = read_json(&res.join("traces-engine.json"));

    r.line("### Targets\n");
    r.line("| target | measured (same run) | target | verdict |");
    r.line("|---|---|---|---|");
    let (gu, gz, ps) = ("peers_get_uniform", "peers_get_zipf", "peers_set");
    r.ratio_target(
        "uniform `get` (validated, zero-copy) ÷ LMDB get, one read txn",
        (gu, "slotcache_get_typed"),
        (gu, "lmdb_one_txn"),
        0.35,
    );
    r.ratio_target(
        "uniform `get` (validated) ÷ `RwLock<HashMap>` get",
        (gu, "slotcache_get_typed"),
        (gu, "rwlock_hashmap"),
        1.0,
    );
    r.ratio_target(
        "uniform `get::<Raw>` ÷ `RwLock<HashMap>` get",
        (gu, "slotcache_get_bytes"),
        (gu, "rwlock_hashmap"),
        1.0,
    );
    r.ratio_target(
        "hot `get::<Raw>` ÷ floor prototype (index line, pin, record, key, CRC)",
        ("read_floor", "slotcache_get_hot"),
        ("read_floor", "floor"),
        1.4,
    );
    r.ratio_target(
        "uniform `get_many::<Raw>` per key (batches of 64) ÷ `RwLock<HashMap>` get",
        (gu, "slotcache_get_many_64_per_key"),
        (gu, "rwlock_hashmap"),
        0.7,
    );
    r.ratio_target(
        "Zipf 0.99 `get` (validated) ÷ moka get",
        (gz, "slotcache_get_typed"),
        (gz, "moka"),
        0.5,
    );
    r.ratio_target(
        "`set` (`Raw`) 100 B ÷ LMDB put, txn per write, no sync",
        (ps, "slotcache_set_bytes"),
        (ps, "lmdb_put_txn_per_write"),
        0.2,
    );
    r.ratio_target(
        "`set_many` per key, batches of 64 ÷ `set` (`Raw`)",
        (ps, "slotcache_set_many_64_per_key"),
        (ps, "slotcache_set_bytes"),
        0.3,
    );
    r.ratio_target(
        "`set_many` per key, batches of 1024 ÷ `set` (`Raw`)",
        (ps, "slotcache_set_many_1024_per_key"),
        (ps, "slotcache_set_bytes"),
        0.3,
    );
    r.ratio_target(
        "`set` (`Raw`) 100 B ÷ moka insert",
        (ps, "slotcache_set_bytes"),
        (ps, "moka_insert"),
        0.4,
    );
    r.ratio_target(
        "`set` (`Raw`) 100 B ÷ the same `set` with byte-range stripe locks",
        (ps, "slotcache_set_bytes"),
        (ps, "slotcache_set_bytes_byte_range"),
        0.2,
    );
    r.ratio_target(
        "`set` (`Raw`) 100 B over 4096 hot keys ÷ the same with byte-range stripe locks",
        (ps, "slotcache_set_bytes_hot"),
        (ps, "slotcache_set_bytes_byte_range_hot"),
        0.2,
    );
    r.ratio_target(
        "`delete` ÷ moka remove",
        (ps, "slotcache_delete"),
        (ps, "moka_remove"),
        0.4,
    );
    r.ratio_target(
        "`delete` ÷ the same `delete` with byte-range stripe locks",
        (ps, "slotcache_delete"),
        (ps, "slotcache_delete_byte_range"),
        0.2,
    );
    let mp = multiproc.as_ref();
    let two_writers = mp.and_then(|m| {
        two_over_one(
            &m["writers"],
            |x| x["mode"] == "disjoint",
            "sets_per_sec",
            1e3,
            "k",
        )
    });
    r.target(
        "2 writer processes on disjoint stripes ÷ 1 (aggregate sets/s)",
        two_writers,
        "≥ 1.8×",
    );
    let two_readers = mp.and_then(|m| {
        two_over_one(
            &m["readers"],
            |x| x["writer"] == false,
            "gets_per_sec",
            1e6,
            "M",
        )
    });
    r.target(
        "2 reader processes ÷ 1 (aggregate gets/s)",
        two_readers,
        "≥ 1.8×",
    );
    let stale = dogpile.as_ref().and_then(|d| {
        let s = json_f(&d["stale_ns"], "p99")?;
        let h = json_f(&d["plain_hit_ns"], "p99")?;
        let x = s / h;
        Some((format!("{s:.0} ns ÷ {h:.0} ns = **{x:.2}×**"), x <= 5.0))
    });
    r.target(
        "stale-path `get_or_create` p99 ÷ plain hit p99 (creator regenerating)",
        stale,
        "≤ 5×",
    );
    if let Some(streams) = hitratio
        .as_ref()
        .and_then(|h| h["streams"].as_array().cloned())
    {
        for s in streams.iter().filter(|s| s["index"] != "1x") {
            let name = s["name"].as_str().unwrap_or("?");
            let (Some(sc), Some(lru)) = (json_f(s, "slotcache"), json_f(s, "lru")) else {
                continue;
            };
            let scan = name.contains("scan");
            let need = if scan { 5.0 } else { 0.0 };
            let pp = (sc - lru) * 100.0;
            r.target(
                &format!("hit ratio `{name}`, slotcache − exact LRU"),
                Some((
                    format!("{:.2}% − {:.2}% = **{pp:+.2} pp**", sc * 100.0, lru * 100.0),
                    pp >= need,
                )),
                &format!("≥ {need:+.0} pp"),
            );
        }
    } else {
        r.target("hit ratio versus exact LRU", None, "≥ LRU; +5 pp on scans");
    }
    engine_targets(&mut r, engine.as_ref());
    let open = r.get("open", "1GiB");
    r.target(
        "open of a 1 GiB file",
        open.map(|e| (est(&e), e.ns < 1e6)),
        "< 1 ms",
    );
    let flat = match (r.get("open", "4GiB"), r.get("open", "64MiB")) {
        (Some(a), Some(b)) => {
            let x = a.ns / b.ns;
            Some((
                format!("{} ÷ {} = **{x:.2}×**", time(a.ns), time(b.ns)),
                x < 2.0,
            ))
        }
        _ => None,
    };
    r.target(
        "open time, 4 GiB ÷ 64 MiB (independent of size)",
        flat,
        "< 2×",
    );
    r.ratio_target(
        "tiered: L1 hit ÷ Redis `GET` on loopback (redis-rs, one round trip)",
        ("tiered_get", "l1_hit"),
        ("tiered_get", "redis_get"),
        0.02,
    );
    let storm = tiered.as_ref().and_then(|t| {
        let (o, e) = (json_f(t, "origin_calls")?, json_f(t, "expiries")?);
        let x = o / e;
        Some((
            format!(
                "{o:.0} origin calls ÷ {e:.0} expiries = **{x:.2}** ({:.0} hosts × {:.0} processes)",
                json_f(t, "hosts")?,
                json_f(t, "procs")?
            ),
            o == e,
        ))
    });
    r.target(
        "tiered: origin calls per expiry of a hot key, across the fleet",
        storm,
        "= 1",
    );
    r.line(format!("\nTargets missed: {}.", r.misses));

    let get_ids = [
        ("slotcache_get_bytes", "slotcache `get::<Raw>`"),
        (
            "slotcache_get_many_64_per_key",
            "slotcache `get_many::<Raw>`, 64 per call, per key",
        ),
        ("slotcache_get_typed", "slotcache `get` (validated)"),
        ("slotcache_get_unchecked", "slotcache `get_unchecked`"),
        ("lmdb_one_txn", "LMDB, one read txn"),
        ("lmdb_txn_per_get", "LMDB, txn per get"),
        ("redb_one_txn", "redb, one read txn"),
        ("redb_txn_per_get", "redb, txn per get"),
        ("moka", "moka"),
        ("rwlock_hashmap", "`RwLock<HashMap>`"),
    ];
    r.line("\n### Peers: 1M keys of 20 B, values of 100 B, same streams");
    r.group_table("Uniform random get", gu, &get_ids, "slotcache_get_typed");
    r.group_table("Zipf 0.99 get", gz, &get_ids, "slotcache_get_typed");
    r.group_table(
        "Hot get against the read floor (64 keys of 100 B)",
        "read_floor",
        &[
            ("slotcache_get_hot", "slotcache `get::<Raw>`"),
            ("floor", "floor prototype, pin a plain store"),
            ("floor_seqcst_pin", "floor prototype, pin a SeqCst swap"),
        ],
        "floor",
    );
    r.group_table(
        "Overwrite of a random key",
        ps,
        &[
            ("slotcache_set_bytes", "slotcache `set` (`Raw`)"),
            (
                "slotcache_set_bytes_byte_range",
                "slotcache `set` (`Raw`), byte-range stripe locks",
            ),
            (
                "slotcache_set_bytes_hot",
                "slotcache `set` (`Raw`), 4096 hot keys",
            ),
            (
                "slotcache_set_bytes_byte_range_hot",
                "slotcache `set` (`Raw`), 4096 hot keys, byte-range stripe locks",
            ),
            ("slotcache_delete", "slotcache `delete`"),
            (
                "slotcache_delete_byte_range",
                "slotcache `delete`, byte-range stripe locks",
            ),
            ("moka_remove", "moka remove"),
            (
                "slotcache_set_many_64_per_key",
                "slotcache `set_many` (`Raw`), 64 per call, per key",
            ),
            (
                "slotcache_set_many_1024_per_key",
                "slotcache `set_many` (`Raw`), 1024 per call, per key",
            ),
            ("lmdb_put_txn_per_write", "LMDB put, txn per write, NO_SYNC"),
            (
                "redb_put_txn_per_write",
                "redb insert, txn per write, Durability::None",
            ),
            ("moka_insert", "moka insert"),
            ("rwlock_hashmap_insert", "`RwLock<HashMap>` insert"),
        ],
        "slotcache_set_bytes",
    );

    if let Some(m) = &multiproc {
        r.line(format!(
            "\n### Processes on one file ({} cores, {} s per phase)\n",
            m["cores"], m["secs"]
        ));
        r.line("| reader processes | concurrent writer | gets/s (all readers) | ÷ 1 reader | writer sets/s |");
        r.line("|---|---|---|---|---|");
        for x in m["readers"].as_array().into_iter().flatten() {
            let w = json_f(x, "writer_sets_per_sec")
                .map(|v| format!("{:.0} k", v / 1e3))
                .unwrap_or_else(|| "—".into());
            r.line(format!(
                "| {} | {} | {:.2} M | {:.2}× | {w} |",
                x["procs"],
                if x["writer"] == true { "yes" } else { "no" },
                json_f(x, "gets_per_sec").unwrap_or(0.0) / 1e6,
                json_f(x, "speedup").unwrap_or(0.0),
            ));
        }
        r.line("\n| writer processes | keys | sets/s (all writers) |");
        r.line("|---|---|---|");
        for x in m["writers"].as_array().into_iter().flatten() {
            r.line(format!(
                "| {} | {} | {:.0} k |",
                x["procs"],
                x["mode"].as_str().unwrap_or("?"),
                json_f(x, "sets_per_sec").unwrap_or(0.0) / 1e3
            ));
        }
    }

    if let Some(d) = &dogpile {
        r.line(format!(
            "\n### Dogpile: {} processes × {} threads on one key, TTL {} ms, creator {} ms, {} s\n",
            d["procs"], d["threads"], d["ttl_ms"], d["creator_ms"], d["secs"]
        ));
        r.line(format!(
            "Creator calls {} for {} expiries: **{:.3} per expiry**.\n",
            d["creator_calls"],
            d["expiries"],
            json_f(d, "creator_calls_per_expiry").unwrap_or(f64::NAN)
        ));
        r.line("| calls | n | p50 | p99 | p99.9 |");
        r.line("|---|---|---|---|---|");
        for (k, label) in [
            ("plain_hit_ns", "plain `get` hit"),
            ("fresh_ns", "`get_or_create`, fresh hit"),
            ("stale_ns", "`get_or_create`, stale value served"),
        ] {
            let x = &d[k];
            r.line(format!(
                "| {label} | {} | {:.0} ns | {:.0} ns | {:.0} ns |",
                x["n"],
                json_f(x, "p50").unwrap_or(f64::NAN),
                json_f(x, "p99").unwrap_or(f64::NAN),
                json_f(x, "p999").unwrap_or(f64::NAN),
            ));
        }
    }

    if let Some(h) = &hitratio {
        r.line(format!(
            "\n### Hit ratio: {} keys, cache-aside, LRU given the entries slotcache held\n",
            h["keys"]
        ));
        r.line("| stream | index | entries held | slotcache | exact LRU | Δ | non-scan: slotcache | non-scan: LRU | model S3-FIFO |");
        r.line("|---|---|---|---|---|---|---|---|---|");
        let pct = |v: &Value, k: &str| {
            json_f(v, k)
                .map(|x| format!("{:.2}%", x * 100.0))
                .unwrap_or_else(|| "—".into())
        };
        for s in h["streams"].as_array().into_iter().flatten() {
            r.line(format!(
                "| {} | {} | {} | {} | {} | {:+.2} pp | {} | {} | {} |",
                s["name"].as_str().unwrap_or("?"),
                s["index"].as_str().unwrap_or("?"),
                s["entries_held"],
                pct(s, "slotcache"),
                pct(s, "lru"),
                json_f(s, "diff_pp").unwrap_or(f64::NAN),
                pct(s, "slotcache_non_scan"),
                pct(s, "lru_non_scan"),
                pct(s, "model_s3fifo"),
            ));
        }
    }

    if let Some(e) = &engine {
        engine_table(&mut r, e);
    }

    let opens: Vec<(String, Estimate)> = ["64MiB", "1GiB", "4GiB"]
        .iter()
        .filter_map(|s| Some((format!("open, {s}"), r.get("open", s)?)))
        .chain(
            r.get("open_create", "1GiB")
                .map(|e| ("create and initialise, 1GiB".to_string(), e)),
        )
        .collect();
    if !opens.is_empty() {
        r.line("\n### Opening a file\n");
        r.line("| what | median |");
        r.line("|---|---|");
        for (what, e) in opens {
            r.line(format!("| {what} | {} |", est(&e)));
        }
    }

    r.group_table(
        "In front of Redis: a 100 B value, redis-server on loopback",
        "tiered_get",
        &[
            ("l1_hit", "`TieredCache::get`, verified L1 hit"),
            ("l1_plain_get", "`Cache::get::<Raw>` of the same entry"),
            ("redis_get", "redis-rs `GET`, one round trip"),
            (
                "redis_get_pipelined",
                "redis-rs `GET`, pipelines of 64, per value",
            ),
            (
                "l2_hit_via_tier",
                "`TieredCache::get` from Redis (`GET`+`PTTL`, fill)",
            ),
        ],
        "redis_get",
    );
    if let Some(t) = &tiered {
        r.line(format!(
            "\nExpiry storm: {} hosts × {} processes, {} s, TTL {} ms, creator {} ms: {} calls, \
             {} origin calls for {} expiries (cache-aside without the tier: up to {}).",
            t["hosts"],
            t["procs"],
            t["secs"],
            t["ttl_ms"],
            t["creator_ms"],
            t["calls"],
            t["origin_calls"],
            t["expiries"],
            t["cache_aside_calls"]
        ));
    }

    if let Some(m) = &memory {
        r.line("\n### Memory\n");
        r.line("| file | file size | max_entries | index bytes | index bytes per max entry | index bytes per storable record |");
        r.line("|---|---|---|---|---|---|");
        for f in m["files"].as_array().into_iter().flatten() {
            r.line(format!(
                "| {} | {:.1} MiB | {} | {:.1} MiB | {:.1} | {:.1} |",
                f["name"].as_str().unwrap_or("?"),
                json_f(f, "file_size").unwrap_or(0.0) / 1048576.0,
                f["max_entries"],
                json_f(f, "index_bytes").unwrap_or(0.0) / 1048576.0,
                json_f(f, "index_bytes_per_entry").unwrap_or(f64::NAN),
                json_f(f, "index_bytes_per_storable_entry").unwrap_or(f64::NAN),
            ));
        }
    }

    // The core matrix: groups named `{operation}/{size}` become one row per
    // operation and benchmark, one column per value size; batch groups
    // (64 keys per call) are shown per key. Everything else is listed.
    const SIZES: [&str; 4] = ["16B", "100B", "1KiB", "64KiB"];
    const BATCH: usize = 64;
    let shown = [gu, gz, ps, "open", "open_create"];
    let mut matrix: BTreeMap<(String, String), [Option<Estimate>; 4]> = BTreeMap::new();
    let mut rest: Vec<(String, String, Estimate)> = Vec::new();
    for ((g, id), e) in &r.est {
        if shown.contains(&g.as_str()) {
            continue;
        }
        let sized = g
            .rsplit_once('/')
            .and_then(|(op, size)| Some((op, SIZES.iter().position(|s| *s == size)?)));
        match sized {
            Some((op, col)) => {
                let per_key = op.contains("_many");
                let e = if per_key {
                    Estimate {
                        ns: e.ns / BATCH as f64,
                        noise: e.noise,
                    }
                } else {
                    *e
                };
                let op = if per_key {
                    format!("{op} (per key, {BATCH} per call)")
                } else {
                    op.to_string()
                };
                matrix.entry((op, id.clone())).or_default()[col] = Some(e);
            }
            None => rest.push((g.clone(), id.clone(), *e)),
        }
    }
    let mut all = String::new();
    if !matrix.is_empty() {
        let _ = writeln!(
            all,
            "\n### Every public operation (`cargo bench --bench core`)\n"
        );
        let _ = writeln!(
            all,
            "| operation | benchmark | 16 B | 100 B | 1 KiB | 64 KiB |"
        );
        let _ = writeln!(all, "|---|---|---|---|---|---|");
        for ((op, id), cols) in &matrix {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| c.as_ref().map(est).unwrap_or_else(|| "—".into()))
                .collect();
            let _ = writeln!(all, "| `{op}` | `{id}` | {} |", cells.join(" | "));
        }
    }
    if !rest.is_empty() {
        let _ = writeln!(all, "\n### Other benchmarks\n");
        let _ = writeln!(all, "| group | benchmark | median |");
        let _ = writeln!(all, "|---|---|---|");
        for (g, id, e) in rest {
            let _ = writeln!(all, "| `{g}` | `{id}` | {} |", est(&e));
        }
    }
    r.out.push_str(&all);

    print!("{}", r.out);
    let path = res.join("report.md");
    std::fs::write(&path, &r.out).expect("write the report");
    eprintln!("report written to {}", path.display());
}
