//! Concurrency and crash stress tests.
//!
//! Every value validates itself: a byte value is `key ‖ version ‖ filler`
//! where the length and the filler derive from `(key, version)`, and a typed
//! value is a [`Rec`] whose payload derives from `(key, version)`. A reader
//! can therefore tell a value of another key, a torn value or a value whose
//! bytes changed under its guard from a good one. A version is
//! `writer id << 40 | sequence number`, so a reader can also check that the
//! values of one writer never go back in time for a key.
//!
//! - `threads_hammer_one_cache`: writer and reader threads of one process
//!   on one handle, with eviction and second chances active.
//! - `processes_hammer_one_file`: writer and reader processes on one file.
//! - `killed_processes_leave_a_usable_file`: rounds of writer and reader
//!   processes killed at random points, after which the file must read
//!   back valid values, every stripe lock must be free and dead readers'
//!   pins must not block writers.
//!
//! Child processes are this test binary re-run with `--exact child_entry`
//! and the role in `SLOTCACHE_ROLE`. Set `SLOTCACHE_STRESS_SEED` to replay
//! the random choices of a run (the interleaving still varies).
//!
//! Children are killed with `Child::kill`: `SIGKILL` on Unix,
//! `TerminateProcess` on Windows (no handler runs, the process's handles are
//! closed and its byte-range locks released, as with `SIGKILL`).

mod common;
use common::TempDir;
use rkyv::{Archive, Deserialize, Serialize};
use slotcache::{Cache, CreateOptions, Error, Guard, Options, Raw, WriteOptions};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix(seed ^ 0x5EED))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// The seed of a test run: `SLOTCACHE_STRESS_SEED`, or the clock and pid.
fn run_seed(test: &str) -> u64 {
    let seed = match std::env::var("SLOTCACHE_STRESS_SEED") {
        Ok(s) => s.parse().expect("SLOTCACHE_STRESS_SEED is a u64"),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            mix(t ^ (std::process::id() as u64) << 32)
        }
    };
    eprintln!("[{test}] seed {seed} (replay with SLOTCACHE_STRESS_SEED={seed})");
    mix(seed ^ fnv(test.as_bytes()))
}

// ---------------------------------------------------------------------------
// Keys and self-validating values
// ---------------------------------------------------------------------------

/// Every fifth key holds a typed [`Rec`], the others raw bytes.
fn is_typed(i: u32) -> bool {
    i % 5 == 4
}

fn key_name(i: u32) -> String {
    if is_typed(i) {
        format!("t{i:06}")
    } else {
        format!("b{i:06}")
    }
}

const WRITER_SHIFT: u32 = 40;
const SEQ_MASK: u64 = (1 << WRITER_SHIFT) - 1;

fn version(writer: u32, seq: u64) -> u64 {
    (writer as u64) << WRITER_SHIFT | seq
}

fn writer_of(v: u64) -> u32 {
    (v >> WRITER_SHIFT) as u32
}

/// `key ‖ version (LE) ‖ filler`, 16..=2000 bytes, all derived from
/// `(key, version)`.
fn bytes_value(key: &str, version: u64) -> Vec<u8> {
    let mut r = Rng::new(fnv(key.as_bytes()) ^ mix(version));
    let len = (r.range(16, 2000) as usize).max(key.len() + 8);
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    while v.len() < len {
        v.extend_from_slice(&r.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn show_prefix(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(12)]).into_owned()
}

/// Checks a byte value read under `key`; returns its version.
fn check_bytes(key: &str, v: &[u8]) -> Result<u64, String> {
    let k = key.len();
    if v.len() < k + 8 {
        return Err(format!(
            "key {key}: value of {} bytes is too short to be any valid value (starts {:?})",
            v.len(),
            show_prefix(v)
        ));
    }
    if &v[..k] != key.as_bytes() {
        return Err(format!(
            "key {key}: got a value of another key (starts {:?}, {} bytes)",
            show_prefix(v),
            v.len()
        ));
    }
    let ver = u64::from_le_bytes(v[k..k + 8].try_into().unwrap());
    if writer_of(ver) == 0 {
        return Err(format!("key {key}: impossible version {ver:#x}"));
    }
    let want = bytes_value(key, ver);
    if v != &want[..] {
        let at = v.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "key {key}: torn or corrupt value for version {ver:#x}: {} bytes (expected {}), \
             first differing byte {at:?}",
            v.len(),
            want.len()
        ));
    }
    Ok(ver)
}

/// The typed value.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
struct Rec {
    key: String,
    version: u64,
    payload: Vec<u8>,
}

fn payload(key: &str, version: u64) -> Vec<u8> {
    let mut r = Rng::new(fnv(key.as_bytes()) ^ mix(version) ^ 0xA5A5);
    let len = r.below(1500) as usize;
    (0..len).map(|_| r.next_u64() as u8).collect()
}

fn rec_value(key: &str, version: u64) -> Rec {
    Rec {
        key: key.to_string(),
        version,
        payload: payload(key, version),
    }
}

fn check_rec_parts(key: &str, k: &[u8], ver: u64, p: &[u8]) -> Result<u64, String> {
    if k != key.as_bytes() {
        return Err(format!(
            "key {key}: got the typed value of key {:?}",
            String::from_utf8_lossy(k)
        ));
    }
    if writer_of(ver) == 0 {
        return Err(format!("key {key}: impossible typed version {ver:#x}"));
    }
    if p != &payload(key, ver)[..] {
        return Err(format!(
            "key {key}: typed payload of version {ver:#x} is wrong ({} bytes)",
            p.len()
        ));
    }
    Ok(ver)
}

fn check_rec(key: &str, r: &ArchivedRec) -> Result<u64, String> {
    check_rec_parts(
        key,
        r.key.as_str().as_bytes(),
        r.version.to_native(),
        &r.payload,
    )
}

