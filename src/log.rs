//! The log: each stripe owns a ring of `segments` segments in the data
//! region and appends records to it at monotonically increasing 64-bit
//! positions (`position % ring_size` is the place in the ring).
//!
//! Everything here runs with the stripe's write lock held, so one
//! [`StripeWriter`] at a time mutates a stripe's head, tail, index buckets
//! and log space — in this process or any other.
//!
//! Invariants (see `format.md`, "Log"):
//! - `tail <= head`; positions below `tail` are dead: readers ignore index
//!   slots naming them, and their bytes may be reused once no reader pins
//!   them.
//! - After the head enters segment `k`, `tail >= (k + 2 - segments) *
//!   segment_size`: at most `segments - 1` segments are live, so the
//!   segment after the head's is always dead and can receive reinsertions.
//! - Bytes at or above `head` are named by no index slot.

use crate::error::{Error, PinHolder, Result};
use crate::index::{self, Bucket, Buckets, KeyHash, VISITED};
use crate::layout::record::{self, RecordHeader, RECORD_HEADER};
use crate::layout::stripe::StripeEntry;
use crate::layout::{Geometry, BUCKET_SLOTS, MAX_POSITION, RECORD_ALIGN};
use crate::map::Map;
use crate::read::record_at;
use crate::readers::{Holder, PinScan};
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

    /// Checks the stripe's head and tail before trusting them. They are only
    /// ever written by holders of this lock with `tail <= head <= tail +
    /// ring`, both 16-aligned; anything else means the file was damaged
    /// from outside. Then the stripe's entries cannot be trusted either: it
    /// is emptied and restarted at the next segment boundary, so every walk
    /// stays bounded and no slot can name space that is being rewritten.
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

    /// Whether head and tail satisfy the invariants of format.md §2.2.
    /// Loads only.
    fn sane(&self) -> bool {
        let (h, t) = (self.head(), self.tail());
        let ring = self.geo.ring_size();
        t <= h
            && h - t <= ring
            && h < MAX_POSITION
            && h % RECORD_ALIGN == 0
            && t % RECORD_ALIGN == 0
    }

    /// Empties a damaged stripe and restarts it at the next segment
    /// boundary (see [`check`](Self::check)); counts the repair.
    fn reset(&self) {
        let (h, t) = (self.head(), self.tail());
        let seg = self.geo.segment_size;
        let restart = match h.max(t).checked_add(seg) {
            Some(p) if p < MAX_POSITION / 2 => p / seg * seg,
            _ => 0,
        };
        self.clear_index();
        self.set_tail(restart);
        self.set_head(restart);
        bump(&self.entry.repairs, 1);
    }

    fn tail(&self) -> u64 {
        self.entry.tail.load(Ordering::SeqCst)
    }

    fn head(&self) -> u64 {
        self.entry.head.load(Ordering::Acquire)
    }

    fn set_head(&self, h: u64) {
        self.entry.head.store(h, Ordering::Release);
    }

    fn set_tail(&self, t: u64) {
        self.entry.tail.store(t, Ordering::SeqCst);
    }

    /// The header of the record at `pos` and the whole record's bytes, if
    /// `pos` holds a well-formed record within its segment.
    fn record_at(&self, pos: u64) -> Option<(RecordHeader, &'a [u8])> {
        // SAFETY: we hold the stripe's write lock and `pos` is at or above
        // the tail (callers check): only a holder of this lock writes the
        // stripe's log, so nobody writes these bytes while we read them.
        unsafe { record_at(self.map, self.s, pos, u64::MAX) }
    }

    /// The slot holding `key`, if the key is live in this stripe.
    fn find_key(
        &self,
        bucket: &Buckets<'a>,
        kh: &KeyHash,
        key: &[u8],
    ) -> Option<(&'a AtomicU64, u64)> {
        let tail = self.tail();
        let head = self.head();
        bucket.candidates(kh.tag, tail).find(|&(_, w)| {
            let pos = index::word_pos(w);
            pos < head
                && self
                    .record_at(pos)
                    .is_some_and(|(rh, all)| rh.hash == kh.hash && rh.key(all) == key)
        })
    }

    /// Appends `rec` and points the key's slot at it.
    pub(crate) fn put(&mut self, kh: &KeyHash, rec: &NewRecord<'_>) -> Result<()> {
        let size = record::record_size(rec.key.len(), rec.value.len());
        let pos = self.reserve(size)?;
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
        let base = self.geo.data(self.s, pos);
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
        self.set_head(pos + size);
        stall(StallPoint::BeforeSlot);
        let word = index::slot_word(kh.tag, pos);
        let bucket = Buckets::of(self.map, kh);
        match self.find_key(&bucket, kh, rec.key) {
            Some((slot, _)) => slot.store(word, Ordering::Release),
            None => {
                let (slot, evicts) = bucket.free_or_victim(self.tail());
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
        self.set_tail(self.head());
    }

    /// Empties every index bucket of the stripe and zeroes its entry count.
    fn clear_index(&self) {
        for b in 0..self.geo.buckets {
            Bucket::at(self.map, self.s, b).clear();
        }
        self.entry.entries.store(0, Ordering::Relaxed);
    }

    /// Checks the stripe against its invariants (the caller holds the
    /// lock) without writing a byte of the file: head and tail first
    /// (format.md §2.2; a stripe failing them is counted damaged and
    /// neither its log nor its index is walked, since neither can be
    /// bounded or trusted); then every live index slot must name a
    /// well-formed record of its own stripe, one of its two buckets and
    /// tag (else it is dangling), whose CRC verifies (else a bad checksum);
    /// the live log is walked and its records no slot names are
    /// CRC-checked too (bad ones are unreachable damage). O(stripe size).
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
        let (head, tail) = (self.head(), self.tail());
        let seg = self.geo.segment_size;
        let mut p = tail;
        while p < head {
            let seg_end = (p / seg + 1) * seg;
            match self.record_at(p) {
                Some((rh, all)) if p + rh.size() <= head => {
                    report.records_scanned += 1;
                    // Named records are checked through their slot below.
                    if !self.named(p, &rh) && !rh.verify(all) {
                        report.unreachable_bad_checksums += 1;
                    }
                    p += rh.size();
                }
                _ => p = seg_end,
            }
        }
        let mut live = 0u64;
        for b in 0..self.geo.buckets {
            let bucket = Bucket::at(self.map, self.s, b);
            for i in 0..BUCKET_SLOTS {
                let slot = bucket.slot(i);
                let w = slot.load(Ordering::Acquire);
                if !index::occupied(w) || index::word_pos(w) < tail {
                    continue;
                }
                live += 1;
                let pos = index::word_pos(w);
                let rec = (pos < head).then(|| self.record_at(pos)).flatten();
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

    /// Whether a slot of the record's own buckets names position `p` with
    /// the record's tag (the evictor's notion of a live record).
    fn named(&self, p: u64, rh: &RecordHeader) -> bool {
        let kh = KeyHash::from_hash(rh.hash, self.geo);
        kh.stripe == self.s
            && Buckets::of(self.map, &kh)
                .find_pos(p)
                .is_some_and(|(_, w)| index::word_tag(w) == kh.tag)
    }

    /// Makes room for `size` bytes at the head and returns their position.
    fn reserve(&mut self, size: u64) -> Result<u64> {
        let seg = self.geo.segment_size;
        let mut h = self.head();
        if h % seg != 0 && h + size > (h / seg + 1) * seg {
            // Close the segment: mark where its records end.
            // SAFETY: [h, h+16) is at the head, inside the current segment
            // (records are 16-aligned, so at least 16 bytes remain).
            unsafe {
                self.map
                    .write(self.geo.data(self.s, h), &record::end_marker())
            };
            h = (h / seg + 1) * seg;
            self.set_head(h);
        }
        if h % seg == 0 {
            self.enter_segment(h / seg, size)?;
            h = self.head();
        }
        if h + size >= MAX_POSITION {
            return Err(Error::PositionsExhausted { stripe: self.s });
        }
        debug_assert!(h % seg + size <= seg);
        Ok(h)
    }

    /// Prepares segment `k` for appending: the old contents of its place in
    /// the ring must be dead and unpinned, and the oldest live segment is
    /// evicted (its recently read entries reinserted into `k`, keeping
    /// `reserve` bytes free) so the next segment is free in turn.
    fn enter_segment(&mut self, k: u64, reserve: u64) -> Result<()> {
        let seg = self.geo.segment_size;
        let n = self.geo.segments as u64;
        // 1. Whatever `k` replaces in the ring must be below the tail. It
        //    already is unless a writer died mid-eviction; then drop it.
        let must_be_dead = (k + 1).saturating_sub(n) * seg;
        if self.tail() < must_be_dead {
            self.evict(self.tail(), must_be_dead, 0);
        }
        // 2. No live reader may still read it.
        if k >= n {
            self.wait_unpinned(must_be_dead, k % n)?;
        }
        // 3. Keep one free segment ahead: evict the oldest live one.
        let next_dead = (k + 2).saturating_sub(n) * seg;
        if self.tail() < next_dead {
            self.evict(self.tail(), next_dead, seg - reserve);
        }
        Ok(())
    }

    /// Waits (up to `pin_wait`) until no live reader pins anything below
    /// `end`, the end of the space about to be reused.
    fn wait_unpinned(&mut self, end: u64, phys: u64) -> Result<()> {
        let start = Instant::now();
        let mut waited = false;
        loop {
            let holder = self.pins.find_pin(self.s, end, phys)?;
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

    /// Evicts every record in `[from, to)` (segment-aligned `to`), then
    /// moves the tail to `to`. Live entries read since they were written are
    /// copied to the head while `budget` bytes allow (second chance); the
    /// rest lose their index slot.
    fn evict(&mut self, from: u64, to: u64, mut budget: u64) {
        let seg = self.geo.segment_size;
        let header = self.map.header();
        let hard = header.hard_invalidate.load(Ordering::Acquire);
        let soft = header.soft_invalidate.load(Ordering::Acquire);
        let head_before = self.head();
        let mut p = from;
        while p < to {
            let seg_end = (p / seg + 1) * seg;
            let rec = if p < head_before {
                self.record_at(p)
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
                .find_pos(p)
                .filter(|&(_, w)| index::word_tag(w) == kh.tag)
            {
                let fresh = (rh.expires == 0 || rh.expires > self.now)
                    && rh.created > hard
                    && rh.created > soft;
                if w & VISITED != 0 && fresh && size <= budget && rh.verify(all) {
                    let to_pos = self.head();
                    // SAFETY: the destination is at the head of the segment
                    // `enter_segment` cleared (unpinned, unnamed), the source
                    // a published record in an older segment; they cannot
                    // overlap because they lie in different segments.
                    unsafe {
                        self.map.copy_within(
                            self.geo.data(self.s, p),
                            self.geo.data(self.s, to_pos),
                            size,
                        )
                    };
                    self.set_head(to_pos + size);
                    slot.store(index::slot_word(kh.tag, to_pos), Ordering::Release);
                    budget -= size;
                    bump(&self.entry.reinserts, 1);
                } else {
                    slot.store(0, Ordering::Release);
                    bump(&self.entry.entries, -1);
                    bump(&self.entry.evictions, 1);
                }
                stall(StallPoint::MidEviction);
            }
            p += size;
        }
        self.set_tail(to);
    }
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
    use crate::index::{self, Buckets, KeyHash};
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
        let k = if h % seg == 0 { h / seg - 1 } else { h / seg };
        assert!(t <= h && h - t <= seg * n, "i={i} head={h} tail={t}");
        assert!(
            t >= (k + 2).saturating_sub(n) * seg,
            "one free segment ahead: i={i} head={h} tail={t}"
        );
        assert_eq!((h % 16, t % 16), (0, 0), "i={i}");
    }

    /// Writes `key` = `value` into its stripe of a bare map (no file, no
    /// locks: the test is the only writer), returning the new record's
    /// position.
    fn put(map: &Map, key: &[u8], value: &[u8], now: u64) -> u64 {
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
        let (h, _) = map_head_tail(map, kh.stripe);
        h - record::record_size(key.len(), value.len())
    }

    /// The value of `key` in a bare map, read the way the writer finds
    /// keys (index candidates, then the record's hash and key).
    fn value_of(map: &Map, key: &[u8]) -> Option<Vec<u8>> {
        let kh = KeyHash::new(key, 7, map.geo());
        let (head, tail) = map_head_tail(map, kh.stripe);
        Buckets::of(map, &kh)
            .candidates(kh.tag, tail)
            .find_map(|(_, w)| {
                let pos = index::word_pos(w);
                // SAFETY: the test is the only writer of the map.
                let (rh, all) = unsafe { crate::read::record_at(map, kh.stripe, pos, head)? };
                (rh.key(all) == key && rh.verify(all)).then(|| rh.value(all).to_vec())
            })
    }

    #[test]
    fn bare_map_appends_finds_overwrites_and_deletes() {
        let map = bare_map(1 << 20, 2, 4, 1000);
        let p1 = put(&map, b"a", b"one", 1);
        assert_eq!(value_of(&map, b"a").as_deref(), Some(&b"one"[..]));
        let p2 = put(&map, b"a", b"two", 2);
        assert!(p2 > p1, "a new record at a higher position");
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
        let geo = *map.geo();
        let (seg, n) = (geo.segment_size, geo.segments as u64);
        for i in 0..5000u32 {
            let v = vec![i as u8; (i as usize * 37) % 3000];
            put(&map, &i.to_le_bytes(), &v, 10);
            assert_ring(map_head_tail(&map, 0), seg, n, i);
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
        let geo = c.shared().geo;
        let (seg, n) = (geo.segment_size, geo.segments as u64);
        for i in 0..5000u32 {
            let v = vec![i as u8; (i as usize * 37) % 3000];
            c.set(i.to_le_bytes(), &Raw(&v)).unwrap();
            if i % 7 == 0 {
                let _ = c.get::<Raw>((i / 2).to_le_bytes()).unwrap();
            }
            assert_ring(head_tail(&c, 0), seg, n, i);
        }
        let st = c.stats();
        assert!(st.evictions > 0 && st.reinserts > 0, "{st:?}");
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
        let mut found = b.candidates(kh.tag, 0);
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
        let at = sh.geo.data(0, index::word_pos(w)) + record::value_offset(3);
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
