//! slotcache against its peers — LMDB (through `heed`), redb, moka and a
//! `RwLock<HashMap>` — on the same workload, in the same run.
//!
//! # Workload
//!
//! - The shared workload of `slotcache_bench`: 1,000,000 keys of 20 bytes
//!   (`key:{i:016}`), 100-byte values ([`value`]). Every store is populated
//!   with all of them before any timing, in the same order: the first lap
//!   of the uniform stream (a permutation of the key indices).
//! - Every file lives in one [`BenchDir`] under [`std::env::temp_dir`] (set
//!   `TMPDIR` to move it), so the mappings and files are backed by the page
//!   cache. The directory is removed when the benchmark exits. Each store is
//!   synced once after populating (`flush`, `force_sync`, a durable commit)
//!   so the kernel's writeback of the population does not overlap the
//!   measurements.
//! - Request streams are precomputed arrays of keys, walked sequentially by
//!   a cursor that persists across criterion's samples (one cursor per
//!   benchmark, each starting at the stream's beginning, so every store sees
//!   the same key sequence): for reads `uniform_stream(KEYS, 4M, SEED ^ 1)`
//!   (every key once per 1M requests, every access a cold random key, in an
//!   order unrelated to the order the keys were written in: a log and a
//!   heap lay records out in write order, and reading in that order would
//!   measure that locality) and `zipf_stream(KEYS, 0.99, 4M, SEED)` (a
//!   skewed, cache-friendly stream); for writes `uniform_stream(KEYS, 4M,
//!   SEED)`, whose first lap is also the population order.
//! - Stores (and the Zipf stream) are created and populated lazily, the
//!   first time a selected benchmark needs them, so a filter only pays for
//!   what it uses.
//!
//! # The stores
//!
//! | store            | configuration                                                              |
//! |------------------|----------------------------------------------------------------------------|
//! | slotcache bytes  | `Cache::open(.., roomy_options(KEYS, VALUE_LEN))`, raw 100-byte values      |
//! | slotcache typed  | the same geometry, values stored as [`Blob`] (archived size 100 bytes)     |
//! | slotcache byte-range | the bytes file again, created with byte-range stripe locks (`Options::byte_range_locks`, a hidden option): the locks of format version 2, of macOS and of Windows, measured beside the robust mutexes of Linux |
//! | LMDB (heed)      | one env, map size 4 GiB, `NO_SYNC \| NO_META_SYNC`, TLS read txns (heed's default), one unnamed `Database<Bytes, Bytes>` |
//! | redb             | one file, default builder (1 GiB page cache), one table `TableDefinition<&[u8], &[u8]>`; timed writes commit with `Durability::None` |
//! | moka             | `moka::sync::Cache<Vec<u8>, Arc<[u8]>>`, `max_capacity` 2M (nothing is evicted) |
//! | `RwLock<HashMap>`| `std::sync::RwLock<HashMap<Vec<u8>, Vec<u8>>>`, std hasher: the in-process reference |
//!
//! Neither LMDB nor redb syncs on a timed commit: LMDB's `NO_SYNC` skips
//! `fdatasync` (the commit still `pwrite`s its pages to the page cache),
//! redb's `Durability::None` keeps the commit in memory. slotcache never
//! syncs on a write either (only `flush` does).
//!
//! # Benchmarks
//!
//! Group `read_floor` (a small file of its own: 64 keys of 100 bytes,
//! looked up in turn, everything in cache): `slotcache_get_hot` is
//! `get::<Raw>`; `floor` is the floor prototype ([`Floor`]: only the memory
//! accesses and checks a lookup needs — hash, index line, tag, hazard pin
//! as a plain store, tail re-check, record header, stored hash and key,
//! CRC-32C, unpin — over the same keys and values laid out as slotcache lays
//! out records); `floor_seqcst_pin` the same with the pin a SeqCst swap.
//!
//! Groups `peers_get_uniform` and `peers_get_zipf` (the same ten IDs; one
//! iteration is one lookup of the stream's next key, which must be present —
//! a miss panics — with the value black-boxed and any guard dropped):
//!
//! | bench                     | what one iteration is                                             |
//! |---------------------------|-------------------------------------------------------------------|
//! | `slotcache_get_bytes`     | `get::<Raw>`, the guard's slice black-boxed, guard dropped         |
//! | `slotcache_get_many_64_per_key` | 1/64 of a `get_many::<Raw>` call of 64 consecutive stream keys (`iter_custom`, calls timed only) |
//! | `slotcache_get_typed`     | `get::<Blob>` (bytecheck-validated) on the typed file             |
//! | `slotcache_get_unchecked` | `unsafe get_unchecked::<Blob>` on the typed file                  |
//! | `lmdb_one_txn`            | `Database::get` in a read txn opened before timing and reused     |
//! | `lmdb_txn_per_get`        | `read_txn`, `get`, drop the txn                                   |
//! | `redb_one_txn`            | `ReadOnlyTable::get` in a read txn and table opened before timing |
//! | `redb_txn_per_get`        | `begin_read`, `open_table`, `get`, drop both                      |
//! | `moka`                    | `Cache::get(&[u8])` (clones the `Arc<[u8]>`)                      |
//! | `rwlock_hashmap`          | `read()`, `HashMap::get(&[u8])`, unlock                           |
//!
//! The "one txn" variants open their transaction outside the timed loop of
//! each criterion sample, so many gets share one transaction.
//!
//! Group `peers_set`: one iteration overwrites one existing key, the next of
//! the uniform stream, with a fixed 100-byte value:
//!
//! | bench                             | what one iteration is                                        |
//! |-----------------------------------|--------------------------------------------------------------|
//! | `slotcache_set_bytes`             | `set` (`Raw`)                                                  |
//! | `slotcache_set_bytes_byte_range`  | `set` (`Raw`) on the byte-range file                         |
//! | `slotcache_set_bytes_hot`, `slotcache_set_bytes_byte_range_hot` | the same two, cycling over the stream's first 4096 keys (a cache-resident working set) |
//! | `slotcache_set_many_64_per_key`   | 1/64 of a `set_many` (`Raw`) call with 64 consecutive keys     |
//! | `slotcache_set_many_1024_per_key` | 1/1024 of a `set_many` (`Raw`) call with 1024 consecutive keys |
//! | `lmdb_put_txn_per_write`          | `write_txn`, `put`, `commit` (`NO_SYNC`)                     |
//! | `moka_insert`                     | `insert(key.to_vec(), Arc::from(value))`                     |
//! | `rwlock_hashmap_insert`           | `write()`, `insert(key.to_vec(), value.to_vec())`, unlock    |
//! | `slotcache_delete`                | `delete` of a present key (see below)                        |
//! | `slotcache_delete_byte_range`     | the same on the byte-range file                              |
//! | `moka_remove`                     | `remove(&[u8])` of a present key                             |
//! | `redb_put_txn_per_write`          | `begin_write`, `Durability::None`, `open_table`, `insert`, `commit` (10 samples) |
//!
//! The delete benchmarks use `iter_custom`: timed runs of 256 deletes of
//! consecutive distinct stream keys (each must be present), each followed
//! by an untimed re-insert of the run's keys (`set_many`, or moka inserts).
//!
//! The `set_many` benchmarks use `iter_custom`: for `iters` keys they make
//! `set_many` (`Raw`) calls of 64 (or 1024) consecutive stream keys (the last
//! call may be smaller), build each batch untimed and return the time spent
//! in the calls, so the reported time is per key. moka and the `HashMap`
//! need owned keys and values, so their inserts include those allocations,
//! as any caller's would.
//!
//! The three slotcache write benchmarks share one cursor, and the bytes file
//! was populated in the stream's order, so every key is rewritten exactly
//! once per 1M writes, in the order it was first written: a record is dead
//! once 1M more writes have happened, and a stripe's log ring holds about
//! 1.6M records (`roomy_options`), so reclaiming the oldest segment only ever
//! drops dead records. The run asserts at the end that the bytes file still
//! holds all 1M keys with no eviction, and prints every store's statistics.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench peers                     # full run (about 2.5 minutes)
//! cargo bench --bench peers -- peers_get_zipf   # only benchmarks matching a filter
//! cargo bench --bench peers -- lmdb             # e.g. only LMDB's benchmarks
//! cargo bench --bench peers -- --test           # smoke test: every benchmark runs once
//! TMPDIR=/dev/shm cargo bench --bench peers     # the files on tmpfs instead
//! ```
//!
//! Timing: 20 samples (10 for `redb_put_txn_per_write`), 1 s warm-up, 3 s
//! measurement per benchmark; 25 benchmarks, plus about half a minute of
//! populating the six stores and building the streams: about 150 s in all
//! on a 2-core machine (`-- --test` takes about 25 s, nearly all of it
//! populating). Peak memory is about 2.5 GB (the stores and the two 80 MB
//! streams), plus the files in the page cache.

