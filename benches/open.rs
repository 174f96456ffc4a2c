//! Open time and memory overhead of slotcache files.
//!
//! # What it measures
//!
//! - **`open/64MiB`, `open/1GiB`, `open/4GiB`**: one iteration is
//!   `Cache::open(path, Options::new())` of an existing file, then dropping
//!   the handle. The files are created beforehand with
//!   `Options::new().capacity(c)` and every other option at its default
//!   (`max_entries` = capacity / 256, stripes = one per MiB of capacity,
//!   rounded down to a power of two, at most 64; 16 segments), populated
//!   with 10,000 entries (20-byte keys, 100-byte values) and dropped.
//! - **`open_create/1GiB`** (informational): creating a new 1 GiB file at a
//!   fresh path, then dropping the handle; the file is deleted after each
//!   iteration, outside the timed part. Sample size 10.
//! - **Memory** (printed, and written to
//!   `target/slotcache-bench/memory.json`): how a file's bytes split into
//!   header and tables, index and data region, from `Cache::info()`, and
//!   what the index costs per entry, for the three files above and for a
//!   file sized for 1M 100-byte entries by the shared workload
//!   (`roomy_options(1M, 100)`: `max_entries(1M)`, data for 1.6M records).
//!
//! # What one open does
//!
//! A process keeps a registry of its open cache files keyed by (device,
//! inode), holding only weak references: a second `open` of a file that is
//! still open in the process shares the first handle's state and does no
//! I/O at all. Every iteration here drops its handle before the next one
//! starts (the benchmark checks, on Linux, that neither a mapping nor a
//! descriptor of the file survives a dropped handle), so each iteration is
//! a real open. Traced with `strace -f` on Linux, opening an existing file
//! and dropping the handle is 14 system calls, whatever the file's size:
//!
//! 1. `statx(path)`: look the file up in the registry (a miss);
//! 2. `openat(O_CREAT|O_EXCL)` fails with `EEXIST` (`Options::create` is
//!    on by default), then `openat(O_RDWR)`;
//! 3. `statx(fd)` for the registry key; `flock(LOCK_EX)`, the whole-file
//!    lock that orders openers after a creator;
//! 4. `pread` of the 8-byte magic, two `statx(fd)` for the length,
//!    `pread` of the 4,096-byte header, which is then validated in memory
//!    (CRC, version, ranges, recomputed offsets, rkyv flags): O(1);
//! 5. `mmap` of the whole file (`MAP_SHARED`; nothing is faulted in, so
//!    the file's size costs only page-table reservations), `flock(LOCK_UN)`,
//!    `getpid` for the per-process state;
//! 6. on drop: `close`, `munmap`.
//!
//! No byte-range lock is taken and no reader slot is claimed: those happen
//! on the first write of a stripe and the first read of a thread.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench open               # full run, about half a minute
//! cargo bench --bench open -- --test     # every benchmark once, memory printed, nothing written
//! cargo bench --bench open -- open/1GiB  # a criterion filter
//! ```
//!
//! The files (5.5 GiB in all, preallocated) live in a fresh directory under
//! the temporary directory (`TMPDIR`), removed at exit. Criterion's results
//! are in `target/criterion/`; the memory table in
//! `target/slotcache-bench/memory.json` (full run only).

use criterion::{BenchmarkId, Criterion};
use slotcache::{Cache, Options, Raw};
use slotcache_bench::{
    key, roomy_options, value, write_result, BenchDir, KEYS, KEY_LEN, VALUE_LEN,
};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The files of the `open` group: criterion ID and capacity.
const FILES: [(&str, u64); 3] = [("64MiB", 64 << 20), ("1GiB", 1 << 30), ("4GiB", 4 << 30)];

/// Entries written into each file before it is dropped.
const POPULATE: usize = 10_000;

/// Bytes of one record with a 20-byte key and a 100-byte value: a 48-byte
/// header, the key padded to 16, the value padded to 16 (`src/record.rs`).
const RECORD: u64 = ((48 + KEY_LEN).next_multiple_of(16) + VALUE_LEN).next_multiple_of(16) as u64;

/// Creates a cache file at `path` with `opts`, writes `POPULATE` entries,
/// and drops the handle.
fn create_populated(path: &Path, opts: Options) {
    let cache = Cache::open(path, opts).expect("create the cache file");
    let items: Vec<_> = (0..POPULATE)
        .map(|i| (key(i), Raw(value(i, VALUE_LEN))))
        .collect();
    for chunk in items.chunks(1_000) {
        cache
            .set_many(chunk.iter().map(|(k, v)| (k, v)))
            .expect("populate");
    }
    assert_eq!(cache.stats().entries, POPULATE as u64, "populated");
}

