//! The logic of slotcache's fuzz targets, shared by the three `cargo fuzz`
//! targets in `fuzz/fuzz_targets/` (as the crate `slotcache_fuzz`) and by
//! the stable replay test `tests/fuzz_corpus.rs` of the root crate (which
//! includes this file as a module), so a corpus file is checked the same
//! way by both.
//!
//! Entry points, each taking the raw fuzz input and panicking on a
//! violation:
//! - [`run_open_bytes`]: a file built from the input is opened; the result
//!   must be a typed error or a usable cache.
//! - [`run_ops_model`]: an operation sequence (decoded with `arbitrary`) is
//!   run on a tiny cache and on a model; every hit must be exactly the
//!   model's value.
//! - [`run_ops_bitflip`]: the same, with bytes of the file damaged between
//!   operations; every hit must be a value once stored under its key.
//!
//! Everything here uses only slotcache's public API, `arbitrary` and std.

use arbitrary::{Arbitrary, Unstructured};
use slotcache::{rkyv, Cache, Error, Info, Invalidation, Options, Raw, WriteOptions};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// Where scratch cache files go: `$SLOTCACHE_FUZZ_DIR`, else `/dev/shm` on
/// Linux (memory, fast), else the system temporary directory.
fn scratch_base() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        if let Some(d) = std::env::var_os("SLOTCACHE_FUZZ_DIR") {
            let d = PathBuf::from(d);
            let _ = std::fs::create_dir_all(&d);
            return d;
        }
        let shm = Path::new("/dev/shm");
        if cfg!(target_os = "linux") && shm.is_dir() {
            let probe = shm.join(format!("slotcache-fuzz-probe-{}", std::process::id()));
            if std::fs::write(&probe, b"").is_ok() {
                let _ = std::fs::remove_file(&probe);
                return shm.to_path_buf();
            }
        }
        std::env::temp_dir()
    })
}

/// A scratch file path, unique in this process, removed on drop.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A new, not yet existing path.
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = scratch_base().join(format!(
            "slotcache-fuzz-{}-{n}-{tag}.cache",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        Scratch { path }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `buf` at `off` through a descriptor of our own (the cache's
/// shared mapping sees it: same page cache).
pub fn write_at(file: &File, buf: &[u8], off: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n =
                std::os::windows::fs::FileExt::seek_write(file, &buf[done..], off + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `off`.
pub fn read_at(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                off + done as u64,
            )?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The file format, as far as the harness needs it (format.md, section 2)
// ---------------------------------------------------------------------------

/// Header size.
pub const HEADER: usize = 4096;
/// Header fields the harness rewrites (format.md, 2.1).
pub mod hdr {
    /// `u64` file size.
    pub const FILE_SIZE: usize = 16;
    /// `u32` stripes.
    pub const STRIPES: usize = 24;
    /// `u32` segments.
    pub const SEGMENTS: usize = 28;
    /// `u64` segment size.
    pub const SEGMENT_SIZE: usize = 32;
    /// `u32` buckets per stripe.
    pub const BUCKETS: usize = 40;
    /// `u32` reader slots.
    pub const READER_SLOTS: usize = 44;
    /// `u64` hash seed.
    pub const SEED: usize = 48;
    /// `u64` creation time.
    pub const CREATED: usize = 64;
    /// `u64` stripe table offset.
    pub const STRIPE_OFF: usize = 80;
    /// `u64` reader table offset.
    pub const READER_OFF: usize = 88;
    /// `u32` reader slot size.
    pub const READER_SLOT_SIZE: usize = 96;
    /// `u64` index offset.
    pub const INDEX_OFF: usize = 104;
    /// `u64` data offset.
    pub const DATA_OFF: usize = 112;
    /// `u32` CRC32 of bytes 8..120 and 124..128.
    pub const CRC: usize = 120;
    /// `u32` stripe lock kind (format.md §2.1, §6).
    pub const LOCK_WORD: usize = 124;
    /// End of the atomic header words (hard/soft invalidation, reader
    /// high-water mark, clears).
    pub const ATOMICS_END: usize = 160;
}

/// Seed written into every file the harness creates, so that a fuzz input
/// places keys the same way in every run.
pub const FIXED_SEED: u64 = 0x5107_CAC4_E5EE_D001;
/// Creation time written into those files (2023-11-14).
pub const FIXED_CREATED: u64 = 1_700_000_000_000_000_000;

/// CRC32 (IEEE, the one `crc32fast` computes), bitwise: only ever run over
/// 112 header bytes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header CRC of `file` (at least 128 bytes): CRC32 of
/// bytes 8..120, then of the lock word.
pub fn fix_header_crc(file: &mut [u8]) {
    let mut covered = file[8..hdr::CRC].to_vec();
    covered.extend_from_slice(&file[hdr::LOCK_WORD..hdr::LOCK_WORD + 4]);
    let crc = crc32(&covered);
    put_u32(file, hdr::CRC, crc);
}

/// Rounds `x` up to a multiple of `a` (a power of two), saturating (the
/// header fields it is used on may hold anything).
const fn align_up(x: u64, a: u64) -> u64 {
    x.saturating_add(a - 1) & !(a - 1)
}

/// Where the regions of an open file are (format.md, section 2).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Total size.
    pub file_size: u64,
    /// Stripes.
    pub stripes: u64,
    /// Stripe table offset.
    pub stripe_off: u64,
    /// Reader table offset.
    pub reader_off: u64,
    /// Reader table length.
    pub reader_len: u64,
    /// Index offset.
    pub index_off: u64,
    /// Index length.
    pub index_len: u64,
    /// Data region offset.
    pub data_off: u64,
    /// Bytes of one stripe's log ring.
    pub ring: u64,
}

/// Bytes of one stripe-table entry (format.md §2.2).
const STRIPE_ENTRY: u64 = 192;
/// Pin bytes per stripe in a reader slot: one word per ring (format.md §2.3).
const PIN_BYTES: u64 = 16;

impl Layout {
    /// The layout of the file `info` describes.
    pub fn of(info: &Info) -> Layout {
        let stripes = info.stripes as u64;
        // The stripe table (`STRIPE_ENTRY` bytes a stripe), then the stripe
        // mutex table (64 bytes a stripe).
        let reader_off = align_up(HEADER as u64 + stripes * STRIPE_ENTRY, 64) + stripes * 64;
        let slot = 128 + align_up(stripes * PIN_BYTES, 64);
        let reader_len = info.reader_slots as u64 * slot;
        let index_off = align_up(reader_off + reader_len, 4096);
        let ring = info.segments as u64 * info.segment_size;
        let data_off = info.file_size - stripes * ring;
        let index_len = info.index_slots * 8;
        assert!(index_off + index_len <= data_off, "layout of {info:?}");
        Layout {
            file_size: info.file_size,
            stripes,
            stripe_off: HEADER as u64,
            reader_off,
            reader_len,
            index_off,
            index_len,
            data_off,
            ring,
        }
    }
}

/// Rewrites a header's layout fields from its geometry fields (stripes,
/// segments, segment size, buckets, reader slots) as format.md computes
/// them. Returns the file size that geometry needs.
pub fn relayout_header(h: &mut [u8]) -> u64 {
    let stripes = get_u32(h, hdr::STRIPES) as u64;
    let segments = get_u32(h, hdr::SEGMENTS) as u64;
    let segment_size = get_u64(h, hdr::SEGMENT_SIZE);
    let buckets = get_u32(h, hdr::BUCKETS) as u64;
    let readers = get_u32(h, hdr::READER_SLOTS) as u64;
    let reader_off = align_up(HEADER as u64 + stripes.saturating_mul(STRIPE_ENTRY), 64)
        .saturating_add(stripes.saturating_mul(64));
    let slot = 128 + align_up(stripes.saturating_mul(PIN_BYTES), 64);
    let index_off = align_up(
        reader_off.saturating_add(readers.saturating_mul(slot)),
        4096,
    );
    let index_len = stripes.saturating_mul(buckets).saturating_mul(64);
    // The admission sketch follows the index (format.md §2.4a): per stripe
    // max(128, next_pow2(8 * buckets)) 4-bit counters.
    let sketch_bytes = (8 * buckets).next_power_of_two().max(128) / 2;
    let sketch_off = index_off.saturating_add(index_len);
    let data_off = align_up(
        sketch_off.saturating_add(stripes.saturating_mul(sketch_bytes)),
        4096,
    );
    let size = data_off.saturating_add(
        stripes
            .saturating_mul(segments)
            .saturating_mul(segment_size),
    );
    put_u64(h, hdr::STRIPE_OFF, HEADER as u64);
    put_u64(h, hdr::READER_OFF, reader_off);
    put_u32(h, hdr::READER_SLOT_SIZE, slot as u32);
    put_u64(h, hdr::INDEX_OFF, index_off);
    put_u64(h, hdr::DATA_OFF, data_off);
    put_u64(h, hdr::FILE_SIZE, size);
    size
}

/// The header of a new, empty file made with `opts`, with the fixed seed
/// and creation time, and that file's size. The rest of a new file is
/// zeros (format.md, section 4).
fn fresh_header(opts: &Options, tag: &str) -> (Vec<u8>, u64) {
    let scratch = Scratch::new(tag);
    let cache = Cache::open(scratch.path(), opts.clone()).expect("creating a fresh cache file");
    drop(cache);
    let mut file = std::fs::read(scratch.path()).expect("reading a fresh cache file");
    let len = file.len() as u64;
    // The header and the tables before the reader table: the stripe
    // mutexes of a robust-mutex file are initialised at creation, not zero.
    let reader_off = get_u64(&file, hdr::READER_OFF) as usize;
    file.truncate(reader_off);
    put_u64(&mut file, hdr::SEED, FIXED_SEED);
    put_u64(&mut file, hdr::CREATED, FIXED_CREATED);
    fix_header_crc(&mut file);
    (file, len)
}

/// Creates, at `path`, the empty cache file `opts` describes, with the
/// fixed seed (so a fuzz input behaves the same in every run).
fn create_fresh(path: &Path, opts: &Options, key: u64) {
    type Headers = Mutex<HashMap<u64, Arc<(Vec<u8>, u64)>>>;
    static HEADERS: OnceLock<Headers> = OnceLock::new();
    let headers = HEADERS.get_or_init(Default::default);
    let found = headers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let fresh = match found {
        Some(f) => f,
        None => {
            let f = Arc::new(fresh_header(opts, "fresh"));
            headers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, f.clone());
            f
        }
    };
    let file = File::create(path).expect("creating a scratch file");
    write_at(&file, &fresh.0, 0).expect("writing a header");
    file.set_len(fresh.1).expect("sizing a scratch file");
}

// ---------------------------------------------------------------------------
// Keys and values
// ---------------------------------------------------------------------------

/// Number of distinct keys operations pick from.
pub const KEYS: usize = 24;
/// Index of the one key longer than `MAX_KEY_LEN` (every operation on it
/// must fail with `KeyTooLarge`).
const LONG_KEY: usize = 19;

/// Key `i % KEYS`: mostly short, plus the empty key, one of exactly
/// `MAX_KEY_LEN` bytes, a medium one and one over the limit.
pub fn key(i: u8) -> Vec<u8> {
    let i = i as usize % KEYS;
    match i {
        16 => Vec::new(),
        17 => (0..slotcache::MAX_KEY_LEN)
            .map(|j| b'a' + (j % 26) as u8)
            .collect(),
        18 => vec![b'm'; 200],
        LONG_KEY => vec![b'x'; slotcache::MAX_KEY_LEN + 1],
        _ => format!("key-{i}").into_bytes(),
    }
}

fn key_ok(k: &[u8]) -> bool {
    k.len() <= slotcache::MAX_KEY_LEN
}

fn show_key(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k);
    if s.len() > 24 {
        format!("{}...({} bytes)", &s[..16], k.len())
    } else {
        format!("{s:?}")
    }
}

/// How long a value is, relative to the largest the cache stores.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Size {
    /// Zero bytes.
    Empty,
    /// Under 16 bytes.
    Tiny(u8),
    /// Under 1 KiB.
    Small(u16),
    /// Anything up to the limit.
    Medium(u32),
    /// At most 255 bytes under the limit.
    NearMax(u8),
    /// Exactly the limit.
    Max,
    /// Over the limit: `ValueTooLarge`.
    OverMax(u8),
}

impl Size {
    fn resolve(self, max: usize) -> usize {
        match self {
            Size::Empty => 0,
            Size::Tiny(n) => n as usize % 16,
            Size::Small(n) => n as usize % 1024,
            Size::Medium(n) => n as usize % (max + 1),
            Size::NearMax(d) => max.saturating_sub(d as usize),
            Size::Max => max,
            Size::OverMax(d) => max + 1 + d as usize % 32,
        }
    }
}

/// A value to store: its size and a fill byte.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Val {
    /// Size class.
    pub size: Size,
    /// Fill pattern.
    pub fill: u8,
}

