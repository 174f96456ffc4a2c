//! Real cache traces for hit-ratio measurements, read once per run.
//!
//! The traces live in a directory named by the environment variable
//! `SLOTCACHE_TRACES`, by default `../shared/traces` relative to the
//! workspace root (the directory above `benches/`). Two formats:
//!
//! - ARC traces (Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead
//!   Replacement Cache", USENIX FAST 2003): `NAME.lis.zst`, zstd-compressed
//!   text, one request run per line, `start count x y`: `count` consecutive
//!   block ids from `start` (the last two fields are unused).
//! - LIRS traces (Jiang and Zhang, "LIRS: An Efficient Low Inter-reference
//!   Recency Set Replacement Policy", SIGMETRICS 2002): `lirs-NAME.trace.gz`,
//!   gzip text, one block id per line.
//!
//! A trace that is missing or unreadable is skipped loudly (a line on
//! stderr); the caller decides what a run without it means.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// How a trace file is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// zstd text, `start count x y` per line.
    Arc,
    /// gzip text, one id per line.
    Lirs,
}

/// A trace known to the benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct TraceSpec {
    /// Short name in tables and file names.
    pub name: &'static str,
    /// File name inside the traces directory.
    pub file: &'static str,
    /// Encoding.
    pub format: Format,
}

/// Every trace the benchmarks replay: the three ARC traces, then the three
/// LIRS traces.
pub const TRACES: [TraceSpec; 6] = [
    TraceSpec {
        name: "OLTP",
        file: "OLTP.lis.zst",
        format: Format::Arc,
    },
    TraceSpec {
        name: "P3",
        file: "P3.lis.zst",
        format: Format::Arc,
    },
    TraceSpec {
        name: "P6",
        file: "P6.lis.zst",
        format: Format::Arc,
    },
    TraceSpec {
        name: "loop",
        file: "lirs-loop.trace.gz",
        format: Format::Lirs,
    },
    TraceSpec {
        name: "multi1",
        file: "lirs-multi1.trace.gz",
        format: Format::Lirs,
    },
    TraceSpec {
        name: "sprite",
        file: "lirs-sprite.trace.gz",
        format: Format::Lirs,
    },
];

/// A decoded trace: the request ids in order.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The trace's short name.
    pub name: &'static str,
    /// Requested ids, in order.
    pub ids: Vec<u64>,
}

impl Trace {
    /// Number of distinct ids (the trace's footprint).
    pub fn distinct(&self) -> usize {
        let mut v = self.ids.clone();
        v.sort_unstable();
        v.dedup();
        v.len()
    }
}

/// The traces directory: `$SLOTCACHE_TRACES`, or `../shared/traces`
/// relative to the workspace root.
pub fn traces_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLOTCACHE_TRACES") {
        return PathBuf::from(d);
    }
    // CARGO_MANIFEST_DIR is `benches/`; its parent is the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("..")
        .join("shared")
        .join("traces")
}

/// Reads trace `spec` from `dir`, keeping at most `limit` requests. Returns
/// `None`, after saying why on stderr, if the file is missing or cannot be
/// decoded.
pub fn load(dir: &Path, spec: &TraceSpec, limit: Option<usize>) -> Option<Trace> {
    let path = dir.join(spec.file);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "slotcache bench: SKIPPING trace {}: cannot open {}: {e} (set SLOTCACHE_TRACES \
                 to the directory holding the traces)",
                spec.name,
                path.display()
            );
            return None;
        }
    };
    let reader: Box<dyn Read> = match spec.format {
        Format::Arc => match ruzstd::decoding::StreamingDecoder::new(BufReader::new(file)) {
            Ok(d) => Box::new(d),
            Err(e) => {
                eprintln!(
                    "slotcache bench: SKIPPING trace {}: not zstd: {e}",
                    spec.name
                );
                return None;
            }
        },
        Format::Lirs => Box::new(flate2::read::GzDecoder::new(BufReader::new(file))),
    };
    match parse(
        BufReader::with_capacity(1 << 20, reader),
        spec.format,
        limit,
    ) {
        Ok(ids) => Some(Trace {
            name: spec.name,
            ids,
        }),
        Err(e) => {
            eprintln!("slotcache bench: SKIPPING trace {}: {e}", spec.name);
            None
        }
    }
}

/// Parses decoded trace text: ARC lines expand `start count` into `count`
/// ids; LIRS lines are one id each. Blank lines are ignored; anything else
/// that does not parse is an error naming the line.
pub fn parse(r: impl BufRead, format: Format, limit: Option<usize>) -> Result<Vec<u64>, String> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut ids = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
        let start: u64 = first.parse().map_err(|_| bad("bad id"))?;
        let count: u64 = match format {
            Format::Lirs => 1,
            Format::Arc => fields
                .next()
                .ok_or_else(|| bad("no count"))?
                .parse()
                .map_err(|_| bad("bad count"))?,
        };
        for id in start..start.saturating_add(count) {
            if ids.len() == limit {
                return Ok(ids);
            }
            ids.push(id);
        }
    }
    Ok(ids)
}