/// Reads key `i` with the API matching its type and validates the value.
fn read_validate(c: &Cache, i: u32) -> Result<Option<u64>, String> {
    let key = key_name(i);
    if is_typed(i) {
        match c.get::<Rec>(&key) {
            Ok(Some(g)) => check_rec(&key, &g).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("get::<Rec>({key}) failed: {e}")),
        }
    } else {
        match c.get::<Raw>(&key) {
            Ok(Some(g)) => check_bytes(&key, &g).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("get_bytes({key}) failed: {e}")),
        }
    }
}

/// Picks a key: one time in five from a small hot set, else uniformly.
fn pick(rng: &mut Rng, keys: u32) -> u32 {
    if rng.below(5) == 0 {
        rng.below(keys.min(64) as u64) as u32
    } else {
        rng.below(keys as u64) as u32
    }
}

fn pick_where(rng: &mut Rng, keys: u32, typed: bool) -> u32 {
    loop {
        let i = pick(rng, keys);
        if is_typed(i) == typed {
            return i;
        }
    }
}

/// `n` distinct keys of one type.
fn pick_distinct(rng: &mut Rng, keys: u32, n: usize, typed: bool) -> Vec<u32> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let i = pick_where(rng, keys, typed);
        if seen.insert(i) {
            out.push(i);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Workers shared by threads and processes
// ---------------------------------------------------------------------------

/// Performs random writes and remembers its last operation on every key.
struct Writer<'c> {
    cache: &'c Cache,
    id: u32,
    seq: u64,
    rng: Rng,
    keys: u32,
    batch: (u64, u64),
    /// Key index -> last version this writer stored (None: deleted).
    last: HashMap<u32, Option<u64>>,
    /// Records this writer appended (one per key written).
    inserts: u64,
    /// Deletes that found the key.
    deletes: u64,
}

impl<'c> Writer<'c> {
    fn new(cache: &'c Cache, id: u32, seed: u64, keys: u32, batch: (u64, u64)) -> Writer<'c> {
        assert!(id > 0 && (id as u64) < (1 << 24));
        Writer {
            cache,
            id,
            seq: 0,
            rng: Rng::new(seed),
            keys,
            batch,
            last: HashMap::new(),
            inserts: 0,
            deletes: 0,
        }
    }

    fn next_version(&mut self) -> u64 {
        self.seq += 1;
        version(self.id, self.seq)
    }

    fn fail(&self, what: &str, keys: &[u32], e: Error) -> String {
        let names: Vec<_> = keys.iter().take(4).map(|&i| key_name(i)).collect();
        format!(
            "writer {}: {what} of {} key(s) {names:?} failed: {e} ({e:?})",
            self.id,
            keys.len()
        )
    }

    fn set_one(&mut self, i: u32, ttl: Option<Duration>) -> Result<(), String> {
        let key = key_name(i);
        let v = self.next_version();
        let r = if is_typed(i) {
            let rec = rec_value(&key, v);
            match ttl {
                Some(_) => self
                    .cache
                    .set_opt(&key, &rec, &WriteOptions::new().ttl(ttl)),
                None => self.cache.set(&key, &rec),
            }
        } else {
            let b = bytes_value(&key, v);
            match ttl {
                Some(_) => self
                    .cache
                    .set_opt(&key, &Raw(&b), &WriteOptions::new().ttl(ttl)),
                None => self.cache.set(&key, &Raw(&b)),
            }
        };
        r.map_err(|e| self.fail("set", &[i], e))?;
        self.last.insert(i, Some(v));
        self.inserts += 1;
        Ok(())
    }

    fn set_many_raw(&mut self, n: usize) -> Result<(), String> {
        let idx = pick_distinct(&mut self.rng, self.keys, n, false);
        let mut items = Vec::with_capacity(n);
        let mut vers = Vec::with_capacity(n);
        for &i in &idx {
            let key = key_name(i);
            let v = self.next_version();
            items.push((bytes_value(&key, v), key));
            vers.push(v);
        }
        let items: Vec<(&str, Raw<&[u8]>)> = items
            .iter()
            .map(|(v, k)| (k.as_str(), Raw(&v[..])))
            .collect();
        self.cache
            .set_many(items.iter().map(|(k, v)| (*k, v)))
            .map_err(|e| self.fail("set_many (Raw)", &idx, e))?;
        for (i, v) in idx.into_iter().zip(vers) {
            self.last.insert(i, Some(v));
        }
        self.inserts += n as u64;
        Ok(())
    }

    fn set_many_typed(&mut self, n: usize) -> Result<(), String> {
        let idx = pick_distinct(&mut self.rng, self.keys, n, true);
        let mut items = Vec::with_capacity(n);
        for &i in &idx {
            let key = key_name(i);
            let v = self.next_version();
            items.push((key.clone(), rec_value(&key, v)));
        }
        self.cache
            .set_many(items.iter().map(|(k, r)| (k.as_str(), r)))
            .map_err(|e| self.fail("set_many", &idx, e))?;
        for (i, (_, r)) in idx.into_iter().zip(&items) {
            self.last.insert(i, Some(r.version));
        }
        self.inserts += n as u64;
        Ok(())
    }

    fn delete(&mut self, i: u32) -> Result<(), String> {
        let found = self
            .cache
            .delete(key_name(i))
            .map_err(|e| self.fail("delete", &[i], e))?;
        self.deletes += found as u64;
        self.last.insert(i, None);
        Ok(())
    }

    /// One random operation.
    fn step(&mut self) -> Result<(), String> {
        let (lo, hi) = self.batch;
        if self.rng.below(4000) == 0 {
            // Rarely: drop everything (the tail jumps to the head).
            return self.cache.clear().map_err(|e| self.fail("clear", &[], e));
        }
        match self.rng.below(100) {
            0..=34 => {
                let i = pick(&mut self.rng, self.keys);
                self.set_one(i, None)
            }
            35..=59 => {
                let n = self.rng.range(lo, hi) as usize;
                self.set_many_raw(n)
            }
            60..=69 => {
                let n = self.rng.range(lo, hi).div_ceil(3) as usize;
                self.set_many_typed(n)
            }
            70..=79 => {
                let i = pick(&mut self.rng, self.keys);
                self.set_one(i, Some(Duration::from_secs(3600)))
            }
            _ => {
                let i = pick(&mut self.rng, self.keys);
                self.delete(i)
            }
        }
    }

    /// `key version` (or `key -` for a delete) per line, after a line with
    /// the counts.
    fn report(&self) -> String {
        let mut s = format!("inserts {} deletes {}\n", self.inserts, self.deletes);
        for (i, v) in &self.last {
            match v {
                Some(v) => s.push_str(&format!("{i} {v}\n")),
                None => s.push_str(&format!("{i} -\n")),
            }
        }
        s
    }
}

struct WriterReport {
    inserts: u64,
    deletes: u64,
    last: HashMap<u32, Option<u64>>,
}

fn parse_writer_report(text: &str) -> WriterReport {
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("counts line").split(' ').collect();
    assert_eq!(head.len(), 4, "bad report head {head:?}");
    let mut last = HashMap::new();
    for l in lines {
        let (i, v) = l.split_once(' ').expect("`key version` line");
        let v = if v == "-" {
            None
        } else {
            Some(v.parse().unwrap())
        };
        last.insert(i.parse().unwrap(), v);
    }
    WriterReport {
        inserts: head[1].parse().unwrap(),
        deletes: head[3].parse().unwrap(),
        last,
    }
}

enum HeldGuard<'c> {
    Bytes(Guard<'c, [u8]>),
    Typed(Guard<'c, ArchivedRec>),
}

/// A guard kept across other reads; its bytes must never change.
struct Held<'c> {
    i: u32,
    version: u64,
    guard: HeldGuard<'c>,
    steps_left: u32,
}

/// Performs random reads, validates everything it gets and checks that no
/// writer's versions go backwards for a key.
struct Reader<'c> {
    cache: &'c Cache,
    rng: Rng,
    keys: u32,
    /// Hold guards across reads (and sometimes sleep while holding them).
    hold: bool,
    /// Exit the process with status 3 at the first invalid read.
    fail_fast: bool,
    held: Vec<Held<'c>>,
    latest: HashMap<(u32, u32), u64>,
    reads: u64,
    hits: u64,
    failures: Vec<String>,
    failure_count: u64,
}