/// Bytes of a value: a pattern from `fill`, starting with the unique `id`
/// (as far as it fits), so two stores rarely store equal bytes.
fn value_bytes(id: u64, len: usize, fill: u8) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| fill ^ (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect();
    let idb = id.to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&idb[..n]);
    v
}

/// The typed value type (`Cache::set`/`get`).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[rkyv(crate = slotcache::rkyv)]
pub struct Rec {
    /// Unique per store.
    pub id: u64,
    /// Fill byte.
    pub fill: u8,
    /// Payload.
    pub data: Vec<u8>,
}

/// rkyv bytes of a `Rec` beyond its payload (root plus alignment slack).
const REC_OVERHEAD: usize = 32;

fn make_rec(id: u64, total: usize, fill: u8) -> Rec {
    Rec {
        id,
        fill,
        data: value_bytes(id, total.saturating_sub(REC_OVERHEAD), fill),
    }
}

fn rec_len(r: &Rec) -> usize {
    rkyv::to_bytes::<rkyv::rancor::Error>(r)
        .expect("a Rec serializes")
        .len()
}

/// Identity of a stored value: raw bytes or a `Rec`, by content hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VKey {
    /// Stored as a `Rec` rather than as `Raw` bytes.
    pub typed: bool,
    /// Hash of the content.
    pub hash: u64,
    /// Length (bytes, or the `Rec` payload).
    pub len: usize,
    /// The id in the first bytes (diagnostics; partial for short values).
    pub id: u64,
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl VKey {
    fn bytes(v: &[u8]) -> VKey {
        let mut idb = [0u8; 8];
        let n = v.len().min(8);
        idb[..n].copy_from_slice(&v[..n]);
        VKey {
            typed: false,
            hash: hash_of(v),
            len: v.len(),
            id: u64::from_le_bytes(idb),
        }
    }

    fn rec(r: &Rec) -> VKey {
        VKey {
            typed: true,
            hash: hash_of(r),
            len: r.data.len(),
            id: r.id,
        }
    }
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// A time to live for a store.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Ttl {
    /// The cache's default (`set`).
    Default,
    /// Explicitly none.
    Never,
    /// Zero: expired as soon as written (stale, never fresh).
    Zero,
    /// 1..=256 ms: may expire during the run.
    Millis(u8),
    /// An hour: fresh for the whole run.
    Hour,
}

/// Up to 8 keys (fixed size, so a batch costs few input bytes).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct KeyList {
    /// How many of `keys` are used: `n % 9`.
    pub n: u8,
    /// Key indexes.
    pub keys: [u8; 8],
}

impl KeyList {
    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys[..self.n as usize % 9]
            .iter()
            .map(|&i| key(i))
            .collect()
    }
}

/// Up to 6 writes.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct WriteList {
    /// How many of `items` are used: `n % 7`.
    pub n: u8,
    /// Key indexes and values.
    pub items: [(u8, Val); 6],
}

impl WriteList {
    fn items(&self) -> &[(u8, Val)] {
        &self.items[..self.n as usize % 7]
    }
}

