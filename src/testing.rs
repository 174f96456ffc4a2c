//! Helpers of the unit tests: a temporary directory removed on drop, pass
//! or fail ([`TestDir`]), and a bare [`Map`] over anonymous memory laid out
//! by a [`Geometry`] ([`bare_map`]), for testing the index and the log
//! without a file, a `Shared` or a `Cache`.

use crate::error::Result;
use crate::layout::Geometry;
use crate::map::Map;
use crate::readers::{Holder, PinScan};
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test, removed when dropped.
pub(crate) struct TestDir(PathBuf);

impl TestDir {
    /// Creates `slotcache-unit-{name}-{pid}` in the temporary directory
    /// (emptied first, should a killed run have left it).
    pub(crate) fn new(name: &str) -> TestDir {
        let d = std::env::temp_dir().join(format!("slotcache-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TestDir(d)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A writable [`Map`] over zeroed anonymous memory laid out by the plan
/// for these options: an empty cache file that no file backs.
pub(crate) fn bare_map(capacity: u64, stripes: u32, segments: u32, entries: u64) -> Map {
    let geo = Geometry::plan(capacity, stripes, segments, entries, 8).unwrap();
    let raw = memmap2::MmapOptions::new()
        .len(geo.file_size as usize)
        .map_anon()
        .unwrap();
    Map::new(raw.into(), geo, true)
}

/// Readers that never pin anything.
pub(crate) struct NoPins;

impl PinScan for NoPins {
    fn find_pin(&self, _: u32, _: u64, _: u64) -> Result<Option<Holder>> {
        Ok(None)
    }
}