use criterion::Criterion;
use heed::types::Bytes;
use heed::{EnvFlags, EnvOpenOptions};
use redb::{Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use slotcache::{Cache, Raw, Stats};
use slotcache_bench::{
    key, roomy_options, uniform_stream, value, zipf_stream, BenchDir, Key, KEYS, SEED, VALUE_LEN,
};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Requests in each precomputed stream (4 laps of the uniform permutation).
const STREAM_LEN: usize = 4 * KEYS;
/// Zipf exponent of the skewed stream.
const ZIPF_S: f64 = 0.99;
/// Items per `set_many` (`Raw`) / `set_many` call when populating slotcache.
const POPULATE_BATCH: usize = 4096;
/// Puts per write transaction when populating LMDB and redb.
const POPULATE_TXN: usize = 250_000;
/// LMDB's map size: far more than 1M 100-byte records need, so a write
/// never fails with `MapFull`; the file only grows as pages are used.
const LMDB_MAP_SIZE: usize = 4 << 30;
/// moka's capacity (in entries): above `KEYS`, so nothing is evicted.
const MOKA_CAPACITY: u64 = 2 * KEYS as u64;
/// The redb table holding the workload.
const REDB_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers");
/// Keys per `set_many` (`Raw`) call in the two batch write benchmarks.
const SET_MANY_BATCHES: [usize; 2] = [64, 1024];
/// Samples of every benchmark but redb's writes.
const SAMPLES: usize = 20;
/// Samples of `redb_put_txn_per_write` (tens of µs or more an iteration).
const REDB_WRITE_SAMPLES: usize = 10;

/// The typed value of the second slotcache file: 100 raw bytes, archived as
/// exactly 100 bytes (alignment 1), holding the same bytes as the raw value.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Blob([u8; VALUE_LEN]);

const _: () = assert!(std::mem::size_of::<ArchivedBlob>() == VALUE_LEN);

impl Blob {
    /// The typed value of key `i`: the bytes of [`value`]`(i, VALUE_LEN)`.
    fn for_key(i: usize) -> Blob {
        Blob(value(i, VALUE_LEN).try_into().expect("VALUE_LEN bytes"))
    }
}

/// An LMDB environment and its unnamed database.
struct Lmdb {
    /// The environment (opened with `NO_SYNC | NO_META_SYNC`).
    env: heed::Env,
    /// The unnamed database holding the workload.
    db: heed::Database<Bytes, Bytes>,
}

/// moka's cache type.
type Moka = moka::sync::Cache<Vec<u8>, Arc<[u8]>>;

/// The in-process reference: a `HashMap` behind a `RwLock`.
type LockedMap = RwLock<HashMap<Vec<u8>, Vec<u8>>>;

/// Everything the benchmarks share. Streams and stores are built on first
/// use, so a filter only pays for what it selects.
struct Fixture {
    /// The uniform stream's key indices; its first `KEYS` entries (one
    /// permutation) are also the population order of every store.
    uniform_idx: Vec<u32>,
    /// The uniform stream's keys.
    uniform: Vec<Key>,
    /// The uniform read stream: another permutation (seed `SEED ^ 1`), so
    /// reads do not walk the keys in the order they were written. A log
    /// (slotcache) and a heap (the `HashMap`'s key allocations) lay records
    /// out in write order, and reading in that order would measure their
    /// locality instead of random lookups.
    reads: Vec<Key>,
    /// The Zipf stream's keys.
    zipf: OnceLock<Vec<Key>>,
    /// slotcache with raw-byte values.
    slot_bytes: OnceLock<Cache>,
    /// The same, in a file created with byte-range stripe locks (the
    /// stripe locks of format version 2, and of macOS and Windows), to
    /// compare the two lock kinds in one run.
    slot_ranged: OnceLock<Cache>,
    /// slotcache with [`Blob`] values.
    slot_typed: OnceLock<Cache>,
    /// LMDB.
    lmdb: OnceLock<Lmdb>,
    /// redb.
    redb: OnceLock<redb::Database>,
    /// moka.
    moka: OnceLock<Moka>,
    /// `RwLock<HashMap>`.
    map: OnceLock<LockedMap>,
    /// Declared last so it drops after every store in it.
    dir: BenchDir,
}

impl Fixture {
    /// The uniform stream and an empty directory; nothing else yet.
    fn new() -> Fixture {
        let start = Instant::now();
        let uniform_idx = uniform_stream(KEYS, STREAM_LEN, SEED);
        let uniform = uniform_idx.iter().map(|&i| key(i as usize)).collect();
        let reads = uniform_stream(KEYS, STREAM_LEN, SEED ^ 1)
            .into_iter()
            .map(|i| key(i as usize))
            .collect();
        eprintln!(
            "slotcache bench: uniform stream of {STREAM_LEN} keys built in {:.2?}",
            start.elapsed()
        );
        Fixture {
            uniform_idx,
            uniform,
            reads,
            zipf: OnceLock::new(),
            slot_bytes: OnceLock::new(),
            slot_ranged: OnceLock::new(),
            slot_typed: OnceLock::new(),
            lmdb: OnceLock::new(),
            redb: OnceLock::new(),
            moka: OnceLock::new(),
            map: OnceLock::new(),
            dir: BenchDir::new("peers"),
        }
    }

    /// The population order: one permutation of `0..KEYS`, the first lap of
    /// the uniform stream.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.uniform_idx[..KEYS].iter().map(|&i| i as usize)
    }

    /// The keys of a stream (the Zipf stream is built on first use).
    fn stream(&self, stream: Stream) -> &[Key] {
        match stream {
            Stream::Uniform => &self.reads,
            Stream::Zipf => self.zipf(),
        }
    }

    /// The Zipf stream's keys.
    fn zipf(&self) -> &[Key] {
        self.zipf.get_or_init(|| {
            let start = Instant::now();
            let keys = zipf_stream(KEYS, ZIPF_S, STREAM_LEN, SEED)
                .into_iter()
                .map(|i| key(i as usize))
                .collect();
            eprintln!(
                "slotcache bench: zipf stream of {STREAM_LEN} keys built in {:.2?}",
                start.elapsed()
            );
            keys
        })
    }

    /// The raw-bytes slotcache file, populated with every key.
    fn slot_bytes(&self) -> &Cache {
        self.slot_bytes
            .get_or_init(|| self.populate_bytes("bytes", roomy_options(KEYS, VALUE_LEN)))
    }

    /// The raw-bytes file with byte-range stripe locks, populated alike.
    fn slot_ranged(&self) -> &Cache {
        self.slot_ranged.get_or_init(|| {
            let opts = roomy_options(KEYS, VALUE_LEN).byte_range_locks(true);
            self.populate_bytes("byte-range", opts)
        })
    }

    /// Creates `slotcache-{name}.cache` with `opts` and stores every key's
    /// raw value in it.
    fn populate_bytes(&self, name: &str, opts: slotcache::Options) -> Cache {
        let path = self.dir.path().join(format!("slotcache-{name}.cache"));
        let cache = Cache::open(path, opts).expect("open");
        let start = Instant::now();
        self.populate(&cache, |i| Raw(value(i, VALUE_LEN)));
        check_slotcache(name, &cache, start.elapsed());
        for i in spot_checks() {
            let got = cache.get::<Raw>(key(i)).expect("get").expect("present");
            assert_eq!(&*got, &value(i, VALUE_LEN)[..], "slotcache {name}, key {i}");
        }
        cache
    }

    /// Stores `make(i)` under every key `i`, in the population order, with
    /// `set_many` calls of [`POPULATE_BATCH`] items.
    fn populate<V: slotcache::Value>(&self, cache: &Cache, make: impl Fn(usize) -> V) {
        let mut batch: Vec<(Key, V)> = Vec::with_capacity(POPULATE_BATCH);
        for i in self.order() {
            batch.push((key(i), make(i)));
            if batch.len() == POPULATE_BATCH {
                cache
                    .set_many(batch.iter().map(|(k, v)| (k, v)))
                    .expect("populate");
                batch.clear();
            }
        }
        cache
            .set_many(batch.iter().map(|(k, v)| (k, v)))
            .expect("populate");
    }

    /// The typed slotcache file: the same keys, holding [`Blob`]s.
    fn slot_typed(&self) -> &Cache {
        self.slot_typed.get_or_init(|| {
            let path = self.dir.path().join("slotcache-typed.cache");
            let cache = Cache::open(path, roomy_options(KEYS, VALUE_LEN)).expect("open");
            let start = Instant::now();
            self.populate(&cache, Blob::for_key);
            check_slotcache("typed", &cache, start.elapsed());
            for i in spot_checks() {
                let got = cache.get::<Blob>(key(i)).expect("get").expect("present");
                assert_eq!(
                    &got.0[..],
                    &value(i, VALUE_LEN)[..],
                    "slotcache typed, key {i}"
                );
            }
            cache
        })
    }

    /// LMDB, populated with every key.
    fn lmdb(&self) -> &Lmdb {
        self.lmdb.get_or_init(|| {
            let path = self.dir.path().join("lmdb");
            std::fs::create_dir_all(&path).expect("create the LMDB directory");
            let mut options = EnvOpenOptions::new();
            options.map_size(LMDB_MAP_SIZE).max_dbs(1);
            // SAFETY: NO_SYNC and NO_META_SYNC only give up durability across
            // an OS crash or power loss, which a benchmark does not need.
            unsafe { options.flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC) };
            // SAFETY: the environment is a fresh directory that only this
            // process opens, once, and nothing else modifies its files.
            let env = unsafe { options.open(&path) }.expect("open the LMDB env");
            let start = Instant::now();
            let mut wtxn = env.write_txn().expect("write txn");
            let db: heed::Database<Bytes, Bytes> =
                env.create_database(&mut wtxn, None).expect("create db");
            wtxn.commit().expect("commit");
            let order: Vec<usize> = self.order().collect();
            for chunk in order.chunks(POPULATE_TXN) {
                let mut wtxn = env.write_txn().expect("write txn");
                for &i in chunk {
                    db.put(&mut wtxn, &key(i), &value(i, VALUE_LEN))
                        .expect("put");
                }
                wtxn.commit().expect("commit");
            }
            let took = start.elapsed();
            env.force_sync().expect("sync");
            let rtxn = env.read_txn().expect("read txn");
            assert_eq!(db.len(&rtxn).expect("len"), KEYS as u64, "LMDB entries");
            for i in spot_checks() {
                let got = db.get(&rtxn, &key(i)).expect("get").expect("present");
                assert_eq!(got, &value(i, VALUE_LEN)[..], "LMDB, key {i}");
            }
            drop(rtxn);
            eprintln!(
                "slotcache bench: populated LMDB with {KEYS} keys in {took:.2?} (synced in {:.2?})",
                start.elapsed() - took
            );
            Lmdb { env, db }
        })
    }

    /// redb, populated with every key.
    fn redb(&self) -> &redb::Database {
        self.redb.get_or_init(|| {
            let db = redb::Database::create(self.dir.path().join("peers.redb")).expect("create");
            let start = Instant::now();
            let order: Vec<usize> = self.order().collect();
            let chunks = order.chunks(POPULATE_TXN).count();
            for (n, chunk) in order.chunks(POPULATE_TXN).enumerate() {
                let mut wtxn = db.begin_write().expect("write txn");
                // Only the last population commit is durable (it syncs the
                // file, so its writeback does not overlap the measurements).
                if n + 1 < chunks {
                    wtxn.set_durability(Durability::None).expect("durability");
                }
                {
                    let mut table = wtxn.open_table(REDB_TABLE).expect("table");
                    for &i in chunk {
                        table
                            .insert(&key(i)[..], &value(i, VALUE_LEN)[..])
                            .expect("insert");
                    }
                }
                wtxn.commit().expect("commit");
            }
            let took = start.elapsed();
            let rtxn = db.begin_read().expect("read txn");
            let table = rtxn.open_table(REDB_TABLE).expect("table");
            assert_eq!(table.len().expect("len"), KEYS as u64, "redb entries");
            for i in spot_checks() {
                let got = table.get(&key(i)[..]).expect("get").expect("present");
                assert_eq!(got.value(), &value(i, VALUE_LEN)[..], "redb, key {i}");
            }
            eprintln!("slotcache bench: populated redb with {KEYS} keys in {took:.2?}");
            drop(table);
            drop(rtxn);
            db
        })
    }

    /// moka, populated with every key.
    fn moka(&self) -> &Moka {
        self.moka.get_or_init(|| {
            let cache: Moka = moka::sync::Cache::new(MOKA_CAPACITY);
            let start = Instant::now();
            for i in self.order() {
                cache.insert(key(i).to_vec(), Arc::from(value(i, VALUE_LEN)));
            }
            cache.run_pending_tasks();
            let took = start.elapsed();
            assert_eq!(cache.entry_count(), KEYS as u64, "moka entries");
            for i in spot_checks() {
                let got = cache.get(&key(i)[..]).expect("present");
                assert_eq!(&got[..], &value(i, VALUE_LEN)[..], "moka, key {i}");
            }
            eprintln!("slotcache bench: populated moka with {KEYS} keys in {took:.2?}");
            cache
        })
    }

    /// The `RwLock<HashMap>`, populated with every key.
    fn map(&self) -> &LockedMap {
        self.map.get_or_init(|| {
            let start = Instant::now();
            let mut map = HashMap::new();
            for i in self.order() {
                map.insert(key(i).to_vec(), value(i, VALUE_LEN));
            }
            let took = start.elapsed();
            assert_eq!(map.len(), KEYS, "HashMap entries");
            for i in spot_checks() {
                assert_eq!(map[&key(i)[..]], value(i, VALUE_LEN), "HashMap, key {i}");
            }
            eprintln!("slotcache bench: populated RwLock<HashMap> with {KEYS} keys in {took:.2?}");
            RwLock::new(map)
        })
    }
}

