//! `slotcache.Cache`: the native API over `str`/`bytes` keys and `bytes`
//! values.

use crate::convert::{self, IntoPy};
use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use slotcache::{
    CreateError, CreateOptions, Invalidation, Options, Raw, StalePolicy, WriteOptions,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one wait with the GIL released lasts before the caller checks
/// for signals (Ctrl-C) and waits again.
pub const SLICE: Duration = Duration::from_millis(50);

#[pyclass(frozen, weakref, module = "slotcache._slotcache", name = "Cache")]
pub struct PyCache {
    pub inner: slotcache::Cache,
    closed: AtomicBool,
    lock_timeout: Option<Duration>,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl PyCache {
    pub fn cache(&self) -> PyResult<&slotcache::Cache> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PyValueError::new_err(
                "operation on a closed slotcache.Cache",
            ));
        }
        Ok(&self.inner)
    }

    pub fn write_options(ttl: Option<Duration>) -> WriteOptions {
        match ttl {
            Some(t) => WriteOptions::new().ttl(Some(t)),
            None => WriteOptions::new(),
        }
    }
}

/// A wait for `key`'s value created by someone else, in GIL-free slices,
/// checking for signals between them: `get_or_try_create_opt` with the
/// lock timeout of one slice, until the caller's own timeout.
fn get_or_create_sliced(
    py: Python<'_>,
    cache: &slotcache::Cache,
    key: &[u8],
    creator: &Bound<'_, PyAny>,
    ttl: Option<Duration>,
    stale: bool,
    lock_timeout: Option<Duration>,
) -> PyResult<Py<PyAny>> {
    let start = Instant::now();
    let creator: Py<PyAny> = creator.clone().unbind();
    loop {
        let slice = match lock_timeout {
            Some(t) => t.saturating_sub(start.elapsed()).min(SLICE),
            None => SLICE,
        };
        let mut opts = CreateOptions::<Raw<Vec<u8>>>::new()
            .lock_timeout(slice)
            .stale_policy(if stale {
                StalePolicy::ServeStale
            } else {
                StalePolicy::Block
            });
        if let Some(t) = ttl {
            opts = opts.ttl(Some(t));
        }
        let r: Result<Vec<u8>, CreateError<PyErr>> = py.detach(|| {
            cache
                .get_or_try_create_opt(key, &opts, || {
                    Python::attach(|py| {
                        let v = creator.bind(py).call0()?;
                        let bytes = convert::value(&v)?;
                        Ok(Raw(bytes.into_owned()))
                    })
                })
                .and_then(|f| f.into_owned().map(|r| r.0).map_err(CreateError::Cache))
        });
        match r {
            Ok(v) => return Ok(PyBytes::new(py, &v).into_any().unbind()),
            Err(CreateError::Creator(e)) => return Err(e),
            Err(CreateError::Cache(slotcache::Error::LockTimeout { .. }))
                if lock_timeout.is_none_or(|t| start.elapsed() < t) =>
            {
                py.check_signals()?;
            }
            Err(CreateError::Cache(slotcache::Error::LockTimeout { key, .. })) => {
                return Err(convert::err(
                    py,
                    slotcache::Error::LockTimeout {
                        key,
                        waited_ms: start.elapsed().as_millis() as u64,
                    },
                ))
            }
            Err(CreateError::Cache(e)) => return Err(convert::err(py, e)),
        }
    }
}

