//! The log: each stripe owns a ring of `segments` segments in the data
//! region and appends records to it at monotonically increasing 64-bit
//! positions (`position % ring_size` is the place in the ring).
//!
//! Everything here runs with the stripe's write lock held, so one
//! [`StripeWriter`] at a time mutates a stripe's head, tail, index buckets
//! and log space — in this process or any other.
//!
//! A stripe has two rings (format.md §2.5, §5.4): new keys enter the small
//! probation ring; when its tail passes an entry, one read since it was
//! written is copied (promoted) to the main ring and one never read leaves
//! a ghost in its index slot (a `set` that finds its key's ghost goes to
//! main directly if the stripe's admission sketch says it is at least as
//! frequent as main's next victim, else to probation again); the main ring
//! reinserts entries read since their last pass (a 2-bit count in the
//! slot, decremented at each pass).
//!
//! Invariants, per ring (see `format.md`, "Log"):
//! - `tail <= head`; positions below `tail` are dead: readers ignore index
//!   slots naming them, and their bytes may be reused once no reader pins
//!   them.
//! - After the head enters segment `k`, `tail >= (k + 2 - segments) *
//!   segment_size`: at most `segments - 1` segments are live, so the
//!   segment after the head's is always dead and can receive reinsertions.
//! - Bytes at or above `head` are named by no index slot.

use crate::error::{Error, PinHolder, Result};
use crate::index::{self, Bucket, Buckets, KeyHash, Tails, COUNT_BITS, VISITED, VISITED2};
use crate::layout::record::{self, RecordHeader, RECORD_HEADER};
use crate::layout::sketch::sketch_entries;
use crate::layout::stripe::StripeEntry;
use crate::layout::{Geometry, Ring, RingGeo, BUCKET_SLOTS, MAX_POSITION, RECORD_ALIGN};
use crate::map::Map;
use crate::read::record_at;
use crate::readers::{Holder, PinScan};
use crate::sketch::Sketch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a writer polls a pin it waits for (format.md §5.7).
const PIN_POLL: Duration = Duration::from_micros(200);

/// A record about to be appended.
pub(crate) struct NewRecord<'a> {
    /// Record kind.
    pub kind: u8,
    /// Schema fingerprint (0 for bytes).
    pub schema: u64,
    /// The key.
    pub key: &'a [u8],
    /// The value bytes.
    pub value: &'a [u8],
    /// Creation time (ns).
    pub created: u64,
    /// Expiry time (ns, 0 = never).
    pub expires: u64,
}

/// What [`StripeWriter::verify`] found in one stripe (the facade sums
/// them into its report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StripeCheck {
    /// Records walked in the live log.
    pub records_scanned: u64,
    /// Live slots naming a record whose CRC does not match.
    pub bad_checksums: u64,
    /// Unnamed records of the live log whose CRC does not match.
    pub unreachable_bad_checksums: u64,
    /// Live slots not naming a well-formed record of their placement.
    pub dangling_slots: u64,
    /// The stripe failed its head/tail invariants (nothing else was walked).
    pub damaged: bool,
    /// Live index slots.
    pub live_entries: u64,
    /// |entries counter − live slots|.
    pub entries_drift: u64,
}

/// What [`StripeWriter::repair`] changed in one stripe.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StripeRepair {
    /// The stripe failed its head/tail invariants and was reset.
    pub reset: bool,
    /// Index slots zeroed because their record failed its checks.
    pub cleared: u64,
    /// The entry counter was set to the live count.
    pub entries_fixed: bool,
}

/// Mutates one stripe. Only exists while the stripe's write lock is held.
pub(crate) struct StripeWriter<'a> {
    map: &'a Map,
    geo: &'a Geometry,
    entry: &'a StripeEntry,
    pins: &'a dyn PinScan,
    s: u32,
    pin_wait: Duration,
    now: u64,
}

impl<'a> StripeWriter<'a> {
    /// A writer for stripe `s` of the file mapped as `map`, whose readers'
    /// pins `pins` finds. The caller holds the stripe's write lock.
    pub(crate) fn new(
        map: &'a Map,
        pins: &'a dyn PinScan,
        s: u32,
        pin_wait: Duration,
        now: u64,
    ) -> Self {
        let w = Self::unchecked(map, pins, s, pin_wait, now);
        w.check();
        w
    }

    /// A writer for stripe `s` that trusts nothing and changes nothing yet
    /// (no [`check`](Self::check)): for [`verify`](Self::verify), which must
    /// not write, and [`repair`](Self::repair), which repairs and reports.
    /// The caller holds the stripe's write lock.
    pub(crate) fn unchecked(
        map: &'a Map,
        pins: &'a dyn PinScan,
        s: u32,
        pin_wait: Duration,
        now: u64,
    ) -> Self {
        StripeWriter {
            map,
            geo: map.geo(),
            entry: map.stripe(s),
            pins,
            s,
            pin_wait,
            now,
        }
    }

    /// Checks the stripe's heads and tails before trusting them. They are
    /// only ever written by holders of this lock with
    /// `tail <= head <= tail + ring`, both 16-aligned; anything else means the file was damaged
    /// from outside. Then the stripe's entries cannot be trusted either: it
    /// is emptied and both rings restart at their next segment boundary, so
    /// every walk stays bounded and no slot can name space that is being
    /// rewritten.
    ///
    /// Every reset is counted in the stripe's `repairs` word (format.md
    /// §2.2), so [`Stats::stripe_repairs`](crate::Stats::stripe_repairs)
    /// shows that a write path found and repaired damage.
    fn check(&self) {
        if self.sane() {
            return;
        }
        self.reset();
    }

    /// Repairs the stripe after its previous lock owner died holding the
    /// lock (a robust mutex's `EOWNERDEAD`, format.md §6), and counts it in
    /// the stripe's `owner_deaths`. What a dead owner can leave is listed
    /// in format.md §7; every case but damaged head and tail words needs
    /// nothing now (wasted bytes past the head are overwritten, an
    /// interrupted eviction is finished when the head next enters a
    /// segment, §5.4 step 1), and those are what [`check`](Self::check)
    /// resets, as it does for any writer. The caller marks the mutex
    /// consistent afterwards.
    pub(crate) fn recover_dead_owner(&self) {
        self.check();
        count_dead_owner(self.map, self.s);
    }

