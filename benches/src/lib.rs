//! The workload every slotcache benchmark shares, so that slotcache and its
//! peers see exactly the same keys, values and request streams.
//!
//! - Keys are 20 bytes: `key:` and 16 decimal digits of the key's index
//!   ([`key`]); keys that are never inserted start with `miss:` ([`miss_key`]).
//! - The value of key `i` is `len` bytes: `i` as 8 little-endian bytes, then
//!   a fixed pattern ([`fill_value`]).
//! - Request streams are precomputed before timing, so the timed loop walks
//!   an array and spends nothing on random numbers: a uniform stream is a
//!   Fisher-Yates permutation of the key indices ([`permutation`]), a Zipf
//!   stream is drawn from [`Zipf`] with its ranks scattered over the key
//!   space ([`zipf_stream`]).
//! - Files live in a [`BenchDir`] under [`std::env::temp_dir`] (set `TMPDIR`
//!   to move them), so the mappings are backed by the page cache.
//! - The benchmarks that are not criterion's (processes, dogpile, hit ratio)
//!   write their results as JSON into [`results_dir`]; the `report` binary
//!   reads those and criterion's estimates and prints the ratio tables of
//!   `BENCHMARKS.md`.

use std::path::{Path, PathBuf};

pub mod sim;
pub mod traces;

/// Keys in the standard workload.
pub const KEYS: usize = 1_000_000;
/// Key length in bytes.
pub const KEY_LEN: usize = 20;
/// The standard value length in bytes.
pub const VALUE_LEN: usize = 100;
/// Seed of every stream unless a benchmark says otherwise.
pub const SEED: u64 = 0x5EED_CAFE_F00D_BEEF;

/// A 20-byte key.
pub type Key = [u8; KEY_LEN];

/// SplitMix64: a tiny, good-enough PRNG for building request streams.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is negligible for the n used here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Fisher-Yates permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64(seed);
    let mut v: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

