//! Statistics, summed on demand from counters that each have one writer:
//! [`Stats`] and its summation over the stripe table and the reader table,
//! and one stripe's counters ([`StripeStats`]).

use crate::map::Map;
use crate::shared::Shared;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a cache file's counters, across every process using it.
///
/// Read counters live in each reader's own slot and write counters in each
/// stripe's entry, so collecting them costs a scan of the reader table and
/// the stripe table, and the read path never writes a shared counter.
/// After a process is killed mid-write, `entries` may be off by the entries
/// that write was touching.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live entries in the index.
    pub entries: u64,
    /// Log bytes between the tails and heads of both rings (live and not
    /// yet reclaimed).
    pub bytes_used: u64,
    /// Bytes of log space (the data region: both rings of every stripe).
    pub capacity: u64,
    /// Lookups that returned a value.
    pub hits: u64,
    /// Lookups that returned nothing (absent, expired, corrupt, other type).
    pub misses: u64,
    /// Entries found expired or invalidated.
    pub expired: u64,
    /// Records written.
    pub inserts: u64,
    /// Entries evicted to make room (log or index full).
    pub evictions: u64,
    /// Of `evictions`, those made because both index buckets a new key may
    /// use were full: the index is too small for the entries (raise
    /// `Options::max_entries`), not the log.
    pub index_evictions: u64,
    /// Entries given a second chance in the main ring: copied forward on
    /// eviction because they had been read since their last pass.
    pub reinserts: u64,
    /// Entries copied from the probation ring to the main ring because
    /// they were read while in probation (format.md §5.4).
    pub promotions: u64,
    /// Entries that left the probation ring unread and left a ghost in
    /// their index slot.
    pub ghosts: u64,
    /// New keys whose ghost was found: written straight to the main ring,
    /// unless the admission sketch refused them (`ghost_rejections`).
    pub ghost_hits: u64,
    /// Of `ghost_hits`, the keys written to the probation ring because the
    /// admission sketch estimated them less frequent than the main ring's
    /// next victim (format.md §5.2).
    pub ghost_rejections: u64,
    /// Additions made to the admission sketches (one per new key written,
    /// plus the hit counts the evictor passes).
    pub sketch_additions: u64,
    /// Bytes copied by reinsertions and promotions: the log's write
    /// amplification (divide by `hits` for bytes rewritten per hit).
    pub rewritten_bytes: u64,
    /// Entries deleted.
    pub deletes: u64,
    /// Records that failed their checksum or bounds checks, or rkyv
    /// validation.
    pub corrupt: u64,
    /// Records of another type than the one asked for.
    pub mismatched: u64,
    /// Writes that had to wait for a reader to release a pinned segment.
    pub pin_waits: u64,
    /// Stripes found damaged (head and tail breaking their invariants,
    /// format.md §2.2) and reset empty: by a write to the stripe, or by
    /// [`Cache::repair`](crate::Cache::repair). Never by
    /// [`Cache::verify`](crate::Cache::verify), which only reports.
    pub stripe_repairs: u64,
    /// Stripe write locks whose owner died holding them (killed in the
    /// middle of a write), found by the next writer, which repaired the
    /// stripe before writing (robust-mutex files, format.md §6; byte-range
    /// locks are released by the kernel without a trace, so this stays 0
    /// in such files).
    pub lock_owner_deaths: u64,
    /// Creator runs of `get_or_create` and friends.
    pub creates: u64,
    /// Stale values served while another caller regenerated.
    pub stale_served: u64,
    /// Callers that waited for another caller's creator.
    pub waits: u64,
    /// Waits that ended with [`Error::LockTimeout`](crate::Error::LockTimeout).
    pub lock_timeouts: u64,
}

/// The counters of one stripe (format.md §2.2), as returned by
/// [`Cache::stripe_stats`](crate::Cache::stripe_stats).
/// [`Cache::stats`](crate::Cache::stats) sums the same words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripeStats {
    /// The stripe's index.
    pub stripe: u32,
    /// Live index slots (approximate after a process died mid-write).
    pub entries: u64,
    /// Log bytes between the stripe's tails and heads (both rings).
    pub bytes_used: u64,
    /// Records written.
    pub inserts: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Entries copied forward on eviction because they had been read.
    pub reinserts: u64,
    /// Entries deleted.
    pub deletes: u64,
    /// Writes that found a live pin on the space to reuse.
    pub pin_waits: u64,
    /// Of `evictions`, those made because both index buckets were full.
    pub index_evictions: u64,
    /// Times the stripe was found damaged and reset empty.
    pub repairs: u64,
    /// Times a writer found the stripe's lock owner dead and repaired the
    /// stripe (see [`Stats::lock_owner_deaths`]).
    pub lock_owner_deaths: u64,
    /// Entries promoted from probation to main.
    pub promotions: u64,
    /// Entries that left probation unread as ghosts.
    pub ghosts: u64,
    /// New keys whose ghost was found.
    pub ghost_hits: u64,
    /// Of `ghost_hits`, those the admission sketch sent to probation.
    pub ghost_rejections: u64,
    /// Additions made to the stripe's admission sketch.
    pub sketch_additions: u64,
    /// Bytes copied by reinsertions and promotions.
    pub rewritten_bytes: u64,
}

