//! `bench`: a multi-process load test, like `redis-benchmark`. The parent
//! fills the keys, then starts itself again (`current_exe`, the hidden
//! `bench-worker` command) once per reader and writer process; each worker
//! prints one JSON line with its op counts and an HDR histogram of its
//! latencies (V2 serialization, base64), which the parent merges per role.

use crate::util::{self, open_write, print_json, Fail, EXIT_ERROR};
use clap::Args;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use slotcache::Raw;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The cache file (must exist: see `create`).
    path: PathBuf,
    /// Reader processes.
    #[arg(long, default_value_t = 2)]
    readers: u32,
    /// Writer processes.
    #[arg(long, default_value_t = 1)]
    writers: u32,
    /// How long the workers run, in seconds (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Bytes per value, e.g. 100 or 4KiB.
    #[arg(long, default_value = "100", value_parser = util::parse_size)]
    value_size: u64,
    /// Distinct keys (`bench:00000000` …), written before the run.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    path: PathBuf,
    #[arg(long)]
    role: Role,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    value_size: u64,
    #[arg(long)]
    keys: u64,
    #[arg(long)]
    seed: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    Reader,
    Writer,
}

/// What a worker prints (one JSON line on stdout).
#[derive(Serialize, Deserialize)]
struct WorkerReport {
    role: Role,
    ops: u64,
    hits: u64,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed_secs: f64,
    /// HDR histogram of op latencies in ns, V2 format, base64.
    histogram_v2_base64: String,
}

fn key(i: u64) -> String {
    format!("bench:{i:08}")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// One worker process: reads or writes random keys until time is up.
pub fn worker(a: &WorkerArgs) -> Result<(), Fail> {
    let cache = open_write(&a.path)?;
    let value = vec![0x5a_u8; a.value_size as usize];
    let mut hist = histogram();
    let mut r = WorkerReport {
        role: a.role,
        ops: 0,
        hits: 0,
        misses: 0,
        errors: 0,
        first_error: None,
        elapsed_secs: 0.0,
        histogram_v2_base64: String::new(),
    };
    // xorshift64*: each worker its own sequence of keys.
    let mut x = a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let keys = a.keys.max(1);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds.max(0.0));
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Check the clock, not each op: batches of 64 ops between checks.
        for _ in 0..64 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let k = key(x.wrapping_mul(0x2545_F491_4F6C_DD1D) % keys);
            let t = Instant::now();
            let res = match a.role {
                Role::Reader => cache.get::<Raw>(&k).map(|g| g.is_some()),
                Role::Writer => cache.set(&k, &Raw(&value)).map(|()| true),
            };
            let ns = t.elapsed().as_nanos() as u64;
            hist.saturating_record(ns.max(1));
            r.ops += 1;
            match res {
                Ok(true) => r.hits += 1,
                Ok(false) => r.misses += 1,
                Err(e) => {
                    r.errors += 1;
                    r.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    r.elapsed_secs = start.elapsed().as_secs_f64();
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(&hist, &mut buf)
        .map_err(|e| Fail::new(EXIT_ERROR, format!("serializing the histogram: {e:?}")))?;
    r.histogram_v2_base64 = util::b64(&buf);
    print_json(&mut std::io::stdout().lock(), &r)
}

#[derive(Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

#[derive(Serialize)]
struct RoleJson {
    processes: u32,
    ops: u64,
    ops_per_sec: f64,
    hits: u64,
    misses: u64,
    errors: u64,
    first_error: Option<String>,
    latency_ns: Latency,
}

#[derive(Serialize)]
struct BenchJson {
    path: String,
    seconds: f64,
    value_size: u64,
    keys: u64,
    fill_secs: f64,
    reader: Option<RoleJson>,
    writer: Option<RoleJson>,
}

/// Kills and reaps workers still running when the parent returns early.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn merge(role: Role, procs: u32, reports: &[WorkerReport]) -> Result<Option<RoleJson>, Fail> {
    if procs == 0 {
        return Ok(None);
    }
    let mut all = histogram();
    let mut j = RoleJson {
        processes: procs,
        ops: 0,
        ops_per_sec: 0.0,
        hits: 0,
        misses: 0,
        errors: 0,
        first_error: None,
        latency_ns: Latency {
            p50: 0,
            p99: 0,
            p999: 0,
            max: 0,
            mean: 0.0,
        },
    };
    for r in reports.iter().filter(|r| r.role == role) {
        let bytes = util::unb64("histogram_v2_base64", &r.histogram_v2_base64)
            .map_err(|e| Fail::new(EXIT_ERROR, format!("a worker's report: {e}")))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| Fail::new(EXIT_ERROR, format!("a worker's histogram: {e:?}")))?;
        all.add(&h)
            .map_err(|e| Fail::new(EXIT_ERROR, format!("merging histograms: {e:?}")))?;
        j.ops += r.ops;
        j.hits += r.hits;
        j.misses += r.misses;
        j.errors += r.errors;
        // Each process ran for about the same time: rates add up.
        j.ops_per_sec += r.ops as f64 / r.elapsed_secs.max(1e-9);
        if j.first_error.is_none() {
            j.first_error = r.first_error.clone();
        }
    }
    j.latency_ns = Latency {
        p50: all.value_at_quantile(0.5),
        p99: all.value_at_quantile(0.99),
        p999: all.value_at_quantile(0.999),
        max: all.max(),
        mean: all.mean(),
    };
    Ok(Some(j))
}

