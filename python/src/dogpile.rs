//! The native half of `slotcache.dogpile`: dogpile.cache's `CachedValue`s
//! stored with a compact binary header, and regeneration-stripe mutexes.
//!
//! Stored value layout (one `Raw` record):
//!
//! ```text
//! tag u8 | rest
//! tag 1: CachedValue, payload pickled:    v u8 | ct f64 LE | pickle bytes
//! tag 2: CachedValue, payload is bytes:   v u8 | ct f64 LE | the bytes
//! tag 3: a serialized value (set_serialized): the bytes as given
//! ```
//!
//! `get` answers NO_VALUE for tag 3 and `get_serialized` for tags 1 and 2,
//! so the two paths never misread each other's values.

use crate::cache::{PyCache, SLICE};
use crate::convert::{self, IntoPy};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use slotcache::{Raw, RegenGuard, WriteOptions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

const TAG_PICKLED: u8 = 1;
const TAG_BYTES: u8 = 2;
const TAG_SERIALIZED: u8 = 3;
const HEADER: usize = 10;

#[pyclass(frozen, module = "slotcache._slotcache", name = "DogpileStore")]
pub struct DogpileStore {
    cache: slotcache::Cache,
    write: WriteOptions,
    cached_value: Py<PyAny>,
    no_value: Py<PyAny>,
    loads: Py<PyAny>,
    dumps: Py<PyAny>,
    ct: Py<PyString>,
    v: Py<PyString>,
    lock_timeout: Option<Duration>,
    nested_timeout: Duration,
}

impl DogpileStore {
    fn decode<'py>(
        &self,
        py: Python<'py>,
        found: Option<slotcache::Guard<'_, [u8]>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let no = || Ok(self.no_value.bind(py).clone());
        let Some(g) = found else { return no() };
        if g.meta().is_expired() || g.len() < HEADER || !matches!(g[0], TAG_PICKLED | TAG_BYTES) {
            return no();
        }
        let tag = g[0];
        let v = g[1];
        let ct = f64::from_le_bytes(g[2..HEADER].try_into().expect("8 bytes"));
        let raw = PyBytes::new(py, &g[HEADER..]);
        drop(g); // no pin while unpickling runs arbitrary code
        let payload = if tag == TAG_BYTES {
            raw.into_any()
        } else {
            self.loads.bind(py).call1((raw,))?
        };
        let meta = PyDict::new(py);
        meta.set_item(self.ct.bind(py), ct)?;
        meta.set_item(self.v.bind(py), v)?;
        self.cached_value.bind(py).call1((payload, meta))
    }

    fn encode(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let t = value.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the slotcache backend stores dogpile CachedValue objects, found {}",
                convert::type_name(value)
            ))
        })?;
        let payload = t.get_item(0)?;
        let meta = t.get_item(1)?;
        let ct: f64 = meta.get_item(self.ct.bind(py))?.extract()?;
        let v: u8 = meta.get_item(self.v.bind(py))?.extract()?;
        let (tag, body) = if let Ok(b) = payload.cast_exact::<PyBytes>() {
            (TAG_BYTES, b.clone())
        } else {
            let p = self.dumps.bind(py).call1((payload, -1))?;
            (TAG_PICKLED, p.cast_into::<PyBytes>()?)
        };
        let body = body.as_bytes();
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(tag);
        out.push(v);
        out.extend_from_slice(&ct.to_le_bytes());
        out.extend_from_slice(body);
        Ok(out)
    }

    fn serialized<'py>(
        &self,
        py: Python<'py>,
        found: Option<slotcache::Guard<'_, [u8]>>,
    ) -> Bound<'py, PyAny> {
        match found {
            Some(g) if !g.meta().is_expired() && g.first() == Some(&TAG_SERIALIZED) => {
                PyBytes::new(py, &g[1..]).into_any()
            }
            _ => self.no_value.bind(py).clone(),
        }
    }

    /// Reads every key of `keys` (stale values included) and turns each
    /// lookup into a Python object with `each`: the one loop of
    /// `get_multi` and `get_serialized_multi`.
    fn each_stale<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        each: impl Fn(Option<slotcache::Guard<'_, [u8]>>) -> PyResult<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let keys: Vec<Bound<'py, PyAny>> = keys.try_iter()?.collect::<PyResult<_>>()?;
        let out = PyList::empty(py);
        for k in &keys {
            let found = self.cache.get_stale::<Raw>(convert::key(k)?).py_err(py)?;
            out.append(each(found)?)?;
        }
        Ok(out)
    }

    fn pairs<'py>(
        mapping: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        let d = mapping.cast::<PyDict>()?;
        Ok(d.iter().collect())
    }

    fn store_many(&self, py: Python<'_>, items: Vec<(Bound<'_, PyAny>, Vec<u8>)>) -> PyResult<()> {
        let keys = items
            .iter()
            .map(|(k, _)| convert::key(k))
            .collect::<PyResult<Vec<_>>>()?;
        let raws: Vec<Raw<&[u8]>> = items.iter().map(|(_, v)| Raw(&v[..])).collect();
        let c = &self.cache;
        let w = &self.write;
        py.detach(|| c.set_many_opt(keys.iter().zip(&raws).map(|(k, v)| (*k, v)), w))
            .py_err(py)
    }
}

