//! Statistics, summed on demand from counters that each have one writer.

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
    /// Log bytes between the tails and heads (live and not yet reclaimed).
    pub bytes_used: u64,
    /// Bytes of log space (the data region).
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
    /// Entries given a second chance: copied forward on eviction because
    /// they had been read.
    pub reinserts: u64,
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
    /// Creator runs of `get_or_create` and friends.
    pub creates: u64,
    /// Stale values served while another caller regenerated.
    pub stale_served: u64,
    /// Callers that waited for another caller's creator.
    pub waits: u64,
    /// Waits that ended with [`Error::LockTimeout`](crate::Error::LockTimeout).
    pub lock_timeouts: u64,
}
