//! `Cache.get_view`: a read-only `memoryview` straight into the mapping.
//!
//! The exporter holds an [`OwnedGuard`](slotcache::OwnedGuard) (a pin of
//! the process, not of the reading thread), so the view may be used,
//! passed to and dropped on any thread; the pin goes when the exporter
//! does, i.e. when the memoryview and every buffer made from it are gone.

use crate::convert::IntoPy;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;
use slotcache::{OwnedGuard, Raw};
use std::os::raw::{c_int, c_void};

/// The exporter behind a view: one pinned entry.
#[pyclass(frozen, module = "slotcache._slotcache", name = "PinnedEntry")]
pub struct PinnedEntry {
    guard: OwnedGuard<[u8]>,
}

#[pymethods]
impl PinnedEntry {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("null Py_buffer"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "slotcache views are read-only: the bytes live in a mapping shared with other processes",
            ));
        }
        let bytes: &[u8] = &slf.get().guard;
        // SAFETY: `view` is the caller's buffer struct; PyBuffer_FillInfo
        // takes a new reference to `slf` (kept in view.obj), so the pinned
        // bytes outlive every consumer of the buffer.
        let r = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                bytes.as_ptr() as *mut c_void,
                bytes.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if r != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.guard.len()
    }
}

pub fn get_view<'py>(
    py: Python<'py>,
    cache: &slotcache::Cache,
    key: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let Some(g) = cache.get::<Raw>(key).py_err(py)? else {
        return Ok(py.None().into_bound(py));
    };
    let guard = g.detach().py_err(py)?;
    let entry = Bound::new(py, PinnedEntry { guard })?;
    Ok(PyMemoryView::from(entry.as_any())?.into_any())
}
