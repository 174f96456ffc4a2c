//! Helpers shared by the integration tests that need a fresh directory, a
//! writer that wraps a stripe's ring, or a child process killed on drop.
#![allow(dead_code)]

use slotcache::{Cache, Error, Options, Raw};
use std::path::{Path, PathBuf};

/// A fresh, empty directory for one test.
pub fn dir(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("slotcache-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes 1500-byte values under `{tag}{i}` until every stripe ring has
/// wrapped about `laps` times, or a write fails.
pub fn churn(c: &Cache, laps: u64, tag: &str) -> Result<(), Error> {
    let val = vec![0xAB; 1500];
    let info = c.info();
    let ring = info.segment_size * info.segments as u64 * info.stripes as u64;
    for i in 0..laps * ring / 1500 + 1 {
        c.set(format!("{tag}{i}"), &Raw(&val))?;
    }
    Ok(())
}

/// A child process that is killed and reaped when dropped, pass or fail.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Overwrites bytes of a file behind the cache's back (the shared mapping
/// sees the change), as damage from outside would.
pub fn patch(path: &Path, off: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Creates a cache file at `path` with `opts`, stores `k` = `v` in it and
/// closes it again: the starting point of the damaged-file tests.
pub fn file_with_one_entry(path: PathBuf, opts: Options) -> PathBuf {
    let c = Cache::open(&path, opts).unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    drop(c);
    path
}

/// A fresh directory for one test, removed when dropped, pass or fail.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates (empty) the directory of [`dir`].
    pub fn new(suite: &str, name: &str) -> TempDir {
        TempDir(dir(suite, name))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