/// One operation on the cache.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// `set` / `set_opt` of a `Raw`.
    SetBytes {
        /// Key index.
        key: u8,
        /// Value.
        val: Val,
        /// TTL.
        ttl: Ttl,
    },
    /// `set` / `set_opt` of a [`Rec`].
    Set {
        /// Key index.
        key: u8,
        /// Value.
        val: Val,
        /// TTL.
        ttl: Ttl,
    },
    /// `get::<Raw>`.
    GetBytes(u8),
    /// `get_stale::<Raw>`.
    GetBytesStale(u8),
    /// `get::<Rec>`.
    Get(u8),
    /// `get_stale::<Rec>`.
    GetStale(u8),
    /// `get_owned::<Rec>`.
    GetOwned(u8),
    /// `get::<String>`: no `String` is ever stored, so always a miss.
    GetOther(u8),
    /// `contains`.
    Contains(u8),
    /// `delete`.
    Delete(u8),
    /// `get_many::<Raw>` (all guards alive together).
    GetManyBytes(KeyList),
    /// `get_many::<Rec>`.
    GetMany(KeyList),
    /// `set_many` of `Raw` values.
    SetManyBytes(WriteList),
    /// `set_many::<Rec>`.
    SetMany(WriteList),
    /// `clear`.
    Clear,
    /// `invalidate(Hard)` when true, `invalidate(Soft)` otherwise.
    Invalidate(bool),
    /// `get::<Raw>`, then `set` of `Raw` `writes` while the guard lives:
    /// writes may fail with `Pinned`, and the guard must not change.
    HoldAndWrite {
        /// Key read and held.
        key: u8,
        /// Writes done meanwhile.
        writes: WriteList,
    },
    /// `stats`.
    Stats,
    /// `verify`.
    Verify,
    /// Drop the handle and open the file again (read-only when true).
    Reopen(bool),
}

/// Geometry of the cache an operation sequence runs on: 1 MiB, 1..=4
/// stripes, 4..=8 segments, a small index, so eviction churns.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Config {
    /// Stripes: `1 + stripes % 4`.
    pub stripes: u8,
    /// Segments: `4 + segments % 5`.
    pub segments: u8,
    /// `max_entries`: 4, 16, 64 or 512 (4: one bucket of 8 slots per stripe).
    pub entries: u8,
    /// A default TTL of one hour.
    pub default_ttl: bool,
}

const CAPACITY: u64 = 1 << 20;

impl Config {
    fn options(&self) -> Options {
        let o = Options::new()
            .capacity(CAPACITY)
            .stripes(1 + self.stripes as u32 % 4)
            .segments(4 + self.segments as u32 % 5)
            .max_entries([4, 16, 64, 512][self.entries as usize % 4])
            .reader_slots(4)
            .pin_wait(Duration::from_millis(1));
        if self.default_ttl {
            o.default_ttl(Duration::from_secs(3600))
        } else {
            o
        }
    }

    fn key(&self) -> u64 {
        (self.stripes as u64 % 4)
            | (self.segments as u64 % 5) << 8
            | (self.entries as u64 % 4) << 16
            | (self.default_ttl as u64) << 24
    }
}

/// Input of `ops_model`.
#[derive(Arbitrary, Clone, Debug)]
pub struct Scenario {
    /// Geometry.
    pub config: Config,
    /// Operations, in order.
    pub ops: Vec<Op>,
}

/// Part of the file a [`Flip`] damages.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Region {
    /// Header bytes 0..160 (the immutable fields only matter on reopen).
    Header,
    /// Stripe table (heads, tails, counters).
    Stripes,
    /// Reader table (counters, pins).
    Readers,
    /// Index buckets.
    Index,
    /// Log records.
    Data,
    /// Anywhere in the file.
    Anywhere,
}

/// A region whose 8-byte words a [`Flip`] may overwrite. (Log bytes only
/// get single-byte XORs: with whole-word writes a fuzzer guided by
/// comparisons could rebuild a record's CRC, i.e. forge a record, which no
/// checksum prevents and format.md leaves out of scope.)
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum WordRegion {
    /// Header words 0..160.
    Header,
    /// Stripe table.
    Stripes,
    /// Reader table.
    Readers,
    /// Index.
    Index,
}

/// Damage done to the file from outside, between operations.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Flip {
    /// XOR one byte.
    Xor {
        /// Where.
        region: Region,
        /// Offset in the region (modulo its length).
        off: u32,
        /// Mask.
        mask: u8,
    },
    /// Overwrite an aligned word.
    Word {
        /// Where.
        region: WordRegion,
        /// Word index in the region (modulo).
        word: u32,
        /// New value.
        value: u64,
    },
    /// Add to an aligned word.
    Add {
        /// Where.
        region: WordRegion,
        /// Word index in the region (modulo).
        word: u32,
        /// Added (wrapping).
        delta: i32,
    },
    /// Move an index slot's position by whole laps of its ring, so it names
    /// the same bytes at a position the stripe has not reached, or left.
    Laps {
        /// Index slot (modulo the slot count).
        slot: u32,
        /// Laps (wrapping).
        laps: i8,
    },
}

/// One step of `ops_bitflip`.
#[derive(Arbitrary, Clone, Debug)]
pub enum Step {
    /// An operation.
    Op(Op),
    /// Damage.
    Flip(Flip),
}

/// Input of `ops_bitflip`.
#[derive(Arbitrary, Clone, Debug)]
pub struct FlipScenario {
    /// Geometry.
    pub config: Config,
    /// Steps, in order.
    pub steps: Vec<Step>,
}

/// Longest sequence run (longer inputs are cut: the time per input stays
/// bounded).
const MAX_STEPS: usize = 256;

// ---------------------------------------------------------------------------
// The model and the runner
// ---------------------------------------------------------------------------

/// What the model knows about a value's freshness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fresh {
    /// `get` may return it.
    Yes,
    /// It may have expired (short TTL): `get` may return it or miss.
    Maybe,
    /// Expired or soft-invalidated: only `get_stale` may return it.
    No,
}

/// A value the key may hold.
#[derive(Clone, Copy, Debug)]
struct Held {
    v: VKey,
    fresh: Fresh,
}

/// How the runner judges what it sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `ops_model`: every hit is exactly the model's value; only predicted
    /// errors.
    Strict,
    /// `ops_bitflip`: errors and misses are fine; a hit is a value once
    /// stored under its key.
    Damaged,
}

/// The kind of error an operation must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    ReadOnly,
    KeyTooLarge,
    ValueTooLarge,
}

impl Expect {
    fn matches(self, e: &Error) -> bool {
        matches!(
            (self, e),
            (Expect::ReadOnly, Error::ReadOnly { .. })
                | (Expect::KeyTooLarge, Error::KeyTooLarge { .. })
                | (Expect::ValueTooLarge, Error::ValueTooLarge { .. })
        )
    }
}

/// One value to store, prepared: its key, its model identity, its bytes or
/// record and its length as stored.
struct Item {
    key: Vec<u8>,
    v: VKey,
    bytes: Option<Vec<u8>>,
    rec: Option<Rec>,
    stored_len: usize,
    fresh: Fresh,
}

/// Runs operations on a cache and checks them against the model.
struct Runner {
    mode: Mode,
    opts: Options,
    cache: Option<Cache>,
    read_only: bool,
    /// Values each key may hold (empty or absent: every read must miss).
    model: HashMap<Vec<u8>, Vec<Held>>,
    /// Keys that may be in the index (stored since the last clear and not
    /// deleted): `delete` may return true only for these.
    maybe_present: HashSet<Vec<u8>>,
    /// Every value ever stored (or tried) under each key.
    history: HashMap<Vec<u8>, HashSet<VKey>>,
    next_id: u64,
    step: usize,
    op: String,
    summary: std::cell::Cell<Summary>,
    /// Last: fields drop in order, and the file can only be removed once
    /// the cache is closed (on Windows).
    scratch: Scratch,
}

/// What a run did (the replay test checks that runs are not vacuous).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations and flips run.
    pub steps: u64,
    /// Reads that hit (and were checked).
    pub hits: u64,
    /// Reads that missed.
    pub misses: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Operations that returned an error.
    pub errors: u64,
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, o: Summary) {
        self.steps += o.steps;
        self.hits += o.hits;
        self.misses += o.misses;
        self.writes += o.writes;
        self.errors += o.errors;
    }
}

impl Runner {
    fn new(mode: Mode, config: &Config) -> Runner {
        let scratch = Scratch::new(match mode {
            Mode::Strict => "model",
            Mode::Damaged => "flip",
        });
        let opts = config.options();
        create_fresh(scratch.path(), &opts, config.key());
        let cache = Cache::open(scratch.path(), opts.clone()).expect("opening a fresh cache");
        Runner {
            mode,
            scratch,
            opts,
            cache: Some(cache),
            read_only: false,
            model: HashMap::new(),
            maybe_present: HashSet::new(),
            history: HashMap::new(),
            next_id: 1,
            step: 0,
            op: String::new(),
            summary: Default::default(),
        }
    }

    fn cache(&self) -> Cache {
        self.cache.clone().expect("the cache is open")
    }

