//! Byte-range lock offsets (format.md §6). They lie far beyond the end of
//! any file, so they never cover data (this matters on Windows, where
//! locks are mandatory).

/// Base of every lock byte.
pub const BASE: u64 = 1 << 62;
/// Stripe write lock `s` is at `WRITE + s`.
pub const WRITE: u64 = BASE;
/// Regeneration lock `r` is at `REGEN + r`.
pub const REGEN: u64 = BASE + (1 << 32);
/// Liveness lock of reader slot `i` is at `LIVE + i`.
pub const LIVE: u64 = BASE + (2 << 32);
/// Read-only pins: segment `g` of ring id `r` (format.md §2.3) is at
/// `RO_PIN + r * segments + g`.
pub const RO_PIN: u64 = BASE + (3 << 32);
/// Windows only: the byte that serialises creating and validating the
/// file (Unix uses a whole-file `flock`, which is independent of these
/// byte-range locks; Windows' whole-file lock would cover them all).
#[cfg_attr(not(windows), allow(dead_code))]
pub const OPEN: u64 = BASE + (4 << 32);
/// `slotcache::tiered` (Linux): the lock that elects the host's
/// invalidation subscriber (format.md §5.12).
#[allow(dead_code)]
pub const TIERED_ELECT: u64 = BASE + (5 << 32);
