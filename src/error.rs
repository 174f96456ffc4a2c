//! The one error type of the crate.
//!
//! Every variant says what was expected and what was found, so that a
//! message in a log is enough to act on.

use std::path::PathBuf;

/// Everything that can go wrong in slotcache.
///
/// Lookups never fail because of a bad *record*: a corrupt record, a record
/// of another type or an expired record is a miss (and is counted in
/// [`Stats`](crate::Stats)). Errors are for bad inputs, bad files and the
/// operating system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} on {path}: {source}")]
    Io {
        /// What slotcache was doing.
        op: &'static str,
        /// The cache file.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: std::io::Error,
    },

    /// The file exists but does not start with slotcache's magic bytes.
    #[error("{path} is not a slotcache file: expected magic {expected:02x?}, found {found:02x?}")]
    NotSlotcache {
        /// The file.
        path: PathBuf,
        /// The magic slotcache writes.
        expected: [u8; 8],
        /// The first eight bytes of the file.
        found: [u8; 8],
    },

    /// The file was written by a format version this build cannot read.
    #[error("{path} has format version {found}, this build of slotcache reads version {expected}{hint}",
        hint = if *found > *expected { " (the file is newer: upgrade slotcache or use another path)" } else { " (the file is older: delete it or use another path)" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version this build reads and writes.
        expected: u32,
        /// The version stored in the file.
        found: u32,
    },

    /// The file is shorter or longer than its header says.
    #[error("{path} is {found} bytes long but its header describes {expected} bytes (truncated or extended by another program)")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The size the header records.
        expected: u64,
        /// The size of the file on disk.
        found: u64,
    },

    /// A header field is out of range or inconsistent with the others.
    #[error("{path}: corrupt header field `{field}`: expected {expected}, found {found}")]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// The field that failed validation.
        field: &'static str,
        /// What a valid file has there.
        expected: String,
        /// What this file has there.
        found: String,
    },

    /// The file was made with rkyv format flags (endianness, pointer width,
    /// alignment) that differ from this build's.
    #[error(
        "{path}: archived values use rkyv format flags {found:#x}, this build uses {expected:#x}"
    )]
    FormatFlags {
        /// The file.
        path: PathBuf,
        /// The flags of this build.
        expected: u32,
        /// The flags stored in the file.
        found: u32,
    },

    /// An option is out of range, or the options do not fit together.
    #[error("invalid option `{option}`: expected {expected}, found {found}")]
    InvalidOptions {
        /// The option.
        option: &'static str,
        /// The accepted range.
        expected: String,
        /// The value given.
        found: String,
    },

    /// The cache was opened read-only, so it cannot be written.
    #[error("{path} is open read-only ({why}): `{op}` needs write access")]
    ReadOnly {
        /// The file.
        path: PathBuf,
        /// The operation that was refused.
        op: &'static str,
        /// Why the cache is read-only.
        why: &'static str,
    },

    /// The key is longer than the format allows.
    #[error("key is {found} bytes long; the maximum key length is {max} bytes")]
    KeyTooLarge {
        /// The limit ([`MAX_KEY_LEN`](crate::MAX_KEY_LEN)).
        max: usize,
        /// The length of the key given.
        found: usize,
    },

    /// The value does not fit in one segment of the log.
    #[error("value is {found} bytes long; with this key the largest value this cache stores is {max} bytes (segment size {segment_size} bytes: raise the capacity or lower the stripe count)")]
    ValueTooLarge {
        /// The largest value that fits with the key given.
        max: usize,
        /// The length of the value given.
        found: usize,
        /// The segment size of the file.
        segment_size: u64,
    },

    /// Space the write had to reuse is held by a live read guard for longer
    /// than [`Options::pin_wait`](crate::Options::pin_wait).
    #[error("stripe {stripe}: the log segment to reuse is pinned by a live read guard (reader slot {reader}{who}) after waiting {waited_ms} ms; drop long-lived guards or use get_owned")]
    Pinned {
        /// The stripe whose log is full.
        stripe: u32,
        /// The reader slot that holds the pin.
        reader: u32,
        /// How long the writer waited.
        waited_ms: u64,
        /// Extra detail.
        who: &'static str,
    },

    /// `get_or_create` was called for a key from inside that key's own
    /// creator (on the same thread).
    #[error("get_or_create re-entered for key {key:?} from inside its own creator; that would wait for itself forever")]
    Reentrant {
        /// The key (lossy UTF-8).
        key: String,
    },

    /// Waiting for another caller's creator of a missing value took longer
    /// than the lock timeout.
    #[error("timed out after {waited_ms} ms waiting for another caller to create the value of {key:?} (lock_timeout)")]
    LockTimeout {
        /// The key (lossy UTF-8).
        key: String,
        /// How long the caller waited.
        waited_ms: u64,
    },

    /// A value could not be serialized with rkyv.
    #[error("serializing the value failed: {0}")]
    Serialize(String),

    /// A value could not be deserialized (only from `get_owned`).
    #[error("deserializing the value failed: {0}")]
    Deserialize(String),

    /// Every reader slot of the file is taken by a live thread.
    #[error("all {slots} reader slots of {path} are held by live threads; reopen the file with a larger `reader_slots` option")]
    ReadersFull {
        /// The file.
        path: PathBuf,
        /// The number of slots in the file.
        slots: u32,
    },

    /// A stripe has written so much data that its 55-bit position space is
    /// used up (about 32 PiB per stripe).
    #[error("stripe {stripe} has exhausted its position space; recreate the cache file")]
    PositionsExhausted {
        /// The stripe.
        stripe: u32,
    },
}

/// `Result` with slotcache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this open error means a damaged (or older) slotcache file,
    /// which [`OnCorrupt::Reset`](crate::OnCorrupt::Reset) may replace.
    pub(crate) fn is_damage(&self) -> bool {
        match self {
            Error::CorruptHeader { .. }
            | Error::SizeMismatch { .. }
            | Error::FormatFlags { .. } => true,
            Error::UnsupportedVersion {
                expected, found, ..
            } => found < expected,
            _ => false,
        }
    }

    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