    fn summary_mut(&self, f: impl FnOnce(&mut Summary)) {
        let mut s = self.summary.get();
        f(&mut s);
        self.summary.set(s);
    }

    fn strict(&self) -> bool {
        self.mode == Mode::Strict
    }

    #[track_caller]
    fn fail(&self, what: String) -> ! {
        panic!(
            "{:?} violation at step {} ({}): {what}",
            self.mode, self.step, self.op
        )
    }

    /// An error where the model predicts `expect` (`None`: success).
    fn check_error(&self, e: &Error, expect: Option<Expect>) {
        self.summary_mut(|s| s.errors += 1);
        if !self.strict() {
            let _ = e.to_string();
            return;
        }
        match expect {
            Some(x) if x.matches(e) => {}
            _ => self.fail(format!("unexpected error {e} (expected {expect:?})")),
        }
    }

    fn read_expect(&self, k: &[u8]) -> Option<Expect> {
        (!key_ok(k)).then_some(Expect::KeyTooLarge)
    }

    /// A read of `k` returned `got` (`None`: a miss).
    fn check_read(&self, k: &[u8], got: Option<VKey>, stale_ok: bool) {
        let Some(got) = got else {
            self.summary_mut(|s| s.misses += 1);
            return;
        };
        self.summary_mut(|s| s.hits += 1);
        match self.mode {
            Mode::Strict => {
                let allowed = self.model.get(k).map(Vec::as_slice).unwrap_or(&[]);
                let ok = allowed
                    .iter()
                    .any(|h| h.v == got && (stale_ok || h.fresh != Fresh::No));
                if !ok {
                    self.fail(format!(
                        "key {} returned {got:?}; the model allows {allowed:?} (stale ok: {stale_ok})",
                        show_key(k)
                    ));
                }
            }
            Mode::Damaged => {
                if !self.history.get(k).is_some_and(|h| h.contains(&got)) {
                    self.fail(format!(
                        "key {} returned {got:?}, never stored under it (stored: {:?})",
                        show_key(k),
                        self.history.get(k)
                    ));
                }
            }
        }
    }

    fn prepare(&mut self, cache: &Cache, key_i: u8, val: Val, typed: bool, ttl: Ttl) -> Item {
        let k = key(key_i);
        let id = self.next_id;
        self.next_id += 1;
        let max = cache.max_value_len(k.len().min(slotcache::MAX_KEY_LEN));
        let len = val.size.resolve(max);
        let fresh = match ttl {
            Ttl::Zero => Fresh::No,
            Ttl::Millis(_) => Fresh::Maybe,
            Ttl::Default | Ttl::Never | Ttl::Hour => Fresh::Yes,
        };
        let item = if typed {
            let rec = make_rec(id, len, val.fill);
            Item {
                key: k,
                v: VKey::rec(&rec),
                stored_len: rec_len(&rec),
                bytes: None,
                rec: Some(rec),
                fresh,
            }
        } else {
            let b = value_bytes(id, len, val.fill);
            Item {
                key: k,
                v: VKey::bytes(&b),
                stored_len: b.len(),
                bytes: Some(b),
                rec: None,
                fresh,
            }
        };
        self.history
            .entry(item.key.clone())
            .or_default()
            .insert(item.v);
        item
    }

    /// The error a write of `items` must fail with (the first item that
    /// fails its checks decides, as in `Cache`), or `None`.
    fn write_expect(&self, cache: &Cache, items: &[Item]) -> Option<Expect> {
        if self.read_only {
            return Some(Expect::ReadOnly);
        }
        items.iter().find_map(|it| {
            if !key_ok(&it.key) {
                Some(Expect::KeyTooLarge)
            } else if it.stored_len > cache.max_value_len(it.key.len()) {
                Some(Expect::ValueTooLarge)
            } else {
                None
            }
        })
    }

    /// Applies the outcome of a write of `items` to the model.
    fn wrote(&mut self, cache: &Cache, items: &[Item], res: slotcache::Result<()>, holding: bool) {
        let expect = self.write_expect(cache, items);
        match res {
            Ok(()) => {
                self.summary_mut(|s| s.writes += 1);
                if self.strict() && expect.is_some() {
                    self.fail(format!("a write succeeded; expected {expect:?}"));
                }
                for it in items {
                    self.model.insert(
                        it.key.clone(),
                        vec![Held {
                            v: it.v,
                            fresh: it.fresh,
                        }],
                    );
                    self.maybe_present.insert(it.key.clone());
                }
            }
            Err(e) => {
                let pinned = holding && matches!(e, Error::Pinned { .. });
                if !pinned {
                    self.check_error(&e, expect);
                }
                let changed_nothing = self.strict() && (!pinned || items.len() == 1);
                if !changed_nothing {
                    // A batch may have stored some stripes' items.
                    for it in items {
                        self.model.entry(it.key.clone()).or_default().push(Held {
                            v: it.v,
                            fresh: it.fresh,
                        });
                        self.maybe_present.insert(it.key.clone());
                    }
                }
            }
        }
    }

    fn set_one(
        &mut self,
        cache: &Cache,
        key_i: u8,
        val: Val,
        typed: bool,
        ttl: Ttl,
        holding: bool,
    ) {
        let it = self.prepare(cache, key_i, val, typed, ttl);
        let t = match ttl {
            Ttl::Default => None,
            Ttl::Never => Some(None),
            Ttl::Zero => Some(Some(Duration::ZERO)),
            Ttl::Millis(n) => Some(Some(Duration::from_millis(n as u64 + 1))),
            Ttl::Hour => Some(Some(Duration::from_secs(3600))),
        };
        let res = match (&it.bytes, &it.rec, t) {
            (Some(b), _, None) => cache.set(&it.key, &Raw(b)),
            (Some(b), _, Some(t)) => cache.set_opt(&it.key, &Raw(b), &WriteOptions::new().ttl(t)),
            (None, Some(r), None) => cache.set(&it.key, r),
            (None, Some(r), Some(t)) => cache.set_opt(&it.key, r, &WriteOptions::new().ttl(t)),
            (None, None, _) => unreachable!("an item holds bytes or a record"),
        };
        self.wrote(cache, &[it], res, holding);
    }

    fn read_bytes(&self, cache: &Cache, k: &[u8], stale: bool) {
        let r = if stale {
            cache.get_stale::<Raw>(k)
        } else {
            cache.get::<Raw>(k)
        };
        match r {
            Ok(g) => self.check_read(k, g.as_deref().map(VKey::bytes), stale),
            Err(e) => self.check_error(&e, self.read_expect(k)),
        }
    }

    fn read_rec(&self, cache: &Cache, k: &[u8], stale: bool) {
        let r = if stale {
            cache.get_stale::<Rec>(k)
        } else {
            cache.get::<Rec>(k)
        };
        match r {
            Ok(g) => {
                let got = g.map(|g| {
                    let rec = rkyv::deserialize::<Rec, rkyv::rancor::Error>(&*g)
                        .expect("a validated archive deserializes");
                    VKey::rec(&rec)
                });
                self.check_read(k, got, stale)
            }
            Err(e) => self.check_error(&e, self.read_expect(k)),
        }
    }

