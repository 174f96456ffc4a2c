//! Core single-thread benchmarks for `slotcache`.
//!
//! # Workload
//!
//! - 1,000,000 keys of 20 bytes (`key:{i:016}`), 100-byte values.
//! - Cache files live in a fresh directory under [`std::env::temp_dir`]
//!   (set `TMPDIR` to move it), so the mapping is backed by the page cache.
//!   The directory is removed when the benchmark exits.
//! - Two cache files with the same geometry: one holds the keys as raw bytes
//!   (written with `set_many_bytes` in batches), the other holds the same keys
//!   as an rkyv struct whose archived form is exactly 100 bytes (written with
//!   `set_many`), for the typed `get` benchmarks.
//! - Both files are sized so the whole population fits without a single
//!   eviction; setup asserts `entries == 1_000_000` and `evictions == 0`
//!   right after populating, so a mis-sized cache fails loudly. Note that
//!   the index is set-associative (8-slot buckets, no probing), so
//!   `max_entries(N)` does *not* hold N entries without evictions: at
//!   `max_entries(1_000_000)` about 0.85% of 1M random keys overflow their
//!   bucket. `MAX_ENTRIES` below leaves enough headroom that an overflow is
//!   practically impossible.
//! - Keys are visited in a pseudo-random permutation (inline SplitMix64,
//!   Fisher-Yates), one cursor per benchmark that persists across criterion's
//!   samples, so every lookup is a uniformly random, cold key and no sample
//!   re-reads the keys a previous one warmed up.
//! - The write benchmarks share one cursor over the same permutation, so
//!   every key is rewritten once per 1M writes (the deletes' untimed
//!   re-inserts included), well within one trip around a stripe's log ring:
//!   they reclaim dead records but never evict a live key, and the key set
//!   stays the same 1M keys throughout.
//!
//! # Benchmarks
//!
//! | group            | bench         | what one iteration is                                  |
//! |------------------|---------------|--------------------------------------------------------|
//! | `get_bytes`      | `hit`         | `get_bytes` of a present random key (guard dropped)    |
//! | `get_bytes`      | `miss`        | `get_bytes` of a key never inserted                    |
//! | `get_typed`      | `validated`   | `get::<Row>` (bytecheck) of a present random key       |
//! | `get_typed`      | `unchecked`   | `unsafe get_unchecked::<Row>`, same key sequence       |
//! | `get_typed_hot`  | `validated`   | `get::<Row>` of one key, over and over (CPU-bound)     |
//! | `get_typed_hot`  | `unchecked`   | `get_unchecked::<Row>` of that same key                |
//! | `rkyv_access`    | `validated`   | `rkyv::access::<ArchivedRow>` of a 100-byte buffer     |
//! | `rkyv_access`    | `unchecked`   | `rkyv::access_unchecked` of it: validation cost alone  |
//! | `delete`         | `present_key` | `delete` of a present random key (re-inserted untimed) |
//! | `set_bytes`      | `overwrite`   | `set_bytes` of 100 bytes over an existing random key   |
//! | `set_many_bytes` | `batch_64`    | one `set_many_bytes` call with 64 random existing keys |
//!
//! `set_many_bytes/batch_64` reports a throughput in elements (keys) per
//! second; the time per key is the reported time divided by 64.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench core                 # full run (about a minute)
//! cargo bench --bench core -- get_typed    # only the benchmarks matching a filter
//! cargo bench --bench core -- --test       # smoke test: every benchmark runs once
//! TMPDIR=/dev/shm cargo bench --bench core # the files on tmpfs instead
//! ```
//!
//! Populating the two files takes a few seconds in release mode and happens
//! lazily, only for the benchmarks that are selected; each file is flushed
//! (`msync`) after populating so the kernel's writeback of it does not
//! overlap the measurements. On a disk-backed file system writeback of the
//! pages the write benchmarks dirty can still add noise; tmpfs has none.
//! Cache statistics after population and at the end of the run are printed
//! to stderr.

