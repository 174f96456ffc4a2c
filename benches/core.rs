//! Core single-thread benchmarks of `slotcache`: every public operation, for
//! four value sizes, with uniform and Zipf key choice.
//!
//! # Workload
//!
//! The shared workload of `slotcache-bench` (its `lib.rs`): 20-byte keys
//! `key:{i:016}`, never-inserted keys `miss:{i:015}`, the value of key `i`
//! is `i` as 8 little-endian bytes followed by a fixed pattern.
//!
//! | size `S` | keys      | typed value `T`, archived size                         | each file (2 per size) |
//! |----------|-----------|--------------------------------------------------------|------------------------|
//! | `16B`    | 1,000,000 | `Blob<0>`: the 16-byte header, no payload: 16 bytes     | 223 MiB                |
//! | `100B`   | 1,000,000 | `Row`, the 100-byte struct of earlier runs: 100 bytes   | 371 MiB                |
//! | `1KiB`   | 1,000,000 | `Blob<1008>`: header + `[u8; 1008]`: 1,024 bytes        | 1,763 MiB              |
//! | `64KiB`  | 16,384    | `Blob<65520>`: header + `[u8; 65520]`: 65,536 bytes     | 1,704 MiB              |
//!
//! 64 KiB values use 16,384 keys (1 GiB of values) instead of 1M (64 GiB):
//! every file stays under 2 GiB. The 16-byte header of `Blob` has the field
//! kinds of `Row` (`u32`, `u16`, `u8`, `bool`, `f32`, `u32`), so `bytecheck`
//! has a `bool` to check; the payload is a byte array (no per-byte checks).
//! Byte values (`Raw`) are exactly `S` bytes, so every record of a
//! size has the same length.
//!
//! Each size has two files, created with `roomy_options(keys, S)` (1.6× the
//! records in the log, an index 4× the keys): a *bytes* file written with
//! `set_many` of `Raw` values and a *typed* file written with `set_many::<T>`. A file
//! is created and populated lazily, only when a selected benchmark needs it;
//! population asserts that every key is live and nothing was evicted.
//! Files are deleted as soon as their benchmarks are done, so at most one
//! (≤ ~2 GiB) exists at a time. Reads run before writes on each file.
//!
//! Key streams are precomputed `Vec<Key>`s, in stream order, walked by a
//! cursor per benchmark that persists across criterion's samples (a sample
//! continues where the previous one stopped instead of re-reading the keys
//! it just brought into the CPU caches):
//! - *uniform*: `uniform_stream(keys, keys, SEED)`, every key once per lap;
//! - *zipf*: `zipf_stream(keys, 0.99, 2^20, SEED)`, popular keys scattered
//!   over the key space;
//! - *miss*: never-inserted keys in a uniform order;
//! - writes: `uniform_stream(keys, keys, WRITE_SEED)`, also the population
//!   order, and the same Zipf stream. Every write stores one constant
//!   `S`-byte (or typed) value, so values are no longer per key afterwards.
//!
//! **No write evicts a live key.** The log is a ring: a write that makes the
//! head enter a new segment evicts the oldest segment, so the oldest live
//! record of a stripe must be rewritten before `segments − 2` segments of
//! newer records follow it. Uniform writes in population order do that by
//! themselves; Zipf writes rewrite hot keys over and over and leave the cold
//! ones aging. The bench keeps a ledger of every record it appends (per
//! stripe, via `Cache::key_placement`) and, between timed chunks, rewrites
//! (untimed, with `set_many`) the oldest keys of any stripe
//! that the next chunk would otherwise push out. The untimed rewrites are
//! counted (`refresh=`) in the per-file statistics printed when a file is
//! retired; every file asserts after each write group and at the end that
//! nothing but ghosts was evicted (a key written and not read before the
//! probation ring's tail leaves as a ghost, by design, and its next write
//! goes straight to the main ring), but for at most 0.1% of its keys pushed
//! out of main by promotion copies the ledger does not see
//! (`main_eviction_bound`).
//!
//! # Benchmarks
//!
//! `S` is one of `16B`, `100B`, `1KiB`, `64KiB`. Groups run in this order
//! for each size (bytes file, then typed file). The groups of the bytes
//! file keep the names of the calls they measured before the raw and typed
//! calls were merged (`get::<Raw>` is now `get::<Raw>`, `get_many::<Raw>`
//! `get_many::<Raw>`, `set` (`Raw`) `set` of a `Raw`, `set_many` (`Raw`)
//! `set_many` of `Raw` values), so that results stay comparable:
//!
//! | group                | IDs                                          | one iteration                                                                 |
//! |----------------------|----------------------------------------------|-------------------------------------------------------------------------------|
//! | `get_bytes/S`        | `hit_uniform`, `hit_zipf`                    | `get::<Raw>` of a present key, guard dropped                                  |
//! | `get_bytes/S`        | `miss`                                       | `get::<Raw>` of a never-inserted key (uniform)                                |
//! | `get_many_bytes/S`   | `uniform`, `zipf`                            | one `get_many::<Raw>` of 64 present keys, guards dropped (64 elements)        |
//! | `set_bytes/S`        | `uniform`, `zipf`                            | `set` of a `Raw` of `S` bytes over a present key                              |
//! | `set_many_bytes/S`   | `uniform`, `zipf`                            | one `set_many` of 64 present keys to one `Raw` value (64 elements; the items are made in the timed call) |
//! | `set_many/S`         | `uniform`, `zipf`                            | one typed `set_many::<T>` of 64 present keys (64 elements)                    |
//! | `delete/S`           | `uniform`                                    | `delete` of a present key (re-inserted untimed, 64 at a time)                 |
//! | `get/S`              | `validated_uniform`, `validated_zipf`        | `get::<T>` (bytecheck-validated) of a present key                             |
//! | `get/S`              | `unchecked_uniform`, `unchecked_zipf`        | `unsafe get_unchecked::<T>` of a present key                                  |
//! | `get/S`              | `miss`                                       | `get::<T>` of a never-inserted key                                            |
//! | `get_hot/S`          | `validated`, `unchecked`                     | `get::<T>` / `get_unchecked::<T>` of one key over and over (CPU cost, no cache misses) |
//! | `get_many/S`         | `uniform`, `zipf`                            | one `get_many::<T>` of 64 present keys (64 elements)                          |
//! | `get_or_create/S`    | `fresh_uniform`, `fresh_zipf`                | `get_or_create::<T>` of a fresh key: a zero-copy hit, the creator never runs  |
//! | `get_or_create/S`    | `stale_uniform`, `stale_zipf`                | `get_or_create::<T>` of an expired key whose regeneration lock another thread holds: the stale value is served at once (checked with `is_stale()` on every call) |
//! | `set/S`              | `uniform`, `zipf`                            | `set::<T>` over a present key (serialization included)                        |
//! | `rkyv_access`        | `validated`, `unchecked`                     | `rkyv::access` / `access_unchecked` of an in-memory 100-byte `Row`            |
//!
//! Batch benchmarks (`get_many` and `set_many`, of both files) report `Throughput::Elements(64)`: criterion's `thrpt` line
//! is keys per second,
//! and the time per key is the reported time divided by 64. The summary
//! printed at the end of a run (from criterion's `estimates.json` of this
//! run) lists the median of every benchmark that ran, with the per-key
//! time of the batch ones.
//!
//! Stale hits: before `stale_*` the typed file's keys are all rewritten with
//! a 1 ms TTL (through a second handle opened with `default_ttl`), then a
//! background thread calls `get_or_create_many` over every key; it wins every
//! key's regeneration lock and its creator blocks until both `stale_*`
//! benchmarks are done, then returns no values, so `get_or_create_many`
//! fails with `CreatorContract` and stores nothing (checked). `set/S` runs
//! after them and makes the values fresh again. While they run, this
//! process's regeneration table holds every key (1M for most sizes), so its
//! lookups miss the CPU caches as the data does: a worst case next to a
//! real process, where a few keys regenerate at a time.
//!
//! # Running
//!
//! ```text
//! cargo bench --bench core                          # everything (about 5 minutes on 2 cores)
//! cargo bench --bench core -- get_bytes/100B        # one group: only the 100B bytes file is built
//! cargo bench --bench core -- 'get/1KiB/validated'  # any criterion filter (a regex)
//! cargo bench --bench core -- --test                # smoke test: every benchmark once
//! TMPDIR=/dev/shm cargo bench --bench core          # files on tmpfs (no writeback)
//! ```
//!
//! Timing: warm-up 0.5 s, measurement 1.5 s, 20 samples per benchmark
//! (override with criterion's `--warm-up-time`, `--measurement-time`,
//! `--sample-size`). A full run took 4.6 minutes on a shared 2-core
//! machine; populating the eight files (each once, when first needed, then
//! flushed) took about 20 s of it. `--test` takes about 30 s: it still
//! populates full-size files, but does not flush them. Untimed work
//! (ledger rewrites, delete's re-inserts) counts against criterion's
//! wall-clock budget, so it costs samples, not run time.
//!
//! Disk-backed `TMPDIR` (the default on most systems): the 1 KiB and
//! 64 KiB write benchmarks dirty a whole ~1.7 GiB file within a second.
//! Together with other processes' dirty pages that can cross the kernel's
//! background-writeback threshold (`dirty_background_ratio`, 10% of
//! available memory), and writeback then runs during the measurement:
//! `set/64KiB/zipf` measured 13 µs in a quiet run and 45-80 µs in runs
//! where writeback started, while the kernel's `Dirty` counter dropped.
//! For quiet numbers put the files on tmpfs (`TMPDIR=/dev/shm`). Population
//! times and cache statistics of every file are printed to stderr.

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, Criterion, Throughput};
use slotcache::{Cache, Checkable, Options, Raw, Stats, Storable};
use slotcache_bench::{
    fill_value, key, miss_key, roomy_options, uniform_stream, value, zipf_stream, BenchDir, Key,
    KEYS, KEY_LEN, SEED,
};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Keys of the 64 KiB size (16,384 × 64 KiB = 1 GiB of values).
const BIG_VALUE_KEYS: usize = 16_384;
/// Length of every Zipf stream (a multiple of [`BATCH`]).
const ZIPF_LEN: usize = 1 << 20;
/// Zipf exponent.
const ZIPF_S: f64 = 0.99;
/// Seed of the write streams (and the population order); the read streams
/// use `SEED`, so reads do not walk the log in the order it was written.
const WRITE_SEED: u64 = SEED ^ 0x57A7_E000;
/// Salt of the miss stream's seed.
const MISS_SALT: u64 = 0x0015_5155;
/// Keys per batch in `get_many` and `set_many`.
const BATCH: usize = 64;
/// Largest chunk of timed writes between two untimed room checks.
const MAX_WRITE_CHUNK: usize = 4096;
/// Deletes timed together between untimed re-inserts.
const DELETE_CHUNK: usize = 64;
/// Bytes per `set_many` call when populating or
/// rewriting untimed.
const FILL_BATCH_BYTES: usize = 8 << 20;
/// TTL of the values the `stale_*` benchmarks read.
const STALE_TTL: Duration = Duration::from_millis(1);
/// Index of the constant value untimed rewrites store (not a real key).
const REWRITE_ID: usize = 1 << 30;
/// Index of the constant value the timed writes store (not a real key).
const WRITE_ID: usize = (1 << 30) + 1;
/// Stack of the thread that holds the regeneration locks (`get_or_create_many`
/// moves `Fetched<T>` values, 64 KiB each for the largest `T`, by value).
const HOLDER_STACK: usize = 64 << 20;