    /// Runs one operation. Returns false when the run cannot go on (the
    /// file no longer opens after damage).
    fn apply(&mut self, op: &Op) -> bool {
        self.step += 1;
        self.summary_mut(|s| s.steps += 1);
        self.op = format!("{op:?}");
        if self.op.len() > 200 {
            self.op.truncate(200);
            self.op.push_str("...");
        }
        let cache = self.cache();
        match *op {
            Op::SetBytes { key, val, ttl } => self.set_one(&cache, key, val, false, ttl, false),
            Op::Set { key, val, ttl } => self.set_one(&cache, key, val, true, ttl, false),
            Op::GetBytes(i) => self.read_bytes(&cache, &key(i), false),
            Op::GetBytesStale(i) => self.read_bytes(&cache, &key(i), true),
            Op::Get(i) => self.read_rec(&cache, &key(i), false),
            Op::GetStale(i) => self.read_rec(&cache, &key(i), true),
            Op::GetOwned(i) => {
                let k = key(i);
                match cache.get_owned::<Rec>(&k) {
                    Ok(r) => self.check_read(&k, r.as_ref().map(VKey::rec), false),
                    Err(e) => self.check_error(&e, self.read_expect(&k)),
                }
            }
            Op::GetOther(i) => {
                let k = key(i);
                match cache.get::<String>(&k) {
                    Ok(Some(g)) => self.fail(format!(
                        "get::<String>({}) hit {:?}; no String was ever stored",
                        show_key(&k),
                        g.as_str()
                    )),
                    Ok(None) => {}
                    Err(e) => self.check_error(&e, self.read_expect(&k)),
                }
            }
            Op::Contains(i) => {
                let k = key(i);
                match cache.contains(&k) {
                    Ok(true) if self.strict() => {
                        let fresh = self
                            .model
                            .get(&k)
                            .is_some_and(|v| v.iter().any(|h| h.fresh != Fresh::No));
                        if !fresh {
                            self.fail(format!(
                                "contains({}) is true; the model has no fresh value",
                                show_key(&k)
                            ));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => self.check_error(&e, self.read_expect(&k)),
                }
            }
            Op::Delete(i) => {
                let k = key(i);
                let expect = if self.read_only {
                    Some(Expect::ReadOnly)
                } else {
                    self.read_expect(&k)
                };
                match cache.delete(&k) {
                    Ok(found) => {
                        if self.strict() && expect.is_some() {
                            self.fail(format!("delete succeeded; expected {expect:?}"));
                        }
                        if found && self.strict() && !self.maybe_present.contains(&k) {
                            self.fail(format!(
                                "delete({}) found an entry never stored since the last clear or delete",
                                show_key(&k)
                            ));
                        }
                        self.model.remove(&k);
                        self.maybe_present.remove(&k);
                    }
                    Err(e) => self.check_error(&e, expect),
                }
            }
            Op::GetManyBytes(ref keys) => {
                let keys = keys.keys();
                match cache.get_many::<Raw>(&keys) {
                    Ok(guards) => {
                        assert_eq!(
                            guards.len(),
                            keys.len(),
                            "get_many_bytes: one result per key"
                        );
                        for (k, g) in keys.iter().zip(&guards) {
                            self.check_read(k, g.as_deref().map(VKey::bytes), false);
                        }
                    }
                    Err(e) => {
                        let expect = keys.iter().find_map(|k| self.read_expect(k));
                        self.check_error(&e, expect)
                    }
                }
            }
            Op::GetMany(ref keys) => {
                let keys = keys.keys();
                match cache.get_many::<Rec>(&keys) {
                    Ok(guards) => {
                        assert_eq!(guards.len(), keys.len(), "get_many: one result per key");
                        for (k, g) in keys.iter().zip(&guards) {
                            let got = g.as_ref().map(|g| {
                                VKey::rec(
                                    &rkyv::deserialize::<Rec, rkyv::rancor::Error>(&**g)
                                        .expect("a validated archive deserializes"),
                                )
                            });
                            self.check_read(k, got, false);
                        }
                    }
                    Err(e) => {
                        let expect = keys.iter().find_map(|k| self.read_expect(k));
                        self.check_error(&e, expect)
                    }
                }
            }
            Op::SetManyBytes(ref items) => {
                let items: Vec<Item> = items
                    .items()
                    .iter()
                    .map(|&(k, v)| self.prepare(&cache, k, v, false, Ttl::Default))
                    .collect();
                let raws: Vec<Raw<&[u8]>> = items
                    .iter()
                    .map(|it| Raw(it.bytes.as_deref().expect("bytes")))
                    .collect();
                let res = cache.set_many(items.iter().zip(&raws).map(|(it, r)| (&it.key[..], r)));
                self.wrote(&cache, &items, res, false);
            }
            Op::SetMany(ref items) => {
                let items: Vec<Item> = items
                    .items()
                    .iter()
                    .map(|&(k, v)| self.prepare(&cache, k, v, true, Ttl::Default))
                    .collect();
                let res = cache.set_many(
                    items
                        .iter()
                        .map(|it| (&it.key[..], it.rec.as_ref().expect("record"))),
                );
                self.wrote(&cache, &items, res, false);
            }
            Op::Clear => match cache.clear() {
                Ok(()) => {
                    if self.strict() && self.read_only {
                        self.fail("clear succeeded on a read-only handle".into());
                    }
                    self.model.clear();
                    self.maybe_present.clear();
                }
                Err(e) => self.check_error(&e, self.read_only.then_some(Expect::ReadOnly)),
            },
            Op::Invalidate(hard) => {
                let how = if hard {
                    Invalidation::Hard
                } else {
                    Invalidation::Soft
                };
                match cache.invalidate(how) {
                    Ok(()) => {
                        if self.strict() && self.read_only {
                            self.fail("invalidate succeeded on a read-only handle".into());
                        }
                        if hard {
                            self.model.clear();
                        } else {
                            for h in self.model.values_mut().flatten() {
                                h.fresh = Fresh::No;
                            }
                        }
                    }
                    Err(e) => self.check_error(&e, self.read_only.then_some(Expect::ReadOnly)),
                }
            }
            Op::HoldAndWrite {
                key: ki,
                ref writes,
            } => {
                let k = key(ki);
                let guard = match cache.get::<Raw>(&k) {
                    Ok(g) => g,
                    Err(e) => {
                        self.check_error(&e, self.read_expect(&k));
                        None
                    }
                };
                self.check_read(&k, guard.as_deref().map(VKey::bytes), false);
                let before = guard.as_deref().map(<[u8]>::to_vec);
                for &(wk, val) in writes.items() {
                    self.set_one(&cache, wk, val, false, Ttl::Default, guard.is_some());
                    if let (Some(g), Some(b)) = (&guard, &before) {
                        if **g != **b {
                            self.fail(format!(
                                "the guard on {} changed while held, after a write of {}: \
                                 was {} bytes (id {:#x}), now {} bytes (id {:#x})",
                                show_key(&k),
                                show_key(&key(wk)),
                                b.len(),
                                VKey::bytes(b).id,
                                g.len(),
                                VKey::bytes(g).id
                            ));
                        }
                    }
                }
            }
            Op::Stats => {
                let st = cache.stats();
                let info = cache.info();
                if self.strict() {
                    let cap = info.stripes as u64 * info.segments as u64 * info.segment_size;
                    assert_eq!(st.capacity, cap, "stats().capacity");
                    assert!(st.bytes_used <= cap, "stats().bytes_used {st:?}");
                }
            }
            Op::Verify => match cache.verify() {
                Ok(report) => {
                    if self.strict() {
                        let writable = !self.read_only;
                        if (writable && !report.is_clean())
                            || report.live_pins != 0
                            || (writable && report.entries_drift != 0)
                        {
                            self.fail(format!("verify() on an undamaged file: {report:?}"));
                        }
                    }
                }
                Err(e) => self.check_error(&e, None),
            },
            Op::Reopen(ro) => {
                drop(cache);
                self.cache = None;
                match Cache::open(self.scratch.path(), self.opts.clone().read_only(ro)) {
                    Ok(c) => {
                        if ro != c.info().read_only {
                            self.fail(format!("reopened with read_only({ro}): {:?}", c.info()));
                        }
                        self.cache = Some(c);
                        self.read_only = ro;
                    }
                    Err(e) => {
                        self.check_error(&e, None);
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Damages the file through a descriptor of our own.
    fn flip(&mut self, flip: &Flip, file: &File) {
        self.step += 1;
        self.summary_mut(|s| s.steps += 1);
        self.op = format!("{flip:?}");
        let lay = Layout::of(&self.cache().info());
        let range = |r: Region| -> (u64, u64) {
            match r {
                Region::Header => (0, hdr::ATOMICS_END as u64),
                Region::Stripes => (lay.stripe_off, lay.stripes * STRIPE_ENTRY),
                Region::Readers => (lay.reader_off, lay.reader_len),
                Region::Index => (lay.index_off, lay.index_len),
                Region::Data => (lay.data_off, lay.file_size - lay.data_off),
                Region::Anywhere => (0, lay.file_size),
            }
        };
        let word_range = |r: WordRegion| {
            range(match r {
                WordRegion::Header => Region::Header,
                WordRegion::Stripes => Region::Stripes,
                WordRegion::Readers => Region::Readers,
                WordRegion::Index => Region::Index,
            })
        };
        let word_at = |(start, len): (u64, u64), i: u32| start + (i as u64 % (len / 8)) * 8;
        let read = |off: u64| {
            let mut b = [0u8; 8];
            read_at(file, &mut b, off).expect("reading the file");
            u64::from_le_bytes(b)
        };
        let write = |off: u64, v: u64| write_at(file, &v.to_le_bytes(), off).expect("damaging");
        match *flip {
            Flip::Xor { region, off, mask } => {
                let (start, len) = range(region);
                let at = start + off as u64 % len;
                let mut b = [0u8; 1];
                read_at(file, &mut b, at).expect("reading the file");
                write_at(file, &[b[0] ^ mask], at).expect("damaging");
            }
            Flip::Word {
                region,
                word,
                value,
            } => write(word_at(word_range(region), word), value),
            Flip::Add {
                region,
                word,
                delta,
            } => {
                let at = word_at(word_range(region), word);
                write(at, read(at).wrapping_add(delta as i64 as u64));
            }
            Flip::Laps { slot, laps } => {
                let at = word_at((lay.index_off, lay.index_len), slot);
                let step = (lay.ring / 16).wrapping_mul(laps as i64 as u64);
                write(at, read(at).wrapping_add(step));
            }
        }
    }
}

/// `ops_model`: decodes a [`Scenario`] and runs it against the model.
pub fn run_ops_model(data: &[u8]) -> Summary {
    match Scenario::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(s) => run_scenario(&s),
        Err(_) => Summary::default(),
    }
}

/// Runs a [`Scenario`] against the model (the body of `ops_model`).
pub fn run_scenario(s: &Scenario) -> Summary {
    let mut r = Runner::new(Mode::Strict, &s.config);
    for op in s.ops.iter().take(MAX_STEPS) {
        r.apply(op);
    }
    r.op = "final checks".into();
    if !r.read_only {
        r.apply(&Op::Verify);
        r.op = "final reads".into();
    }
    let cache = r.cache();
    for i in 0..KEYS as u8 {
        r.read_bytes(&cache, &key(i), true);
        r.read_rec(&cache, &key(i), true);
    }
    r.summary.get()
}

/// `ops_bitflip`: decodes a [`FlipScenario`] and runs it, damaging the file
/// between operations.
pub fn run_ops_bitflip(data: &[u8]) -> Summary {
    match FlipScenario::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(s) => run_flip_scenario(&s),
        Err(_) => Summary::default(),
    }
}

/// Runs a [`FlipScenario`] (the body of `ops_bitflip`).
pub fn run_flip_scenario(s: &FlipScenario) -> Summary {
    let mut r = Runner::new(Mode::Damaged, &s.config);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.scratch.path())
        .expect("opening the cache file for damage");
    for step in s.steps.iter().take(MAX_STEPS) {
        let go_on = match step {
            Step::Op(op) => r.apply(op),
            Step::Flip(f) => {
                r.flip(f, &file);
                true
            }
        };
        if !go_on {
            return r.summary.get();
        }
    }
    let _ = r.cache().stats();
    let _ = r.cache().verify();
    let cache = r.cache();
    for i in 0..KEYS as u8 {
        r.read_bytes(&cache, &key(i), true);
        r.read_rec(&cache, &key(i), true);
    }
    r.summary.get()
}

// ---------------------------------------------------------------------------
// open_bytes
// ---------------------------------------------------------------------------

/// Options `open_bytes` opens with. They only shape the file when the
/// input is empty or a half-created (`SLOTINIT`) file, which `open`
/// initialises.
fn open_options() -> Options {
    Options::new()
        .capacity(64 << 10)
        .stripes(2)
        .segments(4)
        .max_entries(64)
        .reader_slots(2)
        .pin_wait(Duration::from_millis(1))
}

/// Template keys: what the template file stores.
fn template_key(i: usize) -> Vec<u8> {
    format!("t{i}").into_bytes()
}
const TEMPLATE_KEYS: usize = 12;

/// A small valid cache file with entries in it (bytes and records, read
/// ones, deleted ones, a ring that wrapped so old records lie beyond the
/// heads, a soft invalidation), built once per process with the fixed seed.
pub fn template() -> &'static [u8] {
    static T: OnceLock<Vec<u8>> = OnceLock::new();
    T.get_or_init(|| {
        let scratch = Scratch::new("template");
        let opts = open_options();
        create_fresh(scratch.path(), &opts, u64::MAX);
        let c = Cache::open(scratch.path(), opts).expect("opening the template");
        let mut id = 1u64;
        for round in 0..30usize {
            for i in 0..TEMPLATE_KEYS {
                id += 1;
                let k = template_key(i);
                let len = (round * 37 + i * 101) % 900;
                if i % 3 == 0 {
                    c.set(&k, &make_rec(id, len, i as u8))
                        .expect("template set");
                } else {
                    c.set(&k, &Raw(&value_bytes(id, len, i as u8)))
                        .expect("template set");
                }
                if (round + i) % 4 == 0 {
                    let _ = c.get::<Raw>(&k).expect("template get");
                    let _ = c.get::<Rec>(&k).expect("template get");
                }
            }
            if round == 25 {
                c.invalidate(Invalidation::Soft)
                    .expect("template invalidate");
            }
        }
        c.delete(template_key(1)).expect("template delete");
        c.set_opt(
            template_key(2),
            &Raw(b"short-lived"),
            &WriteOptions::new().ttl(Some(Duration::ZERO)),
        )
        .expect("template ttl");
        drop(c);
        std::fs::read(scratch.path()).expect("reading the template")
    })
}

/// Flags of the first input byte of `open_bytes`.
pub mod open_flags {
    /// Start from [`template`](super::template) and apply patches;
    /// otherwise the rest of the input is the whole file.
    pub const TEMPLATE: u8 = 1;
    /// Recompute the header CRC after patching.
    pub const FIX_CRC: u8 = 2;
    /// Set the header's `file_size` to the file's length.
    pub const FIX_SIZE: u8 = 4;
    /// Open read-only.
    pub const READ_ONLY: u8 = 8;
    /// Resize the file: the next two bytes say how (after the flags).
    pub const RESIZE: u8 = 16;
    /// Recompute every layout field from the geometry fields and size the
    /// file to match (if that is at most 4 MiB), then fix the CRC: any
    /// geometry passes header validation.
    pub const RELAYOUT: u8 = 32;
    /// Open with `OnCorrupt::Reset`.
    pub const RESET: u8 = 64;
}

/// Largest file `open_bytes` builds.
const MAX_FILE: u64 = 4 << 20;

/// Builds the file an `open_bytes` input describes. Layout of the input:
/// `flags`, then (with `RESIZE`) a `u16` little-endian: bit 15 set grows
/// the file by `(n & 0x7fff) * 16` bytes, clear shrinks it by `n * 16`;
/// then either the whole file (raw mode) or patches `[offset u16 LE]
/// [length u8 % 65][bytes]` applied to the template (offsets modulo its
/// length).
pub fn build_file(data: &[u8]) -> (Vec<u8>, u8) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return (Vec::new(), 0);
    };
    let mut resize = None;
    if flags & open_flags::RESIZE != 0 && rest.len() >= 2 {
        resize = Some(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    let mut file = if flags & open_flags::TEMPLATE != 0 {
        let mut f = template().to_vec();
        let len = f.len();
        while rest.len() >= 3 {
            let off = u16::from_le_bytes([rest[0], rest[1]]) as usize % len;
            let n = (rest[2] as usize % 65).min(rest.len() - 3).min(len - off);
            f[off..off + n].copy_from_slice(&rest[3..3 + n]);
            rest = &rest[3 + n..];
        }
        f
    } else {
        rest.to_vec()
    };
    if let Some(r) = resize {
        let by = (r & 0x7fff) as usize * 16;
        let len = if r & 0x8000 != 0 {
            file.len() + by
        } else {
            file.len().saturating_sub(r as usize * 16)
        };
        file.resize(len, 0);
    }
    if file.len() >= HEADER {
        if flags & open_flags::RELAYOUT != 0 {
            let size = relayout_header(&mut file);
            if size <= MAX_FILE {
                file.resize(size as usize, 0);
            }
        }
        if flags & open_flags::FIX_SIZE != 0 {
            let len = file.len() as u64;
            put_u64(&mut file, hdr::FILE_SIZE, len);
        }
        if flags & (open_flags::FIX_CRC | open_flags::RELAYOUT) != 0 {
            fix_header_crc(&mut file);
        }
    }
    (file, flags)
}

/// Whether `needle` occurs in `hay`.
fn occurs_in(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// `open_bytes`: builds a file from the input, opens it, and when that
/// works uses the cache.
pub fn run_open_bytes(data: &[u8]) {
    let (file, flags) = build_file(data);
    let scratch = Scratch::new("open");
    std::fs::write(scratch.path(), &file).expect("writing the input file");
    let read_only = flags & open_flags::READ_ONLY != 0;
    let mut opts = open_options().read_only(read_only);
    if flags & open_flags::RESET != 0 {
        opts = opts.on_corrupt(slotcache::OnCorrupt::Reset);
    }
    let cache = match Cache::open(scratch.path(), opts) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    exercise(&cache, &file, read_only);
    drop(cache);
}

/// Uses a cache opened from arbitrary bytes. Nothing may panic; what can
/// be checked whatever the file held is checked:
/// - the geometry matches the file;
/// - writes on a read-only handle fail with `ReadOnly`;
/// - after `set(k, &Raw(v))` succeeds, a hit on `k` is `v` or bytes that
///   were in the input file (a record found there);
/// - after `delete(k)` or a hard invalidation, a hit on `k` is bytes that
///   were in the input file;
/// - after `clear()` every lookup misses.
fn exercise(cache: &Cache, orig: &[u8], read_only: bool) {
    let info = cache.info();
    let len = std::fs::metadata(cache.path()).map(|m| m.len()).ok();
    if let Some(len) = len {
        assert_eq!(info.file_size, len, "info() against the file: {info:?}");
    }
    let _ = Layout::of(&info);
    assert_eq!(info.read_only, read_only, "{info:?}");
    let _ = cache.stats();
    let mut keys: Vec<Vec<u8>> = (0..TEMPLATE_KEYS).map(template_key).collect();
    keys.push(b"fz-a".to_vec());
    keys.push(Vec::new());
    let touch = |k: &[u8]| {
        for stale in [false, true] {
            let g = if stale {
                cache.get_stale::<Raw>(k)
            } else {
                cache.get::<Raw>(k)
            };
            if let Ok(Some(g)) = g {
                assert!(
                    g.len() <= cache.max_value_len(k.len()),
                    "value longer than the limit"
                );
                let _ = hash_of(&*g);
                let _ = g.meta().is_stale();
                let _ = g.meta().age();
            }
            let g = if stale {
                cache.get_stale::<Rec>(k)
            } else {
                cache.get::<Rec>(k)
            };
            if let Ok(Some(g)) = g {
                let _ = rkyv::deserialize::<Rec, rkyv::rancor::Error>(&*g)
                    .expect("a validated archive deserializes");
            }
        }
        let _ = cache.get_owned::<Rec>(k);
        let _ = cache.get::<String>(k).map(|g| g.map(|s| s.len()));
        let _ = cache.contains(k);
    };
    for k in &keys {
        touch(k);
    }
    let _ = cache.get_many::<Raw>(&keys);
    let _ = cache.verify();

    let v1 = b"fuzz-set-value: 0123456789abcdef0123456789".to_vec();
    let from_input_or = |k: &[u8], ok: &[u8], after: &str| {
        if let Ok(Some(g)) = cache.get::<Raw>(k) {
            if *g != *ok && !occurs_in(orig, &g) {
                panic!(
                    "after {after}, get::<Raw>({}) returned {} bytes that are neither ours nor in the file",
                    show_key(k),
                    g.len()
                );
            }
        }
    };
    let res = cache.set("fz-a", &Raw(&v1));
    if read_only {
        assert!(matches!(res, Err(Error::ReadOnly { .. })), "{res:?}");
        assert!(matches!(cache.delete("fz-a"), Err(Error::ReadOnly { .. })));
        assert!(matches!(cache.clear(), Err(Error::ReadOnly { .. })));
        return;
    }
    if res.is_ok() {
        from_input_or(b"fz-a", &v1, "set");
    }
    let _ = cache.set("fz-b", &make_rec(7, 100, 7));
    if let Ok(Some(g)) = cache.get::<Rec>("fz-b") {
        let _ = rkyv::deserialize::<Rec, rkyv::rancor::Error>(&*g).expect("deserializes");
    }
    let _ = cache.set_many([("fz-c", &Raw(&b"c"[..])), ("t3", &Raw(&b"three"[..]))]);
    touch(b"t3");
    if cache.delete("fz-a").is_ok() {
        from_input_or(b"fz-a", b"", "delete");
    }
    let _ = cache.set("fz-a", &Raw(&v1));
    let _ = cache.invalidate(Invalidation::Soft);
    touch(b"fz-a");
    if cache.invalidate(Invalidation::Hard).is_ok() {
        from_input_or(b"fz-a", b"", "a hard invalidation");
    }
    let _ = cache.stats();
    let _ = cache.verify();
    if cache.clear().is_ok() {
        for k in &keys {
            if let Ok(Some(g)) = cache.get::<Raw>(k) {
                panic!(
                    "after clear(), get::<Raw>({}) hit {} bytes",
                    show_key(k),
                    g.len()
                );
            }
        }
    }
    let _ = cache.set("fz-a", &Raw(&v1));
    touch(b"fz-a");
    let _ = cache.stats();
}

// ---------------------------------------------------------------------------
// Synthetic inputs
// ---------------------------------------------------------------------------

/// A pseudo-random `ops_model` input (`flips == false`) or `ops_bitflip`
/// input (`flips == true`) of `steps` steps, in the byte format the
/// targets decode: the `Config`, then for each step a `1` byte (go on) and
/// the step's bytes, then a `0` byte. Used for hand-made seed corpus files
/// and by the replay test.
pub fn synth_input(seed: u64, steps: usize, flips: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = move |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let take = |bytes: &[u8], decode: &dyn Fn(&mut Unstructured) -> bool| -> Option<usize> {
        let mut u = Unstructured::new(bytes);
        decode(&mut u).then(|| bytes.len() - u.len())
    };
    let c = chunk(16);
    let used = take(&c, &|u| Config::arbitrary(u).is_ok()).expect("a config decodes");
    let mut out = c[..used].to_vec();
    for _ in 0..steps {
        let c = chunk(256);
        let used = if flips {
            take(&c, &|u| Step::arbitrary(u).is_ok())
        } else {
            take(&c, &|u| Op::arbitrary(u).is_ok())
        }
        .expect("a step decodes");
        out.push(1);
        out.extend_from_slice(&c[..used]);
    }
    out.push(0);
    out
}

// ---------------------------------------------------------------------------
// Options and per-call arguments
// ---------------------------------------------------------------------------

/// A duration argument: ordinary, zero, or past what the clock (2^64 ns) or
/// an `Instant` can hold.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Dur {
    /// `Duration::ZERO`.
    Zero,
    /// Some nanoseconds.
    Nanos(u64),
    /// 0..=65535 ms.
    Millis(u16),
    /// Seconds, up to ~136 years.
    Secs(u32),
    /// Just past 2^64 ns (wraps modulo 2^64 if not saturated).
    JustPast(u16),
    /// `Duration::MAX`.
    Max,
}

impl Dur {
    fn get(self) -> Duration {
        match self {
            Dur::Zero => Duration::ZERO,
            Dur::Nanos(n) => Duration::from_nanos(n),
            Dur::Millis(m) => Duration::from_millis(m as u64),
            Dur::Secs(s) => Duration::from_secs(s as u64),
            Dur::JustPast(n) => Duration::from_nanos(u64::MAX) + Duration::from_nanos(n as u64),
            Dur::Max => Duration::MAX,
        }
    }
}

/// A capacity: small enough to be made for real (at most 4 MiB), or one no
/// file may be made with (which must be refused before anything is
/// preallocated: the fuzzer never asks the disk for more than 4 MiB).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Cap {
    /// `kib` KiB (0..=4096).
    Kib(u16),
    /// Bytes, 0..=65535.
    Bytes(u16),
    /// `2^48 + 1 + n`, `2^(49 + n % 15)`, or `u64::MAX - n`.
    Huge(u8, u32),
}

impl Cap {
    fn get(self) -> u64 {
        match self {
            Cap::Kib(k) => (k as u64 % 4097) << 10,
            Cap::Bytes(b) => b as u64,
            Cap::Huge(which, n) => match which % 3 {
                0 => (1u64 << 48) + 1 + n as u64,
                1 => 1u64 << (49 + n % 15),
                _ => u64::MAX - n as u64,
            },
        }
    }

    fn refused(self) -> bool {
        self.get() > 1 << 48 || self.get() == 0
    }
}

/// One call with arbitrary arguments.
#[derive(Arbitrary, Clone, Debug)]
pub enum Call {
    /// `set_opt` of a `Raw` with a key and value of these lengths.
    Set {
        /// Key length.
        key_len: u16,
        /// Value length (reduced modulo the largest value + 64).
        val_len: u32,
        /// TTL.
        ttl: Option<Dur>,
    },
    /// `get_or_create_opt` of a `u64`.
    GetOrCreate {
        /// Key index.
        key: u8,
        /// TTL (`None`: the default; `Some(None)`: never).
        ttl: Option<Option<Dur>>,
        /// Lock timeout.
        lock_timeout: Option<Dur>,
        /// Expiration age.
        expiration: Option<Dur>,
        /// `StalePolicy::Block`.
        block: bool,
    },
    /// `get::<Raw>` / `get_stale::<Raw>` / `contains` / `delete` of a key of
    /// this length.
    Read {
        /// Key length.
        key_len: u16,
        /// Which call.
        which: u8,
    },
    /// `max_value_len` and `key_placement`.
    Limits(u64),
}

/// Input of `options`.
#[derive(Arbitrary, Clone, Debug)]
pub struct OptionsCase {
    /// Capacity.
    pub capacity: Cap,
    /// `max_entries`.
    pub max_entries: Option<u64>,
    /// `stripes`.
    pub stripes: Option<u32>,
    /// `segments`.
    pub segments: Option<u32>,
    /// `reader_slots`.
    pub reader_slots: Option<u32>,
    /// `regen_stripes`.
    pub regen_stripes: Option<u32>,
    /// `default_ttl`.
    pub default_ttl: Option<Dur>,
    /// `mode`.
    pub mode: Option<u32>,
    /// `pin_wait`.
    pub pin_wait: Option<Dur>,
    /// `lock_timeout`.
    pub lock_timeout: Option<Dur>,
    /// `expiration`.
    pub expiration: Option<Dur>,
    /// Calls made when the open succeeds.
    pub calls: Vec<Call>,
}

impl OptionsCase {
    fn options(&self) -> Options {
        let mut o = Options::new().capacity(self.capacity.get());
        if let Some(n) = self.max_entries {
            o = o.max_entries(n);
        }
        if let Some(n) = self.stripes {
            o = o.stripes(n);
        }
        if let Some(n) = self.segments {
            o = o.segments(n);
        }
        if let Some(n) = self.reader_slots {
            o = o.reader_slots(n);
        }
        if let Some(n) = self.regen_stripes {
            o = o.regen_stripes(n);
        }
        if let Some(d) = self.default_ttl {
            o = o.default_ttl(d.get());
        }
        if let Some(m) = self.mode {
            // Only permission bits a test may set on its own scratch file.
            o = o.mode(if m > 0o7777 { m } else { 0o600 | (m & 0o066) });
        }
        if let Some(d) = self.pin_wait {
            // A bounded wait: nothing pins here, and a guard-free writer
            // never waits, but keep a fuzz run from hanging on a bug.
            o = o.pin_wait(d.get().min(Duration::from_millis(10)));
        }
        if let Some(d) = self.lock_timeout {
            o = o.lock_timeout(d.get());
        }
        if let Some(d) = self.expiration {
            o = o.expiration(d.get());
        }
        o
    }
}

/// `options`: opens a new cache with arbitrary (often extreme) options and
/// makes calls with arbitrary arguments. Nothing may panic; an open is a
/// usable cache or a typed error naming an option (or an I/O error), and a
/// refused open leaves no file behind; every call returns a value or a
/// typed error, and what was stored stays readable.
pub fn run_options(data: &[u8]) -> Summary {
    let Ok(case) = OptionsCase::arbitrary(&mut Unstructured::new(data)) else {
        return Summary::default();
    };
    run_options_case(&case)
}

/// [`run_options`] on a decoded case.
pub fn run_options_case(case: &OptionsCase) -> Summary {
    let mut sum = Summary::default();
    let scratch = Scratch::new("options");
    let cache = match Cache::open(scratch.path(), case.options()) {
        Ok(c) => c,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                matches!(e, Error::InvalidOptions { .. } | Error::Io { .. }),
                "open refused with an unexpected error: {msg}"
            );
            assert!(
                !scratch.path().exists(),
                "a refused create left a file behind: {msg}"
            );
            sum.errors += 1;
            return sum;
        }
    };
    assert!(
        !case.capacity.refused(),
        "capacity {} accepted",
        case.capacity.get()
    );
    let info = cache.info();
    assert!(info.file_size <= 4 << 20, "{info:?}");
    let key_of = |len: u16| vec![b'k'; len as usize % 1100];
    let mut stored: Option<(Vec<u8>, Vec<u8>)> = None;
    for call in &case.calls {
        sum.steps += 1;
        match call {
            Call::Set {
                key_len,
                val_len,
                ttl,
            } => {
                let key = key_of(*key_len);
                let max = cache.max_value_len(key.len());
                let v = vec![7u8; *val_len as usize % (max + 64)];
                let ttl = ttl.map(|d| d.get());
                match cache.set_opt(&key, &Raw(&v), &WriteOptions::new().ttl(ttl)) {
                    Ok(()) => {
                        sum.writes += 1;
                        assert!(key.len() <= slotcache::MAX_KEY_LEN && v.len() <= max);
                        if ttl.is_some_and(|t| t >= Duration::from_secs(3600)) {
                            stored = Some((key, v));
                        } else if stored.as_ref().is_some_and(|(k, _)| *k == key) {
                            stored = None;
                        }
                    }
                    Err(Error::KeyTooLarge { .. }) => {
                        assert!(key.len() > slotcache::MAX_KEY_LEN);
                        sum.errors += 1;
                    }
                    Err(Error::ValueTooLarge { max: m, .. }) => {
                        assert!(v.len() > max && m == max);
                        sum.errors += 1;
                    }
                    Err(Error::Pinned { .. }) => sum.errors += 1,
                    Err(e) => panic!("set: unexpected error {e}"),
                }
            }
            Call::GetOrCreate {
                key,
                ttl,
                lock_timeout,
                expiration,
                block,
            } => {
                let mut o = slotcache::CreateOptions::new();
                if let Some(t) = ttl {
                    o = o.ttl(t.map(|d| d.get()));
                }
                if let Some(d) = lock_timeout {
                    o = o.lock_timeout(d.get());
                }
                if let Some(d) = expiration {
                    o = o.expiration(d.get());
                }
                if *block {
                    o = o.stale_policy(slotcache::StalePolicy::Block);
                }
                let k = format!("goc-{key}");
                match cache.get_or_create_opt(&k, &o, || *key as u64) {
                    Ok(f) => {
                        sum.hits += 1;
                        assert_eq!(f.into_owned().expect("a u64 deserializes"), *key as u64);
                    }
                    Err(Error::Pinned { .. }) => sum.errors += 1,
                    Err(e) => panic!("get_or_create: unexpected error {e}"),
                }
            }
            Call::Read { key_len, which } => {
                let key = key_of(*key_len);
                let r = match which % 4 {
                    0 => cache.get::<Raw>(&key).map(|g| g.is_some()),
                    1 => cache.get_stale::<Raw>(&key).map(|g| g.is_some()),
                    2 => cache.contains(&key),
                    _ => cache.delete(&key),
                };
                match r {
                    Ok(_) => {}
                    Err(Error::KeyTooLarge { .. }) => {
                        assert!(key.len() > slotcache::MAX_KEY_LEN);
                        sum.errors += 1;
                    }
                    Err(e) => panic!("read: unexpected error {e}"),
                }
                if which % 4 == 3 && stored.as_ref().is_some_and(|(k, _)| *k == key) {
                    stored = None;
                }
            }
            Call::Limits(n) => {
                let n = *n as usize;
                let m = cache.max_value_len(n);
                if n > slotcache::MAX_KEY_LEN {
                    assert_eq!(m, 0);
                }
                let _ = cache.key_placement(vec![0u8; n % 2048]);
            }
        }
    }
    if let Some((k, v)) = stored {
        // The last long-lived value stored is still there, unless evicted
        // by the writes after it (a tiny cache may evict).
        if let Some(g) = cache.get::<Raw>(&k).expect("a stored key is valid") {
            sum.hits += 1;
            assert_eq!(&*g, &v[..], "a stored value changed");
        }
    }
    drop(cache);
    sum
}
