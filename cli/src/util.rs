//! What every command shares: opening a file with a one-line error,
//! exit codes, human sizes and durations, keys and previews, progress bars
//! and output that tolerates a closed pipe.

use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use slotcache::{Cache, EntryMeta, Options, ValueKind};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Exit code: an operational error (I/O, lock timeout, a bad file, …).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the integrity check found damage.
pub const EXIT_DAMAGED: u8 = 3;
/// Exit code: `get` found no such key.
pub const EXIT_NOT_FOUND: u8 = 4;

/// Why a command failed: a one-line message and its exit code, or just an
/// exit code (the output already said why, or stdout was closed).
#[derive(Debug)]
pub enum Fail {
    Msg { code: u8, msg: String },
    Quiet(u8),
}

impl Fail {
    pub fn new(code: u8, msg: impl Into<String>) -> Fail {
        Fail::Msg {
            code,
            msg: msg.into(),
        }
    }
}

impl From<slotcache::Error> for Fail {
    fn from(e: slotcache::Error) -> Fail {
        // slotcache's errors name the file and say what was expected.
        Fail::new(EXIT_ERROR, e.to_string())
    }
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // `slotcache keys f | head`: the reader has what it wanted.
            return Fail::Quiet(0);
        }
        Fail::new(EXIT_ERROR, format!("writing the output: {e}"))
    }
}

/// The options of `create`.
#[derive(clap::Args, Debug)]
pub struct Geometry {
    /// Total file size, e.g. 64MiB, 1GiB, 500MB.
    #[arg(long, value_parser = parse_size)]
    pub capacity: u64,
    /// Entries the index is sized for (default: capacity / 256).
    #[arg(long)]
    pub max_entries: Option<u64>,
    /// Lock stripes, 1..=4096 (default: one per MiB, up to 64).
    #[arg(long)]
    pub stripes: Option<u32>,
    /// Segments per stripe ring, 4..=1024 (default 16).
    #[arg(long)]
    pub segments: Option<u32>,
    /// Reader slots, 1..=65536 (default 256).
    #[arg(long)]
    pub reader_slots: Option<u32>,
    /// Default TTL of entries written without one, e.g. 10m, 1h 30m.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// A human size: `64MiB`, `1 GiB`, `500MB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("not a size ({e}); try e.g. 64MiB, 1GiB or 500MB"))
}

/// A human duration: `10m`, `1h 30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); try e.g. 30s, 10m or 1h 30m"))
}

/// A size for people: `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// A duration for people, rounded to what matters: `3h 2m 1s`, `250ms`.
pub fn dur(d: Duration) -> String {
    let rounded = if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

/// Checks that `path` names an existing regular file before slotcache
/// opens it, so a missing file or a directory gets a plain message (and a
/// cache is never created implicitly).
fn check_path(path: &Path) -> Result<(), Fail> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(Fail::new(
            EXIT_ERROR,
            format!("{shown}: is a directory, not a cache file"),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Fail::new(
            EXIT_ERROR,
            format!("{shown}: no such file (create one with `slotcache create {shown} --capacity SIZE`)"),
        )),
        Err(e) => Err(Fail::new(EXIT_ERROR, format!("{shown}: {e}"))),
    }
}

/// Opens an existing cache read-only: for every command that only reads.
/// Works on files this user cannot write; never blocks writers.
pub fn open_read(path: &Path) -> Result<Cache, Fail> {
    check_path(path)?;
    Ok(Cache::open(
        path,
        Options::new().create(false).read_only(true),
    )?)
}

/// Opens an existing cache for writing (read-only if the file cannot be
/// written: writes then fail with a message saying so).
pub fn open_write(path: &Path) -> Result<Cache, Fail> {
    check_path(path)?;
    Ok(Cache::open(path, Options::new().create(false))?)
}

/// Prints one JSON value and a newline.
pub fn print_json(out: &mut impl Write, v: &impl Serialize) -> Result<(), Fail> {
    serde_json::to_writer(&mut *out, v).map_err(|e| match e.io_error_kind() {
        Some(kind) => Fail::from(std::io::Error::from(kind)), // a closed pipe is no error
        None => Fail::new(EXIT_ERROR, format!("writing JSON: {e}")),
    })?;
    writeln!(out)?;
    Ok(())
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(what: &str, s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what} is not valid base64: {e}"))
}

/// A key as text: itself when it is printable UTF-8, else escaped
/// (`\xff`, `\n`) so that one key stays on one line.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => key.escape_ascii().to_string(),
    }
}

/// The readable form of a key for JSON: the string when it is UTF-8.
pub fn key_utf8(key: &[u8]) -> Option<String> {
    std::str::from_utf8(key).ok().map(str::to_string)
}

/// The first `n` bytes of a value: text when they are printable UTF-8,
/// else hex.
pub fn preview(bytes: &[u8], n: usize) -> String {
    let head = &bytes[..bytes.len().min(n)];
    let more = if bytes.len() > n { "…" } else { "" };
    match std::str::from_utf8(head) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}{more}"),
        _ => format!("0x{}{more}", hex(head)),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `raw` or `archived`.
pub fn kind_name(k: ValueKind) -> &'static str {
    match k {
        ValueKind::Raw => "raw",
        _ => "archived",
    }
}

/// A schema fingerprint as JSON and humans see it: 16 hex digits (a u64
/// does not survive JSON parsers that use doubles).
pub fn schema_hex(schema: u64) -> String {
    format!("{schema:016x}")
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Age of an entry and the TTL it has left (`None`: no TTL), both
/// measured against `now`.
pub fn age_and_ttl(meta: &EntryMeta, now: SystemTime) -> (Duration, Option<Duration>) {
    let age = now.duration_since(meta.created()).unwrap_or_default();
    let left = meta
        .expires()
        .map(|e| e.duration_since(now).unwrap_or_default());
    (age, left)
}

/// A progress bar on stderr when stderr is a terminal, else a hidden one.
/// `len` 0: a spinner counting items.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = if len == 0 {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec}, {elapsed})")
                .expect("static template"),
        );
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    } else {
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb
    };
    pb.set_message(what.to_string());
    pb
}