use criterion::{BatchSize, Criterion, Throughput};
use slotcache::{Cache, Options, Stats};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Keys in each cache file.
const KEYS: usize = 1_000_000;
/// Key length: `key:` + 16 digits.
const KEY_LEN: usize = 20;
/// Value length, raw and archived.
const VALUE_LEN: usize = 100;
/// File size of each cache.
const CAPACITY: u64 = 1 << 30;
/// Index size of each cache. The index has two slots per entry in 8-slot
/// buckets and a key can only live in its own bucket, so 1M keys need far
/// more than `max_entries(1M)` to avoid every bucket overflow (expected
/// overflows at 1M keys: ~8,500 with 1M, ~140 with 2M, ~2 with 4M,
/// ~0.007 with 8M, ~0.00003 with 16M).
const MAX_ENTRIES: u64 = 16_000_000;
/// Items per `set_many_bytes` call when populating.
const POPULATE_BATCH: usize = 4096;
/// Items per `set_many_bytes` call in the benchmark.
const SET_MANY_BATCH: usize = 64;
/// Deletes timed together between untimed re-inserts.
const DELETE_CHUNK: usize = 64;
/// Seed of the key permutations.
const SEED: u64 = 0x5EED_CAFE_F00D_BEEF;

type Key = [u8; KEY_LEN];
type Value = [u8; VALUE_LEN];

/// The typed value: an rkyv struct whose archived form is 100 bytes, with a
/// few field kinds bytecheck has to validate (a `bool` among them).
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy)]
struct Row {
    id: u32,
    version: u16,
    kind: u8,
    active: bool,
    score: f32,
    counters: [u32; 8],
    name: [u8; 56],
}

const _: () = assert!(std::mem::size_of::<ArchivedRow>() == VALUE_LEN);

impl Row {
    fn for_key(i: usize) -> Row {
        let mut name = [0u8; 56];
        for (j, b) in name.iter_mut().enumerate() {
            *b = b'a' + ((i + j) % 26) as u8;
        }
        Row {
            id: i as u32,
            version: (i % 65_536) as u16,
            kind: (i % 7) as u8,
            active: i % 2 == 0,
            score: i as f32 * 0.5,
            counters: [i as u32; 8],
            name,
        }
    }
}

/// SplitMix64: a tiny, good-enough PRNG for shuffling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is negligible for n ≤ 1M).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A Fisher-Yates permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// A 20-byte key: `prefix` followed by `i` zero-padded to fill the rest.
fn make_key(prefix: &str, i: usize) -> Key {
    let s = format!("{prefix}{i:0width$}", width = KEY_LEN - prefix.len());
    s.as_bytes().try_into().expect("keys are exactly 20 bytes")
}

/// The raw value stored under key `i`: its index, then a fixed pattern.
fn make_value(i: usize) -> Value {
    let mut v = [0u8; VALUE_LEN];
    for (j, b) in v.iter_mut().enumerate() {
        *b = j as u8;
    }
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// Removes the benchmark's directory on drop (even after a panic).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything the benchmarks share. Caches are created on first use.
struct Fixture {
    /// Key indices in visiting order (a permutation of `0..KEYS`).
    order: Vec<usize>,
    /// Present keys, in visiting order.
    hits: Vec<Key>,
    /// Keys that are never inserted, in visiting order.
    misses: Vec<Key>,
    bytes: OnceLock<Cache>,
    typed: OnceLock<Cache>,
    /// Declared last so it drops after the caches.
    dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("slotcache-bench-core-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the benchmark directory");
        let order = permutation(KEYS, SEED);
        let hits = order.iter().map(|&i| make_key("key:", i)).collect();
        let misses = permutation(KEYS, SEED ^ 1)
            .into_iter()
            .map(|i| make_key("miss:", i))
            .collect();
        Fixture {
            order,
            hits,
            misses,
            bytes: OnceLock::new(),
            typed: OnceLock::new(),
            dir: TempDir(dir),
        }
    }

    fn open(dir: &Path, name: &str) -> Cache {
        let options = Options::new().capacity(CAPACITY).max_entries(MAX_ENTRIES);
        Cache::open(dir.join(name), options).expect("open the cache file")
    }

    /// The raw-bytes cache, populated with every key.
    fn bytes(&self) -> &Cache {
        self.bytes.get_or_init(|| {
            let cache = Self::open(&self.dir.0, "bytes.cache");
            let start = Instant::now();
            let mut batch: Vec<(Key, Value)> = Vec::with_capacity(POPULATE_BATCH);
            for i in 0..KEYS {
                batch.push((make_key("key:", i), make_value(i)));
                if batch.len() == POPULATE_BATCH || i == KEYS - 1 {
                    cache.set_many_bytes(&batch).expect("populate");
                    batch.clear();
                }
            }
            let took = start.elapsed();
            check_populated("bytes", &cache, took);
            for &i in &[0, 1, KEYS / 2, KEYS - 1] {
                let got = cache.get_bytes(make_key("key:", i)).expect("get");
                assert_eq!(got.as_deref(), Some(&make_value(i)[..]), "key {i}");
            }
            assert!(cache.get_bytes(self.misses[0]).expect("get").is_none());
            cache
        })
    }

    /// The typed cache: the same keys, holding `Row`s.
    fn typed(&self) -> &Cache {
        self.typed.get_or_init(|| {
            let cache = Self::open(&self.dir.0, "typed.cache");
            let start = Instant::now();
            let mut rows: Vec<(Key, Row)> = Vec::with_capacity(POPULATE_BATCH);
            for i in 0..KEYS {
                rows.push((make_key("key:", i), Row::for_key(i)));
                if rows.len() == POPULATE_BATCH || i == KEYS - 1 {
                    cache
                        .set_many(rows.iter().map(|(k, r)| (k, r)))
                        .expect("populate");
                    rows.clear();
                }
            }
            let took = start.elapsed();
            check_populated("typed", &cache, took);
            for &i in &[0, 1, KEYS / 2, KEYS - 1] {
                let row = cache.get::<Row>(make_key("key:", i)).expect("get");
                let row = row.expect("typed key present");
                assert_eq!(row.id, i as u32);
                assert_eq!(row.active, i % 2 == 0);
            }
            cache
        })
    }
}

