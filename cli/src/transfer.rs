//! `export` and `import`: JSON Lines, lossless (keys and values in base64),
//! kind, schema and TTL left kept, so a cache can move between machines,
//! files and capacities.

use crate::util::{self, open_read, open_write, print_json, Fail, EXIT_ERROR};
use serde::{Deserialize, Serialize};
use slotcache::{ValueKind, WriteOptions};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The export format this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// The `format` field of an export's first line.
pub const EXPORT_FORMAT: &str = "slotcache-export";

/// The first line of an export.
#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    exported_unix_ms: u64,
    source_file_size: u64,
}

/// Every other line: one entry.
#[derive(Serialize, Deserialize)]
struct Line {
    /// The key, for people (absent when not UTF-8); import ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_utf8: Option<String>,
    key_base64: String,
    /// `raw` or `archived`.
    kind: String,
    /// 16 hex digits; `0000000000000000` for raw values.
    schema: String,
    value_base64: String,
    /// Milliseconds of TTL left at export; null: no TTL.
    ttl_left_ms: Option<u64>,
}

pub fn export(path: &Path, prefix: Option<&str>, include_stale: bool) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let pb = util::progress(cache.stats().entries, "exporting");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let now = SystemTime::now();
    let header = Header {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        exported_unix_ms: util::unix_ms(now),
        source_file_size: cache.info().file_size,
    };
    print_json(&mut out, &header)?;
    let mut n = 0u64;
    for e in cache
        .iter_prefix(prefix.unwrap_or(""))
        .include_stale(include_stale)
    {
        let e = e?;
        pb.inc(1);
        let (_, left) = util::age_and_ttl(&e.meta(), now);
        let line = Line {
            key_utf8: util::key_utf8(e.key()),
            key_base64: util::b64(e.key()),
            kind: util::kind_name(e.kind()).into(),
            schema: util::schema_hex(e.schema()),
            value_base64: util::b64(e.bytes()),
            ttl_left_ms: left.map(|d| d.as_millis() as u64),
        };
        print_json(&mut out, &line)?;
        n += 1;
    }
    out.flush()?;
    pb.finish_and_clear();
    eprintln!("slotcache: exported {n} entries from {}", path.display());
    Ok(())
}

#[derive(Serialize)]
struct ImportJson {
    imported: u64,
    skipped_expired: u64,
    skipped_too_large: u64,
}

/// One decoded entry of an export.
struct Record {
    key: Vec<u8>,
    kind: ValueKind,
    schema: u64,
    value: Vec<u8>,
    ttl_left_ms: Option<u64>,
}

fn parse_line(no: usize, text: &str) -> Result<Record, String> {
    let l: Line = serde_json::from_str(text).map_err(|e| format!("line {no}: {e}"))?;
    let key = util::unb64("key_base64", &l.key_base64).map_err(|e| format!("line {no}: {e}"))?;
    let value =
        util::unb64("value_base64", &l.value_base64).map_err(|e| format!("line {no}: {e}"))?;
    let kind = match l.kind.as_str() {
        "raw" => ValueKind::Raw,
        "archived" => ValueKind::Archived,
        k => {
            return Err(format!(
                "line {no}: kind {k:?} is neither \"raw\" nor \"archived\""
            ))
        }
    };
    let schema = u64::from_str_radix(&l.schema, 16)
        .map_err(|e| format!("line {no}: schema {:?} is not 16 hex digits: {e}", l.schema))?;
    Ok(Record {
        key,
        kind,
        schema,
        value,
        ttl_left_ms: l.ttl_left_ms,
    })
}

pub fn import(
    path: &Path,
    file: Option<&Path>,
    include_stale: bool,
    json: bool,
) -> Result<(), Fail> {
    let cache = open_write(path)?;
    let input: Box<dyn BufRead> = match file {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f)
                .map_err(|e| Fail::new(EXIT_ERROR, format!("{}: {e}", f.display())))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let source = file.map_or("standard input".to_string(), |f| f.display().to_string());
    let bad = |msg: String| Fail::new(EXIT_ERROR, format!("{source}: {msg}"));
    let pb = util::progress(0, "importing");
    let mut r = ImportJson {
        imported: 0,
        skipped_expired: 0,
        skipped_too_large: 0,
    };
    for (i, text) in input.lines().enumerate() {
        let no = i + 1;
        let text = text.map_err(|e| bad(format!("line {no}: {e}")))?;
        if i == 0 {
            let h: Header = serde_json::from_str(&text)
                .map_err(|e| bad(format!("line 1 is not a slotcache export header: {e}")))?;
            if h.format != EXPORT_FORMAT {
                return Err(bad(format!(
                    "format {:?} is not {EXPORT_FORMAT:?}",
                    h.format
                )));
            }
            if h.version > EXPORT_VERSION {
                return Err(bad(format!(
                    "export format version {} is newer than this tool reads ({EXPORT_VERSION}): upgrade slotcache",
                    h.version
                )));
            }
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        let Record {
            key,
            kind,
            schema,
            value,
            ttl_left_ms,
        } = parse_line(no, &text).map_err(bad)?;
        let ttl = match ttl_left_ms {
            None => None,
            Some(0) if !include_stale => {
                r.skipped_expired += 1;
                continue;
            }
            // Expired at export: kept stale (1 ms) with --include-stale.
            Some(ms) => Some(Duration::from_millis(ms.max(1))),
        };
        let o = WriteOptions::new().ttl(ttl);
        match cache.set_record(&key, kind, schema, &value, &o) {
            Ok(()) => r.imported += 1,
            Err(slotcache::Error::ValueTooLarge { max, .. }) => {
                eprintln!(
                    "slotcache: line {no}: key {} skipped: its {}-byte value is larger than {} holds ({max} bytes)",
                    util::show_key(&key),
                    value.len(),
                    path.display()
                );
                r.skipped_too_large += 1;
            }
            Err(e) => return Err(bad(format!("line {no}: {e}"))),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &r)?;
    } else {
        writeln!(
            out,
            "imported {} entries into {} ({} expired skipped, {} too large skipped)",
            r.imported,
            path.display(),
            r.skipped_expired,
            r.skipped_too_large
        )?;
    }
    Ok(())
}
