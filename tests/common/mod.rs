//! Helpers shared by the integration tests: a temporary directory removed
//! on drop ([`TempDir`]), child processes that re-run the test binary in a
//! role ([`child`], [`child_role`], [`KillOnDrop`]), a writer that wraps a
//! stripe's ring, and damage from outside.
#![allow(dead_code)]

use slotcache::{Cache, Error, Options, Raw};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable that gives a child process its role.
const ROLE: &str = "SLOTCACHE_ROLE";
/// The environment variable that gives a child process its cache file.
const PATH: &str = "SLOTCACHE_PATH";

/// A command that re-runs this test binary as a child process: only the
/// suite's `child_entry` test runs (one thread, output not captured), and
/// [`child_role`] gives it back `role` and `path`. Add environment, pipes
/// and `spawn` as needed; wrap the child in [`KillOnDrop`].
pub fn child(role: &str, path: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PATH, path)
        .stdin(Stdio::null());
    c
}

/// In a suite's `child_entry` test: the role and the cache file when this
/// process is a child started by [`child`]; `None` in an ordinary test run
/// (the test then does nothing).
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE).ok()?;
    Some((role, PathBuf::from(std::env::var(PATH).unwrap())))
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

/// A fresh, empty directory for one test (`slotcache-{suite}-{pid}-{name}`
/// in the temporary directory), removed when dropped, pass or fail. Derefs
/// to its path: `d.join("c")`.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory, emptied first (a killed run may have left it).
    pub fn new(suite: &str, name: &str) -> TempDir {
        let d =
            std::env::temp_dir().join(format!("slotcache-{suite}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
