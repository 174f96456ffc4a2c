//! # slotcache
//!
//! A memory-mapped, single-file cache that many processes on one machine
//! share. Reads take no lock and make no system call: they return a guard
//! that points straight into the mapping (zero-copy, `rkyv`-validated).
//! Writes lock only the stripe of keys they touch (chosen by the key hash), with
//! an in-process mutex and a byte-range lock on the file that the kernel
//! releases if the process dies. The file has a fixed size chosen at
//! creation; when it is full, old entries are evicted, and entries that were
//! read get a second chance.
//!
//! The byte layout and every protocol are described in `format.md` at the
//! root of the repository.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("slotcache-doc-lib-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! use slotcache::{Cache, Options, Raw, WriteOptions};
//! use std::time::Duration;
//!
//! let cache = Cache::open(dir.join("app.cache"), Options::new().capacity(32 << 20))?;
//! let minute = WriteOptions::new().ttl(Some(Duration::from_secs(60)));
//! cache.set_opt("greeting", &Raw(b"hello"), &minute)?;
//! assert_eq!(&*cache.get::<Raw>("greeting")?.unwrap(), b"hello");
//!
//! cache.set("answer", &42u64)?;
//! assert_eq!(*cache.get::<u64>("answer")?.unwrap(), 42);
//! # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), slotcache::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Which module owns what. The engine (no module of it names a type of the
// facade, and the imports of `src/` form no cycle: `tests::module_graph`
// checks both):
//
// - `layout`: every offset, size and constant of `format.md`, one
//   `#[repr(C)]` type or codec per table, and the one geometry formula.
// - `map`: the mapping, and the one place offsets become typed views.
// - `index`: key placement and the two buckets of a key.
// - `log`: a stripe's writer — append, evict, reinsert, delete, clear,
//   verify and repair.
// - `read`: the read path — lookup, the pinned read of a record, record
//   decoding shared with the writer, entry metadata.
// - `readers`: reader slots, pins, detached pins, dead-reader liveness.
// - `regen`: regeneration locks and hints.
// - `locks`: OS byte-range locks, the open lock, stripe and batch locks.
// - `open`: create, validate, reset, the registry of open files.
// - `fork`: the fork generation, the atfork handlers, descriptor list.
// - `shared`, `process`: the state of one open file, per file and per
//   process (fork generation); `clock`: the time stamps.
//
// Shared vocabulary: `error`, `options` (with dogpile defaults),
// `codec` (how values are stored). The facade: `cache` (`Cache` and its
// reports), `dogpile` (`get_or_create`), `iter`, `memo`, `guard`, `stats`.

mod cache;
mod clock;
mod codec;
mod dogpile;
mod error;
mod fork;
mod guard;
mod index;
mod iter;
mod layout;
mod locks;
mod log;
mod map;
mod memo;
mod open;
mod options;
mod process;
mod read;
mod readers;
mod regen;
mod shared;
mod stats;
#[cfg(test)]
mod testing;

/// Kept for code that names records through `crate::record`.
#[allow(unused_imports)]
use layout::record;

pub use cache::{Cache, Info, Invalidation, Placement, RepairReport, VerifyReport};
pub use codec::{schema_fingerprint, Checkable, FromView, Raw, Storable, Value, ValueKind};
pub use dogpile::{CreateError, Fetched};
pub use error::{Error, PinHolder, Result};
pub use guard::{Detach, EntryMeta, Guard, OwnedGuard};
pub use iter::{Entry, Iter};
pub use layout::{FORMAT_VERSION, MAX_KEY_LEN};
pub use memo::Memo;
pub use options::{CreateOptions, OnCorrupt, Options, StalePolicy, WriteOptions};
pub use rkyv;
pub use stats::Stats;