#[pymethods]
impl DogpileStore {
    #[new]
    #[pyo3(signature = (cache, cached_value, no_value, *, expiration=None, lock_timeout=None, nested_lock_timeout=None))]
    fn new(
        py: Python<'_>,
        cache: &Bound<'_, PyCache>,
        cached_value: Py<PyAny>,
        no_value: Py<PyAny>,
        expiration: Option<&Bound<'_, PyAny>>,
        lock_timeout: Option<&Bound<'_, PyAny>>,
        nested_lock_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let pickle = py.import("pickle")?;
        let write = PyCache::write_options(convert::opt_duration(expiration, "expiration")?);
        Ok(DogpileStore {
            cache: cache.get().cache()?.clone(),
            write,
            cached_value,
            no_value,
            loads: pickle.getattr("loads")?.unbind(),
            dumps: pickle.getattr("dumps")?.unbind(),
            ct: PyString::intern(py, "ct").unbind(),
            v: PyString::intern(py, "v").unbind(),
            lock_timeout: convert::opt_duration(lock_timeout, "lock_timeout")?,
            nested_timeout: convert::opt_duration(nested_lock_timeout, "nested_lock_timeout")?
                .unwrap_or(Duration::from_secs(5)),
        })
    }

    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let k = convert::key(key)?;
        let found = self.cache.get_stale::<Raw>(k).py_err(py)?;
        self.decode(py, found)
    }

    fn get_multi<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.each_stale(py, keys, |found| self.decode(py, found))
    }

    fn set(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = convert::key(key)?;
        let buf = self.encode(py, value)?;
        let (c, w) = (&self.cache, &self.write);
        py.detach(|| c.set_opt(k, &Raw(&buf[..]), w)).py_err(py)
    }

    fn set_multi(&self, py: Python<'_>, mapping: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = Self::pairs(mapping)?
            .into_iter()
            .map(|(k, v)| Ok((k, self.encode(py, &v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        self.store_many(py, items)
    }

    fn get_serialized<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let found = self.cache.get_stale::<Raw>(convert::key(key)?).py_err(py)?;
        Ok(self.serialized(py, found))
    }

    fn get_serialized_multi<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.each_stale(py, keys, |found| Ok(self.serialized(py, found)))
    }

    fn set_serialized(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let k = convert::key(key)?;
        let v = convert::value(value)?;
        let mut buf = Vec::with_capacity(1 + v.len());
        buf.push(TAG_SERIALIZED);
        buf.extend_from_slice(&v);
        let (c, w) = (&self.cache, &self.write);
        py.detach(|| c.set_opt(k, &Raw(&buf[..]), w)).py_err(py)
    }

    fn set_serialized_multi(&self, py: Python<'_>, mapping: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = Self::pairs(mapping)?
            .into_iter()
            .map(|(k, v)| {
                let v = convert::value(&v)?;
                let mut buf = Vec::with_capacity(1 + v.len());
                buf.push(TAG_SERIALIZED);
                buf.extend_from_slice(&v);
                Ok((k, buf))
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.store_many(py, items)
    }

    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = convert::key(key)?;
        let c = &self.cache;
        py.detach(|| c.delete(k)).py_err(py).map(drop)
    }

    fn delete_multi(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<()> {
        for k in keys.try_iter()? {
            self.delete(py, &k?)?;
        }
        Ok(())
    }

    /// A new mutex over `key`'s regeneration lock (dogpile's `get_mutex`).
    fn mutex(&self, key: &Bound<'_, PyAny>) -> PyResult<RegenMutex> {
        let k = convert::key(key)?.to_vec();
        if k.len() > slotcache::MAX_KEY_LEN {
            return Err(convert::err(
                key.py(),
                slotcache::Error::KeyTooLarge {
                    max: slotcache::MAX_KEY_LEN,
                    found: k.len(),
                },
            ));
        }
        let stripe = self.cache.key_placement(&k).regen_stripe;
        let order = (self.cache.path().to_string_lossy().into_owned(), stripe, k);
        Ok(RegenMutex {
            cache: self.cache.clone(),
            order,
            held: Mutex::new(None),
            lock_timeout: self.lock_timeout,
            nested_timeout: self.nested_timeout,
        })
    }
}

/// A lock's place in the global order: (file path, regeneration stripe,
/// key). format.md §5.9.
type OrderKey = (String, u32, Vec<u8>);

/// Bumped in a fork child (`os.register_at_fork`): guards of an older
/// generation are the parent's.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Regeneration locks each thread took through a `RegenMutex` and that are
/// still held (whoever releases them): the order rule needs them.
/// Each entry shares the guard with its mutex, so that a thread giving up
/// a wait against the lock order can release everything it holds.
type Holding = (u64, OrderKey, SharedGuard);
type SharedGuard = Arc<Mutex<Option<RegenGuard>>>;
type HoldingMap = Option<HashMap<ThreadId, Vec<Holding>>>;
static HOLDINGS: Mutex<HoldingMap> = Mutex::new(None);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn holdings() -> MutexGuard<'static, HoldingMap> {
    HOLDINGS.lock().unwrap_or_else(|p| p.into_inner())
}

fn take(g: &SharedGuard) -> Option<RegenGuard> {
    g.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Releases every regeneration lock the calling thread took through a
/// mutex (their mutexes' `release` then does nothing): "back off and
/// release" of format.md §5.9.
fn release_all_of_this_thread() -> usize {
    let me = std::thread::current().id();
    let mine: Vec<Holding> = holdings()
        .as_mut()
        .and_then(|m| m.remove(&me))
        .unwrap_or_default();
    mine.iter().filter_map(|(_, _, g)| take(g)).count()
}

/// Called in a fork child: the parent's threads and locks are not ours.
#[pyfunction]
pub fn _after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::SeqCst);
    *holdings() = None;
}

struct Held {
    /// `None` once released by a back-off (see `release_all_of_this_thread`).
    guard: SharedGuard,
    generation: u64,
    thread: ThreadId,
    token: u64,
}

impl Held {
    fn current(&self) -> bool {
        self.generation == FORK_GENERATION.load(Ordering::Relaxed)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.current() {
            // The parent's lock: forget it without touching it (the
            // engine's guard does nothing in a fork child either).
            std::mem::forget(take(&self.guard));
            return;
        }
        drop(take(&self.guard));
        if let Some(map) = holdings().as_mut() {
            if let Some(v) = map.get_mut(&self.thread) {
                v.retain(|(t, _, _)| *t != self.token);
                if v.is_empty() {
                    map.remove(&self.thread);
                }
            }
        }
    }
}

/// dogpile.cache's mutex for one key: `threading.Lock` semantics (any
/// thread may release; the same thread asking again waits or, trying,
/// fails) over the key's regeneration lock, across threads and processes.
#[pyclass(frozen, weakref, module = "slotcache._slotcache", name = "RegenMutex")]
pub struct RegenMutex {
    cache: slotcache::Cache,
    order: OrderKey,
    held: Mutex<Option<Held>>,
    lock_timeout: Option<Duration>,
    nested_timeout: Duration,
}

impl RegenMutex {
    fn slot(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, guard: RegenGuard) {
        let me = std::thread::current().id();
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let shared: SharedGuard = Arc::new(Mutex::new(Some(guard)));
        holdings()
            .get_or_insert_with(HashMap::new)
            .entry(me)
            .or_default()
            .push((token, self.order.clone(), shared.clone()));
        let held = Held {
            guard: shared,
            generation: FORK_GENERATION.load(Ordering::Relaxed),
            thread: me,
            token,
        };
        let old = self.slot().replace(held);
        drop(old); // a parent's (fork) guard: forgotten by Held::drop
    }

    /// Whether the calling thread holds a lock at or above this one in the
    /// global order (waiting then could close a cycle).
    fn out_of_order(&self) -> Option<String> {
        let me = std::thread::current().id();
        let h = holdings();
        let mine = h.as_ref()?.get(&me)?;
        mine.iter()
            .map(|(_, o, _)| o)
            .find(|o| **o >= self.order)
            .map(|o| {
                format!(
                    "{:?} (regeneration stripe {})",
                    String::from_utf8_lossy(&o.2),
                    o.1
                )
            })
    }

    fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.order.2).into_owned()
    }
}