impl<'c> Reader<'c> {
    fn new(cache: &'c Cache, seed: u64, keys: u32, hold: bool, fail_fast: bool) -> Reader<'c> {
        Reader {
            cache,
            rng: Rng::new(seed),
            keys,
            hold,
            fail_fast,
            held: Vec::new(),
            latest: HashMap::new(),
            reads: 0,
            hits: 0,
            failures: Vec::new(),
            failure_count: 0,
        }
    }

    fn fail(&mut self, msg: String) {
        if self.fail_fast {
            eprintln!("INVALID READ (pid {}): {msg}", std::process::id());
            std::process::exit(3);
        }
        self.failure_count += 1;
        if self.failures.len() < 20 {
            self.failures.push(msg);
        }
    }

    /// Records a validated read of key `i`.
    fn observe(&mut self, i: u32, r: Result<Option<u64>, String>) {
        self.reads += 1;
        match r {
            Err(msg) => self.fail(msg),
            Ok(None) => {}
            Ok(Some(v)) => {
                self.hits += 1;
                let w = writer_of(v);
                let seq = v & SEQ_MASK;
                let prev = self.latest.insert((i, w), seq).unwrap_or(0);
                if seq < prev {
                    self.latest.insert((i, w), prev);
                    self.fail(format!(
                        "key {}: writer {w}'s value went back in time: read seq {seq} after seq {prev}",
                        key_name(i)
                    ));
                }
            }
        }
    }

    fn release_due(&mut self, all: bool) {
        let mut k = 0;
        while k < self.held.len() {
            let h = &mut self.held[k];
            h.steps_left = h.steps_left.saturating_sub(1);
            if !all && h.steps_left > 0 {
                k += 1;
                continue;
            }
            let h = self.held.swap_remove(k);
            let key = key_name(h.i);
            let now = match &h.guard {
                HeldGuard::Bytes(g) => check_bytes(&key, g),
                HeldGuard::Typed(g) => check_rec(&key, g),
            };
            match now {
                Ok(v) if v == h.version => {}
                Ok(v) => {
                    let msg = format!(
                        "key {key}: bytes changed under a live guard: version {:#x} became {v:#x}",
                        h.version
                    );
                    self.fail(msg)
                }
                Err(e) => self.fail(format!("bytes changed under a live guard: {e}")),
            }
        }
    }

    fn step(&mut self) {
        let c = self.cache;
        match self.rng.below(100) {
            0..=44 => {
                let i = pick(&mut self.rng, self.keys);
                let r = read_validate(c, i);
                self.observe(i, r);
            }
            45..=59 => {
                // Several byte keys (and a typed one, which must be a miss
                // through the bytes API), all guards alive together.
                let n = self.rng.range(2, 16) as usize;
                let mut idx = pick_distinct(&mut self.rng, self.keys, n, false);
                idx.push(pick_where(&mut self.rng, self.keys, true));
                let names: Vec<String> = idx.iter().map(|&i| key_name(i)).collect();
                match c.get_many::<Raw>(&names) {
                    Err(e) => self.fail(format!("get_many_bytes failed: {e}")),
                    Ok(gs) => {
                        let mut results = Vec::new();
                        for ((&i, name), g) in idx.iter().zip(&names).zip(&gs) {
                            let r = match g {
                                None => Ok(None),
                                Some(_) if is_typed(i) => Err(format!(
                                    "key {name}: get_many::<Raw> returned a typed record as bytes"
                                )),
                                Some(g) => check_bytes(name, g).map(Some),
                            };
                            results.push((i, r));
                        }
                        drop(gs);
                        for (i, r) in results {
                            self.observe(i, r);
                        }
                    }
                }
            }
            60..=66 => {
                let n = self.rng.range(2, 6) as usize;
                let idx = pick_distinct(&mut self.rng, self.keys, n, true);
                let names: Vec<String> = idx.iter().map(|&i| key_name(i)).collect();
                match c.get_many::<Rec>(&names) {
                    Err(e) => self.fail(format!("get_many::<Rec> failed: {e}")),
                    Ok(gs) => {
                        let results: Vec<_> = idx
                            .iter()
                            .zip(&names)
                            .zip(&gs)
                            .map(|((&i, name), g)| {
                                (i, g.as_ref().map(|g| check_rec(name, g)).transpose())
                            })
                            .collect();
                        drop(gs);
                        for (i, r) in results {
                            self.observe(i, r);
                        }
                    }
                }
            }
            67..=76 if self.hold && self.held.len() < 6 => {
                let i = pick(&mut self.rng, self.keys);
                let key = key_name(i);
                let steps_left = self.rng.range(1, 40) as u32;
                let got = if is_typed(i) {
                    c.get::<Rec>(&key)
                        .map(|g| g.map(|g| (check_rec(&key, &g), HeldGuard::Typed(g))))
                } else {
                    c.get::<Raw>(&key)
                        .map(|g| g.map(|g| (check_bytes(&key, &g), HeldGuard::Bytes(g))))
                };
                match got {
                    Err(e) => self.fail(format!("read of {key} to hold failed: {e}")),
                    Ok(None) => self.observe(i, Ok(None)),
                    Ok(Some((Err(e), _))) => self.observe(i, Err(e)),
                    Ok(Some((Ok(v), guard))) => {
                        self.observe(i, Ok(Some(v)));
                        self.held.push(Held {
                            i,
                            version: v,
                            guard,
                            steps_left,
                        });
                    }
                }
            }
            77..=84 => {
                // The wrong API for the key's type is a miss, never a value.
                let i = pick(&mut self.rng, self.keys);
                let key = key_name(i);
                let wrong = if is_typed(i) {
                    c.get::<Raw>(&key).map(|g| g.is_some())
                } else {
                    c.get::<Rec>(&key).map(|g| g.is_some())
                };
                self.reads += 1;
                match wrong {
                    Ok(false) => {}
                    Ok(true) => self.fail(format!("key {key}: read through the wrong type")),
                    Err(e) => self.fail(format!("read of {key} failed: {e}")),
                }
            }
            85..=92 => {
                let i = pick_where(&mut self.rng, self.keys, true);
                let key = key_name(i);
                let r = match c.get_owned::<Rec>(&key) {
                    Ok(Some(r)) => {
                        check_rec_parts(&key, r.key.as_bytes(), r.version, &r.payload).map(Some)
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(format!("get_owned({key}) failed: {e}")),
                };
                self.observe(i, r);
            }
            93..=96 => {
                let i = pick(&mut self.rng, self.keys);
                if let Err(e) = c.contains(key_name(i)) {
                    self.fail(format!("contains failed: {e}"));
                }
            }
            _ => {
                if self.hold && !self.held.is_empty() {
                    // Hold the guards while doing nothing for a moment.
                    std::thread::sleep(Duration::from_micros(self.rng.range(100, 2000)));
                }
            }
        }
        self.release_due(false);
    }

    fn finish(&mut self) {
        self.release_due(true);
    }
}

/// Reads every key, validates it and checks that a value present is the
/// last one some writer stored for that key. Returns the number of keys
/// present and the failures.
fn check_final_state(
    c: &Cache,
    keys: u32,
    lasts: &[&HashMap<u32, Option<u64>>],
) -> (u64, Vec<String>) {
    let mut present = 0;
    let mut failures = Vec::new();
    for i in 0..keys {
        match read_validate(c, i) {
            Err(e) => failures.push(e),
            Ok(None) => {}
            Ok(Some(v)) => {
                present += 1;
                if !lasts.iter().any(|m| m.get(&i) == Some(&Some(v))) {
                    let ops: Vec<_> = lasts.iter().map(|m| m.get(&i)).collect();
                    failures.push(format!(
                        "key {}: final value has version {v:#x} (writer {}), which is not the \
                         last value any writer stored; writers' last operations: {ops:?}",
                        key_name(i),
                        writer_of(v)
                    ));
                }
            }
        }
    }
    (present, failures)
}

/// Joins a thread, passing its panic message on.
fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    h.join().unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{what} thread panicked: {msg}")
    })
}

