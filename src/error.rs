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

    /// The file's stripe write locks are of a kind this process cannot
    /// take (format.md §6): robust mutexes laid out by another C library,
    /// architecture or platform.
    #[error("{path} uses {file_uses}, but this process supports {supported}: write to it from a process built for the same platform and C library, open it read-only, or remove it and let this process recreate it")]
    StripeLockKind {
        /// The file.
        path: PathBuf,
        /// The lock kind the file's header records.
        file_uses: String,
        /// What this process can take.
        supported: String,
    },

    /// A stripe's robust mutex is unusable (format.md §6): not
    /// recoverable (`ENOTRECOVERABLE`: a process found its owner dead and
    /// released it without marking it consistent, which slotcache never
    /// does), or its bytes were damaged from outside.
    #[error("the write lock of stripe {stripe} of {path} is unusable ({why}): remove the file and let the cache be recreated")]
    StripeLockDamaged {
        /// The file.
        path: PathBuf,
        /// The stripe.
        stripe: u32,
        /// What was found.
        why: &'static str,
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
    /// than [`Options::pin_wait`](crate::Options::pin_wait) (at once when
    /// the guard belongs to the writing thread).
    #[error("stripe {stripe}: the log segment to reuse is pinned by a live read guard ({holder}) after waiting {waited_ms} ms; drop long-lived guards or use get_owned")]
    Pinned {
        /// The stripe whose log is full.
        stripe: u32,
        /// Who holds the pin.
        holder: PinHolder,
        /// How long the writer waited.
        waited_ms: u64,
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
    #[error("serializing the value failed: {source}")]
    Serialize {
        /// rkyv's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A value could not be deserialized (only when an owned copy is made:
    /// [`Cache::get_owned`](crate::Cache::get_owned),
    /// [`Fetched::into_owned`](crate::Fetched::into_owned)).
    #[error("deserializing the value failed: {source}")]
    Deserialize {
        /// rkyv's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A creator broke its contract: a
    /// [`get_or_create_many`](crate::Cache::get_or_create_many) creator
    /// returned a number of values other than the number of keys it was
    /// given. Nothing was stored; the regeneration locks were released.
    #[error("the creator of {op} broke its contract: expected {expected}, found {found}")]
    CreatorContract {
        /// The entry point whose creator it was.
        op: &'static str,
        /// What the creator had to return.
        expected: String,
        /// What it returned.
        found: String,
    },

    /// [`get_or_create_many`](crate::Cache::get_or_create_many) gave up on
    /// keys whose values disappeared (evicted, deleted, or refused by
    /// `should_cache`) between being found or created and being read back,
    /// in every round.
    #[error("get_or_create_many: the values of {keys} key(s) (first: {first_key:?}) disappeared between being found or created and being read back, in each of {rounds} rounds; expected them to stay in the cache until the batch ends (evicted by other writers, deleted, or refused by should_cache: raise the capacity or return them from the creator's results instead)")]
    ValuesDisappeared {
        /// How many keys were left unresolved.
        keys: usize,
        /// The first of them (lossy UTF-8).
        first_key: String,
        /// How many rounds were made.
        rounds: u32,
    },

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

/// Who holds the pin of an [`Error::Pinned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PinHolder {
    /// A live thread (of this or another process) holding a guard, through
    /// this reader slot.
    Reader(u32),
    /// The writing thread itself holds a guard in this reader slot: waiting
    /// would wait for itself, so the write failed at once.
    CallingThread(u32),
    /// A process that opened the file read-only (its pins are shared locks,
    /// not reader slots).
    ReadOnlyProcess,
}

impl std::fmt::Display for PinHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinHolder::Reader(i) => write!(f, "reader slot {i}"),
            PinHolder::CallingThread(i) => {
                write!(f, "reader slot {i}, held by the calling thread itself")
            }
            PinHolder::ReadOnlyProcess => f.write_str("held by a read-only process"),
        }
    }
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

    /// Builds an [`Error::Serialize`] from rkyv's error.
    pub(crate) fn serialize(e: rkyv::rancor::Error) -> Self {
        Error::Serialize {
            source: Box::new(e),
        }
    }

    /// Builds an [`Error::Deserialize`] from rkyv's error.
    pub(crate) fn deserialize(e: rkyv::rancor::Error) -> Self {
        Error::Deserialize {
            source: Box::new(e),
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