/// Mappings and descriptors of `path` in this process (Linux: from
/// `/proc/self/maps` and `/proc/self/fd`); `(0, 0)` elsewhere.
fn held(path: &Path) -> (usize, usize) {
    if !cfg!(target_os = "linux") {
        return (0, 0);
    }
    let path = std::fs::canonicalize(path).expect("canonical path");
    let name = path.to_string_lossy().into_owned();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read the mappings");
    let mappings = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(5) == Some(name.as_str()))
        .count();
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("list the descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target == &path)
        .count();
    (mappings, fds)
}

/// Checks that an open handle maps the file and that a dropped handle
/// leaves nothing behind: no mapping, no descriptor (so the registry has
/// nothing to share, and the next open is a real one).
fn check_real_open(path: &Path) {
    assert_eq!(held(path), (0, 0), "nothing held before opening");
    let cache = Cache::open(path, Options::new()).expect("open");
    if cfg!(target_os = "linux") {
        assert_eq!(held(path), (1, 1), "one mapping and one descriptor");
    }
    let again = Cache::open(path, Options::new()).expect("open again");
    if cfg!(target_os = "linux") {
        assert_eq!(held(path), (1, 1), "a second handle shares the first");
    }
    drop((cache, again));
    assert_eq!(held(path), (0, 0), "nothing held after dropping");
}

/// The `open` group: open an existing file, drop the handle.
fn bench_open(c: &mut Criterion, files: &[(&str, PathBuf)]) {
    let mut g = c.benchmark_group("open");
    for (id, path) in files {
        check_real_open(path);
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                let cache = Cache::open(black_box(path), Options::new()).expect("open");
                drop(black_box(cache));
            })
        });
        assert_eq!(held(path), (0, 0), "no handle outlives an iteration");
    }
    g.finish();
}

/// The `open_create` group: create a new 1 GiB file (timed: open and
/// drop), delete it (untimed).
fn bench_open_create(c: &mut Criterion, dir: &Path) {
    let mut g = c.benchmark_group("open_create");
    g.sample_size(10);
    let mut n = 0u64;
    g.bench_function(BenchmarkId::from_parameter("1GiB"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let path = dir.join(format!("create-{n}"));
                let start = Instant::now();
                let cache = Cache::open(&path, Options::new().capacity(1 << 30)).expect("create");
                drop(black_box(cache));
                total += start.elapsed();
                std::fs::remove_file(&path).expect("delete the created file");
            }
            total
        })
    });
    g.finish();
}

/// How one file's bytes are spent, from `info()`.
struct Memory {
    /// What the file is.
    name: String,
    /// `Options::capacity`.
    capacity: u64,
    /// `max_entries` the file was created with (explicit or default).
    max_entries: u64,
    /// `info()` of the file.
    info: slotcache::Info,
}

impl Memory {
    /// Opens the existing file at `path` and reads its geometry.
    fn of(name: &str, path: &Path, capacity: u64, max_entries: u64) -> Memory {
        let cache = Cache::open(path, Options::new()).expect("open");
        Memory {
            name: name.to_string(),
            capacity,
            max_entries,
            info: cache.info(),
        }
    }

    /// Bytes of the index: eight bytes per slot.
    fn index_bytes(&self) -> u64 {
        self.info.index_slots * 8
    }

    /// Bytes of the data region: stripes × segments × segment size.
    fn data_bytes(&self) -> u64 {
        self.info.stripes as u64 * self.info.segments as u64 * self.info.segment_size
    }

    /// Everything else: header, stripe table, reader table, alignment.
    fn header_and_tables_bytes(&self) -> u64 {
        self.info.file_size - self.index_bytes() - self.data_bytes()
    }

    /// 192-byte records (20-byte key, 100-byte value) the whole data region
    /// holds.
    fn log_records_max(&self) -> u64 {
        self.data_bytes() / RECORD
    }

    /// Records the log holds in steady state: `segments - 1.5` segments per
    /// stripe are live on average (one is kept free ahead of the writer,
    /// the head segment is half full).
    fn log_records_steady(&self) -> u64 {
        let s = self.info.segments as f64;
        (self.data_bytes() as f64 * (s - 1.5) / s / RECORD as f64) as u64
    }