/// One value size of the matrix.
#[derive(Clone, Copy, Debug)]
struct Size {
    /// Name used in group names: `16B`, `100B`, `1KiB`, `64KiB`.
    name: &'static str,
    /// Value length in bytes, raw and archived.
    len: usize,
    /// Keys in the files of this size.
    keys: usize,
}

/// 16-byte values over 1M keys.
const S16: Size = Size {
    name: "16B",
    len: 16,
    keys: KEYS,
};
/// 100-byte values over 1M keys.
const S100: Size = Size {
    name: "100B",
    len: 100,
    keys: KEYS,
};
/// 1 KiB values over 1M keys.
const S1K: Size = Size {
    name: "1KiB",
    len: 1024,
    keys: KEYS,
};
/// 64 KiB values over 16K keys.
const S64K: Size = Size {
    name: "64KiB",
    len: 65_536,
    keys: BIG_VALUE_KEYS,
};

/// Bytes of one record of `len`-byte values under a [`KEY_LEN`]-byte key:
/// a 48-byte header and the key, padded to 16, then the value, padded to 16
/// (the formula `roomy_options` uses).
fn record_len(len: usize) -> u64 {
    ((48 + KEY_LEN).next_multiple_of(16) + len).next_multiple_of(16) as u64
}

// ---------------------------------------------------------------------------
// Typed values
// ---------------------------------------------------------------------------

/// The 100-byte typed value: an rkyv struct whose archived form is exactly
/// 100 bytes, with a few field kinds bytecheck has to validate (a `bool`
/// among them).
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy)]
struct Row {
    /// The key's index.
    id: u32,
    /// Derived from the index.
    version: u16,
    /// Derived from the index.
    kind: u8,
    /// Whether the index is even.
    active: bool,
    /// Half the index.
    score: f32,
    /// The index, eight times.
    counters: [u32; 8],
    /// Letters derived from the index.
    name: [u8; 56],
}

/// `Row` archives to exactly 100 bytes.
const _: () = assert!(std::mem::size_of::<ArchivedRow>() == 100);

/// The typed value of the other sizes: a 16-byte header with the field kinds
/// of [`Row`], then `P` payload bytes; archived, exactly `16 + P` bytes.
#[derive(rkyv::Archive, rkyv::Serialize, Clone, Copy)]
struct Blob<const P: usize> {
    /// The key's index.
    id: u32,
    /// Derived from the index.
    version: u16,
    /// Derived from the index.
    kind: u8,
    /// Whether the index is even.
    active: bool,
    /// Half the index.
    score: f32,
    /// The index again.
    counter: u32,
    /// The value pattern of the key ([`fill_value`]).
    payload: [u8; P],
}