/// Key indices whose values are checked right after populating a store.
fn spot_checks() -> [usize; 4] {
    [0, 1, KEYS / 2, KEYS - 1]
}

/// Asserts that a slotcache population fits (every key live, nothing
/// evicted), then flushes the file so its writeback does not run during the
/// measurements.
fn check_slotcache(name: &str, cache: &Cache, took: Duration) {
    let st = cache.stats();
    assert_eq!(
        (st.entries, st.evictions),
        (KEYS as u64, 0),
        "slotcache {name}: the population does not fit: {st:?}"
    );
    let start = Instant::now();
    cache.flush().expect("flush");
    eprintln!(
        "slotcache bench: populated slotcache {name} with {KEYS} keys in {took:.2?} \
         (flushed in {:.2?})",
        start.elapsed()
    );
}

/// Prints the statistics of one slotcache file.
fn print_slotcache_stats(name: &str, st: &Stats) {
    eprintln!(
        "slotcache bench: slotcache {name} stats: entries={} evictions={} reinserts={} \
         inserts={} hits={} misses={} corrupt={} mismatched={} pin_waits={} bytes_used={}/{}",
        st.entries,
        st.evictions,
        st.reinserts,
        st.inserts,
        st.hits,
        st.misses,
        st.corrupt,
        st.mismatched,
        st.pin_waits,
        st.bytes_used,
        st.capacity,
    );
}