#[pymethods]
impl PyCache {
    #[new]
    #[pyo3(signature = (path, *, capacity=None, max_entries=None, ttl=None, stripes=None,
        regen_stripes=None, lock_timeout=None, read_only=false, create=true,
        segments=None, reader_slots=None, pin_wait=None, mode=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        capacity: Option<&Bound<'_, PyAny>>,
        max_entries: Option<u64>,
        ttl: Option<&Bound<'_, PyAny>>,
        stripes: Option<u32>,
        regen_stripes: Option<u32>,
        lock_timeout: Option<&Bound<'_, PyAny>>,
        read_only: bool,
        create: bool,
        segments: Option<u32>,
        reader_slots: Option<u32>,
        pin_wait: Option<&Bound<'_, PyAny>>,
        mode: Option<u32>,
    ) -> PyResult<Self> {
        let mut o = Options::new().read_only(read_only).create(create);
        if let Some(c) = capacity.filter(|c| !c.is_none()) {
            o = o.capacity(convert::size(c, "capacity")?);
        }
        if let Some(n) = max_entries {
            o = o.max_entries(n);
        }
        if let Some(t) = convert::opt_duration(ttl, "ttl")? {
            o = o.default_ttl(t);
        }
        if let Some(n) = stripes {
            o = o.stripes(n);
        }
        if let Some(n) = regen_stripes {
            o = o.regen_stripes(n);
        }
        let lock_timeout = convert::opt_duration(lock_timeout, "lock_timeout")?;
        if let Some(n) = segments {
            o = o.segments(n);
        }
        if let Some(n) = reader_slots {
            o = o.reader_slots(n);
        }
        if let Some(t) = convert::opt_duration(pin_wait, "pin_wait")? {
            o = o.pin_wait(t);
        }
        if let Some(m) = mode {
            o = o.mode(m);
        }
        let inner = py.detach(|| slotcache::Cache::open(&path, o)).py_err(py)?;
        Ok(PyCache {
            inner,
            closed: AtomicBool::new(false),
            lock_timeout,
        })
    }

    /// The value of `key` as bytes (one copy), or `default`.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = convert::key(key)?;
        match self.cache()?.get::<Raw>(k).py_err(py)? {
            Some(g) => Ok(PyBytes::new(py, &g).into_any()),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let k = convert::key(key)?;
        match self.cache()?.get::<Raw>(k).py_err(py)? {
            Some(g) => Ok(PyBytes::new(py, &g)),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Stores `value` (bytes) under `key`; `ttl` in seconds or a timedelta
    /// (default: the cache's).
    #[pyo3(signature = (key, value, ttl=None))]
    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let k = convert::key(key)?;
        let v = convert::value(value)?;
        let wo = Self::write_options(convert::opt_duration(ttl, "ttl")?);
        let c = self.cache()?;
        let v: &[u8] = &v;
        py.detach(|| c.set_opt(k, &Raw(v), &wo)).py_err(py)
    }

    fn __setitem__(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.set(py, key, value, None)
    }

    /// Removes `key`; returns whether it was present.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = convert::key(key)?;
        let c = self.cache()?;
        py.detach(|| c.delete(k)).py_err(py)
    }

    fn __delitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.delete(py, key)? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    fn contains(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = convert::key(key)?;
        self.cache()?.contains(k).py_err(py)
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(py, key)
    }

    /// A read-only `memoryview` straight into the shared mapping (no
    /// copy), or `None`. The entry's bytes are pinned while the view (or
    /// any buffer made from it) lives: keep views short-lived, as a writer
    /// that needs their space waits for them (`pin_wait`) and then fails.
    fn get_view<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = convert::key(key)?;
        crate::view::get_view(py, self.cache()?, k)
    }

    /// Values of `keys` as a list (None for missing keys).
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let keys: Vec<Bound<'py, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let ks = keys
            .iter()
            .map(convert::key)
            .collect::<PyResult<Vec<&[u8]>>>()?;
        let found = self.cache()?.get_many::<Raw>(&ks).py_err(py)?;
        let out = PyList::empty(py);
        for g in found {
            match g {
                Some(g) => out.append(PyBytes::new(py, &g))?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// Stores `items` (a mapping, or an iterable of (key, value) pairs),
    /// taking each stripe lock once.
    #[pyo3(signature = (items, ttl=None))]
    fn set_many(
        &self,
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = items.cast::<PyDict>()
        {
            d.iter().collect()
        } else {
            items
                .try_iter()?
                .map(|p| p.and_then(|p| p.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>()))
                .collect::<PyResult<_>>()?
        };
        let mut conv = Vec::with_capacity(pairs.len());
        for (k, v) in &pairs {
            conv.push((convert::key(k)?, convert::value(v)?));
        }
        let raws: Vec<(&[u8], Raw<&[u8]>)> = conv.iter().map(|(k, v)| (*k, Raw(&v[..]))).collect();
        let wo = Self::write_options(convert::opt_duration(ttl, "ttl")?);
        let c = self.cache()?;
        py.detach(|| c.set_many_opt(raws.iter().map(|(k, v)| (*k, v)), &wo))
            .py_err(py)
    }

    /// Removes every entry.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.cache()?;
        py.detach(|| c.clear()).py_err(py)
    }

    /// Invalidates every entry created up to now, in every process: hard
    /// (misses) or soft (stale: `get_or_create` serves them while one
    /// caller regenerates).
    #[pyo3(signature = (hard=true))]
    fn invalidate(&self, py: Python<'_>, hard: bool) -> PyResult<()> {
        let how = if hard {
            Invalidation::Hard
        } else {
            Invalidation::Soft
        };
        self.cache()?.invalidate(how).py_err(py)
    }

    /// `(hard, soft)`: when the file was last invalidated each way, in
    /// seconds since the epoch (`time.time()`'s clock), or None.
    fn invalidated_at(&self) -> PyResult<(Option<f64>, Option<f64>)> {
        let c = self.cache()?;
        Ok((
            c.invalidated_at(Invalidation::Hard).map(secs),
            c.invalidated_at(Invalidation::Soft).map(secs),
        ))
    }

    /// The value of `key`, or the bytes `creator()` returns, created by one
    /// caller at a time across threads and processes (dogpile protection):
    /// with a stale value and `stale=True`, other callers get it at once
    /// meanwhile; callers without one wait up to `lock_timeout`. An
    /// exception from `creator` propagates and stores nothing.
    #[pyo3(signature = (key, creator, ttl=None, stale=true, lock_timeout=None))]
    fn get_or_create<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        creator: &Bound<'py, PyAny>,
        ttl: Option<&Bound<'py, PyAny>>,
        stale: bool,
        lock_timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let k = convert::key(key)?;
        let c = self.cache()?;
        // Fast path: a fresh hit needs no lock and no GIL release.
        if let Some(g) = c.get::<Raw>(k).py_err(py)? {
            return Ok(PyBytes::new(py, &g).into_any());
        }
        let ttl = convert::opt_duration(ttl, "ttl")?;
        let lt = convert::opt_duration(lock_timeout, "lock_timeout")?.or(self.lock_timeout);
        get_or_create_sliced(py, c, k, creator, ttl, stale, lt).map(|v| v.into_bound(py))
    }

    /// Counters of every process using the file (`slotcache.Stats`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.cache()?.stats();
        let d = PyDict::new(py);
        macro_rules! put { ($($f:ident),*) => { $( d.set_item(stringify!($f), s.$f)?; )* } }
        put!(
            entries,
            bytes_used,
            capacity,
            hits,
            misses,
            expired,
            inserts,
            evictions,
            index_evictions,
            reinserts,
            deletes,
            corrupt,
            mismatched,
            pin_waits,
            stripe_repairs,
            lock_owner_deaths,
            creates,
            stale_served,
            waits,
            lock_timeouts
        );
        py.import("slotcache._types")?
            .getattr("Stats")?
            .call((), Some(&d))
    }

    /// Geometry of the file (`slotcache.Info`).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.cache()?;
        let i = c.info();
        let d = PyDict::new(py);
        d.set_item("path", c.path().to_string_lossy())?;
        d.set_item("file_size", i.file_size)?;
        d.set_item("stripes", i.stripes)?;
        d.set_item("segments", i.segments)?;
        d.set_item("segment_size", i.segment_size)?;
        d.set_item("index_slots", i.index_slots)?;
        d.set_item("reader_slots", i.reader_slots)?;
        d.set_item("read_only", i.read_only)?;
        d.set_item("created", secs(i.created))?;
        d.set_item("max_value_len", c.max_value_len(16))?;
        py.import("slotcache._types")?
            .getattr("Info")?
            .call((), Some(&d))
    }

    /// Checks the whole file without writing to it (`slotcache.VerifyReport`).
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.cache()?;
        let r = py.detach(|| c.verify()).py_err(py)?;
        let d = PyDict::new(py);
        d.set_item("clean", r.is_clean())?;
        macro_rules! put { ($($f:ident),*) => { $( d.set_item(stringify!($f), r.$f)?; )* } }
        put!(
            records_scanned,
            bad_checksums,
            unreachable_bad_checksums,
            dangling_slots,
            damaged_stripes,
            live_entries,
            entries_drift,
            live_pins
        );
        py.import("slotcache._types")?
            .getattr("VerifyReport")?
            .call((), Some(&d))
    }

    /// The largest value stored under a key of `key_len` bytes.
    #[pyo3(signature = (key_len=16))]
    fn max_value_len(&self, key_len: usize) -> PyResult<usize> {
        Ok(self.cache()?.max_value_len(key_len))
    }

    /// The keys of the live entries (a snapshot list: a lock-free walk).
    #[pyo3(signature = (prefix=None))]
    fn keys<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let c = self.cache()?;
        let out = PyList::empty(py);
        let it = match prefix {
            Some(p) => c.iter_prefix(convert::key(p)?),
            None => c.iter(),
        };
        for e in it {
            let e = e.py_err(py)?;
            out.append(PyBytes::new(py, e.key()))?;
        }
        Ok(out)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py, None)?.try_iter().map(|i| i.into_any())
    }

    fn __len__(&self) -> PyResult<usize> {
        Ok(self.cache()?.stats().entries as usize)
    }

    /// Writes dirty pages to the disk (durability across power loss).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.cache()?;
        py.detach(|| c.flush()).py_err(py)
    }

    #[getter]
    fn path(&self) -> std::path::PathBuf {
        self.inner.path().to_path_buf()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Marks this handle closed (further calls raise ValueError). The
    /// mapping goes when the last handle, view and mutex using it are gone.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
        self.close();
    }

    fn __repr__(&self) -> String {
        format!(
            "<slotcache.Cache {:?}{}>",
            self.inner.path(),
            if self.closed() { " closed" } else { "" }
        )
    }
}
