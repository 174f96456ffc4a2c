//! Cache-policy simulators over `u64` ids, every one O(1) per request
//! (amortised): what the hit-ratio benchmarks compare slotcache with, and
//! models of slotcache's own layout used to design its eviction.
//!
//! Every simulator is **cache-aside**: `access(k)` looks `k` up and, on a
//! miss, inserts it (or, for a policy with admission, offers it). They are
//! pure simulations, never a substitute for the engine's own numbers.
//!
//! - [`Lru`]: exact LRU.
//! - [`Clock`]: FIFO with reinsertion and a saturating counter (CLOCK when
//!   the counter is one bit).
//! - [`S3Fifo`]: S3-FIFO (Yang et al., SOSP 2023): a small FIFO of 10% of
//!   the entries, a main FIFO with a 2-bit frequency, a ghost FIFO of keys
//!   as large as the main queue.
//! - [`Moka`]: moka 0.12 itself (`moka::sync::Cache`, TinyLFU admission and
//!   LRU eviction), fed the same way.
//! - [`SlotModel`]: slotcache's log-structured layout — stripes, each with
//!   a ring of fixed-size segments evicted a segment at a time from the
//!   tail, and an index of 8-slot buckets with two-choice hashing — running
//!   either today's policy ([`Design::Current`]) or one of the candidate
//!   designs of `benches/TRACES.md`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// A simulated cache fed one id at a time.
pub trait Policy {
    /// Looks `k` up; on a miss, inserts (or offers) it. Returns whether it
    /// was a hit.
    fn access(&mut self, k: u64) -> bool;

    /// Entries held now.
    fn len(&self) -> usize;