/// A latency for people: `850ns`, `12.3µs`, `1.20ms`, `1.50s`.
fn ns(n: u64) -> String {
    match n {
        0..1_000 => format!("{n}ns"),
        1_000..1_000_000 => format!("{:.1}µs", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        _ => format!("{:.2}s", n as f64 / 1e9),
    }
}

fn print_role(out: &mut impl Write, name: &str, j: &RoleJson) -> std::io::Result<()> {
    let l = &j.latency_ns;
    writeln!(
        out,
        "{name}: {} process(es), {} ops, {:.0} ops/s{}{}",
        j.processes,
        j.ops,
        j.ops_per_sec,
        if name == "readers" {
            format!(
                ", hit ratio {:.1}%",
                100.0 * j.hits as f64 / j.ops.max(1) as f64
            )
        } else {
            String::new()
        },
        if j.errors > 0 {
            format!(
                ", {} errors (first: {})",
                j.errors,
                j.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "  latency p50 {}  p99 {}  p99.9 {}  max {}",
        ns(l.p50),
        ns(l.p99),
        ns(l.p999),
        ns(l.max)
    )
}

pub fn run(a: &BenchArgs, json: bool) -> Result<(), Fail> {
    let cache = open_write(&a.path)?;
    let max = cache.max_value_len(16) as u64;
    if a.value_size > max {
        return Err(Fail::new(
            EXIT_ERROR,
            format!(
                "--value-size {} is larger than {} holds ({max} bytes)",
                a.value_size,
                a.path.display()
            ),
        ));
    }
    // Fill the keys first, so readers hit from the start.
    let t = Instant::now();
    let pb = util::progress(a.keys, "filling");
    let value = Raw(vec![0x5a_u8; a.value_size as usize]);
    let keys: Vec<String> = (0..a.keys).map(key).collect();
    for chunk in keys.chunks(256) {
        cache.set_many(chunk.iter().map(|k| (k, &value)))?;
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let fill_secs = t.elapsed().as_secs_f64();
    drop(cache);

    let exe = std::env::current_exe().map_err(|e| {
        Fail::new(
            EXIT_ERROR,
            format!("finding this program to start workers: {e}"),
        )
    })?;
    let roles = (0..a.readers)
        .map(|_| Role::Reader)
        .chain((0..a.writers).map(|_| Role::Writer));
    let mut workers = Workers(Vec::new());
    for (i, role) in roles.enumerate() {
        let child = Command::new(&exe)
            .arg("bench-worker")
            .arg(&a.path)
            .args([
                "--role",
                if role == Role::Reader {
                    "reader"
                } else {
                    "writer"
                },
            ])
            .args(["--seconds", &a.seconds.to_string()])
            .args(["--value-size", &a.value_size.to_string()])
            .args(["--keys", &a.keys.to_string()])
            .args(["--seed", &(i as u64 + 1).to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Fail::new(
                    EXIT_ERROR,
                    format!("starting a worker ({}): {e}", exe.display()),
                )
            })?;
        workers.0.push(child);
    }
    let pb = util::progress((a.seconds * 10.0).ceil() as u64, "running");
    let started = Instant::now();
    while workers
        .0
        .iter_mut()
        .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(100));
        pb.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
    }
    pb.finish_and_clear();
    let mut reports = Vec::new();
    for c in &mut workers.0 {
        let status = c
            .wait()
            .map_err(|e| Fail::new(EXIT_ERROR, format!("waiting for a worker: {e}")))?;
        let mut line = String::new();
        if let Some(out) = c.stdout.take() {
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| Fail::new(EXIT_ERROR, format!("reading a worker's report: {e}")))?;
        }
        if !status.success() {
            return Err(Fail::new(EXIT_ERROR, format!("a worker failed ({status})")));
        }
        let r: WorkerReport = serde_json::from_str(&line)
            .map_err(|e| Fail::new(EXIT_ERROR, format!("a worker's report: {e}")))?;
        reports.push(r);
    }
    let b = BenchJson {
        path: a.path.display().to_string(),
        seconds: a.seconds,
        value_size: a.value_size,
        keys: a.keys,
        fill_secs,
        reader: merge(Role::Reader, a.readers, &reports)?,
        writer: merge(Role::Writer, a.writers, &reports)?,
    };
    let mut out = std::io::stdout().lock();
    if json {
        return print_json(&mut out, &b);
    }
    writeln!(
        out,
        "{}: {} keys of {} bytes filled in {}; {} reader(s), {} writer(s) for {}s",
        b.path,
        b.keys,
        b.value_size,
        util::dur(Duration::from_secs_f64(fill_secs)),
        a.readers,
        a.writers,
        a.seconds
    )?;
    if let Some(r) = &b.reader {
        print_role(&mut out, "readers", r)?;
    }
    if let Some(w) = &b.writer {
        print_role(&mut out, "writers", w)?;
    }
    Ok(())
}