#[pymethods]
impl RegenMutex {
    /// Takes the lock: at once or not at all with `wait=False`; otherwise
    /// waiting (GIL released, interruptible) up to the backend's
    /// `lock_timeout` — and, while this thread holds another regeneration
    /// lock ordered at or above this one, at most `nested_lock_timeout`
    /// (format.md §5.9: such a wait could deadlock across processes).
    /// Raises `slotcache.LockTimeout` when a wait times out.
    #[pyo3(signature = (wait=true))]
    fn acquire(&self, py: Python<'_>, wait: bool) -> PyResult<bool> {
        let key = &self.order.2;
        if !wait {
            return match self.cache.regen_try_lock(key).py_err(py)? {
                Some(g) => {
                    self.store(g);
                    Ok(true)
                }
                None => Ok(false),
            };
        }
        let start = Instant::now();
        let nested = self.out_of_order();
        let limit = match (&nested, self.lock_timeout) {
            (Some(_), Some(t)) => Some(t.min(self.nested_timeout)),
            (Some(_), None) => Some(self.nested_timeout),
            (None, t) => t,
        };
        loop {
            let slice = match limit {
                Some(l) => l.saturating_sub(start.elapsed()).min(SLICE),
                None => SLICE,
            };
            let c = &self.cache;
            if let Some(g) = py.detach(|| c.regen_lock(key, Some(slice))).py_err(py)? {
                self.store(g);
                return Ok(true);
            }
            py.check_signals()?;
            if limit.is_some_and(|l| start.elapsed() >= l) {
                let waited = start.elapsed().as_millis();
                let msg = match &nested {
                    Some(other) => format!(
                        "gave up waiting for the regeneration lock of {:?} after {waited} ms: this thread held the regeneration lock of {other}, \
                         and waiting longer against the global lock order (file, stripe, key) could deadlock with another process \
                         (nested_lock_timeout); released the {} regeneration lock(s) this thread held, retry the call",
                        self.key_str(),
                        release_all_of_this_thread()
                    ),
                    None => format!(
                        "timed out after {waited} ms waiting for another caller to create the value of {:?} (lock_timeout)",
                        self.key_str()
                    ),
                };
                return Err(convert::raise(py, "LockTimeout", msg));
            }
        }
    }