/// `Blob<0>` archives to exactly 16 bytes.
const _: () = assert!(std::mem::size_of::<ArchivedBlob<0>>() == 16);
/// `Blob<1008>` archives to exactly 1 KiB.
const _: () = assert!(std::mem::size_of::<ArchivedBlob<1008>>() == 1024);
/// `Blob<65520>` archives to exactly 64 KiB.
const _: () = assert!(std::mem::size_of::<ArchivedBlob<65520>>() == 65_536);

/// What the typed benchmarks need of a value type.
trait Typed: rkyv::Archive<Archived: Checkable> + Storable + 'static {
    /// The value stored under key `i` at population.
    fn for_key(i: usize) -> Self;
    /// The `id` field of an archived value.
    fn id_of(archived: &Self::Archived) -> u32;
}

/// The 100-byte value.
impl Typed for Row {
    fn for_key(i: usize) -> Row {
        let mut name = [0u8; 56];
        for (j, b) in name.iter_mut().enumerate() {
            *b = b'a' + ((i + j) % 26) as u8;
        }
        Row {
            id: i as u32,
            version: (i % 65_536) as u16,
            kind: (i % 7) as u8,
            active: i.is_multiple_of(2),
            score: i as f32 * 0.5,
            counters: [i as u32; 8],
            name,
        }
    }

    fn id_of(archived: &ArchivedRow) -> u32 {
        archived.id.to_native()
    }
}

/// The 16-byte, 1 KiB and 64 KiB values.
impl<const P: usize> Typed for Blob<P> {
    fn for_key(i: usize) -> Blob<P> {
        let mut payload = [0u8; P];
        fill_value(i, &mut payload);
        Blob {
            id: i as u32,
            version: (i % 65_536) as u16,
            kind: (i % 7) as u8,
            active: i.is_multiple_of(2),
            score: i as f32 * 0.5,
            counter: i as u32,
            payload,
        }
    }

    fn id_of(archived: &ArchivedBlob<P>) -> u32 {
        archived.id.to_native()
    }
}

// ---------------------------------------------------------------------------
// Key streams
// ---------------------------------------------------------------------------

/// The precomputed key streams of one key space.
struct Streams {
    /// Keys in the space.
    keys: usize,
    /// Uniform read stream: one lap of `uniform_stream(keys, keys, SEED)`.
    read: Vec<Key>,
    /// Zipf stream (reads and writes): `zipf_stream(keys, 0.99, ZIPF_LEN, SEED)`.
    zipf: Vec<Key>,
    /// Indices of [`Streams::zipf`].
    zipf_idx: Vec<u32>,
    /// Never-inserted keys, uniform.
    miss: Vec<Key>,
    /// Uniform write stream, also the population order:
    /// `uniform_stream(keys, keys, WRITE_SEED)`.
    write: Vec<Key>,
    /// Indices of [`Streams::write`].
    write_idx: Vec<u32>,
}

/// Construction.
impl Streams {
    /// Builds every stream of a space of `keys` keys.
    fn new(keys: usize) -> Streams {
        let start = Instant::now();
        let to_keys = |idx: &[u32]| idx.iter().map(|&i| key(i as usize)).collect::<Vec<_>>();
        let read = to_keys(&uniform_stream(keys, keys, SEED));
        let zipf_idx = zipf_stream(keys, ZIPF_S, ZIPF_LEN, SEED);
        let zipf = to_keys(&zipf_idx);
        let miss = uniform_stream(keys, keys, SEED ^ MISS_SALT)
            .into_iter()
            .map(|i| miss_key(i as usize))
            .collect();
        let write_idx = uniform_stream(keys, keys, WRITE_SEED);
        let write = to_keys(&write_idx);
        assert!(keys.is_multiple_of(BATCH) && ZIPF_LEN.is_multiple_of(BATCH));
        eprintln!(
            "slotcache bench: key streams over {keys} keys built in {:.2?}",
            start.elapsed()
        );
        Streams {
            keys,
            read,
            zipf,
            zipf_idx,
            miss,
            write,
            write_idx,
        }
    }
}

/// A read cursor over a stream, persisting across criterion's samples.
struct Cursor {
    /// The next position.
    at: usize,
}

/// Walking a stream.
impl Cursor {
    /// A cursor at the start.
    fn new() -> Cursor {
        Cursor { at: 0 }
    }

    /// The next `step` positions of a stream of `len` (a multiple of `step`).
    #[inline]
    fn next(&mut self, step: usize, len: usize) -> usize {
        let i = self.at;
        self.at = if i + step >= len { 0 } else { i + step };
        i
    }
}

// ---------------------------------------------------------------------------
// The ledger: what the log of each stripe holds
// ---------------------------------------------------------------------------

/// The records of one stripe, oldest first.
#[derive(Default)]
struct StripeLog {
    /// Records appended to the stripe so far.
    appends: u64,
    /// `(key index, sequence number)` of appended records, oldest first;
    /// entries whose key was written again later are dropped lazily.
    order: VecDeque<(u32, u64)>,
}

/// A model of every file's logs, enough to know before a write whether it
/// would make the ring evict a live key, and which keys to rewrite first so
/// it does not.
///
/// All records of a file have the same length, so each segment holds `R`
/// records, and a record is safe while fewer than `(segments − 2) × R`
/// records follow it in its stripe (the head keeps one free segment ahead
/// and evicts whole segments).
struct Ledger {
    /// The stripe of each key.
    stripe_of: Vec<u16>,
    /// The sequence number (within its stripe) of each key's live record.
    last: Vec<u64>,
    /// Per stripe.
    logs: Vec<StripeLog>,
    /// Live keys per stripe.
    live: Vec<u32>,
    /// Records a stripe may append after its oldest live record.
    safe: u64,
    /// Per-stripe counts (scratch).
    counts: Vec<u32>,
    /// Untimed rewrites done to make room.
    refreshed: u64,
}

/// Recording appends and planning room.
impl Ledger {
    /// The ledger of a freshly created file of `keys` keys with records of
    /// `record` bytes (nothing appended yet).
    fn new(cache: &Cache, keys: usize, record: u64) -> Ledger {
        let info = cache.info();
        let per_segment = info.segment_size / record;
        let safe = (info.segments as u64 - 2) * per_segment;
        let stripes = info.stripes as usize;
        let stripe_of: Vec<u16> = (0..keys)
            .map(|i| cache.key_placement(key(i)).stripe as u16)
            .collect();
        let mut live = vec![0u32; stripes];
        for &s in &stripe_of {
            live[s as usize] += 1;
        }
        let fullest = *live.iter().max().expect("at least one stripe") as u64;
        assert!(
            fullest + 8 <= safe,
            "a stripe holds {fullest} keys but only {safe} records fit safely: make the file roomier"
        );
        Ledger {
            stripe_of,
            last: vec![u64::MAX; keys],
            logs: (0..stripes).map(|_| StripeLog::default()).collect(),
            live,
            safe,
            counts: vec![0; stripes],
            refreshed: 0,
        }
    }

