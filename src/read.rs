//! The read path (format.md §5.1, §5.11): [`lookup`] of a key, the pinned
//! read of one position ([`read_at`], shared by lookups and iteration),
//! the one decoding of a record in the mapping ([`record_at`], shared with
//! the writer), and the metadata of what was read ([`EntryMeta`]).

use crate::clock::now_ns;
use crate::error::Result;
use crate::index::{mark_visited, word_pos, word_ring, Buckets, KeyHash, Tails};
use crate::layout::record::{RecordHeader, RECORD_HEADER};
use crate::layout::{reader, Ring};
use crate::map::Map;
use crate::readers::{count, Pin};
use crate::shared::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Metadata of a stored entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub(crate) created: u64,
    pub(crate) expires: u64,
    /// The clock when the entry was read; 0 when the lookup did not read it
    /// (entries without a TTL), and [`age`](EntryMeta::age) reads it then.
    pub(crate) now: u64,
    pub(crate) soft: u64,
    /// Older than the `expiration` age of the `get_or_create` call that
    /// served it (which then treated it as stale).
    pub(crate) aged: bool,
}

impl EntryMeta {
    /// When the entry was written (wall clock of the writing process).
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.created)
    }

    /// When the entry expires, if it has a TTL.
    pub fn expires(&self) -> Option<SystemTime> {
        (self.expires != 0).then(|| UNIX_EPOCH + Duration::from_nanos(self.expires))
    }

    /// Whether the TTL had run out when the entry was read.
    pub fn is_expired(&self) -> bool {
        self.expires != 0 && self.now >= self.expires
    }

    /// Whether the entry was stale when read: expired, soft-invalidated,
    /// or (for a value served by `get_or_create`) older than that call's
    /// `expiration` age. A stale value is still usable while a fresh one
    /// is made.
    pub fn is_stale(&self) -> bool {
        self.is_expired() || self.created <= self.soft || self.aged
    }

    /// Age of the entry: when it was read for an entry with a TTL, now for
    /// one without (whose lookup reads no clock); zero if the clock went
    /// backwards.
    pub fn age(&self) -> Duration {
        let now = if self.now != 0 { self.now } else { now_ns() };
        Duration::from_nanos(now.saturating_sub(self.created))
    }
}

/// What [`read_at`] found at a position.
pub(crate) enum ReadAt<'c> {
    /// Nothing to read: the position fell below the tail, or the record is
    /// not the one wanted. Try the next slot.
    Skip,
    /// The position or record failed its bounds or checksum checks (the
    /// caller counts it as corrupt if it counts).
    Corrupt,
    /// A pinned, bounds-checked, checksummed record.
    Found(PinnedRecord<'c>),
}

/// A record that cannot change while `pin` lives.
pub(crate) struct PinnedRecord<'c> {
    /// Keeps the record's bytes from being reused.
    pub pin: Pin<'c>,
    /// Its decoded header.
    pub rh: RecordHeader,
    /// The whole record (header, key, padding, value).
    pub all: &'c [u8],
}

/// The record at position `pos` of ring `ring` of stripe `s`, if `pos` holds a
/// well-formed record within its segment that ends at or before `end`:
/// its decoded header and the whole record's bytes (header, key, padding,
/// value). The one decoding of a record in the mapping, for readers (with
/// `end` = the head they loaded) and for the writer of the stripe.
///
/// # Safety
/// No process may write the bytes of a record at `pos` ending at or
/// before `end` while the returned slice lives: the caller either holds
/// the stripe's write lock with `pos` at or above the tail (only a holder
/// of the lock writes the log, and only at the head), or pins `pos` above
/// the tail with `end` at most the head it loaded after the index slot
/// naming `pos` (a published record lies below it).
#[inline]
pub(crate) unsafe fn record_at(
    map: &Map,
    s: u32,
    ring: Ring,
    pos: u64,
    end: u64,
) -> Option<(RecordHeader, &[u8])> {
    let geo = map.geo();
    let rg = geo.ring(ring);
    let room = rg.segment_size - rg.seg_div.rem(pos);
    if room < RECORD_HEADER {
        return None;
    }
    let off = geo.ring_data(s, ring, pos);
    // SAFETY: the caller's contract: nobody writes these bytes (the header
    // of a record below `end`, or the writer's own log) meanwhile.
    let h = unsafe { map.bytes(off, RECORD_HEADER) };
    let rh = RecordHeader::decode(h?, room)?;
    if pos + rh.size() > end {
        return None;
    }
    // SAFETY: as above; `decode` checked the record fits in its segment,
    // and it ends at or before `end`.
    let all = unsafe { map.bytes(off, rh.size())? };
    Some((rh, all))
}