    /// Whether nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records rewritten so far by the policy's own moves (reinsertions and
    /// promotions): in a log, each is a copy of the record.
    fn rewrites(&self) -> u64 {
        0
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mix.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fast hasher for integer keys (the simulators' maps hash millions of
/// ids; SipHash would dominate their time).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

/// The hasher builder of [`IdMap`].
pub type IdBuild = BuildHasherDefault<IdHasher>;

/// A `HashMap` keyed by ids, with [`IdHasher`].
pub type IdMap<V> = HashMap<u64, V, IdBuild>;

fn id_map<V>(cap: usize) -> IdMap<V> {
    IdMap::with_capacity_and_hasher(cap, IdBuild::default())
}

// ---------------------------------------------------------------------------
// Exact LRU

/// "No node" in [`Lru`]'s linked list.
const NIL: u32 = u32::MAX;

/// A node of [`Lru`]'s list.
#[derive(Clone, Copy, Debug)]
struct Node {
    key: u64,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// An exact LRU with O(1) operations: a map from key to node index and an
/// intrusive doubly linked list of nodes in a `Vec` (most recent at
/// `head`, least recent at `tail`).
#[derive(Debug)]
pub struct Lru {
    map: IdMap<u32>,
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
    cap: usize,
}

impl Lru {
    /// An empty LRU of `cap` (> 0) entries.
    pub fn new(cap: usize) -> Lru {
        assert!(cap > 0);
        Lru {
            map: id_map(cap + 1),
            nodes: Vec::with_capacity(cap),
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    fn unlink(&mut self, n: u32) {
        let Node { prev, next, .. } = self.nodes[n as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, n: u32) {
        self.nodes[n as usize].prev = NIL;
        self.nodes[n as usize].next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = n;
        }
        self.head = n;
        if self.tail == NIL {
            self.tail = n;
        }
    }

    /// Keys from most to least recently used (for self-checks).
    pub fn keys(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(self.nodes.len());
        let mut n = self.head;
        while n != NIL {
            v.push(self.nodes[n as usize].key);
            n = self.nodes[n as usize].next;
        }
        v
    }
}

impl Policy for Lru {
    fn access(&mut self, k: u64) -> bool {
        if let Some(&n) = self.map.get(&k) {
            if self.head != n {
                self.unlink(n);
                self.push_front(n);
            }
            return true;
        }
        let n = if self.nodes.len() < self.cap {
            self.nodes.push(Node {
                key: k,
                prev: NIL,
                next: NIL,
            });
            (self.nodes.len() - 1) as u32
        } else {
            let n = self.tail;
            self.unlink(n);
            self.map.remove(&self.nodes[n as usize].key);
            self.nodes[n as usize].key = k;
            n
        };
        self.map.insert(k, n);
        self.push_front(n);
        false
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Checks [`Lru`] against a naive O(n) LRU on a short stream, hit for hit
/// and order for order. Panics on a difference.
pub fn check_lru(stream: &[u64]) {
    for cap in [1, 2, 7, 100, 1_000] {
        let mut fast = Lru::new(cap);
        let mut naive: Vec<u64> = Vec::new();
        for &k in stream {
            let hit = match naive.iter().position(|&x| x == k) {
                Some(at) => {
                    naive.remove(at);
                    true
                }
                None => {
                    if naive.len() == cap {
                        naive.pop();
                    }
                    false
                }
            };
            naive.insert(0, k);
            assert_eq!(fast.access(k), hit, "LRU of {cap}: key {k}");
        }
        assert_eq!(fast.keys(), naive, "LRU of {cap}: final order");
        assert_eq!(fast.len(), naive.len());
    }
}

// ---------------------------------------------------------------------------
// CLOCK

/// FIFO with reinsertion and a saturating counter of `max` (1 = CLOCK's
/// visited bit, 3 = a 2-bit counter). A hit raises the counter; when over
/// capacity, the oldest entry is dropped if its counter is 0, otherwise
/// moved to the young end with its counter decremented.
#[derive(Debug)]
pub struct Clock {
    count: IdMap<u8>,
    fifo: VecDeque<u64>,
    cap: usize,
    max: u8,
    rewrites: u64,
}

impl Clock {
    /// An empty model of `cap` entries with counters up to `max`.
    pub fn new(cap: usize, max: u8) -> Clock {
        Clock {
            count: id_map(cap + 1),
            fifo: VecDeque::with_capacity(cap + 1),
            cap,
            max,
            rewrites: 0,
        }
    }
}

impl Policy for Clock {
    fn access(&mut self, k: u64) -> bool {
        if let Some(c) = self.count.get_mut(&k) {
            *c = (*c + 1).min(self.max);
            return true;
        }
        self.count.insert(k, 0);
        self.fifo.push_back(k);
        while self.fifo.len() > self.cap {
            let old = self.fifo.pop_front().expect("non-empty");
            let c = self.count.get_mut(&old).expect("queued keys are mapped");
            if *c > 0 {
                *c -= 1;
                self.fifo.push_back(old);
                self.rewrites += 1;
            } else {
                self.count.remove(&old);
            }
        }
        false
    }

    fn len(&self) -> usize {
        self.count.len()
    }

    fn rewrites(&self) -> u64 {
        self.rewrites
    }
}

// ---------------------------------------------------------------------------
// S3-FIFO

/// S3-FIFO (Yang et al., SOSP 2023). New keys enter a small FIFO (10% of
/// the capacity); leaving it, a key hit while there moves to the main
/// queue, others are dropped and remembered in a ghost FIFO of keys (as many
/// as the main queue holds). The main queue is FIFO with reinsertion and a
/// 2-bit counter. A missed key found in the ghost enters the main queue.
#[derive(Debug)]
pub struct S3Fifo {
    map: IdMap<u8>,
    small: VecDeque<u64>,
    main: VecDeque<u64>,
    ghost: IdMap<u64>,
    ghost_fifo: VecDeque<(u64, u64)>,
    seq: u64,
    cap: usize,
    small_cap: usize,
    rewrites: u64,
}

impl S3Fifo {
    /// An empty S3-FIFO of `cap` entries.
    pub fn new(cap: usize) -> S3Fifo {
        S3Fifo {
            map: id_map(cap + 1),
            small: VecDeque::new(),
            main: VecDeque::with_capacity(cap + 1),
            ghost: id_map(cap + 1),
            ghost_fifo: VecDeque::with_capacity(cap + 1),
            seq: 0,
            cap,
            small_cap: (cap / 10).max(1),
            rewrites: 0,
        }
    }

    fn remember(&mut self, k: u64) {
        self.seq += 1;
        self.ghost.insert(k, self.seq);
        self.ghost_fifo.push_back((k, self.seq));
        while self.ghost_fifo.len() > (self.cap - self.small_cap).max(1) {
            let (old, s) = self.ghost_fifo.pop_front().expect("non-empty");
            if self.ghost.get(&old) == Some(&s) {
                self.ghost.remove(&old);
            }
        }
    }

    fn evict(&mut self) {
        loop {
            if self.small.len() >= self.small_cap || self.main.is_empty() {
                let k = self.small.pop_front().expect("a resident entry");
                let f = self.map.get_mut(&k).expect("resident");
                if *f > 0 {
                    *f = 0;
                    self.main.push_back(k);
                    self.rewrites += 1;
                } else {
                    self.map.remove(&k);
                    self.remember(k);
                    return;
                }
            } else {
                let k = self.main.pop_front().expect("non-empty");
                let f = self.map.get_mut(&k).expect("resident");
                if *f > 0 {
                    *f -= 1;
                    self.main.push_back(k);
                    self.rewrites += 1;
                } else {
                    self.map.remove(&k);
                    return;
                }
            }
        }
    }
}

impl Policy for S3Fifo {
    fn access(&mut self, k: u64) -> bool {
        if let Some(f) = self.map.get_mut(&k) {
            *f = (*f + 1).min(3);
            return true;
        }
        while self.map.len() >= self.cap {
            self.evict();
        }
        self.map.insert(k, 0);
        if self.ghost.remove(&k).is_some() {
            self.main.push_back(k);
        } else {
            self.small.push_back(k);
        }
        false
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn rewrites(&self) -> u64 {
        self.rewrites
    }
}

// ---------------------------------------------------------------------------
// moka

/// moka 0.12 itself, cache-aside: `get`, and on a miss `insert`. moka
/// applies its admission (TinyLFU) and eviction in batches; the pending
/// work is run every `every` requests so that its decisions do not depend
/// on thread timing. It hashes with [`IdHasher`], so runs are repeatable.
pub struct Moka {
    cache: moka::sync::Cache<u64, (), IdBuild>,
    n: u64,
    every: u64,
}

impl Moka {
    /// A moka cache of `cap` entries (`max_capacity`), its pending tasks
    /// run every `every` requests.
    pub fn new(cap: usize, every: u64) -> Moka {
        Moka {
            cache: moka::sync::Cache::builder()
                .max_capacity(cap as u64)
                .build_with_hasher(IdBuild::default()),
            n: 0,
            every: every.max(1),
        }
    }
}

impl Policy for Moka {
    fn access(&mut self, k: u64) -> bool {
        let hit = self.cache.get(&k).is_some();
        if !hit {
            self.cache.insert(k, ());
        }
        self.n += 1;
        if self.n.is_multiple_of(self.every) {
            self.cache.run_pending_tasks();
        }
        hit
    }

    fn len(&self) -> usize {
        self.cache.entry_count() as usize
    }
}

// ---------------------------------------------------------------------------
// slotcache's layout

/// Which eviction policy a [`SlotModel`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Design {
    /// Today's engine (format.md §5.2–5.4): one ring per stripe; the tail
    /// segment's entries with the visited bit are copied to the head (bit
    /// cleared), the rest lose their slot; a new key whose two buckets are
    /// full evicts their oldest unvisited entry, else their oldest.
    Current,
    /// (a) S3-FIFO-shaped: a probation ring (~10% of the entries) in front
    /// of the main ring; entries read while in probation are promoted
    /// (copied to main) when probation's tail passes them, the others leave
    /// a ghost (their slot, now naming a dead probation position, kept);
    /// a missed key whose ghost is recent enough enters main directly. The
    /// slot's counter is `max_freq` set-only bits; main reinserts an entry
    /// with a non-zero counter, decremented.
    Probation,
    /// (b) (a) plus a per-stripe count-min sketch (TinyLFU): an entry
    /// leaving probation unread, or a returning ghost, enters main only if
    /// its estimated frequency beats main's next victim's (else it becomes
    /// or stays a ghost / goes to probation). `reader`: readers add to the
    /// sketch on every hit (an atomic on a shared line); otherwise only the
    /// writer does (every miss, plus each slot's hit counter folded in when
    /// the writer passes the entry).
    Sketch {
        /// Readers increment the sketch.
        reader: bool,
    },
    /// (c) (a) plus the sketch of (b) used only on returning ghosts: an
    /// entry leaving probation unread always becomes a ghost (no exit
    /// filter); a missed key whose ghost is found enters main only if its
    /// estimate is at least main's next victim's, else probation. This is
    /// the recommended design (`benches/TRACES.md`).
    GhostFilter {
        /// Readers increment the sketch.
        reader: bool,
    },
}

impl Design {
    /// Short name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Design::Current => "slot-current",
            Design::Probation => "slot-a-s3",
            Design::Sketch { reader: false } => "slot-b-sketch-w",
            Design::Sketch { reader: true } => "slot-b-sketch-r",
            Design::GhostFilter { reader: false } => "slot-c-ghostfilter-w",
            Design::GhostFilter { reader: true } => "slot-c-ghostfilter-r",
        }
    }

    fn probation(self) -> bool {
        self != Design::Current
    }

    fn sketch(self) -> bool {
        matches!(self, Design::Sketch { .. } | Design::GhostFilter { .. })
    }

    fn reader_sketch(self) -> bool {
        matches!(
            self,
            Design::Sketch { reader: true } | Design::GhostFilter { reader: true }
        )
    }

    fn exit_filter(self) -> bool {
        matches!(self, Design::Sketch { .. })
    }
}

/// The shape of a [`SlotModel`]: what the engine's geometry fixes, in
/// records (every record has the same size in these models).
#[derive(Clone, Copy, Debug)]
pub struct SlotShape {
    /// Stripes.
    pub stripes: u32,
    /// Index buckets per stripe (8 slots each).
    pub buckets: u32,
    /// Segments of the main ring (the only ring in [`Design::Current`]).
    pub segments: u32,
    /// Records per main segment.
    pub rps: u32,
    /// Segments of the probation ring (0 without one).
    pub prob_segments: u32,
    /// Records per probation segment.
    pub prob_rps: u32,
    /// Largest value of a slot's hit counter (its number of set-only bits):
    /// 1 = today's visited bit.
    pub max_freq: u8,
    /// 4-bit sketch counters per stripe (a power of two).
    pub sketch_counters: u32,
    /// Seed of the key placement.
    pub seed: u64,
}

/// A returning ghost is admitted to main on a tie with the victim (a
/// re-reference within the ghost window is evidence of its own); a
/// candidate leaving probation unread needs to beat the victim.
const TIES: bool = true;
/// Main ring.
const MAIN: usize = 0;
/// Probation ring.
const PROB: usize = 1;

/// A ring of fixed-size segments at monotonically increasing positions, in
/// records.
#[derive(Clone, Debug)]
struct Ring {
    /// Segments.
    n: u64,
    /// Records per segment.
    rps: u64,
    /// Key + 1 of the record at each place of the ring (0: none).
    recs: Vec<u64>,
    /// Next append position.
    head: u64,
    /// Positions below it are dead.
    tail: u64,
}

impl Ring {
    fn new(n: u32, rps: u32) -> Ring {
        Ring {
            n: n as u64,
            rps: rps as u64,
            recs: vec![0; (n as u64 * rps as u64) as usize],
            head: 0,
            tail: 0,
        }
    }

    #[inline]
    fn at(&self, p: u64) -> u64 {
        self.recs[(p % (self.n * self.rps)) as usize]
    }

    #[inline]
    fn put(&mut self, p: u64, k1: u64) {
        let len = self.n * self.rps;
        self.recs[(p % len) as usize] = k1;
    }

    /// Whether the ring has gone round once (its tail has moved): it is
    /// full and every new record costs an eviction.
    fn full(&self) -> bool {
        self.tail > 0
    }

    /// Live capacity in records: what a ring holds on average (the head's
    /// segment half full, one segment free ahead of it).
    fn capacity(&self) -> u64 {
        ((self.n as f64 - 1.5) * self.rps as f64) as u64
    }
}

/// An index slot. In the file this is one `u64` (see TRACES.md for the
/// encoding); the fields here are its bits.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Position + 1 in ring `ring` (0: empty).
    pos: u64,
    /// 12-bit tag.
    tag: u16,
    /// MAIN or PROB.
    ring: u8,
    /// Hit counter (set-only bits set by readers).
    freq: u8,
}

/// A per-stripe count-min sketch of 4-bit counters, four per key, halved
/// when the additions reach ten times the stripe's entries (TinyLFU's
/// reset).
#[derive(Clone, Debug)]
struct Sketch {
    /// 16 counters per word.
    words: Vec<u64>,
    /// Counters - 1 (a power of two minus one).
    mask: u64,
    adds: u64,
    period: u64,
}

impl Sketch {
    fn new(counters: u32, period: u64) -> Sketch {
        let counters = counters.next_power_of_two().max(16) as u64;
        Sketch {
            words: vec![0; (counters / 16) as usize],
            mask: counters - 1,
            adds: 0,
            period: period.max(16),
        }
    }

    #[inline]
    fn index(&self, h: u64, i: u64) -> (usize, u32) {
        let c = mix64(h.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))) & self.mask;
        ((c / 16) as usize, ((c % 16) * 4) as u32)
    }

    fn estimate(&self, h: u64) -> u64 {
        (0..4)
            .map(|i| {
                let (w, s) = self.index(h, i);
                (self.words[w] >> s) & 15
            })
            .min()
            .expect("four rows")
    }

    fn add(&mut self, h: u64, by: u64) {
        for _ in 0..by {
            for i in 0..4 {
                let (w, s) = self.index(h, i);
                if (self.words[w] >> s) & 15 < 15 {
                    self.words[w] += 1 << s;
                }
            }
            self.adds += 1;
            if self.adds >= self.period {
                for w in &mut self.words {
                    *w = (*w >> 1) & 0x7777_7777_7777_7777;
                }
                self.adds /= 2;
            }
        }
    }
}

/// Where a key lives: format.md §2.4, with the model's own hash.
#[derive(Clone, Copy, Debug)]
struct Place {
    hash: u64,
    stripe: usize,
    b1: usize,
    b2: usize,
    tag: u16,
}

/// One stripe of the model.
#[derive(Clone, Debug)]
struct Stripe {
    rings: [Ring; 2],
    slots: Vec<Slot>,
    sketch: Option<Sketch>,
}

/// What a [`SlotModel`] counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotCounters {
    /// Live entries now.
    pub entries: i64,
    /// Records copied by main-ring reinsertion.
    pub reinserts: u64,
    /// Records copied from probation to main.
    pub promotions: u64,
    /// Live entries evicted because both index buckets of a new key were
    /// full.
    pub index_evictions: u64,
    /// Misses whose ghost was found.
    pub ghost_hits: u64,
    /// Candidates for main the sketch refused.
    pub rejected: u64,
    /// Hits that incremented the sketch (reader-side atomics).
    pub reader_sketch_adds: u64,
}

/// **Model, not the engine**: slotcache's layout running a [`Design`].
#[derive(Clone, Debug)]
pub struct SlotModel {
    design: Design,
    shape: SlotShape,
    stripes: Vec<Stripe>,
    /// Counters.
    pub counters: SlotCounters,
    /// Ghost window in probation positions: a ghost is recent while the
    /// probation tail is less than this past it (main's capacity).
    ghost_window: u64,
}

impl SlotModel {
    /// An empty model.
    pub fn new(design: Design, shape: SlotShape) -> SlotModel {
        assert!(shape.stripes >= 1 && shape.buckets >= 1 && shape.segments >= 3);
        assert!(shape.rps >= 1 && shape.max_freq >= 1);
        if design.probation() {
            assert!(shape.prob_segments >= 3 && shape.prob_rps >= 1);
        }
        let per_stripe_entries = (shape.segments as u64 - 1) * shape.rps as u64
            + shape.prob_segments as u64 * shape.prob_rps as u64;
        let stripe = Stripe {
            rings: [
                Ring::new(shape.segments, shape.rps),
                Ring::new(
                    if design.probation() {
                        shape.prob_segments
                    } else {
                        0
                    },
                    shape.prob_rps.max(1),
                ),
            ],
            slots: vec![Slot::default(); shape.buckets as usize * 8],
            sketch: design
                .sketch()
                .then(|| Sketch::new(shape.sketch_counters, 10 * per_stripe_entries)),
        };
        let ghost_window = stripe.rings[MAIN].capacity();
        SlotModel {
            design,
            shape,
            stripes: vec![stripe; shape.stripes as usize],
            counters: SlotCounters::default(),
            ghost_window,
        }
    }

    /// Live entries counted slot by slot (O(index size)): what
    /// [`Policy::len`] must equal.
    pub fn live_slots(&self) -> usize {
        self.stripes
            .iter()
            .map(|st| st.slots.iter().filter(|s| Self::live(st, s)).count())
            .sum()
    }

    /// The design.
    pub fn design(&self) -> Design {
        self.design
    }

    /// The shape.
    pub fn shape(&self) -> SlotShape {
        self.shape
    }

    fn place(&self, k: u64) -> Place {
        let h = mix64(k ^ self.shape.seed);
        let buckets = self.shape.buckets as u64;
        let b1 = (((h >> 24) & ((1 << 28) - 1)) * buckets) >> 28;
        let b2 = if buckets < 2 {
            b1
        } else {
            let m = ((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) * (buckets - 1)) >> 32;
            let b = b1 + 1 + m;
            if b >= buckets {
                b - buckets
            } else {
                b
            }
        };
        Place {
            hash: h,
            stripe: (((h & ((1 << 24) - 1)) * self.shape.stripes as u64) >> 24) as usize,
            b1: b1 as usize,
            b2: b2 as usize,
            tag: (h >> 52) as u16,
        }
    }

    /// Slot indices of a key's buckets, first choice first.
    fn slot_ids(p: &Place) -> impl Iterator<Item = usize> {
        let second = if p.b2 == p.b1 { 0 } else { 8 };
        (p.b1 * 8..p.b1 * 8 + 8).chain(p.b2 * 8..p.b2 * 8 + second)
    }

    /// Whether slot `s` names a live record.
    #[inline]
    fn live(st: &Stripe, s: &Slot) -> bool {
        s.pos > st.rings[s.ring as usize].tail
    }

    /// Whether slot `s` is a recent ghost.
    #[inline]
    fn ghost(&self, st: &Stripe, s: &Slot) -> bool {
        if !self.design.probation() || s.pos == 0 || s.ring as usize != PROB {
            return false;
        }
        let tail = st.rings[PROB].tail;
        s.pos - 1 < tail && tail - (s.pos - 1) <= self.ghost_window
    }

    /// The slot of `k`'s live record.
    fn find_live(&self, p: &Place, k: u64) -> Option<usize> {
        let st = &self.stripes[p.stripe];
        Self::slot_ids(p).find(|&i| {
            let s = &st.slots[i];
            s.tag == p.tag
                && Self::live(st, s)
                && s.pos - 1 < st.rings[s.ring as usize].head
                && st.rings[s.ring as usize].at(s.pos - 1) == k + 1
        })
    }

    /// The slot naming `pos` in `ring` with `p`'s tag.
    fn find_pos(&self, p: &Place, ring: usize, pos: u64) -> Option<usize> {
        let st = &self.stripes[p.stripe];
        Self::slot_ids(p).find(|&i| {
            let s = &st.slots[i];
            s.pos == pos + 1 && s.ring as usize == ring && s.tag == p.tag
        })
    }

    /// A recent ghost with `p`'s tag (a tag match only: the record is gone).
    fn find_ghost(&self, p: &Place) -> Option<usize> {
        let st = &self.stripes[p.stripe];
        Self::slot_ids(p).find(|&i| {
            let s = &st.slots[i];
            s.tag == p.tag && self.ghost(st, s)
        })
    }

    /// The slot for a new key: a free one (empty or dead; recent ghosts
    /// last, the oldest first) of the bucket with more free slots (the
    /// first on a tie), else the victim of both buckets: probation before
    /// main, unread before read, oldest first. Returns the slot and whether
    /// it evicts a live entry.
    fn free_or_victim(&self, p: &Place) -> (usize, bool) {
        let st = &self.stripes[p.stripe];
        let mut free = [(0usize, None::<(u64, usize)>); 2];
        let mut victim: Option<((bool, bool, u64), usize)> = None;
        for (n, i) in Self::slot_ids(p).enumerate() {
            let s = &st.slots[i];
            if Self::live(st, s) {
                let rank = (s.freq > 0, s.ring as usize == MAIN, s.pos);
                if victim.is_none_or(|(r, _)| rank < r) {
                    victim = Some((rank, i));
                }
            } else {
                // Lower is taken first: empty or non-ghost dead slots (in
                // order), then ghosts, oldest first.
                let rank = if self.ghost(st, s) { 1 + s.pos } else { 0 };
                let f = &mut free[n / 8];
                f.0 += 1;
                if f.1.is_none_or(|(r, _)| rank < r) {
                    f.1 = Some((rank, i));
                }
            }
        }
        let pick = if free[1].0 > free[0].0 {
            free[1].1
        } else {
            free[0].1
        };
        match pick {
            Some((_, i)) => (i, false),
            None => (victim.expect("a bucket has slots").1, true),
        }
    }

    /// Appends `k` to ring `r` of stripe `si`, entering a new segment (and
    /// evicting the oldest) at a boundary. Returns its position.
    fn append(&mut self, si: usize, r: usize, k: u64) -> u64 {
        let ring = &self.stripes[si].rings[r];
        if ring.head.is_multiple_of(ring.rps) {
            self.enter(si, r, ring.head / ring.rps);
        }
        let ring = &mut self.stripes[si].rings[r];
        let p = ring.head;
        ring.put(p, k + 1);
        ring.head += 1;
        p
    }

    /// format.md §5.4 for ring `r`: keep one free segment ahead by evicting
    /// the oldest live one.
    fn enter(&mut self, si: usize, r: usize, seg: u64) {
        let ring = &self.stripes[si].rings[r];
        let (n, rps) = (ring.n, ring.rps);
        let must_be_dead = (seg + 1).saturating_sub(n) * rps;
        if ring.tail < must_be_dead {
            self.evict(si, r, must_be_dead, 0);
        }
        let next_dead = (seg + 2).saturating_sub(n) * rps;
        if self.stripes[si].rings[r].tail < next_dead {
            self.evict(si, r, next_dead, rps - 1);
        }
    }

    /// Evicts ring `r`'s records below `to`: in main, read entries are
    /// reinserted while `budget` allows; in probation, read entries are
    /// promoted to main and unread ones become ghosts (or, with the
    /// sketch's exit filter, enter main if they beat its victim).
    fn evict(&mut self, si: usize, r: usize, to: u64, mut budget: u64) {
        let (from, head_before) = {
            let ring = &self.stripes[si].rings[r];
            (ring.tail, ring.head)
        };
        for pos in from..to.min(head_before) {
            let k1 = self.stripes[si].rings[r].at(pos);
            if k1 == 0 {
                continue;
            }
            let k = k1 - 1;
            let p = self.place(k);
            debug_assert_eq!(p.stripe, si);
            let Some(i) = self.find_pos(&p, r, pos) else {
                continue; // overwritten, deleted or evicted through the index
            };
            let s = self.stripes[si].slots[i];
            let writer_fold = self.design.sketch() && !self.design.reader_sketch();
            if r == MAIN {
                if s.freq > 0 && budget > 0 {
                    let ring = &mut self.stripes[si].rings[MAIN];
                    let np = ring.head;
                    ring.put(np, k1);
                    ring.head += 1;
                    budget -= 1;
                    self.counters.reinserts += 1;
                    if writer_fold {
                        self.sketch_add(si, p.hash, s.freq as u64);
                    }
                    let slot = &mut self.stripes[si].slots[i];
                    slot.pos = np + 1;
                    slot.freq = s.freq - 1;
                } else {
                    if writer_fold {
                        self.sketch_add(si, p.hash, s.freq as u64);
                    }
                    self.stripes[si].slots[i] = Slot::default();
                    self.counters.entries -= 1;
                }
            } else {
                if writer_fold {
                    self.sketch_add(si, p.hash, s.freq as u64);
                }
                // Read entries are promoted; while main has never been full,
                // every entry is (S3-FIFO's small queue may grow into main's
                // free space; a fixed probation ring cannot, so it fills
                // main instead); with the exit filter, unread ones compete.
                let promote = s.freq > 0
                    || !self.stripes[si].rings[MAIN].full()
                    || (self.design.exit_filter() && self.admit(si, &p, false));
                if promote {
                    let np = self.append(si, MAIN, k);
                    let slot = &mut self.stripes[si].slots[i];
                    slot.ring = MAIN as u8;
                    slot.pos = np + 1;
                    slot.freq = 0;
                    self.counters.promotions += 1;
                } else {
                    // The slot stays: a ghost once the tail passes it.
                    self.stripes[si].slots[i].freq = 0;
                    self.counters.entries -= 1;
                }
            }
        }
        self.stripes[si].rings[r].tail = to;
    }

    fn sketch_add(&mut self, si: usize, h: u64, by: u64) {
        if let Some(sk) = &mut self.stripes[si].sketch {
            sk.add(h, by);
        }
    }

    /// TinyLFU's test for a candidate for main: admitted while main has not
    /// gone round once; otherwise if its estimated frequency beats that of
    /// main's next victim — the first record at main's tail (within one
    /// segment) whose counter is zero, else the first live one there — plus
    /// the victim's unflushed hit counter when readers do not count.
    fn admit(&mut self, si: usize, p: &Place, ghost: bool) -> bool {
        let st = &self.stripes[si];
        let main = &st.rings[MAIN];
        if !main.full() {
            return true;
        }
        let mut victim: Option<(u64, u8)> = None;
        let end = (main.tail + main.rps).min(main.head);
        for pos in main.tail..end {
            let k1 = main.at(pos);
            if k1 == 0 {
                continue;
            }
            let vp = self.place(k1 - 1);
            if let Some(i) = self.find_pos(&vp, MAIN, pos) {
                let f = st.slots[i].freq;
                if victim.is_none() || f == 0 {
                    victim = Some((vp.hash, f));
                }
                if f == 0 {
                    break;
                }
            }
        }
        let Some((vh, vf)) = victim else { return true };
        let sk = st.sketch.as_ref().expect("a sketch");
        let extra = if self.design.reader_sketch() {
            0
        } else {
            vf as u64
        };
        let ok = sk.estimate(p.hash) + (ghost && TIES) as u64 > sk.estimate(vh) + extra;
        if !ok {
            self.counters.rejected += 1;
        }
        ok
    }
}

impl Policy for SlotModel {
    fn access(&mut self, k: u64) -> bool {
        let p = self.place(k);
        let si = p.stripe;
        if let Some(i) = self.find_live(&p, k) {
            let max = self.shape.max_freq;
            let s = &mut self.stripes[si].slots[i];
            s.freq = (s.freq + 1).min(max);
            if self.design.reader_sketch() {
                self.counters.reader_sketch_adds += 1;
                self.sketch_add(si, p.hash, 1);
            }
            return true;
        }
        if self.design.sketch() {
            self.sketch_add(si, p.hash, 1);
        }
        // A miss: the writer appends the record (evicting as needed), then
        // picks its slot.
        let mut slot = None;
        let mut ring = MAIN;
        if self.design.probation() {
            ring = PROB;
            if let Some(g) = self.find_ghost(&p) {
                self.counters.ghost_hits += 1;
                slot = Some(g);
                if !self.design.sketch() || self.admit(si, &p, true) {
                    ring = MAIN;
                }
            }
        }
        let pos = self.append(si, ring, k);
        // The append may have reused the ghost's slot's bucket space; the
        // ghost slot itself is still the key's unless an eviction in the
        // append cleared or reused it, which a live check tells.
        let slot = match slot {
            Some(g) if !Self::live(&self.stripes[si], &self.stripes[si].slots[g]) => g,
            _ => {
                let (i, evicts) = self.free_or_victim(&p);
                if evicts {
                    self.counters.entries -= 1;
                    self.counters.index_evictions += 1;
                }
                i
            }
        };
        self.stripes[si].slots[slot] = Slot {
            pos: pos + 1,
            tag: p.tag,
            ring: ring as u8,
            freq: 0,
        };
        self.counters.entries += 1;
        false
    }

    fn len(&self) -> usize {
        self.counters.entries.max(0) as usize
    }

    fn rewrites(&self) -> u64 {
        self.counters.reinserts + self.counters.promotions
    }
}