    /// Records that key `i` was just appended to its stripe.
    fn wrote(&mut self, i: u32) {
        let log = &mut self.logs[self.stripe_of[i as usize] as usize];
        let seq = log.appends;
        log.appends += 1;
        self.last[i as usize] = seq;
        log.order.push_back((i, seq));
    }

    /// The oldest live record of stripe `s`.
    fn oldest(&mut self, s: usize) -> (u32, u64) {
        let log = &mut self.logs[s];
        while let Some(&(i, seq)) = log.order.front() {
            if self.last[i as usize] == seq {
                return (i, seq);
            }
            log.order.pop_front();
        }
        unreachable!("stripe {s} has live keys, so it has a live record")
    }

    /// How many of `idx` (a multiple of `per_iter`, at least `per_iter`) can
    /// be written next while a room check per chunk still suffices: no
    /// stripe gets more than half its slack.
    fn plan(&mut self, idx: &[u32], per_iter: usize) -> usize {
        let mut fits = 0;
        for (j, &i) in idx.iter().enumerate() {
            let s = self.stripe_of[i as usize] as usize;
            self.counts[s] += 1;
            if self.counts[s] as u64 > (self.safe - self.live[s] as u64) / 2 {
                break;
            }
            if (j + 1).is_multiple_of(per_iter) {
                fits = j + 1;
            }
        }
        self.counts.fill(0);
        fits.max(per_iter.min(idx.len()))
    }

    /// The keys to rewrite (oldest first, recorded as written) before the
    /// writes of `idx` can be appended without evicting a live key.
    fn make_room(&mut self, idx: &[u32]) -> Vec<u32> {
        for &i in idx {
            self.counts[self.stripe_of[i as usize] as usize] += 1;
        }
        let mut refresh = Vec::new();
        for s in 0..self.counts.len() {
            let coming = self.counts[s] as u64;
            if coming == 0 {
                continue;
            }
            let mut tries = self.logs[s].order.len();
            loop {
                let (i, seq) = self.oldest(s);
                if self.logs[s].appends - seq + coming <= self.safe {
                    break;
                }
                assert!(tries > 0, "stripe {s}: no room for {coming} writes");
                tries -= 1;
                refresh.push(i);
                self.wrote(i);
            }
        }
        self.counts.fill(0);
        self.refreshed += refresh.len() as u64;
        refresh
    }

    /// Every live key, oldest first within each stripe, stripes interleaved.
    fn live_oldest_first(&self) -> Vec<u32> {
        let per_stripe: Vec<Vec<u32>> = self
            .logs
            .iter()
            .map(|log| {
                log.order
                    .iter()
                    .filter(|&&(i, seq)| self.last[i as usize] == seq)
                    .map(|&(i, _)| i)
                    .collect()
            })
            .collect();
        let longest = per_stripe.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest)
            .flat_map(|j| per_stripe.iter().filter_map(move |v| v.get(j).copied()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Cache files
// ---------------------------------------------------------------------------

/// Writes the keys of some indices, in order, with a file's constant
/// rewrite value, through the given handle.
type Rewrite = Box<dyn Fn(&Cache, &[u32])>;

/// A populated cache file and its write state.
struct CacheFile<'f> {
    /// `bytes-100B`, `typed-1KiB`, ...
    name: String,
    /// Where it is.
    path: PathBuf,
    /// The handle the benchmarks use.
    cache: Cache,
    /// The streams of its key space.
    streams: &'f Streams,
    /// What its logs hold.
    ledger: RefCell<Ledger>,
    /// The uniform write cursor, shared by the file's write benchmarks so
    /// that together they keep rewriting keys in population order.
    write_at: Cell<usize>,
    /// The Zipf write cursor.
    zipf_at: Cell<usize>,
    /// Untimed rewrites (room making, delete's re-inserts, TTL rewrite).
    rewrite: Rewrite,
    /// Whether the file's write phase has begun (see
    /// [`CacheFile::begin_writes`]).
    writing: Cell<bool>,
    /// Whether to flush (not with `--test`).
    flush: bool,
}

/// Keys per untimed `set_many` call for `len`-byte values.
fn fill_batch(len: usize) -> usize {
    (FILL_BATCH_BYTES / len).clamp(1, 4096)
}

/// Creates `name` in the fixture's directory with `roomy_options` for `size`
/// and its ledger.
fn create(fx: &Fixture, size: Size, name: &str) -> (Cache, PathBuf, Ledger) {
    let path = fx.dir.path().join(format!("{name}.cache"));
    let cache = Cache::open(&path, roomy_options(size.keys, size.len)).expect("create the cache");
    let ledger = Ledger::new(&cache, size.keys, record_len(size.len));
    (cache, path, ledger)
}

/// Asserts a fresh population: every key written once and live, nothing
/// evicted; then writes the dirty pages back (`flush`), so the kernel does
/// not write them back during the measurements (on a disk-backed `TMPDIR`,
/// pages dirty for 30 s are written back and write-protected again, and
/// the next write to each takes a fault: `set/64KiB` measured 4× slower
/// that way). Not in `--test` mode, which measures nothing. Prints the
/// population time and geometry.
fn check_populated(fx: &Fixture, name: &str, cache: &Cache, keys: usize, took: Duration) {
    let st = cache.stats();
    let info = cache.info();
    let flushed = if fx.flush {
        let start = Instant::now();
        cache.flush().expect("flush");
        format!("flushed in {:.2?}", start.elapsed())
    } else {
        "not flushed (--test)".to_string()
    };
    eprintln!(
        "slotcache bench: populated {name} with {keys} keys in {took:.2?}, {flushed} \
         ({} MiB, {} stripes x {} segments of {} KiB)",
        info.file_size >> 20,
        info.stripes,
        info.segments,
        info.segment_size >> 10
    );
    assert_eq!(
        st.inserts, keys as u64,
        "{name}: every key written once: {st:?}"
    );
    assert_eq!(
        (st.entries, st.evictions),
        (keys as u64, 0),
        "{name}: the population does not fit: {st:?}"
    );
}

/// Creates and populates the bytes file of `size`: `value(i, len)` under
/// `key(i)`, in the write stream's order, with `set_many` of `Raw` values.
fn populate_bytes<'f>(fx: &'f Fixture, size: Size) -> CacheFile<'f> {
    let streams = fx.streams(size);
    let name = format!("bytes-{}", size.name);
    let (cache, path, mut ledger) = create(fx, size, &name);
    let len = size.len;
    let start = Instant::now();
    let per_call = fill_batch(len);
    let mut buf = vec![0u8; per_call * len];
    for chunk in streams.write_idx.chunks(per_call) {
        for (&i, v) in chunk.iter().zip(buf.chunks_mut(len)) {
            fill_value(i as usize, v);
        }
        let items: Vec<(Key, Raw<&[u8]>)> = chunk
            .iter()
            .zip(buf.chunks(len))
            .map(|(&i, v)| (key(i as usize), Raw(v)))
            .collect();
        cache
            .set_many(items.iter().map(|(k, v)| (k, v)))
            .expect("populate");
        chunk.iter().for_each(|&i| ledger.wrote(i));
    }
    check_populated(fx, &name, &cache, size.keys, start.elapsed());
    for i in [0, 1, size.keys / 2, size.keys - 1] {
        let got = cache.get::<Raw>(key(i)).expect("get");
        assert_eq!(got.as_deref(), Some(&value(i, len)[..]), "key {i}");
    }
    assert!(cache.get::<Raw>(streams.miss[0]).expect("get").is_none());
    let constant = value(REWRITE_ID, len);
    let rewrite: Rewrite = Box::new(move |cache: &Cache, idx: &[u32]| {
        for chunk in idx.chunks(fill_batch(constant.len())) {
            let raw = Raw(&constant[..]);
            let keys: Vec<Key> = chunk.iter().map(|&i| key(i as usize)).collect();
            cache
                .set_many(keys.iter().map(|k| (k, &raw)))
                .expect("rewrite");
        }
    });
    CacheFile {
        name,
        path,
        cache,
        streams,
        ledger: RefCell::new(ledger),
        write_at: Cell::new(0),
        zipf_at: Cell::new(0),
        rewrite,
        writing: Cell::new(false),
        flush: fx.flush,
    }
}