    /// Whether both rings' heads and tails satisfy the invariants of
    /// format.md §2.2. Loads only.
    fn sane(&self) -> bool {
        RINGS.iter().all(|&r| {
            let (h, t) = (self.head(r), self.tail(r));
            t <= h
                && h - t <= self.ring(r).size()
                && h < MAX_POSITION
                && h % RECORD_ALIGN == 0
                && t % RECORD_ALIGN == 0
        })
    }

    /// Empties a damaged stripe and restarts both rings at their next
    /// segment boundary (see [`check`](Self::check)); counts the repair.
    fn reset(&self) {
        self.clear_index();
        for r in RINGS {
            let (h, t) = (self.head(r), self.tail(r));
            let seg = self.ring(r).segment_size;
            let restart = match h.max(t).checked_add(seg) {
                Some(p) if p < MAX_POSITION / 2 => p / seg * seg,
                _ => 0,
            };
            self.set_tail(r, restart);
            self.set_head(r, restart);
        }
        bump(&self.entry.repairs, 1);
    }

    /// The geometry of ring `r`.
    fn ring(&self, r: Ring) -> &'a RingGeo {
        self.geo.ring(r)
    }

    fn tail_word(&self, r: Ring) -> &'a AtomicU64 {
        match r {
            Ring::Main => &self.entry.tail,
            Ring::Probation => &self.entry.prob_tail,
        }
    }

    fn head_word(&self, r: Ring) -> &'a AtomicU64 {
        match r {
            Ring::Main => &self.entry.head,
            Ring::Probation => &self.entry.prob_head,
        }
    }

    fn tail(&self, r: Ring) -> u64 {
        self.tail_word(r).load(Ordering::SeqCst)
    }

    fn head(&self, r: Ring) -> u64 {
        self.head_word(r).load(Ordering::Acquire)
    }

    fn set_head(&self, r: Ring, h: u64) {
        self.head_word(r).store(h, Ordering::Release);
    }

    fn set_tail(&self, r: Ring, t: u64) {
        self.tail_word(r).store(t, Ordering::SeqCst);
    }

    /// Both tails, for deciding which slots are live.
    fn tails(&self) -> Tails {
        Tails {
            main: self.tail(Ring::Main),
            prob: self.tail(Ring::Probation),
        }
    }

    /// How far below the probation tail a slot still counts as a ghost
    /// (format.md §2.4): as many probation bytes as the main ring holds
    /// live, `(segments - 1.5) * segment_size`.
    fn ghost_window(&self) -> u64 {
        let main = self.ring(Ring::Main);
        (2 * main.segments as u64 - 3) * main.segment_size / 2
    }

    /// The stripe's admission sketch (format.md §2.4a).
    fn sketch(&self) -> Sketch<'a> {
        Sketch::new(
            self.map.sketch(self.s),
            &self.entry.sketch_additions,
            sketch_entries(self.geo.buckets),
        )
    }

    /// Whether main has room for `size` more bytes without evicting: true
    /// only until main first fills after being empty (format.md §5.4).
    fn main_has_room(&self, size: u64) -> bool {
        let (head, tail) = (self.head(Ring::Main), self.tail(Ring::Main));
        head - tail + size + 2 * self.geo.segment_size <= self.ring(Ring::Main).size()
    }

    /// Whether a returning ghost of hash `hash` (a record of `size` bytes)
    /// enters main (format.md §5.2): while main has room, yes; otherwise
    /// if the sketch's estimate for it is at least the victim's estimate
    /// plus the victim's hit count.
    fn admits(&self, hash: u64, size: u64) -> bool {
        if self.main_has_room(size) {
            return true;
        }
        let Some((victim, count)) = self.main_victim() else {
            return true;
        };
        let sketch = self.sketch();
        sketch.estimate(hash) >= sketch.estimate(victim).saturating_add(count)
    }

    /// Main's next victim, as its hash and hit count: the first record
    /// from main's tail, within the tail's segment, named by a slot with
    /// count 0, else the first named one; `None` if none is.
    fn main_victim(&self) -> Option<(u64, u64)> {
        let seg = self.geo.segment_size;
        let (head, tail) = (self.head(Ring::Main), self.tail(Ring::Main));
        let end = head.min((tail / seg + 1) * seg);
        let mut p = tail;
        let mut first = None;
        while p < end {
            let Some((rh, _)) = self.record_at(Ring::Main, p) else {
                break; // an end marker: the segment's last record was passed
            };
            let kh = KeyHash::from_hash(rh.hash, self.geo);
            if kh.stripe != self.s {
                break; // a corrupt record: the rest of the segment is unknown
            }
            let named = Buckets::of(self.map, &kh)
                .find_pos(Ring::Main, p)
                .filter(|&(_, w)| index::word_tag(w) == kh.tag);
            if let Some((_, w)) = named {
                let count = index::hit_count(w);
                if count == 0 {
                    return Some((rh.hash, 0));
                }
                first.get_or_insert((rh.hash, count));
            }
            p += rh.size();
        }
        first
    }

    /// The header of the record at `pos` of ring `r` and the whole
    /// record's bytes, if `pos` holds a well-formed record within its
    /// segment.
    fn record_at(&self, r: Ring, pos: u64) -> Option<(RecordHeader, &'a [u8])> {
        // SAFETY: we hold the stripe's write lock and `pos` is at or above
        // the ring's tail (callers check): only a holder of this lock writes
        // the stripe's log, so nobody writes these bytes while we read them.
        unsafe { record_at(self.map, self.s, r, pos, u64::MAX) }
    }

    /// The slot holding `key`, if the key is live in this stripe.
    fn find_key(
        &self,
        bucket: &Buckets<'a>,
        kh: &KeyHash,
        key: &[u8],
    ) -> Option<(&'a AtomicU64, u64)> {
        let heads = [self.head(Ring::Main), self.head(Ring::Probation)];
        bucket.candidates(kh.tag, self.tails()).find(|&(_, w)| {
            let (r, pos) = (index::word_ring(w), index::word_pos(w));
            pos < heads[r as usize]
                && self
                    .record_at(r, pos)
                    .is_some_and(|(rh, all)| rh.hash == kh.hash && rh.key(all) == key)
        })
    }

    /// Appends `rec` and points the key's slot at it. A record larger than
    /// a probation segment goes to main; otherwise a live key stays in its
    /// ring, and a new key goes to probation, or to main when its ghost is
    /// found.
    pub(crate) fn put(&mut self, kh: &KeyHash, rec: &NewRecord<'_>) -> Result<()> {
        let size = record::record_size(rec.key.len(), rec.value.len());
        let bucket = Buckets::of(self.map, kh);
        let large = size > self.ring(Ring::Probation).segment_size;
        let ring = match self.find_key(&bucket, kh, rec.key) {
            Some(_) if large => Ring::Main,
            Some((_, w)) => index::word_ring(w),
            None => {
                self.sketch().add(kh.hash, 1);
                match bucket.find_ghost(kh.tag, self.tails(), self.ghost_window()) {
                    _ if large => Ring::Main,
                    Some(_) => {
                        bump(&self.entry.ghost_hits, 1);
                        if self.admits(kh.hash, size) {
                            Ring::Main
                        } else {
                            bump(&self.entry.ghost_rejections, 1);
                            Ring::Probation
                        }
                    }
                    None => Ring::Probation,
                }
            }
        };
        let pos = self.reserve(ring, size)?;
        let header = RecordHeader {
            crc: 0,
            kind: rec.kind,
            key_len: rec.key.len() as u32,
            val_len: rec.value.len() as u32,
            hash: kh.hash,
            created: rec.created,
            expires: rec.expires,
            schema: rec.schema,
        }
        .encode(rec.key, rec.value);
        let base = self.geo.ring_data(self.s, ring, pos);
        let voff = record::value_offset(rec.key.len());
        let zeros = [0u8; RECORD_ALIGN as usize];
        // SAFETY: `reserve` returned space at the head of a segment that no
        // reader pins and no slot names; we hold the stripe's write lock.
        unsafe {
            let m = self.map;
            m.write(base, &header);
            m.write(base + RECORD_HEADER, rec.key);
            m.write(
                base + RECORD_HEADER + rec.key.len() as u64,
                &zeros[..(voff - RECORD_HEADER - rec.key.len() as u64) as usize],
            );
            m.write(base + voff, rec.value);
            m.write(
                base + voff + rec.value.len() as u64,
                &zeros[..(size - voff - rec.value.len() as u64) as usize],
            );
        }
        stall(StallPoint::BeforeHead);
        // The head moves before the slot is published: a crash between the
        // two wastes the space instead of letting the next writer overwrite a
        // record a reader may already have found.
        self.set_head(ring, pos + size);
        stall(StallPoint::BeforeSlot);
        let word = index::ring_word(kh.tag, ring, pos);
        // Found again: `reserve` may have promoted, ghosted or evicted it.
        match self.find_key(&bucket, kh, rec.key) {
            Some((slot, _)) => slot.store(word, Ordering::Release),
            None => {
                let (tails, window) = (self.tails(), self.ghost_window());
                let (slot, evicts) = match bucket.find_ghost(kh.tag, tails, window) {
                    Some(ghost) => (ghost, false),
                    None => bucket.free_or_victim(tails, window),
                };
                slot.store(word, Ordering::Release);
                if evicts {
                    bump(&self.entry.evictions, 1);
                    bump(&self.entry.index_evictions, 1);
                } else {
                    bump(&self.entry.entries, 1);
                }
            }
        }
        bump(&self.entry.inserts, 1);
        Ok(())
    }

    /// Removes `key`. Returns whether it was present.
    pub(crate) fn delete(&mut self, kh: &KeyHash, key: &[u8]) -> bool {
        let bucket = Buckets::of(self.map, kh);
        match self.find_key(&bucket, kh, key) {
            Some((slot, _)) => {
                slot.store(0, Ordering::Release);
                bump(&self.entry.entries, -1);
                bump(&self.entry.deletes, 1);
                true
            }
            None => false,
        }
    }

    /// Drops every entry of the stripe.
    pub(crate) fn clear(&mut self) {
        self.clear_index();
        for r in RINGS {
            self.set_tail(r, self.head(r));
        }
    }

    /// Empties every index bucket of the stripe and zeroes its entry count.
    fn clear_index(&self) {
        for b in 0..self.geo.buckets {
            Bucket::at(self.map, self.s, b).clear();
        }
        self.entry.entries.store(0, Ordering::Relaxed);
    }

    /// Checks the stripe against its invariants (the caller holds the
    /// lock) without writing a byte of the file: heads and tails first
    /// (format.md §2.2; a stripe failing them is counted damaged and
    /// neither its log nor its index is walked, since neither can be
    /// bounded or trusted); then every live index slot must name a
    /// well-formed record of its own stripe, ring, one of its two buckets
    /// and tag (else it is dangling), whose CRC verifies (else a bad
    /// checksum); the live log of both rings is walked and its records no
    /// slot names are CRC-checked too (bad ones are unreachable damage).
    /// O(stripe size).
    pub(crate) fn verify(&self) -> StripeCheck {
        self.examine(false).0
    }

    /// [`verify`](Self::verify), then repairs what it found: a damaged
    /// stripe is reset as [`check`](Self::check) does (and counted in
    /// `repairs`), slots naming records that fail their checks are zeroed,
    /// and the entry counter is set to the live count. Returns what was
    /// found before repairing, and what was repaired.
    pub(crate) fn repair(&mut self) -> (StripeCheck, StripeRepair) {
        self.examine(true)
    }

    fn examine(&self, fix: bool) -> (StripeCheck, StripeRepair) {
        let mut report = StripeCheck::default();
        let mut done = StripeRepair::default();
        if !self.sane() {
            report.damaged = true;
            if fix {
                self.reset();
                done.reset = true;
            }
            return (report, done);
        }
        for r in RINGS {
            let (head, tail) = (self.head(r), self.tail(r));
            let seg = self.ring(r).segment_size;
            let mut p = tail;
            while p < head {
                let seg_end = (p / seg + 1) * seg;
                match self.record_at(r, p) {
                    Some((rh, all)) if p + rh.size() <= head => {
                        report.records_scanned += 1;
                        // Named records are checked through their slot below.
                        if !self.named(r, p, &rh) && !rh.verify(all) {
                            report.unreachable_bad_checksums += 1;
                        }
                        p += rh.size();
                    }
                    _ => p = seg_end,
                }
            }
        }
        let tails = self.tails();
        let heads = [self.head(Ring::Main), self.head(Ring::Probation)];
        let mut live = 0u64;
        for b in 0..self.geo.buckets {
            let bucket = Bucket::at(self.map, self.s, b);
            for i in 0..BUCKET_SLOTS {
                let slot = bucket.slot(i);
                let w = slot.load(Ordering::Acquire);
                if !tails.live(w) {
                    continue;
                }
                live += 1;
                let (r, pos) = (index::word_ring(w), index::word_pos(w));
                let head = heads[r as usize];
                let rec = (pos < head).then(|| self.record_at(r, pos)).flatten();
                let well_formed = rec.filter(|(rh, _)| {
                    let k = KeyHash::from_hash(rh.hash, self.geo);
                    pos + rh.size() <= head
                        && k.stripe == self.s
                        && k.has_bucket(b)
                        && k.tag == index::word_tag(w)
                });
                let bad = match well_formed {
                    None => {
                        report.dangling_slots += 1;
                        true
                    }
                    Some((rh, all)) if !rh.verify(all) => {
                        report.bad_checksums += 1;
                        true
                    }
                    Some(_) => false,
                };
                if bad && fix {
                    // Under the lock only a reader's visited-bit CAS could
                    // race, and readers never mark a record failing checks.
                    slot.store(0, Ordering::Release);
                    done.cleared += 1;
                    live -= 1;
                }
            }
        }
        // The report describes the stripe as it was found.
        report.live_entries = live + done.cleared;
        let counted = self.entry.entries.load(Ordering::Relaxed);
        report.entries_drift = counted.abs_diff(live + done.cleared);
        if fix && counted != live {
            self.entry.entries.store(live, Ordering::Relaxed);
            done.entries_fixed = true;
        }
        (report, done)
    }

    /// Whether a slot of the record's own buckets names position `p` of
    /// ring `r` with the record's tag (the evictor's notion of a live
    /// record).
    fn named(&self, r: Ring, p: u64, rh: &RecordHeader) -> bool {
        let kh = KeyHash::from_hash(rh.hash, self.geo);
        kh.stripe == self.s
            && Buckets::of(self.map, &kh)
                .find_pos(r, p)
                .is_some_and(|(_, w)| index::word_tag(w) == kh.tag)
    }

    /// Makes room for `size` bytes at the head of ring `r` and returns
    /// their position.
    fn reserve(&mut self, r: Ring, size: u64) -> Result<u64> {
        let seg = self.ring(r).segment_size;
        let mut h = self.head(r);
        if h % seg != 0 && h + size > (h / seg + 1) * seg {
            // Close the segment: mark where its records end.
            // SAFETY: [h, h+16) is at the head, inside the current segment
            // (records are 16-aligned, so at least 16 bytes remain).
            unsafe {
                self.map
                    .write(self.geo.ring_data(self.s, r, h), &record::end_marker())
            };
            h = (h / seg + 1) * seg;
            self.set_head(r, h);
        }
        if h % seg == 0 {
            self.enter_segment(r, h / seg, size)?;
            h = self.head(r);
        }
        if h + size >= MAX_POSITION {
            return Err(Error::PositionsExhausted { stripe: self.s });
        }
        debug_assert!(h % seg + size <= seg);
        Ok(h)
    }

    /// Prepares segment `k` of ring `r` for appending: the old contents of
    /// its place in the ring must be dead and unpinned, and the oldest live
    /// segment is evicted (main: its recently read entries reinserted into
    /// `k`, keeping `reserve` bytes free; probation: its read entries
    /// promoted to main) so the next segment is free in turn.
    fn enter_segment(&mut self, r: Ring, k: u64, reserve: u64) -> Result<()> {
        let seg = self.ring(r).segment_size;
        let n = self.ring(r).segments as u64;
        // 1. Whatever `k` replaces in the ring must be below the tail. It
        //    already is unless a writer died mid-eviction; then drop it.
        let must_be_dead = (k + 1).saturating_sub(n) * seg;
        if self.tail(r) < must_be_dead {
            self.evict(r, self.tail(r), must_be_dead, 0);
        }
        // 2. No live reader may still read it.
        if k >= n {
            self.wait_unpinned(r, must_be_dead, k % n)?;
        }
        // 3. Keep one free segment ahead: evict the oldest live one.
        let next_dead = (k + 2).saturating_sub(n) * seg;
        if self.tail(r) < next_dead {
            self.evict(r, self.tail(r), next_dead, seg - reserve);
        }
        Ok(())
    }

    /// Waits (up to `pin_wait`) until no live reader pins anything below
    /// `end` in ring `r`, the end of the space about to be reused.
    fn wait_unpinned(&mut self, r: Ring, end: u64, phys: u64) -> Result<()> {
        let start = Instant::now();
        let mut waited = false;
        let id = r.id(self.s, self.geo.stripes);
        loop {
            let holder = self.pins.find_pin(id, end, phys)?;
            let Some(holder) = holder else { return Ok(()) };
            if !waited {
                waited = true;
                bump(&self.entry.pin_waits, 1);
            }
            let elapsed = start.elapsed();
            let holder = match holder {
                Holder::SelfThread(i) => PinHolder::CallingThread(i),
                Holder::Slot(i) => PinHolder::Reader(i),
                Holder::ReadOnly => PinHolder::ReadOnlyProcess,
            };
            if matches!(holder, PinHolder::CallingThread(_)) || elapsed >= self.pin_wait {
                return Err(Error::Pinned {
                    stripe: self.s,
                    holder,
                    waited_ms: elapsed.as_millis() as u64,
                });
            }
            std::thread::sleep(PIN_POLL.min(self.pin_wait));
        }
    }

    /// Evicts every record in `[from, to)` (segment-aligned `to`) of ring
    /// `r`, then moves its tail to `to`. Each record still named by its
    /// slot, fresh and intact:
    /// - main: with a non-zero count, copied to the head while `budget`
    ///   bytes allow, its count decremented (reinsertion); else its slot is
    ///   cleared;
    /// - probation: read since written (or while main has room), copied to
    ///   main's head, count cleared (promotion); else its slot is left as it
    ///   is and becomes a ghost when the tail passes it.
    ///
    /// Expired, invalidated or damaged records lose their slot.
    fn evict(&mut self, r: Ring, from: u64, to: u64, mut budget: u64) {
        let seg = self.ring(r).segment_size;
        let header = self.map.header();
        let hard = header.hard_invalidate.load(Ordering::Acquire);
        let soft = header.soft_invalidate.load(Ordering::Acquire);
        let head_before = self.head(r);
        let mut p = from;
        while p < to {
            let seg_end = (p / seg + 1) * seg;
            let rec = if p < head_before {
                self.record_at(r, p)
            } else {
                None
            };
            let Some((rh, all)) = rec else {
                p = seg_end; // end marker, or nothing valid: the rest of the segment is dead
                continue;
            };
            let size = rh.size();
            let kh = KeyHash::from_hash(rh.hash, self.geo);
            if kh.stripe != self.s {
                p = seg_end; // a corrupt record: never touch another stripe's index
                continue;
            }
            let bucket = Buckets::of(self.map, &kh);
            if let Some((slot, w)) = bucket
                .find_pos(r, p)
                .filter(|&(_, w)| index::word_tag(w) == kh.tag)
            {
                let fresh = (rh.expires == 0 || rh.expires > self.now)
                    && rh.created > hard
                    && rh.created > soft;
                // R1 means read at least once; R2 alone marks an entry
                // lent to main unread (format.md §2.4), which counts 0.
                let read = w & VISITED != 0;
                // The writer folds the hits it passes into the sketch.
                self.sketch().add(rh.hash, index::hit_count(w));
                let (kept, ghost) = match r {
                    Ring::Main => {
                        let hits = if w & VISITED2 != 0 {
                            Hits::Two
                        } else {
                            Hits::Zero
                        };
                        let kept = read
                            && fresh
                            && size <= budget
                            && rh.verify(all)
                            && self.copy_to_main(p, r, size, slot, kh.tag, hits);
                        (kept, false)
                    }
                    Ring::Probation if !fresh => (false, false),
                    Ring::Probation if read || self.main_lends(size).is_some() => {
                        if !rh.verify(all) {
                            (false, false)
                        } else {
                            // Main refusing the copy makes it a ghost too.
                            let bits = if read {
                                Hits::Zero
                            } else {
                                self.main_lends(size).unwrap_or(Hits::Zero)
                            };
                            let kept = self.copy_to_main(p, r, size, slot, kh.tag, bits);
                            (kept, !kept)
                        }
                    }
                    Ring::Probation => (false, true),
                };
                if kept {
                    budget = budget.saturating_sub(size);
                } else if ghost {
                    // A ghost: the slot stays, naming a position about to
                    // fall below the tail. Nothing is written.
                    bump(&self.entry.entries, -1);
                    bump(&self.entry.evictions, 1);
                    bump(&self.entry.ghosts, 1);
                } else {
                    slot.store(0, Ordering::Release);
                    bump(&self.entry.entries, -1);
                    bump(&self.entry.evictions, 1);
                }
                stall(StallPoint::MidEviction);
            }
            p += size;
        }
        self.set_tail(r, to);
    }

    /// Whether main takes an entry leaving probation unread (format.md
    /// §5.4), and how the entry is marked there: while main has room for
    /// `size` more bytes without evicting, it is *lent* main's free space
    /// (marked R2 alone); while main's oldest segment still holds such a
    /// lent entry, main keeps taking unread exits, unmarked, as it hands
    /// the lent space back, so that a lap of main passes what the empty
    /// cache took in. Probation is a fixed ring and cannot grow into main's
    /// free space as S3-FIFO's small queue does; this is the log's way of
    /// doing that once, from empty.
    fn main_lends(&self, size: u64) -> Option<Hits> {
        let seg = self.geo.segment_size;
        if self.main_has_room(size) {
            return Some(Hits::Lent);
        }
        let (head, tail) = (self.head(Ring::Main), self.tail(Ring::Main));
        // Whether main's oldest segment holds a lent entry, remembered per
        // tail in the stripe entry so the segment is walked once per lap.
        let memo = (tail + RECORD_ALIGN) << 1;
        let known = self.entry.lend_memo.load(Ordering::Relaxed);
        if known & !1 == memo {
            return (known & 1 == 1).then_some(Hits::Zero);
        }
        let end = head.min((tail / seg + 1) * seg);
        let mut p = tail;
        let mut lends = false;
        while p < end && !lends {
            let Some((rh, _)) = self.record_at(Ring::Main, p) else {
                break;
            };
            let kh = KeyHash::from_hash(rh.hash, self.geo);
            if kh.stripe != self.s {
                break;
            }
            let named = Buckets::of(self.map, &kh).find_pos(Ring::Main, p);
            lends = named.is_some_and(|(_, w)| w & COUNT_BITS == VISITED2);
            p += rh.size();
        }
        self.entry
            .lend_memo
            .store(memo | lends as u64, Ordering::Relaxed);
        lends.then_some(Hits::Zero)
    }

    /// Copies the record of `size` bytes at `p` of ring `from` to main's
    /// head and re-points `slot` at the copy with the hit bits `hits`
    /// leaves it (a reinsertion of an entry read twice keeps one hit; an
    /// entry lent to main unread is marked so). A copy within
    /// main uses the segment `enter_segment` just freed (the caller keeps
    /// it within budget); a promotion appends through main's `reserve`,
    /// which may evict main's tail. Returns false, copying nothing, when
    /// main cannot take it (a live pin, positions exhausted).
    fn copy_to_main(
        &mut self,
        p: u64,
        from: Ring,
        size: u64,
        slot: &AtomicU64,
        tag: u64,
        hits: Hits,
    ) -> bool {
        let to_pos = match from {
            Ring::Main => self.head(Ring::Main),
            Ring::Probation => match self.reserve(Ring::Main, size) {
                Ok(pos) => pos,
                Err(_) => return false,
            },
        };
        // SAFETY: the destination is at main's head, in a segment
        // `enter_segment` cleared (unpinned, unnamed); the source a
        // published record of an older segment of main, or of probation:
        // they cannot overlap (different segments, or different rings).
        unsafe {
            self.map.copy_within(
                self.geo.ring_data(self.s, from, p),
                self.geo.ring_data(self.s, Ring::Main, to_pos),
                size,
            )
        };
        self.set_head(Ring::Main, to_pos + size);
        let bits = match hits {
            Hits::Zero => 0,
            Hits::Two => VISITED,
            Hits::Lent => VISITED2,
        };
        slot.store(
            index::ring_word(tag, Ring::Main, to_pos) | bits,
            Ordering::Release,
        );
        bump(&self.entry.rewritten_bytes, size as i64);
        match from {
            Ring::Main => bump(&self.entry.reinserts, 1),
            Ring::Probation => bump(&self.entry.promotions, 1),
        }
        true
    }
}

