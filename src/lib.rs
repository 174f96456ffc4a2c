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

mod cache;
mod codec;
mod dogpile;
mod error;
#[cfg(feature = "tokio")]
mod future;
mod guard;
mod index;
mod inspect;
mod invalidation;
mod iter;
mod layout;
mod locks;
mod log;
mod map;
mod memo;
mod options;
mod process;
mod readers;
mod record;
mod regen;
mod regen_lock;
mod shared;
mod stats;
#[cfg(feature = "redis")]
pub mod tiered;

pub use cache::{Cache, Info, Invalidation, Placement, RepairReport, VerifyReport};
pub use codec::{schema_fingerprint, Checkable, FromView, Raw, Storable, Value, ValueKind};
pub use dogpile::{CreateError, Fetched, OwnedFetched};
pub use error::{Error, PinHolder, Result};
pub use guard::{Detach, EntryMeta, Guard, OwnedGuard};
pub use inspect::{ReaderInfo, StripeStats};
pub use iter::{Entry, Iter};
pub use layout::{FORMAT_VERSION, MAX_KEY_LEN};
pub use memo::Memo;
pub use options::{CreateOptions, OnCorrupt, Options, StalePolicy, WriteOptions};
pub use regen_lock::RegenGuard;
pub use rkyv;
pub use stats::Stats;
