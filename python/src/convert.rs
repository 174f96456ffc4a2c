//! Argument conversions (keys, values, sizes, durations) and the mapping
//! of slotcache's errors onto the Python exception hierarchy of
//! `slotcache._errors`.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString};
use std::borrow::Cow;
use std::time::Duration;

/// A key as bytes: `str` (UTF-8) or `bytes`.
pub fn key<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "a slotcache key must be str or bytes, found {}",
        type_name(obj)
    )))
}

/// A value as bytes: `bytes` borrowed; `bytearray`, `memoryview` and other
/// buffers copied.
pub fn value<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "a slotcache value must be bytes (or another bytes-like object), found str: encode it first",
        ));
    }
    // Only buffers (bytearray, memoryview, array, ...): `bytes(12)` would
    // make twelve zero bytes of an int.
    match pyo3::types::PyMemoryView::from(obj).and_then(|m| m.call_method0("tobytes")) {
        Ok(b) => Ok(Cow::Owned(b.cast::<PyBytes>()?.as_bytes().to_vec())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a slotcache value must be bytes (or another bytes-like object), found {}",
            type_name(obj)
        ))),
    }
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A size in bytes: an int, or a string like "1GiB", "512 MiB", "64M",
/// "100MB" (binary units for "Ki/Mi/Gi/Ti" and the one-letter forms,
/// decimal for "kB/MB/GB/TB").
pub fn size(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    if let Ok(n) = obj.extract::<i64>() {
        if obj.is_instance_of::<pyo3::types::PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "{what} must be an int or a size string like \"1GiB\", found bool"
            )));
        }
        return u64::try_from(n)
            .map_err(|_| PyValueError::new_err(format!("{what} must be at least 0, found {n}")));
    }
    let Ok(s) = obj.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int or a size string like \"1GiB\", found {}",
            type_name(obj)
        )));
    };
    let s = s.to_str()?;
    parse_size(s).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{what}: expected a size like 1073741824, \"1GiB\", \"512MiB\", \"64M\" or \"100MB\", found {s:?}"
        ))
    })
}

fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.replace('_', "").parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return None,
    };
    let v = num * mult;
    (v.is_finite() && (0.0..1.8e19).contains(&v)).then_some(v as u64)
}

/// A duration: seconds (int or float) or a `datetime.timedelta`.
pub fn duration(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Duration> {
    let secs: f64 = if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be seconds (int or float) or a datetime.timedelta, found bool"
        )));
    } else if let Ok(f) = obj.extract::<f64>() {
        f
    } else if obj.hasattr("total_seconds")? {
        obj.call_method0("total_seconds")?.extract()?
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be seconds (int or float) or a datetime.timedelta, found {}",
            type_name(obj)
        )));
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0, found {secs}"
        )));
    }
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

pub fn opt_duration(obj: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Duration>> {
    match obj {
        None => Ok(None),
        Some(o) if o.is_none() => Ok(None),
        Some(o) => duration(o, what).map(Some),
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(ERRORS
        .get_or_try_init(py, || py.import("slotcache._errors").map(Bound::unbind))?
        .bind(py))
}

/// Raises the Python exception class `name` of `slotcache._errors`.
pub fn raise(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match errors(py).and_then(|m| m.getattr(name)) {
        Ok(cls) => match cls.call1((msg,)) {
            Ok(inst) => PyErr::from_value(inst),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// The Python exception of a slotcache error (message unchanged: it says
/// what was expected and what was found).
pub fn err(py: Python<'_>, e: slotcache::Error) -> PyErr {
    use slotcache::Error as E;
    let name = match &e {
        E::Io { op, path, source } => {
            // OSError(errno, strerror, filename) picks the natural subclass
            // (FileNotFoundError, IsADirectoryError, PermissionError, ...).
            let msg = format!("{op}: {source}");
            let args = (
                source.raw_os_error().unwrap_or(0),
                msg,
                path.to_string_lossy().into_owned(),
            );
            return match py.get_type::<pyo3::exceptions::PyOSError>().call1(args) {
                Ok(inst) => PyErr::from_value(inst),
                Err(e) => e,
            };
        }
        E::NotSlotcache { .. } => "NotACacheFile",
        E::UnsupportedVersion {
            expected, found, ..
        } if found > expected => "NewerFormat",
        E::UnsupportedVersion { .. }
        | E::SizeMismatch { .. }
        | E::CorruptHeader { .. }
        | E::FormatFlags { .. } => "FileDamaged",
        E::InvalidOptions { .. } => "InvalidOptions",
        E::ReadOnly { .. } => "ReadOnly",
        E::KeyTooLarge { .. } => "KeyTooLarge",
        E::ValueTooLarge { .. } => "ValueTooLarge",
        E::Pinned { .. } => "Pinned",
        E::Reentrant { .. } => "Reentrant",
        E::LockTimeout { .. } => "LockTimeout",
        E::ReadersFull { .. } => "ReadersFull",
        _ => "Error",
    };
    raise(py, name, e.to_string())
}

/// `Result` mapping for slotcache calls.
pub trait IntoPy<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for slotcache::Result<T> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| err(py, e))
    }
}