/// Creates and populates the typed file of `size`: `T::for_key(i)` under
/// `key(i)`, in the write stream's order, with `set_many::<T>`.
fn populate_typed<'f, T: Typed>(fx: &'f Fixture, size: Size) -> CacheFile<'f> {
    let streams = fx.streams(size);
    let name = format!("typed-{}", size.name);
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&T::for_key(0)).expect("serialize");
    assert_eq!(archived.len(), size.len, "{name}: archived length");
    let (cache, path, mut ledger) = create(fx, size, &name);
    let start = Instant::now();
    let mut rows: Vec<(Key, T)> = Vec::with_capacity(fill_batch(size.len));
    for chunk in streams.write_idx.chunks(fill_batch(size.len)) {
        rows.clear();
        rows.extend(
            chunk
                .iter()
                .map(|&i| (key(i as usize), T::for_key(i as usize))),
        );
        cache
            .set_many(rows.iter().map(|(k, v)| (k, v)))
            .expect("populate");
        chunk.iter().for_each(|&i| ledger.wrote(i));
    }
    drop(rows);
    check_populated(fx, &name, &cache, size.keys, start.elapsed());
    for i in [0, 1, size.keys / 2, size.keys - 1] {
        let got = cache.get::<T>(key(i)).expect("get").expect("present");
        assert_eq!(T::id_of(&got), i as u32, "key {i}");
    }
    let constant = Box::new(T::for_key(REWRITE_ID));
    let rewrite: Rewrite = Box::new(move |cache: &Cache, idx: &[u32]| {
        for chunk in idx.chunks(fill_batch(size.len)) {
            let keys: Vec<Key> = chunk.iter().map(|&i| key(i as usize)).collect();
            cache
                .set_many(keys.iter().map(|k| (k, &*constant)))
                .expect("rewrite");
        }
    });
    CacheFile {
        name,
        path,
        cache,
        streams,
        ledger: RefCell::new(ledger),
        write_at: Cell::new(0),
        zipf_at: Cell::new(0),
        rewrite,
        writing: Cell::new(false),
        flush: fx.flush,
    }
}

/// Writing without evicting.
impl CacheFile<'_> {
    /// Called by every benchmark that writes to the file; the first call
    /// flushes it (untimed, not with `--test`). Reads dirty the file too:
    /// the first read of a record after it was written sets its index
    /// slot's visited bit (second chance). On a disk-backed `TMPDIR` the
    /// kernel writes a file's dirty pages back once the file has been dirty
    /// for 30 s; the reads of a file start well over 30 s before its last
    /// writes, its write phase lasts less, so starting it clean keeps that
    /// writeback out of the write measurements.
    fn begin_writes(&self) {
        if self.writing.replace(true) || !self.flush {
            return;
        }
        let start = Instant::now();
        self.cache.flush().expect("flush");
        eprintln!(
            "slotcache bench: {}: flushed before its writes in {:.2?}",
            self.name,
            start.elapsed()
        );
    }

    /// Writes `idx` in order through `handle` with the rewrite value, making
    /// room first (also through `handle`), chunk by chunk (untimed).
    fn rewrite_all(&self, handle: &Cache, idx: &[u32]) {
        let mut at = 0;
        while at < idx.len() {
            let mut ledger = self.ledger.borrow_mut();
            let end = (at + MAX_WRITE_CHUNK).min(idx.len());
            let n = ledger.plan(&idx[at..end], 1);
            let refresh = ledger.make_room(&idx[at..at + n]);
            drop(ledger);
            (self.rewrite)(handle, &refresh);
            (self.rewrite)(handle, &idx[at..at + n]);
            let mut ledger = self.ledger.borrow_mut();
            idx[at..at + n].iter().for_each(|&i| ledger.wrote(i));
            at += n;
        }
    }

    /// Runs `iters` timed iterations of `per_iter` writes each, taking keys
    /// from the uniform or Zipf write stream at the file's cursor, chunk by
    /// chunk. Before each chunk, untimed, the oldest keys of any stripe the
    /// chunk would overfill are rewritten. `run` gets the chunk's keys and
    /// their indices (a multiple of `per_iter`, at most `max_chunk`), writes
    /// each key once in order, and returns the time to count (it may do
    /// untimed work too, like delete's re-inserts).
    fn timed_writes(
        &self,
        zipf: bool,
        iters: u64,
        per_iter: usize,
        max_chunk: usize,
        mut run: impl FnMut(&[Key], &[u32]) -> Duration,
    ) -> Duration {
        let (idx, keys, cursor) = if zipf {
            (&self.streams.zipf_idx, &self.streams.zipf, &self.zipf_at)
        } else {
            (&self.streams.write_idx, &self.streams.write, &self.write_at)
        };
        let mut left = iters as usize * per_iter;
        let mut timed = Duration::ZERO;
        while left > 0 {
            let mut at = cursor.get();
            if idx.len() - at < per_iter {
                at = 0;
            }
            let most = left.min(idx.len() - at).min(max_chunk);
            let mut ledger = self.ledger.borrow_mut();
            let n = ledger.plan(&idx[at..at + most], per_iter);
            let refresh = ledger.make_room(&idx[at..at + n]);
            drop(ledger);
            if !refresh.is_empty() {
                (self.rewrite)(&self.cache, &refresh);
            }
            timed += run(&keys[at..at + n], &idx[at..at + n]);
            let mut ledger = self.ledger.borrow_mut();
            idx[at..at + n].iter().for_each(|&i| ledger.wrote(i));
            cursor.set(at + n);
            left -= n;
        }
        timed
    }

    /// Asserts that the main ring evicted nothing so far (every eviction
    /// was a ghost: see [`main_evictions`]).
    fn assert_no_evictions(&self, after: &str) {
        let st = self.cache.stats();
        let bound = main_eviction_bound(self.streams.keys as u64);
        assert!(
            main_evictions(&st) <= bound,
            "{}: {} live keys were evicted from the main ring by {after} (at most {bound}): {st:?}",
            self.name,
            main_evictions(&st)
        );
    }
}

