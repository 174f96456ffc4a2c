//! `slotcache._slotcache`: the native module of the `slotcache` Python
//! package (see `python/slotcache/`).

use pyo3::prelude::*;

mod cache;
mod convert;
mod dogpile;
mod tiered;
mod view;

/// Declared free-threading compatible (`gil_used = false`): the module's
/// own state is atomics and mutexes, never the GIL.
#[pymodule(gil_used = false)]
fn _slotcache(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<cache::PyCache>()?;
    m.add_class::<view::PinnedEntry>()?;
    m.add_class::<dogpile::DogpileStore>()?;
    m.add_class::<dogpile::RegenMutex>()?;
    m.add_class::<tiered::TieredStore>()?;
    m.add_class::<tiered::TierLease>()?;
    m.add_function(wrap_pyfunction!(dogpile::_after_fork_in_child, m)?)?;
    m.add("MAX_KEY_LEN", slotcache::MAX_KEY_LEN)?;
    m.add("FORMAT_VERSION", slotcache::FORMAT_VERSION)?;
    Ok(())
}