// ---------------------------------------------------------------------------
// Temp dirs and child processes
// ---------------------------------------------------------------------------

/// Geometry of the file the multi-process test uses.
fn processes_opts() -> Options {
    Options::new()
        .capacity(4 << 20)
        .stripes(4)
        .segments(8)
        .pin_wait(Duration::from_secs(10))
}

/// Geometry of the file the crash test uses.
fn crash_opts() -> Options {
    Options::new()
        .capacity(2 << 20)
        .stripes(4)
        .segments(8)
        .pin_wait(Duration::from_secs(10))
}

fn profile(name: &str) -> Options {
    match name {
        "processes" => processes_opts(),
        "crash" => crash_opts(),
        other => panic!("unknown profile {other}"),
    }
}

/// A child process with its output collected by two threads.
struct Kid {
    name: String,
    child: Child,
    ready: mpsc::Receiver<()>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
    killed: bool,
    started: Instant,
}

fn spawn_kid(name: String, role: &str, path: &Path, env: &[(&str, String)]) -> Kid {
    let mut cmd = common::child(role, path);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning a child");
    let (tx, ready) = mpsc::channel();
    let out = Arc::new(Mutex::new(String::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let o = out.clone();
    let e = err.clone();
    let drains = vec![
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = tx.send(());
                }
                let mut o = o.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        }),
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = BufReader::new(stderr).read_to_end(&mut buf);
            e.lock().unwrap().push_str(&String::from_utf8_lossy(&buf));
        }),
    ];
    Kid {
        name,
        child,
        ready,
        out,
        err,
        drains,
        killed: false,
        started: Instant::now(),
    }
}