/// The size of the file at `path` in MiB (0 if it cannot be read).
fn file_mib(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len() >> 20)
}

/// Prints every store's state at the end of the run, and asserts that the
/// slotcache write benchmarks evicted no live key.
fn report_stores(fx: &Fixture) {
    if let Some(cache) = fx.slot_bytes.get() {
        let st = cache.stats();
        print_slotcache_stats("bytes", &st);
        assert_eq!(
            (st.entries, st.evictions),
            (KEYS as u64, 0),
            "slotcache bytes: the write benchmarks evicted live keys: {st:?}"
        );
    }
    if let Some(cache) = fx.slot_typed.get() {
        print_slotcache_stats("typed", &cache.stats());
    }
    if let Some(lmdb) = fx.lmdb.get() {
        let rtxn = lmdb.env.read_txn().expect("read txn");
        let entries = lmdb.db.len(&rtxn).expect("len");
        let path = fx.dir.path().join("lmdb").join("data.mdb");
        eprintln!(
            "slotcache bench: LMDB: entries={entries} file={} MiB",
            file_mib(&path)
        );
    }
    if let Some(db) = fx.redb.get() {
        let rtxn = db.begin_read().expect("read txn");
        let entries = rtxn
            .open_table(REDB_TABLE)
            .expect("table")
            .len()
            .expect("len");
        let path = fx.dir.path().join("peers.redb");
        eprintln!(
            "slotcache bench: redb: entries={entries} file={} MiB",
            file_mib(&path)
        );
    }
    if let Some(moka) = fx.moka.get() {
        moka.run_pending_tasks();
        eprintln!("slotcache bench: moka: entries={}", moka.entry_count());
    }
    if let Some(map) = fx.map.get() {
        let len = map.read().expect("lock").len();
        eprintln!("slotcache bench: RwLock<HashMap>: entries={len}");
    }
}