/// Evictions other than ghosts. The ledger keeps the main ring's oldest
/// live records rewritten before its tail reaches them; the probation ring
/// (format.md §5.4) lets a key that was written and not read before
/// probation's tail leave as a ghost, and the next write of that key (a
/// ledger refresh or a timed write) finds the ghost and goes straight to
/// main. Those exits are what the policy is for, not a failure of the
/// ledger, so they are printed (`ghosts=` in the statistics) rather than
/// refused.
fn main_evictions(st: &Stats) -> u64 {
    st.evictions - st.ghosts
}

/// Main-ring evictions a file may have: 0.1% of its keys. The ledger sees
/// the records the benchmark writes, not the copies the engine makes when
/// it promotes a read entry from probation to main, which move main's tail
/// sooner than the ledger plans for; the smoke run of 64 KiB values lost 2
/// of 16,384 keys that way. More than this bound means the ledger no
/// longer keeps the timed writes free of eviction, and the run fails.
fn main_eviction_bound(keys: u64) -> u64 {
    keys / 1000
}

/// A file of one size and kind, created on first use and deleted by
/// [`FileSlot::retire`].
struct FileSlot<'f> {
    /// The fixture.
    fx: &'f Fixture,
    /// The size.
    size: Size,
    /// Creates and populates the file.
    init: fn(&'f Fixture, Size) -> CacheFile<'f>,
    /// The file, once populated.
    file: OnceCell<CacheFile<'f>>,
}

/// Lazy creation and retirement.
impl<'f> FileSlot<'f> {
    /// A slot whose file `init` creates when first needed.
    fn new(fx: &'f Fixture, size: Size, init: fn(&'f Fixture, Size) -> CacheFile<'f>) -> Self {
        FileSlot {
            fx,
            size,
            init,
            file: OnceCell::new(),
        }
    }

    /// The file, populated on first use.
    fn get(&self) -> &CacheFile<'f> {
        self.file.get_or_init(|| (self.init)(self.fx, self.size))
    }

    /// Prints the file's statistics, checks that nothing was evicted, and
    /// deletes it (its dirty pages are dropped, not written back).
    fn retire(self) {
        let Some(file) = self.file.into_inner() else {
            return;
        };
        let st = file.cache.stats();
        print_stats(&file.name, &st, file.ledger.borrow().refreshed);
        let bound = main_eviction_bound(file.streams.keys as u64);
        assert!(
            main_evictions(&st) <= bound,
            "{}: {} live keys were evicted from the main ring (at most {bound})",
            file.name,
            main_evictions(&st)
        );
        let path = file.path.clone();
        drop(file);
        std::fs::remove_file(&path).expect("delete the cache file");
    }
}

/// Prints a file's counters.
fn print_stats(name: &str, st: &Stats, refreshed: u64) {
    eprintln!(
        "slotcache bench: {name} stats: entries={} evictions={} ghosts={} promotions={} \
         reinserts={} inserts={} deletes={} hits={} misses={} expired={} corrupt={} mismatched={} pin_waits={} \
         creates={} stale_served={} waits={} bytes_used={}/{} refresh={refreshed}",
        st.entries,
        st.evictions,
        st.ghosts,
        st.promotions,
        st.reinserts,
        st.inserts,
        st.deletes,
        st.hits,
        st.misses,
        st.expired,
        st.corrupt,
        st.mismatched,
        st.pin_waits,
        st.creates,
        st.stale_served,
        st.waits,
        st.bytes_used,
        st.capacity,
    );
}

// ---------------------------------------------------------------------------
// Fixture and groups
// ---------------------------------------------------------------------------

/// Everything the benchmarks share.
struct Fixture {
    /// Streams of the 1M-key space.
    streams_1m: OnceCell<Streams>,
    /// Streams of the 16K-key space.
    streams_16k: OnceCell<Streams>,
    /// `(group, id, elements per iteration)` of every registered benchmark.
    benches: RefCell<Vec<(String, String, u64)>>,
    /// When the run started (estimates older than this are not ours).
    started: SystemTime,
    /// Whether to flush files after populating them (not with `--test`).
    flush: bool,
    /// Declared last so it is removed after everything else.
    dir: BenchDir,
}

/// Construction and streams.
impl Fixture {
    /// An empty fixture: nothing is built until a benchmark needs it.
    fn new() -> Fixture {
        Fixture {
            streams_1m: OnceCell::new(),
            streams_16k: OnceCell::new(),
            benches: RefCell::new(Vec::new()),
            started: SystemTime::now(),
            flush: !std::env::args().any(|a| a == "--test"),
            dir: BenchDir::new("core"),
        }
    }

    /// The streams of `size`'s key space, built on first use.
    fn streams(&self, size: Size) -> &Streams {
        let cell = match size.keys {
            KEYS => &self.streams_1m,
            BIG_VALUE_KEYS => &self.streams_16k,
            n => unreachable!("no key space of {n} keys"),
        };
        let s = cell.get_or_init(|| Streams::new(size.keys));
        debug_assert_eq!(s.keys, size.keys);
        s
    }
}

/// A criterion group that also registers its benchmarks for the summary.
struct Group<'a, 'c> {
    /// The criterion group.
    g: BenchmarkGroup<'c, WallTime>,
    /// Its name.
    name: String,
    /// Keys per iteration (1, or [`BATCH`] with a throughput).
    elements: u64,
    /// Where benchmarks are registered.
    fx: &'a Fixture,
}

/// Registering and running benchmarks.
impl<'a, 'c> Group<'a, 'c> {
    /// Group `{op}/{size}`; batch groups report `Throughput::Elements`.
    fn new(c: &'c mut Criterion, fx: &'a Fixture, name: String, elements: u64) -> Self {
        let mut g = c.benchmark_group(&name);
        if elements > 1 {
            g.throughput(Throughput::Elements(elements));
        }
        Group {
            g,
            name,
            elements,
            fx,
        }
    }

    /// Registers and runs (if selected) benchmark `id`.
    fn bench(&mut self, id: &str, f: impl FnMut(&mut Bencher<'_, WallTime>)) {
        self.fx
            .benches
            .borrow_mut()
            .push((self.name.clone(), id.to_string(), self.elements));
        self.g.bench_function(id, f);
    }

    /// Ends the group.
    fn finish(self) {
        self.g.finish();
    }
}

/// `rkyv_access`: validation alone, on an aligned in-memory archive of one
/// [`Row`]: the part of `get` that `get_unchecked` skips.
fn bench_rkyv_access(c: &mut Criterion, fx: &Fixture) {
    let mut g = Group::new(c, fx, "rkyv_access".into(), 1);
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&Row::for_key(0)).expect("serialize");
    assert_eq!(archived.len(), 100);
    g.bench("validated", |b| {
        b.iter(|| {
            rkyv::access::<ArchivedRow, rkyv::rancor::Error>(black_box(&archived[..]))
                .expect("valid")
        })
    });
    g.bench("unchecked", |b| {
        b.iter(|| {
            // SAFETY: `archived` was just produced by `rkyv::to_bytes` for a `Row`.
            unsafe { rkyv::access_unchecked::<ArchivedRow>(black_box(&archived[..])) }
        })
    });
    g.finish();
}