/// Both rings, main first.
const RINGS: [Ring; 2] = [Ring::Main, Ring::Probation];

/// What a copy to main leaves in the slot's hit bits.
#[derive(Clone, Copy)]
enum Hits {
    /// Count 0: a promotion of a read entry, or a reinsertion of one read once.
    Zero,
    /// A reinsertion of an entry read twice: one hit kept (R1).
    Two,
    /// An entry lent to main unread: R2 alone, which counts 0.
    Lent,
}

/// Counts a dead owner of stripe `s`'s lock in its `owner_deaths` word
/// (format.md §2.2a). The caller holds the lock.
pub(crate) fn count_dead_owner(map: &Map, s: u32) {
    bump(&map.stripe_mutex(s).owner_deaths, 1);
}

/// Points of the write path where a test can make a writer stop, holding
/// the stripe lock, so that it can be killed there ([`stall_at`]). Not a
/// public promise.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StallPoint {
    /// `put`: the record's bytes are written, the head not yet moved.
    BeforeHead = 1,
    /// `put`: the head is moved, the key's slot not yet stored.
    BeforeSlot = 2,
    /// Eviction: one slot of the evicted segment is cleared or re-pointed,
    /// the tail not yet moved.
    MidEviction = 3,
}

/// The armed [`StallPoint`] (0: none). One relaxed load per check.
static STALL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// The file a stalled writer creates to say it is there.
static STALL_ANNOUNCE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Test hook, not a public promise: the first writer of this process that
/// reaches `point` creates the file `announce` and then sleeps forever,
/// holding its stripe lock, for a test to kill it there.
#[doc(hidden)]
pub fn stall_at(point: StallPoint, announce: std::path::PathBuf) {
    let _ = STALL_ANNOUNCE.set(announce);
    STALL.store(point as u8, Ordering::SeqCst);
}

