//! The main demo: several worker processes share one cache file.
//!
//! ```text
//! cargo run --release --example demo [-- WORKERS [OPS_PER_WORKER]]
//! ```
//!
//! The parent creates a cache file, seeds a few entries, then starts
//! WORKERS copies of this program as separate processes.
//!
//! 1. Sharing: each worker computes "expensive" results (a hash chain over a
//!    number), stores them under `result:N`, and looks up results other
//!    workers computed, verifying every value it reads.
//! 2. Dogpile: every worker asks `get_or_create` for one "report" that takes
//!    200 ms to build and expires after 1 s, over and over for 3 s. Across
//!    all processes the report is rebuilt once per expiry; while it is
//!    rebuilt, the other workers are served the previous one at once.
//!
//! At the end each worker reports what it did, and the parent prints the
//! file-wide statistics that all processes added to.

use slotcache::{Cache, CreateOptions, Options, WriteOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct Computed {
    input: u64,
    output: u64,
    by_worker: u32,
}

/// The "expensive" function whose results are worth sharing.
fn compute(n: u64) -> u64 {
    let mut x = n ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        x = x.rotate_left(13).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ n;
    }
    x
}

fn worker(path: &str, id: u32, ops: u64) {
    let cache = Cache::open(path, Options::new()).expect("open the shared cache");
    let start = Instant::now();
    let (mut computed, mut from_others, mut from_self, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut state = 0x1234_5678u64 ^ (id as u64) << 32;
    for _ in 0..ops {
        // Inputs are skewed: most requests ask for a small set of numbers,
        // so workers keep finding what others already computed.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = if state % 4 == 0 {
            state % 5_000
        } else {
            state % 300
        };
        let key = format!("result:{n}");
        match cache.get::<Computed>(&key).expect("get") {
            Some(hit) => {
                let (input, output) = (hit.input.to_native(), hit.output.to_native());
                if input != n || output != compute_cached_check(n, output) {
                    bad += 1;
                }
                if hit.by_worker.to_native() == id {
                    from_self += 1;
                } else {
                    from_others += 1;
                }
            }
            None => {
                let output = compute(n);
                cache
                    .set_opt(
                        &key,
                        &Computed {
                            input: n,
                            output,
                            by_worker: id,
                        },
                        &WriteOptions::new().ttl(Some(Duration::from_secs(60))),
                    )
                    .expect("set");
                computed += 1;
            }
        }
    }
    println!(
        "worker {id} (pid {:>6}): {ops} lookups in {:>6.1?}: computed {computed}, reused {from_others} results from other processes and {from_self} of its own, {bad} bad values",
        std::process::id(),
        start.elapsed()
    );
    if bad > 0 {
        std::process::exit(1);
    }
}

/// Phase 2: everybody wants the same slow, expiring report.
fn dogpile_worker(path: &str, id: u32, until: SystemTime) {
    let cache = Cache::open(path, Options::new()).expect("open the shared cache");
    let opts = CreateOptions::new().ttl(Some(Duration::from_secs(1)));
    let (mut built, mut stale, mut fresh, mut slowest_stale) = (0u32, 0u32, 0u32, Duration::ZERO);
    while SystemTime::now() < until {
        let t = Instant::now();
        let report = cache
            .get_or_create_opt("report", &opts, || {
                std::thread::sleep(Duration::from_millis(200)); // the expensive part
                format!("report built by worker {id} at {:?}", SystemTime::now())
            })
            .expect("get_or_create");
        if report.is_created() {
            built += 1;
        } else if report.is_stale() {
            stale += 1;
            slowest_stale = slowest_stale.max(t.elapsed());
        } else {
            fresh += 1;
        }
        drop(report);
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "worker {id}: report built {built} times by this worker, served fresh {fresh} times, served stale {stale} times while another process rebuilt it (slowest stale answer {slowest_stale:.1?})"
    );
}

/// Verifies a cached output cheaply for the demo: recompute one value in 64.
fn compute_cached_check(n: u64, cached: u64) -> u64 {
    if n % 64 == 0 {
        compute(n)
    } else {
        cached
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let id = args[3].parse().unwrap();
        worker(&args[2], id, args[4].parse().unwrap());
        let until = UNIX_EPOCH + Duration::from_millis(args[5].parse().unwrap());
        dogpile_worker(&args[2], id, until);
        return;
    }
    let workers: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let ops: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("slotcache-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("demo.cache");
    let cache = Cache::open(&path, Options::new().capacity(32 << 20).stripes(16))
        .expect("create the cache");
    let info = cache.info();
    println!(
        "cache file {} : {} MiB, {} stripes x {} segments of {} KiB, {} index slots",
        path.display(),
        info.file_size >> 20,
        info.stripes,
        info.segments,
        info.segment_size >> 10,
        info.index_slots
    );
    println!("starting {workers} worker processes, {ops} lookups each\n");
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    // Phase 2 ends at the same wall-clock time in every worker.
    let dogpile_until = SystemTime::now() + Duration::from_secs(4);
    let until_ms = dogpile_until
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let children: Vec<_> = (0..workers)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "worker",
                    path.to_str().unwrap(),
                    &i.to_string(),
                    &ops.to_string(),
                    &until_ms,
                ])
                .stdout(Stdio::inherit())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    let mut ok = true;
    for mut c in children {
        ok &= c.wait().expect("wait for a worker").success();
    }
    let s = cache.stats();
    println!("\nall workers done in {:.1?}", start.elapsed());
    println!(
        "file-wide stats: {} entries, {} hits, {} misses ({:.1}% hit ratio), {} inserts, {} evictions, {} corrupt",
        s.entries,
        s.hits,
        s.misses,
        100.0 * s.hits as f64 / (s.hits + s.misses).max(1) as f64,
        s.inserts,
        s.evictions,
        s.corrupt
    );
    println!(
        "dogpile: the report was built {} times in total by {workers} processes (it expires every second), {} stale answers were served meanwhile, {} callers waited for a creator",
        s.creates, s.stale_served, s.waits
    );
    drop(cache);
    std::fs::remove_dir_all(&dir).ok();
    if !ok {
        eprintln!("a worker failed");
        std::process::exit(1);
    }
}