/// Every benchmark of the bytes file of `size`: reads, then writes.
fn bench_bytes(c: &mut Criterion, fx: &Fixture, size: Size) {
    let slot = FileSlot::new(fx, size, populate_bytes);
    let s = size.name;

    let mut g = Group::new(c, fx, format!("get_bytes/{s}"), 1);
    for (id, zipf) in [("hit_uniform", false), ("hit_zipf", true)] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            b.iter(|| {
                let k = &stream[cur.next(1, stream.len())];
                f.cache.get::<Raw>(black_box(k)).expect("get").expect("hit")
            })
        });
    }
    let mut cur = Cursor::new();
    g.bench("miss", |b| {
        let f = slot.get();
        let stream = &f.streams.miss;
        b.iter(|| {
            let k = &stream[cur.next(1, stream.len())];
            let got = f.cache.get::<Raw>(black_box(k)).expect("get");
            assert!(got.is_none(), "a miss key was found");
            got
        })
    });
    g.finish();

    let mut g = Group::new(c, fx, format!("get_many_bytes/{s}"), BATCH as u64);
    for (id, zipf) in [("uniform", false), ("zipf", true)] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            b.iter(|| {
                let at = cur.next(BATCH, stream.len());
                let got = f
                    .cache
                    .get_many::<Raw>(black_box(&stream[at..at + BATCH]))
                    .expect("get_many::<Raw>");
                assert!(got.iter().all(Option::is_some), "a batch key was missing");
                got
            })
        });
    }
    g.finish();

    let constant = value(WRITE_ID, size.len);
    write_group(c, fx, &slot, "set_bytes", 1, |cache, keys| {
        for k in keys {
            cache.set(k, &Raw(&constant)).expect("set of a Raw");
        }
    });
    write_group(c, fx, &slot, "set_many_bytes", BATCH, |cache, keys| {
        let raw = Raw(&constant[..]);
        cache
            .set_many(keys.iter().map(|k| (k, &raw)))
            .expect("set_many of Raw");
    });

    let mut g = Group::new(c, fx, format!("delete/{s}"), 1);
    g.bench("uniform", |b| {
        let f = slot.get();
        f.begin_writes();
        // Deletes are timed in chunks; each chunk's keys are written back,
        // untimed, before the next chunk, so at most `DELETE_CHUNK` keys are
        // ever missing and every timed delete finds its key.
        b.iter_custom(|iters| {
            f.timed_writes(false, iters, 1, DELETE_CHUNK, |keys, idx| {
                let start = Instant::now();
                let mut found = 0usize;
                for k in keys {
                    found += f.cache.delete(black_box(k)).expect("delete") as usize;
                }
                let took = start.elapsed();
                assert_eq!(found, keys.len(), "a deleted key was not present");
                (f.rewrite)(&f.cache, idx);
                took
            })
        })
    });
    g.finish();

    slot.retire();
}

/// Holds the regeneration lock of every key of a typed file in a background
/// thread (inside `get_or_create_many`, whose creator blocks) until
/// [`StaleHold::finish`].
struct StaleHold {
    /// Closing it (or sending) unblocks the creator.
    done: mpsc::Sender<()>,
    /// The holder; returns what `get_or_create_many` returned.
    thread: std::thread::JoinHandle<slotcache::Result<usize>>,
    /// `inserts` before, to check nothing was stored.
    inserts: u64,
}

/// Starting and ending the hold.
impl StaleHold {
    /// Makes every key of `f` expired (a rewrite with a 1 ms TTL through a
    /// second handle), then starts the holder and waits until it holds
    /// every key's regeneration lock.
    fn start<T: Typed>(f: &CacheFile<'_>) -> StaleHold {
        f.begin_writes();
        let start = Instant::now();
        let keys = f.streams.keys;
        let ttl_handle = Cache::open(&f.path, Options::new().default_ttl(STALE_TTL))
            .expect("open a second handle");
        let order = f.ledger.borrow().live_oldest_first();
        assert_eq!(order.len(), keys);
        f.rewrite_all(&ttl_handle, &order);
        drop(ttl_handle);
        std::thread::sleep(STALE_TTL * 5);
        let probe = key(keys / 3);
        assert!(f.cache.get::<T>(probe).expect("get").is_none());
        let stale = f.cache.get_stale::<T>(probe).expect("get_stale");
        assert!(stale.is_some_and(|g| g.meta().is_expired()));
        let rewritten = start.elapsed();

        let inserts = f.cache.stats().inserts;
        let (ready_tx, ready_rx) = mpsc::channel::<usize>();
        let (done, done_rx) = mpsc::channel::<()>();
        let cache = f.cache.clone();
        let thread = std::thread::Builder::new()
            .name("regen-holder".into())
            .stack_size(HOLDER_STACK)
            .spawn(move || {
                let all: Vec<Key> = (0..keys).map(key).collect();
                let got = cache.get_or_create_many::<T, _>(&all, |won: &[&[u8]]| {
                    let _ = ready_tx.send(won.len());
                    let _ = done_rx.recv();
                    Vec::new() // wrong count: nothing is stored, locks are released
                });
                got.map(|v| v.len())
            })
            .expect("start the regeneration holder");
        let won = ready_rx.recv().expect("the holder reaches its creator");
        assert_eq!(won, keys, "the holder must win every key's lock");
        eprintln!(
            "slotcache bench: {}: {keys} keys expired in {rewritten:.2?}, \
             their regeneration locks held after {:.2?}",
            f.name,
            start.elapsed()
        );
        StaleHold {
            done,
            thread,
            inserts,
        }
    }

    /// Releases the locks and checks that the holder stored nothing.
    fn finish(self, f: &CacheFile<'_>) {
        let _ = self.done.send(());
        let got = self.thread.join().expect("the holder thread");
        assert!(
            matches!(got, Err(slotcache::Error::CreatorContract { .. })),
            "the holder's creator returned no values: {got:?}"
        );
        assert_eq!(f.cache.stats().inserts, self.inserts, "nothing was stored");
    }
}

