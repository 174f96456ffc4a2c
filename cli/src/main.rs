//! `slotcache`: inspect, fill, dump, export/import, verify and load-test
//! slotcache files from the shell. See `cli/README.md` for every command,
//! its JSON output and its exit codes.

mod bench;
mod entries;
mod stats;
mod transfer;
mod util;

use clap::{ArgGroup, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use util::{parse_duration, Fail};

/// Inspect and operate slotcache files: stats, dump, export/import, verify,
/// and a multi-process benchmark. Reading commands open the file read-only
/// and never block the processes using it.
#[derive(Parser, Debug)]
#[command(name = "slotcache", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 operational error, 2 usage, 3 integrity problem found, 4 key not found (get)."
)]
struct Cli {
    /// Print machine-readable JSON (schemas in cli/README.md).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new cache file (refuses to touch an existing path).
    Create {
        /// The file to create.
        path: PathBuf,
        #[command(flatten)]
        geometry: util::Geometry,
    },
    /// Geometry, fill, counters, entry ages and live readers.
    Stats {
        /// The cache file.
        path: PathBuf,
        /// Redraw a live view with rates every INTERVAL (default 1s) until
        /// interrupted (Ctrl-C). With --json: one JSON object per interval.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s", value_parser = parse_duration)]
        watch: Option<Duration>,
        /// With --watch: stop after this many intervals.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Print a value (raw bytes to stdout).
    Get {
        /// The cache file.
        path: PathBuf,
        /// The key (UTF-8 text).
        key: String,
        /// Print the value as hex instead of raw bytes.
        #[arg(long)]
        hex: bool,
        /// Also return an expired or soft-invalidated value.
        #[arg(long)]
        stale: bool,
    },
    /// Store raw bytes under a key.
    #[command(group(ArgGroup::new("input").required(true).args(["value", "file"])))]
    Set {
        /// The cache file.
        path: PathBuf,
        /// The key (UTF-8 text).
        key: String,
        /// The value as text; `-` reads it from standard input.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// TTL, e.g. 30s, 10m (default: the file's default TTL).
        #[arg(long, value_parser = parse_duration, conflicts_with = "no_ttl")]
        ttl: Option<Duration>,
        /// Never expire (overrides the file's default TTL).
        #[arg(long)]
        no_ttl: bool,
    },
    /// Delete keys.
    Del {
        /// The cache file.
        path: PathBuf,
        /// The keys (UTF-8 text).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List keys.
    Keys {
        /// The cache file.
        path: PathBuf,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Also list expired and soft-invalidated entries.
        #[arg(long)]
        stale: bool,
    },
    /// List entries: key, size, age, TTL left, kind, schema, value preview.
    Dump {
        /// The cache file.
        path: PathBuf,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Also list expired and soft-invalidated entries.
        #[arg(long)]
        stale: bool,
        /// Bytes of each value to preview.
        #[arg(long, default_value_t = 32)]
        preview: usize,
    },
    /// Remove every entry.
    Clear {
        /// The cache file.
        path: PathBuf,
    },
    /// Invalidate every entry created up to now, for every process.
    #[command(group(ArgGroup::new("how").required(true).args(["hard", "soft"])))]
    Invalidate {
        /// The cache file.
        path: PathBuf,
        /// Entries become misses.
        #[arg(long)]
        hard: bool,
        /// Entries become stale (served while one caller regenerates).
        #[arg(long)]
        soft: bool,
    },
    /// Write every entry as JSON Lines to standard output (lossless).
    Export {
        /// The cache file.
        path: PathBuf,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Also export expired and soft-invalidated entries.
        #[arg(long)]
        include_stale: bool,
    },
    /// Read entries written by `export` (from standard input or --file).
    Import {
        /// The cache file (must exist: see `create`).
        path: PathBuf,
        /// Read this file instead of standard input.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Also import entries whose TTL had run out at export.
        #[arg(long)]
        include_stale: bool,
    },
    /// Check the file's integrity without writing a byte (exit 3 if damaged).
    Verify {
        /// The cache file.
        path: PathBuf,
        /// Reset what is damaged and report what was reset.
        #[arg(long)]
        repair: bool,
    },
    /// Multi-process load test: reader and writer processes on the file.
    Bench(bench::BenchArgs),
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// One benchmark process (started by `bench`).
    #[command(hide = true)]
    BenchWorker(bench::WorkerArgs),
}

fn run(cli: Cli) -> Result<(), Fail> {
    let json = cli.json;
    match cli.command {
        Command::Create { path, geometry } => stats::create(&path, &geometry, json),
        Command::Stats { path, watch, count } => match watch {
            Some(every) => stats::watch(&path, every, count, json),
            None => stats::stats(&path, json),
        },
        Command::Get {
            path,
            key,
            hex,
            stale,
        } => entries::get(&path, &key, hex, stale, json),
        Command::Set {
            path,
            key,
            value,
            file,
            ttl,
            no_ttl,
        } => {
            let ttl = if no_ttl { Some(None) } else { ttl.map(Some) };
            entries::set(&path, &key, value, file, ttl, json)
        }
        Command::Del { path, keys } => entries::del(&path, &keys, json),
        Command::Keys {
            path,
            prefix,
            stale,
        } => entries::keys(&path, prefix.as_deref(), stale, json),
        Command::Dump {
            path,
            prefix,
            stale,
            preview,
        } => entries::dump(&path, prefix.as_deref(), stale, preview, json),
        Command::Clear { path } => entries::clear(&path, json),
        Command::Invalidate { path, hard, .. } => entries::invalidate(&path, hard, json),
        Command::Export {
            path,
            prefix,
            include_stale,
        } => transfer::export(&path, prefix.as_deref(), include_stale),
        Command::Import {
            path,
            file,
            include_stale,
        } => transfer::import(&path, file.as_deref(), include_stale, json),
        Command::Verify { path, repair } => stats::verify(&path, repair, json),
        Command::Bench(args) => bench::run(&args, json),
        Command::BenchWorker(args) => bench::worker(&args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut cmd, "slotcache", &mut out);
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with clap's code 2.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Quiet(code)) => ExitCode::from(code),
        Err(Fail::Msg { code, msg }) => {
            eprintln!("slotcache: {msg}");
            ExitCode::from(code)
        }
    }
}
