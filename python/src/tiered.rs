//! `TieredStore`: the native half of the dogpile backend's `redis_url`
//! mode — a [`slotcache::tiered::TieredCache`] over the backend's cache
//! file, with bytes in and out (the Python side pickles), its fleet leases
//! and its stats.

use crate::cache::PyCache;
use crate::convert::{self, IntoPy};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use slotcache::tiered::{Lease, TieredCache, TieredError, TieredOptions};
use std::sync::Mutex;
use std::time::Duration;

/// The Python exception of a tier error: `slotcache.RedisError` for
/// Redis's, the usual mapping for the file's.
fn tier_err(py: Python<'_>, e: TieredError) -> PyErr {
    match e {
        TieredError::Cache(e) => convert::err(py, e),
        e => convert::raise(py, "RedisError", e.to_string()),
    }
}

/// A tiered cache (see the module docs).
#[pyclass(frozen, module = "slotcache._slotcache", name = "TieredStore")]
pub struct TieredStore {
    tier: TieredCache,
}

/// A fleet lease of [`TieredStore::try_lease`]; released at most once.
#[pyclass(frozen, module = "slotcache._slotcache", name = "TierLease")]
pub struct TierLease {
    lease: Mutex<Option<Lease>>,
}

/// Reads a duration option in seconds (or a `timedelta`).
fn secs(v: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Duration>> {
    convert::opt_duration(v, what)
}

#[pymethods]
impl TieredStore {
    #[new]
    #[pyo3(signature = (cache, url, prefix, *, l1_ttl=None, max_stale=None, lease=None, fleet_wait=None, io_timeout=None, retry_interval=None, heartbeat=None, stream_timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cache: &Bound<'_, PyCache>,
        url: &str,
        prefix: &str,
        l1_ttl: Option<&Bound<'_, PyAny>>,
        max_stale: Option<&Bound<'_, PyAny>>,
        lease: Option<&Bound<'_, PyAny>>,
        fleet_wait: Option<&Bound<'_, PyAny>>,
        io_timeout: Option<&Bound<'_, PyAny>>,
        retry_interval: Option<&Bound<'_, PyAny>>,
        heartbeat: Option<&Bound<'_, PyAny>>,
        stream_timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut o = TieredOptions::new(url, prefix);
        let set = |v, what, f: &mut dyn FnMut(Duration)| -> PyResult<()> {
            if let Some(d) = secs(v, what)? {
                f(d);
            }
            Ok(())
        };
        set(l1_ttl, "l1_ttl", &mut |d| o.l1_ttl = d)?;
        set(max_stale, "max_stale", &mut |d| o.max_stale = d)?;
        set(lease, "lease", &mut |d| o.lease = d)?;
        set(fleet_wait, "fleet_wait", &mut |d| o.fleet_wait = d)?;
        set(io_timeout, "io_timeout", &mut |d| o.io_timeout = d)?;
        set(retry_interval, "retry_interval", &mut |d| {
            o.retry_interval = d
        })?;
        set(heartbeat, "heartbeat", &mut |d| o.heartbeat = d)?;
        set(stream_timeout, "stream_timeout", &mut |d| {
            o.stream_timeout = d
        })?;
        let l1 = cache.get().cache()?.clone();
        let tier = py
            .detach(|| TieredCache::open(l1, o))
            .map_err(|e| tier_err(py, e))?;
        Ok(TieredStore { tier })
    }

    /// The value of `key` (L1, then Redis), or `None`.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let k = convert::key(key)?;
        let t = &self.tier;
        let v = py
            .detach(|| t.get(k).map(|o| o.map(|v| v.to_vec())))
            .py_err(py)?;
        Ok(v.map(|v| PyBytes::new(py, &v)))
    }

    /// Writes through to Redis and L1 (`ttl` in seconds; default the
    /// tier's `l1_ttl`); voids any lease on the key.
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
        let ttl = secs(ttl, "ttl")?;
        let t = &self.tier;
        py.detach(|| t.set(k, &v, ttl)).map_err(|e| tier_err(py, e))
    }

    /// Keeps `value` in this host's file only, unverified (Redis down).
    #[pyo3(signature = (key, value, ttl=None))]
    fn keep_local(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let k = convert::key(key)?;
        let v = convert::value(value)?;
        let ttl = secs(ttl, "ttl")?;
        let t = &self.tier;
        py.detach(|| t.keep_local(k, &v, ttl)).py_err(py)
    }

    /// Deletes from Redis and L1; voids any lease on the key.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = convert::key(key)?;
        let t = &self.tier;
        py.detach(|| t.delete(k)).map_err(|e| tier_err(py, e))
    }

    /// The fleet lease of `key`, or `None` when another creator holds it.
    /// Raises `RedisError` when Redis is unreachable.
    fn try_lease(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Option<TierLease>> {
        let k = convert::key(key)?;
        let t = &self.tier;
        let l = py.detach(|| t.try_lease(k)).map_err(|e| tier_err(py, e))?;
        Ok(l.map(|l| TierLease {
            lease: Mutex::new(Some(l)),
        }))
    }

    /// The lease holder's fill: whether it was written (false: a writer
    /// voided the lease, or it expired).
    #[pyo3(signature = (lease, value, ttl=None))]
    fn set_leased(
        &self,
        py: Python<'_>,
        lease: &Bound<'_, TierLease>,
        value: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let v = convert::value(value)?;
        let ttl = secs(ttl, "ttl")?;
        let slot = lease.get().lease.lock().unwrap_or_else(|p| p.into_inner());
        let Some(l) = slot.as_ref() else {
            return Ok(false);
        };
        let t = &self.tier;
        py.detach(|| t.set_leased(l, &v, ttl))
            .map_err(|e| tier_err(py, e))
    }

    /// Gives the lease back (once; later calls do nothing).
    fn release_lease(&self, py: Python<'_>, lease: &Bound<'_, TierLease>) -> PyResult<()> {
        let taken = lease
            .get()
            .lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(l) = taken else { return Ok(()) };
        let t = &self.tier;
        py.detach(|| t.release_lease(l))
            .map_err(|e| tier_err(py, e))
    }

    /// Whether this host's invalidation stream is up.
    fn stream_up(&self) -> bool {
        self.tier.stream_up()
    }

    /// This process's tier counters (`slotcache::tiered::TierStats`) as a
    /// dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.tier.stats();
        let d = PyDict::new(py);
        for (name, v) in [
            ("l1_hits", s.l1_hits),
            ("l2_hits", s.l2_hits),
            ("l2_misses", s.l2_misses),
            ("l2_errors", s.l2_errors),
            ("fills", s.fills),
            ("fills_refused", s.fills_refused),
            ("leases_won", s.leases_won),
            ("leases_lost", s.leases_lost),
            ("leases_voided", s.leases_voided),
            ("creates", s.creates),
            ("creates_degraded", s.creates_degraded),
            ("stale_served", s.stale_served),
            ("epoch_changes", s.epoch_changes),
            ("invalidations", s.invalidations),
            ("flushes", s.flushes),
            ("epoch", s.epoch),
        ] {
            d.set_item(name, v)?;
        }
        d.set_item("subscriber", s.subscriber)?;
        Ok(d)
    }
}