impl Kid {
    fn kill(&mut self) {
        // SIGKILL on Unix, TerminateProcess (exit code 1) on Windows;
        // harmless if the child already exited.
        let _ = self.child.kill();
        self.killed = true;
    }

    /// Waits for the child and its output. A child still running
    /// [`CHILD_LIMIT`] after its start is hung (say, on a stripe lock that
    /// is never released): it is killed and reported as such.
    fn wait(mut self) -> Exit {
        let mut hung = false;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for a child") {
                break s;
            }
            if !hung && self.started.elapsed() > CHILD_LIMIT {
                hung = true;
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for d in self.drains.drain(..) {
            d.join().unwrap();
        }
        let out = std::mem::take(&mut *self.out.lock().unwrap());
        let mut err = std::mem::take(&mut *self.err.lock().unwrap());
        if hung {
            err.insert_str(
                0,
                &format!("HUNG: still running after {CHILD_LIMIT:?}, killed\n"),
            );
        }
        Exit {
            name: self.name,
            status,
            out,
            err,
            killed_by_us: self.killed && !hung,
            hung,
        }
    }
}

/// How a child ended.
struct Exit {
    name: String,
    status: ExitStatus,
    out: String,
    err: String,
    /// The test killed it on purpose (not because it hung).
    killed_by_us: bool,
    hung: bool,
}

impl Exit {
    /// Whether it ran to a successful end.
    fn ok(&self) -> bool {
        self.status.success() && !self.hung
    }

    fn describe(&self) -> String {
        let err: String = self.err.lines().take(30).collect::<Vec<_>>().join("\n    ");
        let why = if self.hung {
            ""
        } else {
            crash_reason(&self.status)
        };
        format!("{}: {}{why}\n    {err}", self.name, self.status)
    }
}

/// Why a child that this test did not kill on purpose died, if it crashed.
#[cfg(unix)]
fn crash_reason(status: &ExitStatus) -> &'static str {
    use std::os::unix::process::ExitStatusExt;
    // This test only sends SIGKILL: to children it kills on purpose
    // (which do not get here) and to hung ones.
    match status.signal() {
        Some(libc::SIGSEGV | libc::SIGBUS | libc::SIGABRT | libc::SIGILL) => " (crashed)",
        Some(_) => " (a signal this test did not send: killed from outside)",
        None => "",
    }
}

/// Why a child that this test did not kill on purpose died, if it crashed.
#[cfg(windows)]
fn crash_reason(status: &ExitStatus) -> &'static str {
    // An unhandled exception ends a process with its NTSTATUS code
    // (0xC0000005 access violation, 0xC0000006 in-page error — a mapped
    // file's SIGBUS —, 0xC0000409 stack buffer overrun / abort).
    match status.code().map(|c| c as u32) {
        Some(c) if c >= 0xC000_0000 => " (crashed)",
        _ => "",
    }
}

/// Generous bound on a child's run time; only a hang comes near it.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// Whether the child ended by [`Kid::kill`] rather than by itself.
#[cfg(unix)]
fn ended_by_kill(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGKILL)
}

/// Whether the child ended by [`Kid::kill`] rather than by itself:
/// `Child::kill` is `TerminateProcess(handle, 1)`, and a child that ends by
/// itself exits with 0, 4 (a failed write) or 101 (a panic), never 1.
#[cfg(windows)]
fn ended_by_kill(status: &ExitStatus) -> bool {
    status.code() == Some(1)
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is set for children"))
        .parse()
        .unwrap()
}