/// Every benchmark of the typed file of `size` (value type `T`).
fn bench_typed<T: Typed>(c: &mut Criterion, fx: &Fixture, size: Size) {
    let slot = FileSlot::new(fx, size, populate_typed::<T>);
    let s = size.name;

    let mut g = Group::new(c, fx, format!("get/{s}"), 1);
    for (id, zipf, checked) in [
        ("validated_uniform", false, true),
        ("unchecked_uniform", false, false),
        ("validated_zipf", true, true),
        ("unchecked_zipf", true, false),
    ] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            if checked {
                b.iter(|| {
                    let k = &stream[cur.next(1, stream.len())];
                    f.cache.get::<T>(black_box(k)).expect("get").expect("hit")
                })
            } else {
                b.iter(|| {
                    let k = &stream[cur.next(1, stream.len())];
                    // SAFETY: this process wrote every record of the typed
                    // file as a `T` (`set_many::<T>`/`set::<T>`).
                    unsafe { f.cache.get_unchecked::<T>(black_box(k)) }
                        .expect("get")
                        .expect("hit")
                })
            }
        });
    }
    let mut cur = Cursor::new();
    g.bench("miss", |b| {
        let f = slot.get();
        let stream = &f.streams.miss;
        b.iter(|| {
            let k = &stream[cur.next(1, stream.len())];
            let got = f.cache.get::<T>(black_box(k)).expect("get");
            assert!(got.is_none(), "a miss key was found");
            got
        })
    });
    g.finish();

    // One key over and over: index, record and reader slot stay in cache, so
    // what is left is the CPU cost (CRC, validation).
    let mut g = Group::new(c, fx, format!("get_hot/{s}"), 1);
    g.bench("validated", |b| {
        let f = slot.get();
        let k = &f.streams.read[0];
        b.iter(|| f.cache.get::<T>(black_box(k)).expect("get").expect("hit"))
    });
    g.bench("unchecked", |b| {
        let f = slot.get();
        let k = &f.streams.read[0];
        // SAFETY: as above.
        b.iter(|| {
            unsafe { f.cache.get_unchecked::<T>(black_box(k)) }
                .expect("get")
                .expect("hit")
        })
    });
    g.finish();

    let mut g = Group::new(c, fx, format!("get_many/{s}"), BATCH as u64);
    for (id, zipf) in [("uniform", false), ("zipf", true)] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            b.iter(|| {
                let at = cur.next(BATCH, stream.len());
                let got = f
                    .cache
                    .get_many::<T>(black_box(&stream[at..at + BATCH]))
                    .expect("get_many");
                assert!(got.iter().all(Option::is_some), "a batch key was missing");
                got
            })
        });
    }
    g.finish();

    let mut g = Group::new(c, fx, format!("get_or_create/{s}"), 1);
    for (id, zipf) in [("fresh_uniform", false), ("fresh_zipf", true)] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            // Returns a bool, not the `Fetched<T>`: moving that (as large as
            // `T`) through `black_box` would add a copy of the value.
            b.iter(|| {
                let k = &stream[cur.next(1, stream.len())];
                let got = f
                    .cache
                    .get_or_create::<T, _>(black_box(k), || panic!("a fresh key was created"))
                    .expect("get_or_create");
                let stale = got.is_stale();
                assert!(!stale, "a fresh key was stale");
                stale
            })
        });
    }
    let hold: OnceCell<StaleHold> = OnceCell::new();
    for (id, zipf) in [("stale_uniform", false), ("stale_zipf", true)] {
        let mut cur = Cursor::new();
        g.bench(id, |b| {
            let f = slot.get();
            hold.get_or_init(|| StaleHold::start::<T>(f));
            let stream = if zipf {
                &f.streams.zipf
            } else {
                &f.streams.read
            };
            b.iter(|| {
                let k = &stream[cur.next(1, stream.len())];
                let got = f
                    .cache
                    .get_or_create::<T, _>(black_box(k), || panic!("a held key was created"))
                    .expect("get_or_create");
                let stale = got.is_stale();
                assert!(stale, "not served stale: {got:?}");
                stale
            })
        });
    }
    g.finish();
    if let (Some(h), Some(f)) = (hold.into_inner(), slot.file.get()) {
        h.finish(f);
    }

    let constant = Box::new(T::for_key(WRITE_ID));
    write_group(c, fx, &slot, "set", 1, |cache, keys| {
        for k in keys {
            cache.set::<T>(k, &*constant).expect("set");
        }
    });
    write_group(c, fx, &slot, "set_many", BATCH, |cache, keys| {
        let items = keys.iter().map(|k| (k, &*constant));
        cache.set_many(items).expect("set_many");
    });

    slot.retire();
}

/// A write group `{op}/{size}` with `uniform` and `zipf` benchmarks. One
/// timed call of `write` gets `batch` consecutive keys of the write stream
/// (black-boxed); one iteration is one call, reported per key for batches.
/// Afterwards the file must not have evicted anything.
fn write_group(
    c: &mut Criterion,
    fx: &Fixture,
    slot: &FileSlot<'_>,
    op: &str,
    batch: usize,
    write: impl Fn(&Cache, &[Key]),
) {
    let mut g = Group::new(c, fx, format!("{op}/{}", slot.size.name), batch as u64);
    for (id, zipf) in [("uniform", false), ("zipf", true)] {
        g.bench(id, |b| {
            let f = slot.get();
            f.begin_writes();
            b.iter_custom(|iters| {
                f.timed_writes(zipf, iters, batch, MAX_WRITE_CHUNK, |keys, _| {
                    let start = Instant::now();
                    for chunk in keys.chunks(batch) {
                        write(&f.cache, black_box(chunk));
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    if let Some(f) = slot.file.get() {
        f.assert_no_evictions(op);
    }
}

/// Every benchmark of one size: the bytes file, then the typed file.
fn bench_size<T: Typed>(c: &mut Criterion, fx: &Fixture, size: Size) {
    bench_bytes(c, fx, size);
    bench_typed::<T>(c, fx, size);
}

/// Prints the median of every benchmark that ran (from criterion's
/// `estimates.json` written by this run), with the per-key time of batches.
fn print_summary(fx: &Fixture) {
    let root = slotcache_bench::target_dir().join("criterion");
    let mut lines = Vec::new();
    for (group, id, elements) in fx.benches.borrow().iter() {
        let dir = root.join(group.replace('/', "_")).join(id).join("new");
        let path = dir.join("estimates.json");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= fx.started);
        if !fresh {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(ns) = json["median"]["point_estimate"].as_f64() else {
            continue;
        };
        let per_key = if *elements > 1 {
            format!("  ({} per key)", fmt_ns(ns / *elements as f64))
        } else {
            String::new()
        };
        lines.push(format!(
            "{:<40} {:>12}{per_key}",
            format!("{group}/{id}"),
            fmt_ns(ns)
        ));
    }
    if !lines.is_empty() {
        eprintln!("\nslotcache bench: medians of this run (time per iteration):");
        for l in lines {
            eprintln!("  {l}");
        }
    }
}

/// `ns` nanoseconds with a readable unit.
fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// Runs `rkyv_access`, then every size in turn (bytes file, typed file),
/// then prints the summary of medians.
fn main() {
    let run = Instant::now();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    let fx = Fixture::new();

    bench_rkyv_access(&mut c, &fx);
    bench_size::<Blob<0>>(&mut c, &fx, S16);
    bench_size::<Row>(&mut c, &fx, S100);
    bench_size::<Blob<1008>>(&mut c, &fx, S1K);
    bench_size::<Blob<65520>>(&mut c, &fx, S64K);

    c.final_summary();
    print_summary(&fx);
    eprintln!("slotcache bench: core finished in {:.1?}", run.elapsed());
}