/// A cursor walking a precomputed key stream round and round; it persists
/// across criterion's samples, so no sample re-reads the keys another one
/// warmed up. The stream is passed to each call, so it can be built lazily.
#[derive(Default)]
struct Cursor {
    /// The position of the next key.
    at: usize,
}

impl Cursor {
    /// The next key of `keys` (wrapping around at its end).
    #[inline]
    fn next_key<'k>(&mut self, keys: &'k [Key]) -> &'k Key {
        let k = &keys[self.at];
        self.at += 1;
        if self.at == keys.len() {
            self.at = 0;
        }
        k
    }
}

/// The request streams of the lookup groups.
#[derive(Clone, Copy)]
enum Stream {
    /// `uniform_stream(KEYS, STREAM_LEN, SEED ^ 1)`: not the write order.
    Uniform,
    /// `zipf_stream(KEYS, ZIPF_S, STREAM_LEN, SEED)`.
    Zipf,
}

/// The nine lookup benchmarks of one group, over `stream`.
fn bench_gets(c: &mut Criterion, fx: &Fixture, group: &str, stream: Stream) {
    let mut g = c.benchmark_group(group);

    let mut cur = Cursor::default();
    g.bench_function("slotcache_get_bytes", |b| {
        let keys = fx.stream(stream);
        let cache = fx.slot_bytes();
        b.iter(|| {
            let guard = cache
                .get::<Raw>(black_box(cur.next_key(keys)))
                .expect("get")
                .expect("hit");
            black_box(&*guard);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("slotcache_get_many_64_per_key", |b| {
        let keys = fx.stream(stream);
        let cache = fx.slot_bytes();
        b.iter_custom(|iters| get_many_per_key(cache, &mut cur, keys, iters, 64))
    });

    let mut cur = Cursor::default();
    g.bench_function("slotcache_get_typed", |b| {
        let keys = fx.stream(stream);
        let cache = fx.slot_typed();
        b.iter(|| {
            let guard = cache
                .get::<Blob>(black_box(cur.next_key(keys)))
                .expect("get")
                .expect("hit");
            black_box(&*guard);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("slotcache_get_unchecked", |b| {
        let keys = fx.stream(stream);
        let cache = fx.slot_typed();
        b.iter(|| {
            // SAFETY: only this process writes the typed file, and it stores
            // nothing but `set_many::<Blob>` archives in it, so every record
            // is a well-formed archive of `Blob`.
            let guard = unsafe { cache.get_unchecked::<Blob>(black_box(cur.next_key(keys))) }
                .expect("get")
                .expect("hit");
            black_box(&*guard);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("lmdb_one_txn", |b| {
        let keys = fx.stream(stream);
        let lmdb = fx.lmdb();
        // One read txn per criterion sample, opened before its timed loop.
        let rtxn = lmdb.env.read_txn().expect("read txn");
        b.iter(|| {
            let v = lmdb
                .db
                .get(&rtxn, black_box(cur.next_key(keys)))
                .expect("get")
                .expect("hit");
            black_box(v);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("lmdb_txn_per_get", |b| {
        let keys = fx.stream(stream);
        let lmdb = fx.lmdb();
        b.iter(|| {
            let rtxn = lmdb.env.read_txn().expect("read txn");
            let v = lmdb
                .db
                .get(&rtxn, black_box(cur.next_key(keys)))
                .expect("get")
                .expect("hit");
            black_box(v);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("redb_one_txn", |b| {
        let keys = fx.stream(stream);
        let db = fx.redb();
        // One read txn and table per criterion sample, opened before timing.
        let rtxn = db.begin_read().expect("read txn");
        let table = rtxn.open_table(REDB_TABLE).expect("table");
        b.iter(|| {
            let v = table
                .get(&black_box(cur.next_key(keys))[..])
                .expect("get")
                .expect("hit");
            black_box(v.value());
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("redb_txn_per_get", |b| {
        let keys = fx.stream(stream);
        let db = fx.redb();
        b.iter(|| {
            let rtxn = db.begin_read().expect("read txn");
            let table = rtxn.open_table(REDB_TABLE).expect("table");
            let v = table
                .get(&black_box(cur.next_key(keys))[..])
                .expect("get")
                .expect("hit");
            black_box(v.value());
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("moka", |b| {
        let keys = fx.stream(stream);
        let moka = fx.moka();
        b.iter(|| {
            let v = moka.get(&black_box(cur.next_key(keys))[..]).expect("hit");
            black_box(&*v);
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("rwlock_hashmap", |b| {
        let keys = fx.stream(stream);
        let map = fx.map();
        b.iter(|| {
            let m = map.read().expect("lock");
            let v = m.get(&black_box(cur.next_key(keys))[..]).expect("hit");
            black_box(v.as_slice());
        })
    });

    g.finish();
}

/// `iters` overwrites through `set_many` (`Raw`) calls of `batch` consecutive
/// stream keys (the last call may be smaller); returns the time spent in the
/// calls only (each batch is built untimed).
fn set_many_per_key(
    cache: &Cache,
    cur: &mut Cursor,
    keys: &[Key],
    val: &[u8],
    iters: u64,
    batch: usize,
) -> Duration {
    let val = Raw(val);
    let mut items: Vec<(&Key, &Raw<&[u8]>)> = Vec::with_capacity(batch);
    let mut left = iters as usize;
    let mut timed = Duration::ZERO;
    while left > 0 {
        let n = left.min(batch);
        items.clear();
        items.extend((0..n).map(|_| (cur.next_key(keys), &val)));
        let start = Instant::now();
        cache
            .set_many(black_box(&items[..]).iter().copied())
            .expect("set_many of Raw");
        timed += start.elapsed();
        left -= n;
    }
    timed
}

/// Keys of the hot `set` benchmarks: a working set that stays in the CPU
/// caches (4096 records of ~200 bytes, their index lines and stripe lines).
const HOT_KEYS: usize = 4096;

/// Keys deleted per timed run of the delete benchmarks.
const DELETE_RUN: usize = 256;

/// `iters` deletes of present keys, in timed runs of up to [`DELETE_RUN`]
/// consecutive distinct stream keys, each followed by an untimed
/// `restore` of the run's keys; returns the time spent deleting.
fn delete_per_key(
    cur: &mut Cursor,
    keys: &[Key],
    iters: u64,
    mut delete: impl FnMut(&Key),
    mut restore: impl FnMut(&[&Key]),
) -> Duration {
    let mut run: Vec<&Key> = Vec::with_capacity(DELETE_RUN);
    let mut left = iters as usize;
    let mut timed = Duration::ZERO;
    while left > 0 {
        run.clear();
        // Distinct keys only: a key seen twice in a run would be absent the
        // second time.
        while run.len() < left.min(DELETE_RUN) {
            let k = cur.next_key(keys);
            if !run.contains(&k) {
                run.push(k);
            }
        }
        let start = Instant::now();
        for k in &run {
            delete(k);
        }
        timed += start.elapsed();
        restore(&run);
        left -= run.len();
    }
    timed
}

/// The write benchmarks: overwrites of existing keys of the uniform stream.
fn bench_sets(c: &mut Criterion, fx: &Fixture) {
    let mut g = c.benchmark_group("peers_set");
    // A fixed 100-byte value (that of an index outside the key set).
    let val = value(KEYS, VALUE_LEN);
    let keys = &fx.uniform[..];

    // One cursor for the three slotcache benchmarks: they keep walking the
    // population order, so every key is rewritten once per `KEYS` writes.
    let mut slot_cur = Cursor::default();
    g.bench_function("slotcache_set_bytes", |b| {
        let cache = fx.slot_bytes();
        b.iter(|| {
            cache
                .set(black_box(slot_cur.next_key(keys)), &Raw(black_box(&val)))
                .expect("set")
        })
    });
    let mut ranged_cur = Cursor::default();
    g.bench_function("slotcache_set_bytes_byte_range", |b| {
        let cache = fx.slot_ranged();
        b.iter(|| {
            cache
                .set(black_box(ranged_cur.next_key(keys)), &Raw(black_box(&val)))
                .expect("set")
        })
    });
    for batch in SET_MANY_BATCHES {
        g.bench_function(format!("slotcache_set_many_{batch}_per_key"), |b| {
            let cache = fx.slot_bytes();
            b.iter_custom(|iters| set_many_per_key(cache, &mut slot_cur, keys, &val, iters, batch))
        });
    }

    let mut cur = Cursor::default();
    g.bench_function("lmdb_put_txn_per_write", |b| {
        let lmdb = fx.lmdb();
        b.iter(|| {
            let mut wtxn = lmdb.env.write_txn().expect("write txn");
            lmdb.db
                .put(&mut wtxn, black_box(cur.next_key(keys)), black_box(&val))
                .expect("put");
            wtxn.commit().expect("commit");
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("moka_insert", |b| {
        let moka = fx.moka();
        b.iter(|| {
            moka.insert(
                black_box(cur.next_key(keys)).to_vec(),
                Arc::from(black_box(&val[..])),
            )
        })
    });

    let mut cur = Cursor::default();
    g.bench_function("rwlock_hashmap_insert", |b| {
        let map = fx.map();
        b.iter(|| {
            let mut m = map.write().expect("lock");
            let old = m.insert(
                black_box(cur.next_key(keys)).to_vec(),
                black_box(&val[..]).to_vec(),
            );
            black_box(old.expect("an overwrite"));
        })
    });

    let raw_val = Raw(&val[..]);
    // Deletes of present keys: each timed run of DELETE_RUN deletes is
    // followed by an untimed re-insert of the same keys, each read once
    // (a re-inserted key enters slotcache's probation ring, which drops
    // keys set and never read). The slotcache files continue their write
    // cursors, so every key is still rewritten once per lap and none is
    // evicted before it is deleted.
    for (id, ranged) in [
        ("slotcache_delete", false),
        ("slotcache_delete_byte_range", true),
    ] {
        let cur = if ranged {
            &mut ranged_cur
        } else {
            &mut slot_cur
        };
        g.bench_function(id, |b| {
            let cache = if ranged {
                fx.slot_ranged()
            } else {
                fx.slot_bytes()
            };
            b.iter_custom(|iters| {
                delete_per_key(
                    cur,
                    keys,
                    iters,
                    |k| assert!(cache.delete(black_box(k)).expect("delete"), "present"),
                    |ks| {
                        cache
                            .set_many(ks.iter().map(|k| (*k, &raw_val)))
                            .expect("restore");
                        // Read once, so that each restored key is promoted
                        // to the main ring at probation's tail instead of
                        // leaving as a ghost (a key set and never read is
                        // what probation exists to drop).
                        for k in ks {
                            assert!(cache.contains(k).expect("contains"), "restored");
                        }
                    },
                )
            })
        });
    }
    let mut cur = Cursor::default();
    g.bench_function("moka_remove", |b| {
        let moka = fx.moka();
        b.iter_custom(|iters| {
            delete_per_key(
                &mut cur,
                keys,
                iters,
                |k| {
                    assert!(moka.remove(&black_box(k)[..]).is_some(), "present");
                },
                |ks| {
                    for k in ks {
                        moka.insert(k.to_vec(), Arc::from(&val[..]));
                    }
                },
            )
        })
    });

    // The same two `set`s over a cache-resident working set (the first
    // HOT_KEYS keys of the stream, rewritten in turn), each on a file of
    // its own holding only those keys (their log wraps many times; in the
    // 1M-key files it would evict live keys): without the memory misses of
    // random keys over a large file, the lock's share shows.
    let hot = &keys[..HOT_KEYS];
    for (id, ranged) in [
        ("slotcache_set_bytes_hot", false),
        ("slotcache_set_bytes_byte_range_hot", true),
    ] {
        let path = fx.dir.path().join(format!("{id}.cache"));
        let opts = roomy_options(HOT_KEYS, VALUE_LEN).byte_range_locks(ranged);
        let cache = Cache::open(path, opts).expect("open");
        cache
            .set_many(hot.iter().map(|k| (k, &raw_val)))
            .expect("populate");
        let mut cur = Cursor::default();
        g.bench_function(id, |b| {
            b.iter(|| {
                cache
                    .set(black_box(cur.next_key(hot)), &Raw(black_box(&val)))
                    .expect("set")
            })
        });
    }

    // Last in the group: the sample size set here applies to the benchmarks
    // defined after it.
    g.sample_size(REDB_WRITE_SAMPLES);
    let mut cur = Cursor::default();
    g.bench_function("redb_put_txn_per_write", |b| {
        let db = fx.redb();
        b.iter(|| {
            let mut wtxn = db.begin_write().expect("write txn");
            wtxn.set_durability(Durability::None).expect("durability");
            {
                let mut table = wtxn.open_table(REDB_TABLE).expect("table");
                table
                    .insert(&black_box(cur.next_key(keys))[..], black_box(&val[..]))
                    .expect("insert");
            }
            wtxn.commit().expect("commit");
        })
    });

    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(SAMPLES)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let started = Instant::now();
    let fx = Fixture::new();

    // The hot read against its floor first (a small file of its own).
    bench_floor(&mut c);
    // Reads first, on the freshly populated stores; then the writes.
    bench_gets(&mut c, &fx, "peers_get_uniform", Stream::Uniform);
    bench_gets(&mut c, &fx, "peers_get_zipf", Stream::Zipf);
    bench_sets(&mut c, &fx);

    c.final_summary();
    report_stores(&fx);
    eprintln!(
        "slotcache bench: peers finished in {:.1?}",
        started.elapsed()
    );
}

/// CRC-32C as slotcache computes a record's on x86-64 (the SSE4.2 `crc32`
/// instruction, eight bytes at a time); the floor prototype's checksum.
#[cfg(target_arch = "x86_64")]
fn floor_crc32c(bytes: &[u8]) -> u32 {
    assert!(
        std::arch::is_x86_feature_detected!("sse4.2"),
        "the floor prototype needs SSE4.2"
    );
    // SAFETY: the processor has SSE4.2 (asserted above).
    unsafe { floor_crc32c_sse42(bytes) }
}

/// CRC-32C bit by bit: the floor prototype compiles on other processors
/// (where it is no floor: slotcache uses tables there).
#[cfg(not(target_arch = "x86_64"))]
fn floor_crc32c(bytes: &[u8]) -> u32 {
    let mut c = u32::MAX;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = (c >> 1) ^ (0x82F6_3B78 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// [`floor_crc32c`]'s loop.
///
/// # Safety
/// The processor must support SSE4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn floor_crc32c_sse42(bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = bytes.chunks_exact(8);
    let mut c = u64::from(u32::MAX);
    for w in &mut words {
        c = _mm_crc32_u64(c, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

/// Keys of the hot-`get` and floor benchmarks (`read_floor` group).
const FLOOR_KEYS: usize = 64;

/// One 64-byte index line of the floor prototype: eight slot words
/// (`tag << 51 | position + 1`: the shape of slotcache's, whose tag starts at bit 49).
#[repr(C, align(64))]
#[derive(Default)]
struct FloorLine([std::sync::atomic::AtomicU64; 8]);

/// A word alone on its cache line (the prototype's pin and tail).
#[repr(C, align(64))]
#[derive(Default)]
struct FloorWord(std::sync::atomic::AtomicU64);

/// The read floor: a lookup reduced to the memory accesses and checks a
/// lookup of slotcache's design needs — hash the key, load its index line,
/// match the tag, publish a hazard pin (a plain store: the reader half of
/// the asymmetric fence; `seqcst` swaps instead, the fallback), re-load
/// the tail, load the record's header, compare the stored hash and the key,
/// verify the record's CRC-32C (slotcache keeps one per record; the same
/// loop on the same instruction, [`floor_crc32c`]), hand out the
/// value, unpin. Records are laid out as slotcache lays them out (48-byte
/// header, key, zero padding to 16, value; CRC over bytes 4..end of value).
struct Floor {
    seed: u64,
    lines: Vec<FloorLine>,
    records: Vec<u8>,
    pin: FloorWord,
    tail: FloorWord,
    seqcst: bool,
}

/// A value found by [`Floor::get`], pinned until dropped.
struct FloorGuard<'f> {
    value: &'f [u8],
    pin: &'f std::sync::atomic::AtomicU64,
}

impl Drop for FloorGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.pin.store(0, std::sync::atomic::Ordering::Release);
    }
}

impl Floor {
    /// The prototype over `items` (one line per item, rounded up to a
    /// power of two).
    fn new(items: &[(Key, Vec<u8>)], seqcst: bool) -> Floor {
        use std::sync::atomic::Ordering::Relaxed;
        let n = items.len().next_power_of_two();
        let lines: Vec<FloorLine> = (0..n).map(|_| FloorLine::default()).collect();
        let mut records = Vec::new();
        let seed = 0x5EED;
        for (k, v) in items {
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(k, seed);
            let pos = records.len() as u64;
            let voff = (48 + k.len()).next_multiple_of(16);
            let mut rec = vec![0u8; (voff + v.len()).next_multiple_of(16)];
            rec[4] = 1;
            rec[8..12].copy_from_slice(&(k.len() as u32).to_le_bytes());
            rec[12..16].copy_from_slice(&(v.len() as u32).to_le_bytes());
            rec[16..24].copy_from_slice(&h.to_le_bytes());
            rec[48..48 + k.len()].copy_from_slice(k);
            rec[voff..voff + v.len()].copy_from_slice(v);
            let crc = floor_crc32c(&rec[4..voff + v.len()]);
            rec[0..4].copy_from_slice(&crc.to_le_bytes());
            records.extend_from_slice(&rec);
            let line = &lines[h as usize & (n - 1)];
            let free = line.0.iter().find(|s| s.load(Relaxed) == 0).expect("room");
            free.store((h >> 52) << 51 | (pos + 1), Relaxed);
        }
        Floor {
            seed,
            lines,
            records,
            pin: FloorWord::default(),
            tail: FloorWord::default(),
            seqcst,
        }
    }

    /// Looks `key` up.
    #[inline]
    fn get(&self, key: &[u8]) -> Option<FloorGuard<'_>> {
        use std::sync::atomic::{compiler_fence, fence, Ordering};
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        let line = &self.lines[h as usize & (self.lines.len() - 1)];
        let words: [u64; 8] = std::array::from_fn(|i| line.0[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        let tag = h >> 52;
        for w in words {
            if w == 0 || (w >> 51) & 0xFFF != tag {
                continue;
            }
            let pos = (w & ((1 << 51) - 1)) - 1;
            if self.seqcst {
                self.pin.0.swap(pos + 1, Ordering::SeqCst);
            } else {
                self.pin.0.store(pos + 1, Ordering::Relaxed);
                compiler_fence(Ordering::SeqCst);
            }
            let guard = |value| FloorGuard {
                value,
                pin: &self.pin.0,
            };
            if self.tail.0.load(Ordering::Acquire) > pos {
                drop(guard(&[]));
                continue;
            }
            let rec = &self.records[pos as usize..];
            let get32 = |o: usize| u32::from_le_bytes(rec[o..o + 4].try_into().expect("4"));
            let (kl, vl) = (get32(8) as usize, get32(12) as usize);
            let stored = u64::from_le_bytes(rec[16..24].try_into().expect("8"));
            let voff = (48 + kl).next_multiple_of(16);
            if stored != h || &rec[48..48 + kl] != key {
                drop(guard(&[]));
                continue;
            }
            if floor_crc32c(&rec[4..voff + vl]) != get32(0) {
                drop(guard(&[]));
                continue;
            }
            return Some(guard(&rec[voff..voff + vl]));
        }
        None
    }
}

/// Group `read_floor`: a hot `get::<Raw>` (64 keys of 100 bytes, cycled)
/// against the floor prototype over the same keys and values, with the
/// pin a plain store (`floor`) and a SeqCst swap (`floor_seqcst_pin`).
fn bench_floor(c: &mut Criterion) {
    let dir = BenchDir::new("floor");
    let cache = Cache::open(
        dir.path().join("hot.cache"),
        slotcache::Options::new().capacity(8 << 20),
    )
    .expect("open");
    let items: Vec<(Key, Vec<u8>)> = (0..FLOOR_KEYS)
        .map(|i| (key(i), value(i, VALUE_LEN)))
        .collect();
    for (k, v) in &items {
        cache.set(k, &Raw(v)).expect("set");
    }
    let floors = [Floor::new(&items, false), Floor::new(&items, true)];
    for (k, v) in &items {
        for f in &floors {
            assert_eq!(f.get(k).expect("floor hit").value, &v[..]);
        }
        assert_eq!(&*cache.get::<Raw>(k).expect("get").expect("hit"), &v[..]);
    }
    let mut g = c.benchmark_group("read_floor");
    let mut i = 0usize;
    g.bench_function("slotcache_get_hot", |b| {
        b.iter(|| {
            i = (i + 1) % FLOOR_KEYS;
            let guard = cache
                .get::<Raw>(black_box(&items[i].0))
                .expect("get")
                .expect("hit");
            black_box(&*guard);
        })
    });
    for (id, f) in [("floor", &floors[0]), ("floor_seqcst_pin", &floors[1])] {
        g.bench_function(id, |b| {
            b.iter(|| {
                i = (i + 1) % FLOOR_KEYS;
                let guard = f.get(black_box(&items[i].0)).expect("hit");
                black_box(guard.value);
            })
        });
    }
    g.finish();
}

/// `iters` lookups through `get_many::<Raw>` calls of `batch` consecutive
/// stream keys (the last call may be smaller; a batch never wraps, the
/// cursor restarts at the stream's beginning instead); returns the time
/// spent in the calls, so the reported time is per key.
fn get_many_per_key(
    cache: &Cache,
    cur: &mut Cursor,
    keys: &[Key],
    iters: u64,
    batch: usize,
) -> Duration {
    let mut left = iters as usize;
    let mut timed = Duration::ZERO;
    while left > 0 {
        let n = left.min(batch);
        if cur.at + n > keys.len() {
            cur.at = 0;
        }
        let at = cur.at;
        cur.at += n;
        let start = Instant::now();
        let got = cache
            .get_many::<Raw>(black_box(&keys[at..at + n]))
            .expect("get_many");
        let hits = got
            .iter()
            .filter(|g| {
                g.as_ref()
                    .is_some_and(|g| black_box(&**g).len() == VALUE_LEN)
            })
            .count();
        drop(got);
        timed += start.elapsed();
        assert_eq!(hits, n, "a batch key was missing");
        left -= n;
    }
    timed
}
