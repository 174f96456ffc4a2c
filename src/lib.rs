//! # slotcache
//!
//! A memory-mapped, single-file cache that many processes on one machine
//! share. Reads take no lock and make no system call: they return a guard
//! that points straight into the mapping (zero-copy, `rkyv`-validated).
//! Writes lock only the stripe of keys they touch (chosen by the key hash), with
//! an in-process mutex and a byte-range lock on the file that the kernel
//! releases if the process dies. The file has a fixed size chosen at
//! creation; when it is full, old entries are evicted, and entries that were
//! read get a second chance.
//!
//! The byte layout and every protocol are described in `format.md` at the
//! root of the repository.
//!
//! ```
//! # let dir = std::env::temp_dir().join(format!("slotcache-doc-lib-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! use slotcache::{Cache, Options, Raw, WriteOptions};
//! use std::time::Duration;
//!
//! let cache = Cache::open(dir.join("app.cache"), Options::new().capacity(32 << 20))?;
//! let minute = WriteOptions::new().ttl(Some(Duration::from_secs(60)));
//! cache.set_opt("greeting", &Raw(b"hello"), &minute)?;
//! assert_eq!(&*cache.get::<Raw>("greeting")?.unwrap(), b"hello");
//!
//! cache.set("answer", &42u64)?;
//! assert_eq!(*cache.get::<u64>("answer")?.unwrap(), 42);
//! # drop(cache); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), slotcache::Error>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Which module owns what. The engine (no module of it names a type of the
// facade, and the imports of `src/` form no cycle: `tests::module_graph`
// checks both):
//
// - `layout`: every offset, size and constant of `format.md`, one
//   `#[repr(C)]` type or codec per table, and the one geometry formula.
// - `map`: the mapping, and the one place offsets become typed views.
// - `index`: key placement and the two buckets of a key.
// - `log`: a stripe's writer — append, evict, reinsert, delete, clear,
//   verify and repair.
// - `read`: the read path — lookup, the pinned read of a record, record
//   decoding shared with the writer, entry metadata.
// - `readers`: reader slots, pins, detached pins, dead-reader liveness.
// - `regen`: regeneration locks and hints.
// - `locks`: OS byte-range locks, the open lock, stripe and batch locks.
// - `open`: create, validate, reset, the registry of open files.
// - `fork`: the fork generation, the atfork handlers, descriptor list.
// - `shared`, `process`: the state of one open file, per file and per
//   process (fork generation); `clock`: the time stamps.
//
// Shared vocabulary: `error`, `options` (with dogpile defaults),
// `codec` (how values are stored). The facade: `cache` (`Cache` and its
// reports), `dogpile` (`get_or_create`), `iter`, `memo`, `guard`, `stats`,
// `inspect` (reader and stripe listings, raw record writes for tools),
// `regen_lock` (the regeneration lock as public API), `invalidation`
// (when the file was last invalidated), `tiered` (feature `redis`: the
// cache as a near cache in front of Redis).

mod barrier;
mod cache;
mod clock;
mod codec;
mod dogpile;
mod error;
mod fork;
#[cfg(feature = "tokio")]
mod future;
mod guard;
mod index;
mod inspect;
mod invalidation;
mod iter;
mod layout;
mod locks;
mod log;
mod map;
mod memo;
mod open;
mod options;
mod process;
mod read;
mod readers;
mod regen;
mod regen_lock;
mod shared;
mod sketch;
mod stats;
#[cfg(test)]
mod testing;
#[cfg(feature = "redis")]
pub mod tiered;

pub use cache::{Cache, Info, Invalidation, Placement, RepairReport, VerifyReport};
pub use codec::{schema_fingerprint, Checkable, FromView, Raw, Storable, Value, ValueKind};
pub use dogpile::{CreateError, Fetched, OwnedFetched};
pub use error::{Error, PinHolder, Result};
pub use guard::{Detach, EntryMeta, Guard, OwnedGuard};
pub use inspect::{ReaderInfo, StripeStats};
pub use iter::{Entry, Iter};
pub use layout::{FORMAT_VERSION, MAX_KEY_LEN};
pub use memo::Memo;
pub use options::{CreateOptions, OnCorrupt, Options, StalePolicy, WriteOptions};
pub use regen_lock::RegenGuard;
pub use rkyv;
pub use stats::Stats;

/// Test hooks of the write path (not a public promise): see
/// `tests/robust.rs`.
#[doc(hidden)]
pub use log::{stall_at as __stall_at, StallPoint as __StallPoint};

#[cfg(test)]
mod tests {
    //! The module graph of `src/`, parsed from the sources: every
    //! `crate::name` path outside comments and test code (`use` lines,
    //! grouped `use crate::{a, b}` and inline paths alike) is an edge from
    //! the top-level module of the file to module `name` (or, for a name
    //! re-exported at the root, to the module `lib.rs` re-exports it from).

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The engine: none of these may name a module of the facade.
    const ENGINE: &[&str] = &[
        "clock", "fork", "index", "layout", "locks", "log", "map", "open", "process", "read",
        "readers", "regen", "shared",
    ];
    /// The facade: the public handle and what it hands out.
    const FACADE: &[&str] = &[
        "cache",
        "dogpile",
        "guard",
        "inspect",
        "invalidation",
        "iter",
        "memo",
        "regen_lock",
        "stats",
        "tiered",
    ];

