//! Commands on entries: `get`, `set`, `del`, `keys`, `dump`, `clear`,
//! `invalidate`.

use crate::util::{self, open_read, open_write, print_json, Fail};
use serde::Serialize;
use slotcache::{Cache, Entry, Invalidation, Raw, ValueKind, WriteOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An entry as `get --json` and `dump --json` print it.
#[derive(Serialize)]
struct EntryJson {
    key_utf8: Option<String>,
    key_base64: String,
    kind: &'static str,
    schema: String,
    size: usize,
    age_secs: f64,
    ttl_left_secs: Option<f64>,
    stale: bool,
    stripe: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<String>,
}

fn entry_json(e: &Entry<'_>, now: SystemTime, value: bool, preview: Option<usize>) -> EntryJson {
    let (age, left) = util::age_and_ttl(&e.meta(), now);
    EntryJson {
        key_utf8: util::key_utf8(e.key()),
        key_base64: util::b64(e.key()),
        kind: util::kind_name(e.kind()),
        schema: util::schema_hex(e.schema()),
        size: e.value_len(),
        age_secs: age.as_secs_f64(),
        ttl_left_secs: left.map(|d| d.as_secs_f64()),
        stale: e.meta().is_stale(),
        stripe: e.stripe(),
        value_base64: value.then(|| util::b64(e.bytes())),
        preview: preview.map(|n| util::preview(e.bytes(), n)),
    }
}

/// The entry stored under `key`, of either kind: one O(1) lookup
/// (`Cache::get_entry`), like any reader's.
fn find<'c>(cache: &'c Cache, key: &[u8], stale: bool) -> Result<Option<Entry<'c>>, Fail> {
    Ok(if stale {
        cache.get_entry_stale(key)?
    } else {
        cache.get_entry(key)?
    })
}

pub fn get(path: &Path, key: &str, hex: bool, stale: bool, json: bool) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let Some(e) = find(&cache, key.as_bytes(), stale)? else {
        return Err(Fail::new(
            util::EXIT_NOT_FOUND,
            format!("{}: key {key:?} not found", path.display()),
        ));
    };
    let mut out = std::io::stdout().lock();
    if json {
        return print_json(&mut out, &entry_json(&e, SystemTime::now(), true, None));
    }
    if e.kind() != ValueKind::Raw && !hex {
        eprintln!(
            "slotcache: note: {key:?} is an rkyv archive (schema {}): printing its raw archived bytes",
            util::schema_hex(e.schema())
        );
    }
    if hex {
        writeln!(out, "{}", util::hex(e.bytes()))?;
    } else {
        out.write_all(e.bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct SetJson {
    key_utf8: String,
    size: usize,
}

/// `ttl`: `None` the file's default, `Some(None)` never, `Some(Some(d))`.
pub fn set(
    path: &Path,
    key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
    ttl: Option<Option<Duration>>,
    json: bool,
) -> Result<(), Fail> {
    let bytes = match (value, file) {
        (_, Some(f)) => std::fs::read(&f)
            .map_err(|e| Fail::new(util::EXIT_ERROR, format!("{}: {e}", f.display())))?,
        (Some(v), None) if v == "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .map_err(|e| Fail::new(util::EXIT_ERROR, format!("reading standard input: {e}")))?;
            b
        }
        (Some(v), None) => v.into_bytes(),
        (None, None) => unreachable!("clap requires a value or --file"),
    };
    let cache = open_write(path)?;
    let mut o = WriteOptions::new();
    if let Some(t) = ttl {
        o = o.ttl(t);
    }
    cache.set_opt(key, &Raw(&bytes), &o)?;
    let mut out = std::io::stdout().lock();
    if json {
        let r = SetJson {
            key_utf8: key.to_string(),
            size: bytes.len(),
        };
        print_json(&mut out, &r)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct DelJson {
    deleted: Vec<String>,
    missing: Vec<String>,
}

pub fn del(path: &Path, keys: &[String], json: bool) -> Result<(), Fail> {
    let cache = open_write(path)?;
    let mut r = DelJson {
        deleted: Vec::new(),
        missing: Vec::new(),
    };
    for k in keys {
        if cache.delete(k)? {
            r.deleted.push(k.clone());
        } else {
            r.missing.push(k.clone());
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &r)
    } else {
        writeln!(out, "deleted {} of {} key(s)", r.deleted.len(), keys.len())?;
        for k in &r.missing {
            writeln!(out, "not found: {k}")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct KeyJson {
    key_utf8: Option<String>,
    key_base64: String,
}

pub fn keys(path: &Path, prefix: Option<&str>, stale: bool, json: bool) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in cache.iter_prefix(prefix.unwrap_or("")).include_stale(stale) {
        let e = e?;
        if json {
            let k = KeyJson {
                key_utf8: util::key_utf8(e.key()),
                key_base64: util::b64(e.key()),
            };
            print_json(&mut out, &k)?;
        } else {
            writeln!(out, "{}", util::show_key(e.key()))?;
        }
    }
    out.flush()?;
    Ok(())
}

pub fn dump(
    path: &Path,
    prefix: Option<&str>,
    stale: bool,
    preview: usize,
    json: bool,
) -> Result<(), Fail> {
    let cache = open_read(path)?;
    let pb = util::progress(cache.stats().entries, "dumping");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let now = SystemTime::now();
    if !json {
        writeln!(
            out,
            "{:<32} {:>10} {:>10} {:>10} {:<8} {:<16} preview",
            "key", "size", "age", "ttl left", "kind", "schema"
        )?;
    }
    for e in cache.iter_prefix(prefix.unwrap_or("")).include_stale(stale) {
        let e = e?;
        pb.inc(1);
        if json {
            print_json(&mut out, &entry_json(&e, now, false, Some(preview)))?;
            continue;
        }
        let (age, left) = util::age_and_ttl(&e.meta(), now);
        let left = match left {
            None => "-".to_string(),
            Some(d) if d.is_zero() => "expired".to_string(),
            Some(d) => util::dur(d),
        };
        writeln!(
            out,
            "{:<32} {:>10} {:>10} {:>10} {:<8} {:<16} {}",
            util::show_key(e.key()),
            e.value_len(),
            util::dur(age),
            left,
            util::kind_name(e.kind()),
            util::schema_hex(e.schema()),
            util::preview(e.bytes(), preview)
        )?;
    }
    pb.finish_and_clear();
    out.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct DoneJson {
    done: &'static str,
}

fn done(what: &'static str, path: &Path, json: bool) -> Result<(), Fail> {
    let mut out = std::io::stdout().lock();
    if json {
        print_json(&mut out, &DoneJson { done: what })
    } else {
        writeln!(out, "{}: {what}", path.display())?;
        Ok(())
    }
}

pub fn clear(path: &Path, json: bool) -> Result<(), Fail> {
    open_write(path)?.clear()?;
    done("cleared", path, json)
}

pub fn invalidate(path: &Path, hard: bool, json: bool) -> Result<(), Fail> {
    let how = if hard {
        Invalidation::Hard
    } else {
        Invalidation::Soft
    };
    open_write(path)?.invalidate(how)?;
    done(
        if hard {
            "invalidated (hard)"
        } else {
            "invalidated (soft)"
        },
        path,
        json,
    )
}