/// The one read path shared by lookups and iteration: pins position `pos`
/// of ring `ring` of stripe `s` (named by an index slot just loaded, followed by an
/// acquire fence), re-checks it is live, decodes the record header within
/// its segment and below the head, asks `want` whether this is the record
/// wanted (before paying for the checksum), and verifies the CRC. Loads
/// nothing else and allocates nothing.
#[inline]
pub(crate) fn read_at<'c>(
    shared: &'c Arc<Shared>,
    s: u32,
    ring: Ring,
    pos: u64,
    want: impl FnOnce(&RecordHeader, &[u8]) -> bool,
) -> Result<ReadAt<'c>> {
    // Loaded after the slot (whose load is followed by an acquire fence),
    // so a published record is always below it. A slot at or past the head
    // can only come from a damaged file: that space is being (re)written,
    // and a pin there would protect nothing.
    let e = shared.map.stripe(s);
    let head = match ring {
        Ring::Main => &e.head,
        Ring::Probation => &e.prob_head,
    }
    .load(Ordering::Relaxed);
    if pos >= head {
        return Ok(ReadAt::Corrupt);
    }
    let Some(pin) = Pin::acquire(shared, ring.id(s, shared.geo.stripes), pos)? else {
        return Ok(ReadAt::Skip);
    };
    // SAFETY: the record at `pos` is published (its slot was loaded with
    // Acquire ordering after the writer's Release store, and `pos` is below
    // the head) and pinned above the tail, so no process writes these bytes
    // while `pin` lives; the `PinnedRecord` we return carries `pin` with
    // the slice.
    let Some((rh, all)) = (unsafe { record_at(&shared.map, s, ring, pos, head) }) else {
        return Ok(ReadAt::Corrupt);
    };
    if !want(&rh, all) {
        return Ok(ReadAt::Skip);
    }
    if !rh.verify(all) {
        return Ok(ReadAt::Corrupt);
    }
    Ok(ReadAt::Found(PinnedRecord { pin, rh, all }))
}

/// The metadata of a record read now, and whether it is hard-invalidated
/// (created at or before the file's `hard_invalidate` time: a miss for
/// every reader). The clock is read only for entries with a TTL.
#[inline]
pub(crate) fn entry_meta(shared: &Shared, rh: &RecordHeader) -> (EntryMeta, bool) {
    let header = shared.map.header();
    let hard = header.hard_invalidate.load(Ordering::Relaxed);
    let soft = header.soft_invalidate.load(Ordering::Relaxed);
    let now = if rh.expires != 0 { now_ns() } else { 0 };
    let meta = EntryMeta {
        created: rh.created,
        expires: rh.expires,
        now: if now == 0 { 0 } else { now.max(rh.created) },
        soft,
        aged: false,
    };
    (meta, rh.created <= hard)
}

/// A record found by a lookup: pinned, checksummed and of the right key.
pub(crate) struct Found<'c> {
    /// Keeps the record's bytes from being reused (and counts for its reader).
    pub pin: Pin<'c>,
    /// Its header.
    pub rh: RecordHeader,
    /// The whole record (header, key, padding, value).
    pub all: &'c [u8],
    /// Its value bytes.
    pub value: &'c [u8],
    /// Its metadata as read.
    pub meta: EntryMeta,
}

/// Finds the key `key` placed at `kh` (a checked key): lock-free, no
/// system call (for a read-write handle), no allocation. Expired and
/// soft-invalidated entries are returned only with `stale_ok`;
/// hard-invalidated ones never. Counts misses, corrupt and expired records
/// (hits are counted by `finish`, which may still refuse the record).
///
/// `finish` turns the record found into the caller's result (a guard, an
/// entry) right here, so that a hit is built once in place rather than
/// moved out through layers of `Result`s and `Option`s.
#[inline]
pub(crate) fn lookup<'c, R>(
    sh: &'c Arc<Shared>,
    key: &[u8],
    kh: &KeyHash,
    stale_ok: bool,
    finish: impl FnOnce(Found<'c>) -> Option<R>,
) -> Result<Option<R>> {
    let tails = Tails::load(&sh.map, kh.stripe);
    let bucket = Buckets::of(&sh.map, kh);
    for (slot, w) in bucket.candidates(kh.tag, tails) {
        // Another key with the same tag is skipped before its checksum.
        let this_key = |rh: &RecordHeader, all: &[u8]| rh.hash == kh.hash && rh.key(all) == key;
        let PinnedRecord { pin, rh, all } =
            match read_at(sh, kh.stripe, word_ring(w), word_pos(w), this_key)? {
                ReadAt::Found(r) => r,
                ReadAt::Skip => continue,
                ReadAt::Corrupt => {
                    count(sh, reader::CORRUPT);
                    continue;
                }
            };
        let (meta, hard) = entry_meta(sh, &rh);
        if hard || (!stale_ok && meta.is_stale()) {
            pin.count(reader::EXPIRED);
            pin.count(reader::MISSES);
            return Ok(None);
        }
        if sh.map.writable() {
            mark_visited(slot, w);
        }
        return Ok(finish(Found {
            pin,
            rh,
            all,
            value: rh.value(all),
            meta,
        }));
    }
    count(sh, reader::MISSES);
    Ok(None)
}