    /// The row as JSON.
    fn json(&self) -> serde_json::Value {
        let index = self.index_bytes();
        let steady = self.log_records_steady();
        serde_json::json!({
            "name": self.name,
            "capacity": self.capacity,
            "file_size": self.info.file_size,
            "stripes": self.info.stripes,
            "segments": self.info.segments,
            "segment_size": self.info.segment_size,
            "reader_slots": self.info.reader_slots,
            "max_entries": self.max_entries,
            "index_slots": self.info.index_slots,
            "index_bytes": index,
            "index_bytes_per_entry": index as f64 / self.max_entries as f64,
            "header_and_tables_bytes": self.header_and_tables_bytes(),
            "data_bytes": self.data_bytes(),
            "record_bytes": RECORD,
            "log_records_max": self.log_records_max(),
            "log_records_steady": steady,
            "index_bytes_per_storable_entry": index as f64 / steady as f64,
            "file_bytes_per_storable_entry": self.info.file_size as f64 / steady as f64,
            "index_share": index as f64 / self.info.file_size as f64,
        })
    }
}

/// Prints the memory table.
fn print_memory(rows: &[Memory]) {
    println!();
    println!(
        "memory: index = 8 B per slot, 2 slots per max_entries; storable = {RECORD}-byte records \
         (20-byte key, 100-byte value) in the data region, steady state = (segments - 1.5) / \
         segments of it"
    );
    println!(
        "{:<34} {:>13} {:>10} {:>12} {:>8} {:>13} {:>13} {:>10} {:>10} {:>9} {:>9}",
        "file",
        "file_size",
        "max_ent",
        "index_bytes",
        "idx/ent",
        "hdr+tables",
        "data_bytes",
        "log_max",
        "log_steady",
        "idx/store",
        "file/store"
    );
    for m in rows {
        let steady = m.log_records_steady();
        println!(
            "{:<34} {:>13} {:>10} {:>12} {:>8.1} {:>13} {:>13} {:>10} {:>10} {:>9.1} {:>9.1}",
            m.name,
            m.info.file_size,
            m.max_entries,
            m.index_bytes(),
            m.index_bytes() as f64 / m.max_entries as f64,
            m.header_and_tables_bytes(),
            m.data_bytes(),
            m.log_records_max(),
            steady,
            m.index_bytes() as f64 / steady as f64,
            m.info.file_size as f64 / steady as f64,
        );
    }
}

fn main() {
    let test = std::env::args().any(|a| a == "--test");
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let dir = BenchDir::new("open");
    let t0 = Instant::now();
    let mut files = Vec::new();
    for (id, capacity) in FILES {
        let path = dir.path().join(format!("open-{id}"));
        create_populated(&path, Options::new().capacity(capacity));
        files.push((id, path));
    }
    let roomy = dir.path().join("roomy-1M");
    let roomy_opts = roomy_options(KEYS, VALUE_LEN);
    create_populated(&roomy, roomy_opts);
    // The file is exactly the capacity asked for.
    let roomy_capacity = std::fs::metadata(&roomy).expect("roomy file").len();
    eprintln!(
        "slotcache bench: files created and populated in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    bench_open(&mut c, &files);
    bench_open_create(&mut c, dir.path());
    c.final_summary();

    let mut rows: Vec<Memory> = files
        .iter()
        .zip(FILES)
        .map(|((id, path), (_, capacity))| {
            // The default index: one entry per 256 bytes of capacity.
            Memory::of(&format!("{id} (defaults)"), path, capacity, capacity / 256)
        })
        .collect();
    rows.push(Memory::of(
        "1M x 100 B (roomy_options)",
        &roomy,
        roomy_capacity,
        KEYS as u64,
    ));
    for m in &rows {
        assert_eq!(
            m.info.index_slots,
            (2 * m.max_entries).next_multiple_of(8 * m.info.stripes as u64),
            "{}: two index slots per max_entries, whole buckets per stripe",
            m.name
        );
        assert!(
            m.info.file_size <= m.capacity,
            "{}: within capacity",
            m.name
        );
    }
    print_memory(&rows);
    if test {
        println!("test mode: no results written");
        return;
    }
    let json = serde_json::json!({
        "record_bytes": RECORD,
        "files": rows.iter().map(Memory::json).collect::<Vec<_>>(),
    });
    write_result("memory", &json);
}