    /// Releases the lock; any thread may (dogpile's async creation runner
    /// releases on another thread).
    fn release(&self) -> PyResult<()> {
        let held = self.slot().take();
        match held {
            // Released already by a back-off: nothing to do.
            Some(h) if h.current() => {
                drop(h);
                Ok(())
            }
            _ => Err(PyRuntimeError::new_err(format!(
                "release of the slotcache regeneration mutex of {:?}, which is not held",
                self.key_str()
            ))),
        }
    }

    /// Whether the key's regeneration lock is held (by this mutex, another
    /// mutex, thread or process), without taking it.
    fn locked(&self, py: Python<'_>) -> PyResult<bool> {
        let mine = self
            .slot()
            .as_ref()
            .is_some_and(|h| h.current() && h.guard.lock().is_ok_and(|g| g.is_some()));
        if mine {
            return Ok(true);
        }
        self.cache.regen_is_locked(&self.order.2).py_err(py)
    }

    /// The key's regeneration stripe (locks across processes are per
    /// stripe).
    #[getter]
    fn regen_stripe(&self) -> u32 {
        self.order.1
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release()
    }

    fn __repr__(&self) -> String {
        format!(
            "<slotcache.RegenMutex key={:?} regen_stripe={}>",
            self.key_str(),
            self.order.1
        )
    }
}
