//! The clock every timestamp in the file uses.

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`, read through the
/// vDSO on Linux: no system call). Timestamps are compared across
/// processes and must survive reboots (format.md §1, "Clock").
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