/// Stops here forever if a test armed `point` ([`stall_at`]).
#[inline]
fn stall(point: StallPoint) {
    if STALL.load(Ordering::Relaxed) == point as u8 {
        stall_here();
    }
}

#[cold]
fn stall_here() -> ! {
    if let Some(p) = STALL_ANNOUNCE.get() {
        let _ = std::fs::write(p, b"stalled");
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Adds `by` to a counter of the stripe entry. Only the holder of the
/// stripe's write lock writes them, so a plain load and store do.
fn bump(a: &AtomicU64, by: i64) {
    a.store(
        a.load(Ordering::Relaxed).wrapping_add(by as u64),
        Ordering::Relaxed,
    );
}

#[cfg(test)]
mod tests {
    use super::{NewRecord, StripeWriter};
    use crate::index::{self, Buckets, KeyHash, Tails};
    use crate::layout::Ring;
    use crate::layout::{kind, record};
    use crate::map::Map;
    use crate::testing::{bare_map, NoPins, TestDir};
    use crate::{Cache, Options, Raw};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    fn cache(name: &str, opts: Options) -> (TestDir, Cache) {
        let d = TestDir::new(&format!("log-{name}"));
        let c = Cache::open(d.path().join("c"), opts).unwrap();
        (d, c)
    }

    fn head_tail(c: &Cache, s: u32) -> (u64, u64) {
        map_head_tail(&c.shared().map, s)
    }

    fn map_head_tail(map: &Map, s: u32) -> (u64, u64) {
        let e = map.stripe(s);
        (e.head.load(Ordering::SeqCst), e.tail.load(Ordering::SeqCst))
    }

    /// The ring's invariants after append `i` (format.md §2.2 and §5.4):
    /// head and tail aligned, at most a ring apart, and one free segment
    /// ahead of the head's.
    fn assert_ring((h, t): (u64, u64), seg: u64, n: u64, i: u32) {
        if h == 0 {
            assert_eq!(t, 0, "i={i}");
            return;
        }
        let k = if h % seg == 0 { h / seg - 1 } else { h / seg };
        assert!(t <= h && h - t <= seg * n, "i={i} head={h} tail={t}");
        assert!(
            t >= (k + 2).saturating_sub(n) * seg,
            "one free segment ahead: i={i} head={h} tail={t}"
        );
        assert_eq!((h % 16, t % 16), (0, 0), "i={i}");
    }

    /// [`assert_ring`] for both rings of stripe `s`.
    fn assert_rings(map: &Map, s: u32, i: u32) {
        let e = map.stripe(s);
        let geo = map.geo();
        assert_ring(
            map_head_tail(map, s),
            geo.segment_size,
            geo.main.segments as u64,
            i,
        );
        let prob = (
            e.prob_head.load(Ordering::SeqCst),
            e.prob_tail.load(Ordering::SeqCst),
        );
        assert_ring(prob, geo.prob.segment_size, geo.prob.segments as u64, i);
    }

    /// Writes `key` = `value` into its stripe of a bare map (no file, no
    /// locks: the test is the only writer), returning the new record's
    /// ring and position.
    fn put(map: &Map, key: &[u8], value: &[u8], now: u64) -> (Ring, u64) {
        let kh = KeyHash::new(key, 7, map.geo());
        let mut w = StripeWriter::new(map, &NoPins, kh.stripe, Duration::ZERO, now);
        let rec = NewRecord {
            kind: kind::BYTES,
            schema: 0,
            key,
            value,
            created: now,
            expires: 0,
        };
        w.put(&kh, &rec).unwrap();
        let (_, word) = Buckets::of(map, &kh)
            .candidates(kh.tag, Tails::load(map, kh.stripe))
            .find(|&(_, w)| {
                let (ring, pos) = (index::word_ring(w), index::word_pos(w));
                // SAFETY: the test is the only writer of the map.
                unsafe { crate::read::record_at(map, kh.stripe, ring, pos, u64::MAX) }
                    .is_some_and(|(rh, all)| rh.key(all) == key)
            })
            .expect("the key was written");
        (index::word_ring(word), index::word_pos(word))
    }

    /// The value of `key` in a bare map, read the way the writer finds
    /// keys (index candidates, then the record's hash and key).
    fn value_of(map: &Map, key: &[u8]) -> Option<Vec<u8>> {
        let kh = KeyHash::new(key, 7, map.geo());
        Buckets::of(map, &kh)
            .candidates(kh.tag, Tails::load(map, kh.stripe))
            .find_map(|(_, w)| {
                let (ring, pos) = (index::word_ring(w), index::word_pos(w));
                // SAFETY: the test is the only writer of the map.
                let (rh, all) =
                    unsafe { crate::read::record_at(map, kh.stripe, ring, pos, u64::MAX)? };
                (rh.key(all) == key && rh.verify(all)).then(|| rh.value(all).to_vec())
            })
    }

    #[test]
    fn bare_map_appends_finds_overwrites_and_deletes() {
        let map = bare_map(1 << 20, 2, 4, 1000);
        let p1 = put(&map, b"a", b"one", 1);
        assert_eq!(value_of(&map, b"a").as_deref(), Some(&b"one"[..]));
        let p2 = put(&map, b"a", b"two", 2);
        assert_eq!(
            (p1.0, p2.0),
            (Ring::Probation, Ring::Probation),
            "a new key"
        );
        assert!(p2.1 > p1.1, "a new record at a higher position");
        assert_eq!(value_of(&map, b"a").as_deref(), Some(&b"two"[..]));
        let kh = KeyHash::new(b"a", 7, map.geo());
        let e = map.stripe(kh.stripe);
        assert_eq!(
            e.entries.load(Ordering::SeqCst),
            1,
            "overwrite reuses the slot"
        );
        assert_eq!(e.inserts.load(Ordering::SeqCst), 2);
        let mut w = StripeWriter::new(&map, &NoPins, kh.stripe, Duration::ZERO, 3);
        assert!(w.delete(&kh, b"a"));
        assert!(!w.delete(&kh, b"a"));
        assert_eq!(value_of(&map, b"a"), None);
        assert_eq!(e.deletes.load(Ordering::SeqCst), 1);
        assert_eq!(w.verify().live_entries, 0);
    }

    #[test]
    fn bare_map_ring_wraps_with_one_free_segment_ahead() {
        let map = bare_map(1 << 20, 1, 6, 10_000);
        for i in 0..5000u32 {
            let v = vec![i as u8; (i as usize * 37) % 3000];
            put(&map, &i.to_le_bytes(), &v, 10);
            assert_rings(&map, 0, i);
        }
        let e = map.stripe(0);
        assert!(e.evictions.load(Ordering::SeqCst) > 0);
        assert_eq!(e.reinserts.load(Ordering::SeqCst), 0, "nothing was read");
        let check = StripeWriter::unchecked(&map, &NoPins, 0, Duration::ZERO, 10).verify();
        assert!(!check.damaged);
        assert_eq!((check.bad_checksums, check.dangling_slots), (0, 0));
        assert_eq!(check.live_entries, e.entries.load(Ordering::SeqCst));
        assert_eq!(
            value_of(&map, &4999u32.to_le_bytes()).map(|v| v.len()),
            Some(4999 * 37 % 3000)
        );
    }

    #[test]
    fn ring_invariants_hold_on_every_append() {
        let (d, c) = cache(
            "inv",
            Options::new().capacity(1 << 20).stripes(1).segments(6),
        );
        for i in 0..5000u32 {
            let v = vec![i as u8; (i as usize * 37) % 3000];
            c.set(i.to_le_bytes(), &Raw(&v)).unwrap();
            if i % 7 == 0 {
                let _ = c.get::<Raw>((i / 2).to_le_bytes()).unwrap();
            }
            assert_rings(&c.shared().map, 0, i);
        }
        let st = c.stats();
        // Read entries got their second chance: promoted out of probation
        // (this main ring never fills up enough to reinsert).
        assert!(st.evictions > 0 && st.promotions > 0, "{st:?}");
        // Everything the index names is readable and intact.
        let live = (0..5000u32)
            .filter(|i| c.get::<Raw>(i.to_le_bytes()).unwrap().is_some())
            .count();
        assert_eq!(live as u64, c.stats().entries);
        drop((c, d));
    }

    #[test]
    fn damaged_head_and_tail_reset_the_stripe() {
        let (d, c) = cache(
            "damaged",
            Options::new().capacity(1 << 20).stripes(2).segments(8),
        );
        for i in 0..200u32 {
            c.set(i.to_le_bytes(), &Raw(b"value")).unwrap();
        }
        let sh = c.shared();
        for (s, (h, t)) in [
            (0u32, (u64::MAX - 5, 0u64)),
            (1, (10 * sh.geo.ring_size(), 0)),
        ] {
            let e = sh.map.stripe(s);
            e.head.store(h, Ordering::SeqCst);
            e.tail.store(t, Ordering::SeqCst);
        }
        // Writes to both stripes work and stay bounded; no panic, no endless walk.
        for i in 1000..3000u32 {
            c.set(i.to_le_bytes(), &Raw(&[7u8; 300])).unwrap();
        }
        for s in 0..2 {
            let (h, t) = head_tail(&c, s);
            assert!(t <= h && h - t <= sh.geo.ring_size());
        }
        assert_eq!(
            &*c.get::<Raw>(2999u32.to_le_bytes()).unwrap().unwrap(),
            &[7u8; 300][..]
        );
        assert_eq!(c.stats().stripe_repairs, 2, "each reset is counted once");
        drop((c, d));
    }

    /// A key of stripe `s`.
    fn key_in(c: &Cache, s: u32, tag: &str) -> String {
        (0..)
            .map(|i| format!("{tag}{i}"))
            .find(|k| c.key_placement(k).stripe == s)
            .unwrap()
    }

    /// The index slot naming `key` and its word.
    fn slot_of<'c>(c: &'c Cache, key: &str) -> (&'c AtomicU64, u64) {
        let sh = c.shared();
        let kh = KeyHash::new(key.as_bytes(), sh.header.seed, &sh.geo);
        let b = Buckets::of(&sh.map, &kh);
        let mut found = b.candidates(kh.tag, Tails::default());
        let hit = found.next().expect("the key has a slot");
        assert!(found.next().is_none(), "one slot with the key's tag");
        hit
    }

    #[test]
    fn verify_reports_a_damaged_stripe_without_writing_and_repair_resets_it() {
        let (d, c) = cache(
            "verify-stripe",
            Options::new().capacity(1 << 20).stripes(2).segments(8),
        );
        let (k0, k1) = (key_in(&c, 0, "a"), key_in(&c, 1, "b"));
        c.set(&k0, &Raw(b"zero")).unwrap();
        c.set(&k1, &Raw(b"one")).unwrap();
        let path = c.path().to_path_buf();
        // Damage stripe 0 from outside: head below tail.
        let (h, _) = head_tail(&c, 0);
        let sh = c.shared();
        sh.map.stripe(0).tail.store(h + 4096, Ordering::SeqCst);
        let before = std::fs::read(&path).unwrap();
        let r1 = c.verify().unwrap();
        let r2 = c.verify().unwrap();
        assert_eq!(r1, r2, "a check does not change what it checks");
        assert_eq!(r1.damaged_stripes, 1, "{r1:?}");
        assert!(!r1.is_clean());
        assert_eq!(r1.live_entries, 1, "stripe 1 is walked: {r1:?}");
        assert!(
            std::fs::read(&path).unwrap() == before,
            "verify wrote to the file"
        );
        assert_eq!(head_tail(&c, 0), (h, h + 4096), "damage left as found");
        assert_eq!(c.stats().stripe_repairs, 0);
        // Read-only handles may not repair.
        let ro = Cache::open(&path, Options::new().read_only(true)).unwrap();
        assert!(matches!(ro.repair(), Err(crate::Error::ReadOnly { .. })));
        drop(ro);
        let fixed = c.repair().unwrap();
        assert_eq!(fixed.before, r1);
        assert_eq!(fixed.stripes_reset, 1, "{fixed:?}");
        assert_eq!(c.stats().stripe_repairs, 1);
        let after = c.verify().unwrap();
        assert!(after.is_clean(), "{after:?}");
        assert_eq!((after.live_entries, after.entries_drift), (1, 0));
        assert_eq!(&*c.get::<Raw>(&k1).unwrap().unwrap(), b"one");
        assert!(
            c.get::<Raw>(&k0).unwrap().is_none(),
            "the reset stripe is empty"
        );
        c.set(&k0, &Raw(b"again")).unwrap();
        assert_eq!(c.stats().stripe_repairs, 1, "a repaired stripe stays sane");
        drop((c, d));
    }

    #[test]
    fn verify_reports_bad_records_and_dangling_slots_and_repair_clears_them() {
        let (d, c) = cache(
            "verify-slots",
            Options::new().capacity(1 << 20).stripes(1).segments(8),
        );
        for k in ["crc", "dangling", "fine"] {
            c.set(k, &Raw(format!("value of {k}").as_bytes())).unwrap();
        }
        let path = c.path().to_path_buf();
        let sh = c.shared();
        // A flipped value byte: the CRC fails.
        let (_, w) = slot_of(&c, "crc");
        let at =
            sh.geo.ring_data(0, index::word_ring(w), index::word_pos(w)) + record::value_offset(3);
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(b"#").unwrap();
        }
        // A slot whose tag no longer matches its record: dangling.
        let (slot, w) = slot_of(&c, "dangling");
        slot.store(w ^ (1 << 51), Ordering::SeqCst);
        // An entry counter that drifted.
        let entries = &sh.map.stripe(0).entries;
        entries.store(7, Ordering::SeqCst);
        let before = std::fs::read(&path).unwrap();
        let r1 = c.verify().unwrap();
        assert_eq!(r1, c.verify().unwrap());
        assert!(std::fs::read(&path).unwrap() == before, "verify wrote");
        assert_eq!((r1.bad_checksums, r1.dangling_slots), (1, 1), "{r1:?}");
        assert_eq!((r1.live_entries, r1.entries_drift), (3, 4), "{r1:?}");
        assert_eq!((r1.damaged_stripes, r1.unreachable_bad_checksums), (0, 0));
        assert!(!r1.is_clean());
        let fixed = c.repair().unwrap();
        assert_eq!(fixed.before, r1);
        assert_eq!(
            (
                fixed.stripes_reset,
                fixed.slots_cleared,
                fixed.entries_fixed
            ),
            (0, 2, 1),
            "{fixed:?}"
        );
        let after = c.verify().unwrap();
        assert!(after.is_clean(), "{after:?}");
        assert_eq!((after.live_entries, after.entries_drift), (1, 0));
        assert_eq!(
            after.unreachable_bad_checksums, 1,
            "the bad record stays in the log, unnamed"
        );
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.stats().stripe_repairs, 0, "no stripe was reset");
        assert_eq!(&*c.get::<Raw>("fine").unwrap().unwrap(), b"value of fine");
        assert!(c.get::<Raw>("crc").unwrap().is_none());
        assert_eq!(c.repair().unwrap().slots_cleared, 0, "nothing left to do");
        drop((c, d));
    }

    #[test]
    fn interrupted_eviction_is_finished_by_the_next_writer() {
        let (d, c) = cache(
            "interrupted",
            Options::new().capacity(1 << 20).stripes(1).segments(4),
        );
        let seg = c.shared().geo.segment_size;
        let v = vec![1u8; 1000];
        let mut i = 0u32;
        // Fill until the head is just past a segment boundary after a wrap.
        loop {
            c.set(i.to_le_bytes(), &Raw(&v)).unwrap();
            i += 1;
            let (h, _) = head_tail(&c, 0);
            if h > 5 * seg && h % seg < 2000 {
                break;
            }
        }
        // Simulate a writer killed before it stored the new tail: move the
        // tail back one segment (the slots it had cleared stay cleared).
        let sh = c.shared();
        let tail = &sh.map.stripe(0).tail;
        tail.store(tail.load(Ordering::SeqCst) - seg, Ordering::SeqCst);
        for j in 0..3000u32 {
            c.set((100_000 + j).to_le_bytes(), &Raw(&v)).unwrap();
            let (h, t) = head_tail(&c, 0);
            assert!(t <= h && h - t <= 4 * seg);
        }
        let entries = c.stats().entries;
        let live = (0..200_000u32)
            .filter(|k| c.contains(k.to_le_bytes()).unwrap())
            .count() as u64;
        assert!(live <= entries, "live {live} entries {entries}");
        drop((c, d));
    }
}
