//! The state every handle to one file in one process shares: [`Shared`]
//! (the mapping, the validated header, the path) and, behind it, the
//! [`Process`] state of the current fork generation. Opening a file and
//! building a `Shared` is `crate::open`'s job.

use crate::error::{Error, Result};
use crate::layout::{Geometry, Header};
use crate::map::Map;
use crate::process::Process;
use std::path::PathBuf;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

/// The descriptor the mapping was made from (Linux: registered for the
/// fork handler), or nothing.
#[cfg(target_os = "linux")]
pub(crate) type Fd = i32;
/// The descriptor the mapping was made from (Linux: registered for the
/// fork handler), or nothing.
#[cfg(not(target_os = "linux"))]
pub(crate) type Fd = ();

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Counters of a read-only handle, which cannot write reader slots.
#[derive(Default)]
pub(crate) struct LocalCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub expired: AtomicU64,
    pub corrupt: AtomicU64,
    pub mismatched: AtomicU64,
}

/// One open cache file in this process: the mapping, the validated header
/// and the per-process lock state. Shared by every [`Cache`](crate::Cache)
/// handle on the same file.
pub(crate) struct Shared {
    /// Unique per `Shared` for the life of the process (thread-local reader
    /// slots are keyed by it).
    pub id: u64,
    /// The path it was opened with.
    pub path: PathBuf,
    /// The mapping.
    pub map: Map,
    /// The validated header.
    pub header: Header,
    /// Copy of `header.geo`, for brevity.
    pub geo: Geometry,
    /// Why writes are refused, if they are.
    pub read_only: Option<&'static str>,
    /// Counters of a read-only handle.
    pub local: LocalCounters,
    /// Points to a `Process` from `Box::into_raw`, freed only in `Drop for
    /// Shared`; a fork child's replacement leaks the parent's (see
    /// `refresh`).
    process: AtomicPtr<Process>,
    /// The descriptor the mapping was made from (registered for fork).
    #[cfg(target_os = "linux")]
    fd: i32,
}

// `Shared` is `Send + Sync` by its fields (the process state behind the
// `AtomicPtr` is itself `Sync`, and nothing is tied to a thread): asserted,
// not claimed.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Shared>();
    assert_send_sync::<Process>();
};

impl Shared {
    /// The state of a file just opened (and registered for fork handling
    /// by the caller, on Linux, as descriptor `fd`).
    pub(crate) fn new(
        path: PathBuf,
        map: Map,
        header: Header,
        read_only: Option<&'static str>,
        file: Arc<std::fs::File>,
        fd: Fd,
    ) -> Shared {
        let geo = header.geo;
        let process = Box::into_raw(Box::new(Process::new(
            file,
            geo.stripes,
            geo.reader_slots,
            header.lock,
        )));
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path,
            map,
            header,
            geo,
            read_only,
            local: LocalCounters::default(),
            process: AtomicPtr::new(process),
            #[cfg(target_os = "linux")]
            fd,
        };
        #[cfg(not(target_os = "linux"))]
        let () = fd;
        shared
    }

    /// The per-process state, rebuilt first if this process is a fork child
    /// of the one that built it.
    #[inline]
    pub(crate) fn process(&self) -> Result<&Process> {
        let p = self.process.load(Ordering::Acquire);
        // SAFETY: `process` always holds a pointer from `Box::into_raw`
        // that is freed only in `Drop for Shared`; replaced pointers are
        // leaked, never freed (see `refresh`). So it is valid for `&self`.
        let pr = unsafe { &*p };
        if pr.generation == crate::fork::generation() {
            return Ok(pr);
        }
        self.refresh(p)
    }

    #[cold]
    fn refresh(&self, old: *mut Process) -> Result<&Process> {
        // SAFETY: see `process`.
        let parent = unsafe { &*old };
        let file = crate::fork::reopen_for_child(&parent.file, self.read_only.is_none())
            .map_err(|e| Error::io("reopening the cache file after fork", &self.path, e))?;
        let fresh = Box::into_raw(Box::new(Process::for_child(
            file,
            self.geo.stripes,
            self.geo.reader_slots,
            self.header.lock,
        )));
        match self
            .process
            .compare_exchange(old, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // The parent's state is leaked on purpose: dropping it would
            // close the parent's description and release its locks.
            // SAFETY: `fresh` came from `Box::into_raw` just above.
            Ok(_) => Ok(unsafe { &*fresh }),
            Err(winner) => {
                // SAFETY: `fresh` was never shared; free it. `winner` is a
                // live pointer installed by another thread.
                unsafe {
                    drop(Box::from_raw(fresh));
                    Ok(&*winner)
                }
            }
        }
    }

    /// `Ok` when the file is open for writing, else [`Error::ReadOnly`]
    /// naming `op`.
    pub(crate) fn writable(&self, op: &'static str) -> Result<()> {
        match self.read_only {
            None => Ok(()),
            Some(why) => Err(Error::ReadOnly {
                path: self.path.clone(),
                op,
                why,
            }),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        crate::fork::unregister_open_file(self.fd, self.map.addr());
        let p = *self.process.get_mut();
        // SAFETY: see `process`; we own the pointer now.
        let pr = unsafe { &*p };
        if pr.generation == crate::fork::generation() {
            // No detached guard is left (each holds this `Shared`): give
            // their reader slot back.
            let slot = pr
                .detached
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .slot
                .take();
            if let Some(i) = slot {
                pr.release_slot(&self.map, i);
            }
            // SAFETY: built in this process by `Box::into_raw`; no other
            // reference exists once `Shared` is being dropped.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}