/// Asserts that the population fits (every key live, nothing evicted), then
/// writes the dirty pages back so the kernel's background writeback of the
/// population does not run during the measurements.
fn check_populated(name: &str, cache: &Cache, took: Duration) {
    let st = cache.stats();
    let start = Instant::now();
    cache.flush().expect("flush");
    eprintln!(
        "slotcache bench: populated {name} cache with {KEYS} keys in {took:.2?} (flushed in {:.2?})",
        start.elapsed()
    );
    assert_eq!(
        st.inserts, KEYS as u64,
        "{name}: every key written once: {st:?}"
    );
    assert_eq!(
        (st.entries, st.evictions),
        (KEYS as u64, 0),
        "{name}: the cache is too small for {KEYS} keys (raise CAPACITY / MAX_ENTRIES): {st:?}"
    );
}

fn print_stats(name: &str, st: &Stats) {
    eprintln!(
        "slotcache bench: {name} cache stats: entries={} evictions={} reinserts={} inserts={} \
         deletes={} hits={} misses={} corrupt={} mismatched={} pin_waits={} bytes_used={}/{}",
        st.entries,
        st.evictions,
        st.reinserts,
        st.inserts,
        st.deletes,
        st.hits,
        st.misses,
        st.corrupt,
        st.mismatched,
        st.pin_waits,
        st.bytes_used,
        st.capacity,
    );
}

/// The next index of a cursor walking `0..KEYS` round and round.
#[inline]
fn advance(cursor: &mut usize) -> usize {
    let i = *cursor;
    *cursor = if i + 1 == KEYS { 0 } else { i + 1 };
    i
}

fn bench_get_bytes(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("get_bytes");

    let mut cursor = 0;
    g.bench_function("hit", |b| {
        let cache = fx.bytes();
        b.iter(|| {
            let key = &fx.hits[advance(&mut cursor)];
            cache.get_bytes(black_box(key)).expect("get").expect("hit")
        })
    });

    let mut cursor = 0;
    g.bench_function("miss", |b| {
        let cache = fx.bytes();
        b.iter(|| {
            let key = &fx.misses[advance(&mut cursor)];
            let got = cache.get_bytes(black_box(key)).expect("get");
            assert!(got.is_none(), "a miss key was found");
            got
        })
    });

    g.finish();
}