/// Reads stripe `s`'s counters (relaxed loads): the one reading of a
/// stripe entry's counters, for [`Cache::stripe_stats`](crate::Cache::stripe_stats)
/// and summed by [`Stats::collect`].
pub(crate) fn stripe_counters(map: &Map, s: u32) -> StripeStats {
    let e = map.stripe(s);
    let a = |w: &AtomicU64| w.load(Ordering::Relaxed);
    StripeStats {
        stripe: s,
        entries: a(&e.entries),
        // Saturating: a damaged file may hold any words here.
        bytes_used: a(&e.head)
            .saturating_sub(a(&e.tail))
            .saturating_add(a(&e.prob_head).saturating_sub(a(&e.prob_tail))),
        inserts: a(&e.inserts),
        evictions: a(&e.evictions),
        reinserts: a(&e.reinserts),
        deletes: a(&e.deletes),
        pin_waits: a(&e.pin_waits),
        index_evictions: a(&e.index_evictions),
        repairs: a(&e.repairs),
        lock_owner_deaths: a(&map.stripe_mutex(s).owner_deaths),
        promotions: a(&e.promotions),
        ghosts: a(&e.ghosts),
        ghost_hits: a(&e.ghost_hits),
        ghost_rejections: a(&e.ghost_rejections),
        sketch_additions: a(&e.sketch_additions),
        rewritten_bytes: a(&e.rewritten_bytes),
    }
}

impl Stats {
    /// Sums the counters of every stripe and every reader slot ever claimed
    /// (below `reader_hwm`) of the file, and the process's own counters of
    /// read-only handles. Relaxed loads: a snapshot of counters that move.
    pub(crate) fn collect(sh: &Shared) -> Stats {
        let (map, geo) = (&sh.map, &sh.geo);
        let a = |w: &AtomicU64| w.load(Ordering::Relaxed);
        let mut st = Stats {
            capacity: geo.stripes as u64 * geo.ring_size(),
            ..Stats::default()
        };
        for s in 0..geo.stripes {
            let c = stripe_counters(map, s);
            st.entries = st.entries.wrapping_add(c.entries);
            st.bytes_used = st.bytes_used.wrapping_add(c.bytes_used);
            st.inserts = st.inserts.wrapping_add(c.inserts);
            st.evictions = st.evictions.wrapping_add(c.evictions);
            st.index_evictions = st.index_evictions.wrapping_add(c.index_evictions);
            st.reinserts = st.reinserts.wrapping_add(c.reinserts);
            st.deletes = st.deletes.wrapping_add(c.deletes);
            st.pin_waits = st.pin_waits.wrapping_add(c.pin_waits);
            st.stripe_repairs = st.stripe_repairs.wrapping_add(c.repairs);
            st.lock_owner_deaths = st.lock_owner_deaths.wrapping_add(c.lock_owner_deaths);
            st.promotions = st.promotions.wrapping_add(c.promotions);
            st.ghosts = st.ghosts.wrapping_add(c.ghosts);
            st.ghost_hits = st.ghost_hits.wrapping_add(c.ghost_hits);
            st.ghost_rejections = st.ghost_rejections.wrapping_add(c.ghost_rejections);
            st.sketch_additions = st.sketch_additions.wrapping_add(c.sketch_additions);
            st.rewritten_bytes = st.rewritten_bytes.wrapping_add(c.rewritten_bytes);
        }
        if (st.entries as i64) < 0 {
            st.entries = 0;
        }
        let hwm = a(&map.header().reader_hwm).min(geo.reader_slots as u64) as u32;
        for i in 0..hwm {
            let r = map.counters(i);
            st.hits = st.hits.wrapping_add(a(&r.hits));
            st.misses = st.misses.wrapping_add(a(&r.misses));
            st.expired = st.expired.wrapping_add(a(&r.expired));
            st.corrupt = st.corrupt.wrapping_add(a(&r.corrupt));
            st.mismatched = st.mismatched.wrapping_add(a(&r.mismatched));
            st.creates = st.creates.wrapping_add(a(&r.creates));
            st.stale_served = st.stale_served.wrapping_add(a(&r.stale_served));
            st.waits = st.waits.wrapping_add(a(&r.waits));
            st.lock_timeouts = st.lock_timeouts.wrapping_add(a(&r.lock_timeouts));
        }
        let l = &sh.local;
        st.hits = st.hits.wrapping_add(a(&l.hits));
        st.misses = st.misses.wrapping_add(a(&l.misses));
        st.expired = st.expired.wrapping_add(a(&l.expired));
        st.corrupt = st.corrupt.wrapping_add(a(&l.corrupt));
        st.mismatched = st.mismatched.wrapping_add(a(&l.mismatched));
        st
    }
}