fn numbered(prefix: &[u8], i: usize) -> Key {
    let mut k = [b'0'; KEY_LEN];
    k[..prefix.len()].copy_from_slice(prefix);
    let mut n = i;
    for b in k[prefix.len()..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// The key of index `i`: `key:` and `i` in 16 zero-padded decimal digits.
pub fn key(i: usize) -> Key {
    numbered(b"key:", i)
}

/// A key that is never inserted: `miss:` and 15 digits.
pub fn miss_key(i: usize) -> Key {
    numbered(b"miss:", i)
}

/// Fills `out` with the value of key `i`: `i` as 8 little-endian bytes (as
/// far as they fit), then the byte pattern `j as u8`.
pub fn fill_value(i: usize, out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        *b = j as u8;
    }
    let n = out.len().min(8);
    out[..n].copy_from_slice(&(i as u64).to_le_bytes()[..n]);
}

/// The `len`-byte value of key `i` (see [`fill_value`]).
pub fn value(i: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_value(i, &mut v);
    v
}

/// A Zipf distribution over ranks `0..n` with exponent `s`:
/// `P(rank r) ∝ 1 / (r + 1)^s`, sampled by binary search in the cumulative
/// distribution (setup only; the timed loops walk precomputed streams).
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s`.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for r in 0..n {
            sum += 1.0 / ((r + 1) as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// One rank (0 is the most popular).
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// `len` key indices drawn from Zipf(`s`) over `n` keys. Ranks are mapped
/// through a permutation, so the popular keys are scattered over the key
/// space (and over the stripes) instead of being keys 0, 1, 2, ...
pub fn zipf_stream(n: usize, s: f64, len: usize, seed: u64) -> Vec<u32> {
    let zipf = Zipf::new(n, s);
    let scatter = permutation(n, seed ^ 0x5CA7_7E12);
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| scatter[zipf.sample(&mut rng)]).collect()
}

/// A Zipf stream with one-time scans: `zipf` cut into blocks of
/// `scan_every` requests, with a scan of `scan_len` never-repeated keys
/// (indices from `keys` up) before every block but the first. Returns the
/// stream and the length of its warm-up, which ends just before the scan
/// that precedes the block starting at Zipf request `warmup` (a multiple of
/// `scan_every`). Every scan key is a miss in any cache.
pub fn scan_stream(
    zipf: &[u32],
    keys: usize,
    warmup: usize,
    scan_every: usize,
    scan_len: usize,
) -> (Vec<u32>, usize) {
    assert_eq!(warmup % scan_every, 0, "warm-up ends at a block boundary");
    let blocks = zipf.len().div_ceil(scan_every);
    let mut out = Vec::with_capacity(zipf.len() + blocks * scan_len);
    let mut next_scan_key = keys as u32;
    let mut start = 0;
    for (b, block) in zipf.chunks(scan_every).enumerate() {
        if b * scan_every == warmup {
            start = out.len();
        }
        if b > 0 {
            out.extend(next_scan_key..next_scan_key + scan_len as u32);
            next_scan_key += scan_len as u32;
        }
        out.extend_from_slice(block);
    }
    (out, start)
}

/// A uniform stream: `len` indices of `0..n`, each lap a fresh permutation
/// is not needed, so it repeats one permutation of `0..n` (every key once per
/// lap, every access cold when `n` is large).
pub fn uniform_stream(n: usize, len: usize, seed: u64) -> Vec<u32> {
    let perm = permutation(n, seed);
    perm.iter().copied().cycle().take(len).collect()
}

/// A directory for benchmark files under [`std::env::temp_dir`], removed
/// (with everything in it) on drop.
#[derive(Debug)]
pub struct BenchDir(PathBuf);

impl BenchDir {
    /// A fresh `slotcache-bench-{name}-{pid}` directory.
    pub fn new(name: &str) -> BenchDir {
        let dir =
            std::env::temp_dir().join(format!("slotcache-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the benchmark directory");
        BenchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Cargo's target directory, found from the running executable
/// (`target/<profile>/deps/<bench>` or `target/<profile>/<bin>`), or
/// `CARGO_TARGET_DIR` when set.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    let mut dir = exe.parent().expect("the executable's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("the profile directory");
    }
    dir.parent().expect("the target directory").to_path_buf()
}

/// Where the non-criterion benchmarks leave their JSON results:
/// `target/slotcache-bench/`. Criterion's own are in `target/criterion/`.
pub fn results_dir() -> PathBuf {
    let dir = target_dir().join("slotcache-bench");
    std::fs::create_dir_all(&dir).expect("create the results directory");
    dir
}

/// Writes `target/slotcache-bench/{name}.json` and says where.
pub fn write_result(name: &str, json: &serde_json::Value) {
    let path = results_dir().join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(json).expect("serialize the results");
    std::fs::write(&path, text).expect("write the results");
    eprintln!("slotcache bench: results written to {}", path.display());
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted`, which must be sorted ascending.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    assert!(!sorted.is_empty(), "quantile of an empty sample");
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Options for a slotcache file that holds `keys` entries of `value_len`
/// bytes without evicting any: the data region has room for 1.6× the records
/// (eviction keeps a free segment per stripe ahead of the writers, and
/// overwrites leave dead records behind until their segment is reclaimed),
/// and the index exactly the entries (`max_entries(keys)`: with two-choice
/// buckets that holds `keys` random keys without a bucket eviction; the
/// benchmarks assert it after populating).
pub fn roomy_options(keys: usize, value_len: usize) -> slotcache::Options {
    let record = ((48 + KEY_LEN).next_multiple_of(16) + value_len).next_multiple_of(16) as u64;
    let max_entries = keys as u64;
    let index = max_entries * 2 * 8;
    let data = keys as u64 * record * 8 / 5;
    let capacity = (data + index + (64 << 20)).next_multiple_of(1 << 20);
    slotcache::Options::new()
        .capacity(capacity)
        .max_entries(max_entries)
}

/// Child processes of a benchmark, each a re-execution of the running
/// benchmark binary told its role through environment variables. Each child
/// prints one line starting with the benchmark's result prefix; dropping
/// `Children` before [`Children::finish`] (a panic in the parent) kills and
/// reaps every child still running.
#[derive(Debug, Default)]
pub struct Children {
    /// A label for messages, and the child until it has been reaped.
    procs: Vec<(String, Option<std::process::Child>)>,
}

impl Children {
    /// Starts a child of the running executable with `env` set; `label`
    /// names it in messages. Its stdout is read by [`Children::finish`].
    pub fn spawn(&mut self, label: String, env: &[(&str, &std::ffi::OsStr)]) {
        let exe = std::env::current_exe().expect("the path of this executable");
        let mut cmd = std::process::Command::new(exe);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {label}: {e}"));
        self.procs.push((label, Some(child)));
    }

    /// Waits for every child and returns the text after `prefix` on its
    /// result line, in spawn order. Panics (killing the rest) if a child
    /// fails or prints no result line.
    pub fn finish(mut self, prefix: &str) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        for (label, slot) in &mut self.procs {
            let child = slot.as_mut().expect("not reaped yet");
            let mut text = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout
                    .read_to_string(&mut text)
                    .unwrap_or_else(|e| panic!("read the output of {label}: {e}"));
            }
            let status = child
                .wait()
                .unwrap_or_else(|e| panic!("wait for {label}: {e}"));
            *slot = None;
            assert!(
                status.success(),
                "{label} failed ({status}); its output: {text:?}"
            );
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("{label} printed no result line: {text:?}"));
            out.push(line.to_string());
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, slot) in &mut self.procs {
            if let Some(child) = slot.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