fn bench_get_typed(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("get_typed");

    let mut cursor = 0;
    g.bench_function("validated", |b| {
        let cache = fx.typed();
        b.iter(|| {
            let key = &fx.hits[advance(&mut cursor)];
            cache.get::<Row>(black_box(key)).expect("get").expect("hit")
        })
    });

    let mut cursor = 0;
    g.bench_function("unchecked", |b| {
        let cache = fx.typed();
        b.iter(|| {
            let key = &fx.hits[advance(&mut cursor)];
            // SAFETY: this process wrote every record of the typed cache with
            // `set_many::<Row>`, so each one is a well-formed archive of `Row`.
            unsafe { cache.get_unchecked::<Row>(black_box(key)) }
                .expect("get")
                .expect("hit")
        })
    });

    g.finish();

    // The same two reads of a single key, so index, record and reader slot
    // stay in L1: what is left is the CPU cost, validation included.
    let mut g = c.benchmark_group("get_typed_hot");
    let key = &fx.hits[0];

    g.bench_function("validated", |b| {
        let cache = fx.typed();
        b.iter(|| cache.get::<Row>(black_box(key)).expect("get").expect("hit"))
    });

    g.bench_function("unchecked", |b| {
        let cache = fx.typed();
        b.iter(|| {
            // SAFETY: as above.
            unsafe { cache.get_unchecked::<Row>(black_box(key)) }
                .expect("get")
                .expect("hit")
        })
    });

    g.finish();

    // Validation alone, on an aligned in-memory archive of one `Row`: the
    // part of `get` that `get_unchecked` skips.
    let mut g = c.benchmark_group("rkyv_access");
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&Row::for_key(0)).expect("serialize");
    assert_eq!(archived.len(), VALUE_LEN);

    g.bench_function("validated", |b| {
        b.iter(|| {
            rkyv::access::<ArchivedRow, rkyv::rancor::Error>(black_box(&archived[..]))
                .expect("valid")
        })
    });

    g.bench_function("unchecked", |b| {
        b.iter(|| {
            // SAFETY: `archived` was just produced by `rkyv::to_bytes` for a `Row`.
            unsafe { rkyv::access_unchecked::<ArchivedRow>(black_box(&archived[..])) }
        })
    });

    g.finish();
}

fn bench_delete(c: &mut Criterion, fx: &Fixture, cursor: &mut usize) {
    let mut g = c.benchmark_group("delete");
    g.bench_function("present_key", |b| {
        let cache = fx.bytes();
        let mut restore: Vec<(Key, Value)> = Vec::with_capacity(DELETE_CHUNK);
        // Deletes are timed in chunks; each chunk's keys are written back,
        // untimed, before the next chunk, so at most `DELETE_CHUNK` keys are
        // ever missing and every timed delete finds its key.
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(DELETE_CHUNK);
                let first = *cursor;
                let start = Instant::now();
                let mut found = 0usize;
                for _ in 0..n {
                    let key = &fx.hits[advance(cursor)];
                    found += cache.delete(black_box(key)).expect("delete") as usize;
                }
                timed += start.elapsed();
                assert_eq!(found, n, "a deleted key was not present");
                restore.clear();
                let mut at = first;
                for _ in 0..n {
                    let i = advance(&mut at);
                    restore.push((fx.hits[i], make_value(fx.order[i])));
                }
                cache.set_many_bytes(&restore).expect("re-insert");
                left -= n;
            }
            timed
        })
    });
    g.finish();
}

fn bench_set_bytes(c: &mut Criterion, fx: &Fixture, cursor: &mut usize) {
    let mut g = c.benchmark_group("set_bytes");
    let value = make_value(usize::MAX);
    g.bench_function("overwrite", |b| {
        let cache = fx.bytes();
        b.iter(|| {
            let key = &fx.hits[advance(cursor)];
            cache
                .set_bytes(black_box(key), black_box(&value))
                .expect("set_bytes")
        })
    });
    g.finish();
}

fn bench_set_many_bytes(c: &mut Criterion, fx: &Fixture, cursor: &mut usize) {
    let mut g = c.benchmark_group("set_many_bytes");
    g.throughput(Throughput::Elements(SET_MANY_BATCH as u64));
    let value = make_value(usize::MAX - 1);
    g.bench_function("batch_64", |b| {
        let cache = fx.bytes();
        b.iter_batched_ref(
            || -> Vec<(&Key, &Value)> {
                (0..SET_MANY_BATCH)
                    .map(|_| (&fx.hits[advance(cursor)], &value))
                    .collect()
            },
            |items| {
                cache
                    .set_many_bytes(black_box(&items[..]))
                    .expect("set_many")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let fx = Fixture::new();

    // Reads first, on the freshly populated files; then the writes.
    bench_get_bytes(&mut c, &fx);
    bench_get_typed(&mut c, &fx);
    // The write benchmarks share one cursor, so together they keep walking
    // the permutation: every key is rewritten once per `KEYS` writes.
    let mut write_cursor = 0;
    bench_delete(&mut c, &fx, &mut write_cursor);
    bench_set_bytes(&mut c, &fx, &mut write_cursor);
    bench_set_many_bytes(&mut c, &fx, &mut write_cursor);

    c.final_summary();
    for (name, cache) in [("bytes", fx.bytes.get()), ("typed", fx.typed.get())] {
        if let Some(cache) = cache {
            print_stats(name, &cache.stats());
        }
    }
}