    /// The sources of each top-level module (`x.rs`, or every file under
    /// `x/`), `lib.rs` excepted.
    fn modules(src: &Path) -> BTreeMap<String, Vec<String>> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let mut files = Vec::new();
            if p.is_dir() {
                walk(&p, &mut files);
            } else if p.extension().is_some_and(|x| x == "rs") && name != "lib" {
                files.push(std::fs::read_to_string(&p).unwrap());
            } else {
                continue;
            }
            m.entry(name).or_insert_with(Vec::new).extend(files);
        }
        m
    }

    /// `text` without comments and without the items compiled only in
    /// tests (a brace-matched block, or up to a `;`).
    fn code(text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            let line = match line.find("//") {
                Some(i) => &line[..i],
                None => line,
            };
            out.push_str(line);
            out.push('\n');
        }
        while let Some(at) = test_attribute(&out) {
            let rest = &out[at..];
            let (mut depth, mut end) = (0usize, rest.len());
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    ';' if depth == 0 => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.replace_range(at..at + end, "");
        }
        out
    }

    /// Where the first `#[cfg(..)]` attribute of `code` that enables an
    /// item only in tests (`test`, `all(test, ..)`; not `not(test)`) starts.
    fn test_attribute(code: &str) -> Option<usize> {
        code.match_indices("#[cfg(").map(|(i, _)| i).find(|&i| {
            let attr = &code[i..i + code[i..].find(']').unwrap_or(0)];
            attr.contains("test") && !attr.contains("not(test")
        })
    }

    /// The leading identifier of `s`.
    fn ident(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }

    /// Every name `code` reaches through `crate::`.
    fn crate_names(code: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.insert(ident(group[start..i].trim()).to_string());
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.insert(ident(group[start..i].trim()).to_string());
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                names.insert(ident(rest).to_string());
            }
        }
        names
    }

    /// Root names `lib.rs` re-exports, by the module they come from.
    fn reexports(lib: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for line in code(lib).lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let module = ident(rest).to_string();
            let items = rest[module.len()..].trim_start_matches("::");
            for item in items.trim_matches(|c| "{};".contains(c)).split(',') {
                let name = item.split(" as ").last().unwrap().trim();
                m.insert(ident(name).to_string(), module.clone());
            }
        }
        m
    }

    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let roots = reexports(&lib);
        let mods = modules(&src);
        let mut g = BTreeMap::new();
        for (name, files) in &mods {
            let mut deps = BTreeSet::new();
            for f in files {
                for n in crate_names(&code(f)) {
                    let target = if mods.contains_key(&n) {
                        Some(n)
                    } else {
                        roots.get(&n).cloned()
                    };
                    deps.extend(target.filter(|t| t != name));
                }
            }
            g.insert(name.clone(), deps);
        }
        g
    }

    /// A cycle of `g`, if it has one.
    fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            done: &mut BTreeSet<String>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == n) {
                let mut c = path[i..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            if !done.insert(n.to_string()) {
                return None;
            }
            path.push(n.to_string());
            for d in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(d, g, done, path) {
                    return Some(c);
                }
            }
            path.pop();
            None
        }
        let mut done = BTreeSet::new();
        g.keys()
            .find_map(|n| visit(n, g, &mut done, &mut Vec::new()))
    }

    #[test]
    fn module_graph() {
        let g = graph();
        for m in ENGINE.iter().chain(FACADE) {
            assert!(g.contains_key(*m), "no module {m}: update the lists");
        }
        if let Some(c) = cycle(&g) {
            panic!("import cycle: {}", c.join(" -> "));
        }
        for m in ENGINE {
            let bad: Vec<_> = g[*m]
                .iter()
                .filter(|d| FACADE.contains(&d.as_str()))
                .collect();
            assert!(
                bad.is_empty(),
                "engine module {m} names the facade: {bad:?}"
            );
        }
    }

    #[test]
    fn the_checker_sees_cycles_and_grouped_imports() {
        let names = crate_names(&code(
            "use crate::{a, b::{C, D}, e as f};\n// crate::comment\nfn x() { crate::g::h(); }\n\
             #[cfg(test)]\nmod tests { use crate::t; }\n#[cfg(all(test, unix))]\nuse crate::u;\n",
        ));
        assert_eq!(names, ["a", "b", "e", "g"].map(String::from).into());
        let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
            .into_iter()
            .map(|(x, y)| (x.to_string(), [y.to_string()].into()))
            .collect();
        assert_eq!(cycle(&g).unwrap().len(), 4);
    }
}