/// The body of every child process (does nothing in a normal test run).
#[test]
fn child_entry() {
    let Some((role, path)) = common::child_role() else {
        return;
    };
    // Read-only handles pin with shared byte-range locks instead of reader
    // slots.
    let read_only = std::env::var("SLOTCACHE_READ_ONLY").is_ok();
    let opts = profile(&std::env::var("SLOTCACHE_PROFILE").unwrap()).read_only(read_only);
    let seed = env_u64("SLOTCACHE_SEED");
    let keys = env_u64("SLOTCACHE_KEYS") as u32;
    let ops = env_u64("SLOTCACHE_OPS");
    let cache = Cache::open(&path, opts).expect("child opens the cache");
    assert_eq!(cache.info().read_only, read_only);
    println!("READY");
    match role.as_str() {
        "writer" => {
            let id = env_u64("SLOTCACHE_ID") as u32;
            let batch = (
                env_u64("SLOTCACHE_BATCH_MIN"),
                env_u64("SLOTCACHE_BATCH_MAX"),
            );
            let mut w = Writer::new(&cache, id, seed, keys, batch);
            for _ in 0..ops {
                if let Err(e) = w.step() {
                    eprintln!("WRITE FAILED (pid {}): {e}", std::process::id());
                    std::process::exit(4);
                }
            }
            if let Ok(out) = std::env::var("SLOTCACHE_OUT") {
                std::fs::write(out, w.report()).unwrap();
            }
        }
        "reader" => {
            let hold = std::env::var("SLOTCACHE_HOLD").is_ok();
            // Two reading threads: one per reader slot.
            let c2 = cache.clone();
            let helper = std::thread::spawn(move || {
                let mut r = Reader::new(&c2, seed ^ 1, keys, hold, true);
                for _ in 0..ops {
                    r.step();
                }
                r.finish();
                (r.reads, r.hits)
            });
            let mut r = Reader::new(&cache, seed, keys, hold, true);
            for _ in 0..ops {
                r.step();
            }
            r.finish();
            let (reads, hits) = helper.join().unwrap();
            println!("READS {} HITS {}", r.reads + reads, r.hits + hits);
        }
        "regen" => {
            // Regenerates a few expiring keys with dogpile protection, slow
            // creators included, so kills land inside creators holding
            // regeneration locks.
            let opts = CreateOptions::new().ttl(Some(Duration::from_millis(3)));
            for i in 0..ops {
                let k = i % REGEN_KEYS;
                let v = cache
                    .get_or_create_opt(format!("regen{k}"), &opts, || {
                        std::thread::sleep(Duration::from_millis(i % 3));
                        regen_value(k)
                    })
                    .expect("get_or_create")
                    .into_owned()
                    .expect("deserialize");
                if v != regen_value(k) {
                    eprintln!("WRONG REGEN VALUE for regen{k}: {v}");
                    std::process::exit(5);
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Keys the regenerating children use, and their (only) value.
const REGEN_KEYS: u64 = 8;

fn regen_value(k: u64) -> u64 {
    k * 1_000_003 + 7
}

// ---------------------------------------------------------------------------
// 1. Threads
// ---------------------------------------------------------------------------

#[test]
fn threads_hammer_one_cache() {
    let seed = run_seed("threads");
    let dir = TempDir::new("stress", "threads");
    const KEYS: u32 = 3000;
    const WRITERS: u32 = 4;
    const READERS: u64 = 4;
    const WRITER_OPS: u32 = 2500;
    let cache = Cache::open(
        dir.join("c"),
        Options::new()
            .capacity(4 << 20)
            .stripes(4)
            .segments(8)
            // A writer waiting this long for a guard held a few ms means a
            // leaked pin.
            .pin_wait(Duration::from_secs(10)),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (c, stop) = (cache.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rd = Reader::new(&c, seed ^ mix(100 + r), KEYS, r % 2 == 0, false);
                let mut steps = 0u64;
                while !stop.load(Ordering::Relaxed) || steps < 2000 {
                    rd.step();
                    steps += 1;
                }
                rd.finish();
                (rd.reads, rd.hits, rd.failure_count, rd.failures)
            })
        })
        .collect();
    // Short-lived reader threads: reader slots are claimed and released
    // (and their pins cleared) while writers scan the reader table.
    let spawner = {
        let (c, stop) = (cache.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut reads, mut hits, mut count, mut failures) = (0, 0, 0, Vec::new());
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let c = c.clone();
                let h = std::thread::spawn(move || {
                    let mut rd = Reader::new(&c, seed ^ mix(1000 + k), KEYS, k % 2 == 0, false);
                    for _ in 0..50 {
                        rd.step();
                    }
                    rd.finish();
                    (rd.reads, rd.hits, rd.failure_count, rd.failures)
                });
                let (r, h, n, f) = join(h, "short-lived reader");
                reads += r;
                hits += h;
                count += n;
                failures.extend(f);
            }
            (reads, hits, count, failures)
        })
    };
    let writers: Vec<_> = (1..=WRITERS)
        .map(|id| {
            let c = cache.clone();
            std::thread::spawn(move || {
                let mut w = Writer::new(&c, id, seed ^ mix(id as u64), KEYS, (2, 24));
                for _ in 0..WRITER_OPS {
                    w.step()?;
                }
                Ok::<_, String>((w.last, w.inserts, w.deletes))
            })
        })
        .collect();

    let mut failures = Vec::new();
    let mut lasts = Vec::new();
    let (mut inserts, mut deletes) = (0, 0);
    for w in writers {
        match join(w, "writer") {
            Ok((last, i, d)) => {
                lasts.push(last);
                inserts += i;
                deletes += d;
            }
            Err(e) => failures.push(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut reads, mut hits) = (0, 0);
    for r in readers.into_iter().chain([spawner]) {
        let (rd, h, n, f) = join(r, "reader");
        reads += rd;
        hits += h;
        if n > 0 {
            failures.push(format!("a reader saw {n} invalid reads, first ones:"));
            failures.extend(f);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let last_refs: Vec<_> = lasts.iter().collect();
    let (present, final_failures) = check_final_state(&cache, KEYS, &last_refs);
    assert!(
        final_failures.is_empty(),
        "final state:\n{}",
        final_failures.join("\n")
    );
    let st = cache.stats();
    eprintln!(
        "[threads] reads {reads} hits {hits} present {present}/{KEYS} inserts {inserts} \
         deletes {deletes}; stats {st:?}"
    );
    assert!(
        hits > 1000,
        "readers hit too rarely to test anything: {hits}"
    );
    assert_eq!(st.corrupt, 0, "readers met corrupt records: {st:?}");
    assert!(st.evictions > 0, "eviction never ran: {st:?}");
    assert!(
        st.reinserts > 0,
        "no read entry got a second chance: {st:?}"
    );
    // The per-stripe counters are plain load+store under the stripe lock:
    // any lost update means two writers were inside one stripe at once.
    assert_eq!(st.inserts, inserts, "inserts counter vs records written");
    assert_eq!(
        st.deletes, deletes,
        "deletes counter vs deletes that found the key"
    );
    assert_eq!(st.entries, present, "entries counter vs keys readable");
    drop(cache);
}

// ---------------------------------------------------------------------------
// 2. Processes
// ---------------------------------------------------------------------------

#[test]
fn processes_hammer_one_file() {
    let seed = run_seed("processes");
    let dir = TempDir::new("stress", "processes");
    let path = dir.join("c");
    const KEYS: u32 = 6000;
    const WRITERS: u32 = 3;
    const READERS: u32 = 3;
    // Create the file before any child opens it.
    let cache = Cache::open(&path, processes_opts()).unwrap();
    let info = cache.info();
    drop(cache);

    let mut kids = Vec::new();
    for id in 1..=WRITERS {
        kids.push(spawn_kid(
            format!("writer {id}"),
            "writer",
            &path,
            &[
                ("SLOTCACHE_PROFILE", "processes".into()),
                ("SLOTCACHE_SEED", mix(seed ^ id as u64).to_string()),
                ("SLOTCACHE_KEYS", KEYS.to_string()),
                ("SLOTCACHE_OPS", "4000".into()),
                ("SLOTCACHE_ID", id.to_string()),
                ("SLOTCACHE_BATCH_MIN", "2".into()),
                ("SLOTCACHE_BATCH_MAX", "24".into()),
                (
                    "SLOTCACHE_OUT",
                    dir.join(format!("writer-{id}")).display().to_string(),
                ),
            ],
        ));
    }
    for r in 0..READERS {
        let mut env = vec![
            ("SLOTCACHE_PROFILE", "processes".to_string()),
            ("SLOTCACHE_SEED", mix(seed ^ (100 + r as u64)).to_string()),
            ("SLOTCACHE_KEYS", KEYS.to_string()),
            ("SLOTCACHE_OPS", "20000".into()),
        ];
        if r != 1 {
            env.push(("SLOTCACHE_HOLD", "1".into()));
        }
        if r == 2 {
            env.push(("SLOTCACHE_READ_ONLY", "1".into()));
        }
        kids.push(spawn_kid(format!("reader {r}"), "reader", &path, &env));
    }
    let mut bad = Vec::new();
    let (mut reads, mut hits) = (0u64, 0u64);
    for k in kids {
        let e = k.wait();
        if !e.ok() {
            bad.push(e.describe());
        }
        for l in e.out.lines().filter(|l| l.starts_with("READS ")) {
            let f: Vec<&str> = l.split(' ').collect();
            reads += f[1].parse::<u64>().unwrap();
            hits += f[3].parse::<u64>().unwrap();
        }
    }
    assert!(bad.is_empty(), "children failed:\n{}", bad.join("\n"));

    let reports: Vec<WriterReport> = (1..=WRITERS)
        .map(|id| {
            parse_writer_report(&std::fs::read_to_string(dir.join(format!("writer-{id}"))).unwrap())
        })
        .collect();
    let cache = Cache::open(&path, processes_opts()).unwrap();
    assert_eq!(cache.info(), info);
    let lasts: Vec<_> = reports.iter().map(|r| &r.last).collect();
    let (present, failures) = check_final_state(&cache, KEYS, &lasts);
    assert!(failures.is_empty(), "final state:\n{}", failures.join("\n"));
    let st = cache.stats();
    let inserts: u64 = reports.iter().map(|r| r.inserts).sum();
    let deletes: u64 = reports.iter().map(|r| r.deletes).sum();
    eprintln!(
        "[processes] reads {reads} hits {hits} present {present}/{KEYS} inserts {inserts} \
         deletes {deletes}; stats {st:?}"
    );
    assert!(
        hits > 1000,
        "readers hit too rarely to test anything: {hits}"
    );
    assert!(present > 0);
    assert_eq!(st.corrupt, 0, "readers met corrupt records: {st:?}");
    assert!(
        st.evictions > 0,
        "more keys than fit, yet nothing was evicted: {st:?}"
    );
    assert_eq!(st.inserts, inserts, "inserts counter vs records written");
    assert_eq!(
        st.deletes, deletes,
        "deletes counter vs deletes that found the key"
    );
    assert_eq!(st.entries, present, "entries counter vs keys readable");
}

// ---------------------------------------------------------------------------
// 3. Crashes
// ---------------------------------------------------------------------------

/// What the parent does after a round, once every child is dead: validate,
/// write one key after another (each read back at once) so every stripe
/// lock is taken, then write enough to wrap every ring several times.
fn parent_writes(c: &Cache, round: u32, keys: u32, seed: u64) -> Result<u64, String> {
    let id = 1_000_000 + round;
    let mut rng = Rng::new(seed);
    let mut seq = 0;
    let info = c.info();
    let mut write = |i: u32| -> Result<u64, String> {
        seq += 1;
        let v = version(id, seq);
        let key = key_name(i);
        let r = if is_typed(i) {
            c.set(&key, &rec_value(&key, v))
        } else {
            c.set(&key, &Raw(&bytes_value(&key, v)))
        };
        match r {
            Ok(()) => Ok(v),
            Err(e @ Error::Pinned { .. }) => Err(format!(
                "write of {key} failed with every child dead, so a dead reader's pin was \
                 not reclaimed: {e}"
            )),
            Err(e) => Err(format!("write of {key} failed: {e} ({e:?})")),
        }
    };
    let mut writes = 0;
    for _ in 0..20 * info.stripes {
        let i = rng.below(keys as u64) as u32;
        let v = write(i)?;
        writes += 1;
        match read_validate(c, i)? {
            Some(got) if got == v => {}
            other => {
                return Err(format!(
                    "key {}: wrote version {v:#x} and read back {other:?}",
                    key_name(i)
                ))
            }
        }
    }
    let ring = info.stripes as u64 * info.segments as u64 * info.segment_size;
    let mut bytes = 0;
    while bytes < 3 * ring {
        let i = rng.below(keys as u64) as u32;
        let v = write(i)?;
        writes += 1;
        let key = key_name(i);
        bytes += 64
            + if is_typed(i) {
                payload(&key, v).len() as u64 + 32
            } else {
                bytes_value(&key, v).len() as u64
            };
    }
    Ok(writes)
}

fn validate_all(c: &Cache, keys: u32, when: &str) -> u64 {
    let mut present = 0;
    let mut failures = Vec::new();
    for i in 0..keys {
        match read_validate(c, i) {
            Ok(Some(_)) => present += 1,
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{when}: {} invalid values:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // No live record fails its checksum, no slot dangles.
    let report = c.verify().unwrap();
    assert!(
        report.is_clean(),
        "{when}: integrity check failed: {report:?}"
    );
    present
}

#[test]
fn killed_processes_leave_a_usable_file() {
    let seed = run_seed("crash");
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("stress", "crash");
    let path = dir.join("c");
    const KEYS: u32 = 2000;
    const ROUNDS: u32 = 20;
    drop(Cache::open(&path, crash_opts()).unwrap());
    let (mut killed_total, mut survived_total) = (0, 0);

    for round in 0..ROUNDS {
        let writers = rng.range(1, 3) as u32;
        let readers = rng.range(1, 3) as u32;
        let mut kids = Vec::new();
        for w in 0..writers {
            let id = round * 10 + w + 1;
            kids.push(spawn_kid(
                format!("round {round} writer {id}"),
                "writer",
                &path,
                &[
                    ("SLOTCACHE_PROFILE", "crash".into()),
                    ("SLOTCACHE_SEED", rng.next_u64().to_string()),
                    ("SLOTCACHE_KEYS", KEYS.to_string()),
                    ("SLOTCACHE_OPS", "160".into()),
                    ("SLOTCACHE_ID", id.to_string()),
                    // Big batches across all stripes: mostly inside locks.
                    ("SLOTCACHE_BATCH_MIN", "16".into()),
                    ("SLOTCACHE_BATCH_MAX", "48".into()),
                ],
            ));
        }
        for r in 0..readers {
            let mut env = vec![
                ("SLOTCACHE_PROFILE", "crash".to_string()),
                ("SLOTCACHE_SEED", rng.next_u64().to_string()),
                ("SLOTCACHE_KEYS", KEYS.to_string()),
                ("SLOTCACHE_OPS", "1500".into()),
            ];
            if rng.below(2) == 0 {
                env.push(("SLOTCACHE_HOLD", "1".into()));
            }
            if rng.below(3) == 0 {
                env.push(("SLOTCACHE_READ_ONLY", "1".into()));
            }
            kids.push(spawn_kid(
                format!("round {round} reader {r}"),
                "reader",
                &path,
                &env,
            ));
        }
        kids.push(spawn_kid(
            format!("round {round} regenerator"),
            "regen",
            &path,
            &[
                ("SLOTCACHE_PROFILE", "crash".into()),
                ("SLOTCACHE_SEED", rng.next_u64().to_string()),
                ("SLOTCACHE_KEYS", KEYS.to_string()),
                ("SLOTCACHE_OPS", "400".into()),
            ],
        ));
        // Let every child open the cache, then strike at a random moment.
        for k in &kids {
            if k.ready.recv_timeout(Duration::from_secs(60)).is_err() {
                eprintln!("{} never became ready", k.name);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(31)));
        let kill_all = rng.below(4) == 0;
        for k in &mut kids {
            if kill_all || rng.below(2) == 0 {
                k.kill();
            }
        }
        let mut bad = Vec::new();
        for k in kids {
            let e = k.wait();
            if e.killed_by_us && ended_by_kill(&e.status) {
                killed_total += 1;
                continue;
            }
            // Not killed, or done before the signal: must have succeeded.
            survived_total += 1;
            if !e.ok() {
                bad.push(e.describe());
            }
        }
        assert!(
            bad.is_empty(),
            "round {round}: children failed:\n{}",
            bad.join("\n")
        );

        // Every child is dead now.
        let cache = Cache::open(&path, Options::new()).unwrap();
        validate_all(&cache, KEYS, &format!("round {round}, after the children"));
        let before = cache.stats();
        let (tx, rx) = mpsc::channel();
        let c2 = cache.clone();
        let wseed = rng.next_u64();
        let h = std::thread::spawn(move || {
            let _ = tx.send(parent_writes(&c2, round, KEYS, wseed));
        });
        let writes = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("round {round}: {e}"),
            Err(_) => panic!(
                "round {round}: the parent's writes did not finish in 30 s: \
                 a stripe lock of a killed process is stuck"
            ),
        };
        join(h, "parent writer");
        let after = cache.stats();
        // No regeneration lock of a killed creator is left behind, and
        // every regenerated value is right.
        let wait = CreateOptions::new().lock_timeout(Duration::from_secs(30));
        for k in 0..REGEN_KEYS {
            let v = cache
                .get_or_create_opt(format!("regen{k}"), &wait, || regen_value(k))
                .unwrap_or_else(|e| panic!("round {round}: regen{k}: {e}"))
                .into_owned()
                .unwrap();
            assert_eq!(v, regen_value(k), "round {round}: regen{k}");
        }
        assert_eq!(
            after.inserts - before.inserts,
            writes,
            "round {round}: inserts counter vs the parent's writes"
        );
        assert!(
            after.evictions > before.evictions,
            "round {round}: rings did not wrap"
        );
        validate_all(
            &cache,
            KEYS,
            &format!("round {round}, after the parent's writes"),
        );
        assert_eq!(
            after.corrupt, 0,
            "round {round}: corrupt records seen: {after:?}"
        );
        drop(cache);
    }
    eprintln!(
        "[crash] {ROUNDS} rounds, {killed_total} children killed, {survived_total} ran to the end"
    );
    assert!(killed_total > 0, "no child was ever killed mid-run");
}
