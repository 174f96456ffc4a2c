//! Real invocations of the built `slotcache` binary: every subcommand, its
//! JSON output parsed back, and every bad input the tool must turn into a
//! one-line error with the documented exit code. Every file lives in a
//! `TempDir`, removed pass or fail.

use assert_cmd::Command;
use base64::Engine as _;
use predicates::prelude::*;
use serde_json::Value as Json;
use slotcache::{schema_fingerprint, Cache, Options, Raw, ValueKind};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

fn sc() -> Command {
    Command::cargo_bin("slotcache").unwrap()
}

/// `slotcache CMD PATH ARGS...`
fn at(path: &Path, cmd: &str, args: &[&str]) -> Command {
    let mut c = sc();
    c.arg(cmd).arg(path).args(args);
    c
}

/// The standard output of a command that must succeed.
trait OkStdout {
    fn ok_stdout(&mut self) -> Vec<u8>;
}

impl OkStdout for Command {
    fn ok_stdout(&mut self) -> Vec<u8> {
        self.assert().success().get_output().stdout.clone()
    }
}

/// A new cache file `name` in `dir`, made by the tool.
fn create(dir: &TempDir, name: &str, capacity: &str) -> PathBuf {
    let p = dir.path().join(name);
    at(&p, "create", &["--capacity", capacity])
        .assert()
        .success();
    p
}

fn json_of(out: &[u8]) -> Json {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

fn json_lines(out: &[u8]) -> Vec<Json> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Commands that open an existing file, with what they need after PATH.
const ON_EXISTING: &[&[&str]] = &[
    &["stats"],
    &["get", "k"],
    &["set", "k", "v"],
    &["del", "k"],
    &["keys"],
    &["dump"],
    &["clear"],
    &["invalidate", "--hard"],
    &["export"],
    &["import"],
    &["verify"],
    &["bench", "--seconds", "0.1", "--keys", "10"],
];

fn run_on(path: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    sc().arg(args[0])
        .arg(path)
        .args(&args[1..])
        .write_stdin("")
        .assert()
}

#[test]
fn create_makes_a_file_and_refuses_to_touch_an_existing_one() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("c.cache");
    let out = at(
        &p,
        "create",
        &[
            "--json",
            "--capacity",
            "8MiB",
            "--stripes",
            "4",
            "--ttl",
            "10m",
        ],
    )
    .args(["--max-entries", "1000"])
    .ok_stdout();
    let g = json_of(&out);
    assert_eq!(g["file_size"], std::fs::metadata(&p).unwrap().len());
    assert_eq!(g["stripes"], 4);
    assert_eq!(g["read_only"], false);
    let before = std::fs::read(&p).unwrap();
    at(&p, "create", &["--capacity", "16MiB"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("already exists"))
        .stderr(predicate::str::contains("c.cache"));
    assert_eq!(std::fs::read(&p).unwrap(), before, "untouched");
    // A text file is not overwritten either.
    let t = d.path().join("notes.txt");
    std::fs::write(&t, "keep me").unwrap();
    at(&t, "create", &["--capacity", "8MiB"]).assert().code(1);
    assert_eq!(std::fs::read_to_string(&t).unwrap(), "keep me");
}

#[test]
fn bad_arguments_are_usage_errors_with_code_2() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("c.cache");
    for bad in ["8XB", "lots", "-1MiB"] {
        at(&p, "create", &["--capacity", bad])
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains("not a size")
                    .or(predicate::str::contains("unexpected argument")),
            );
    }
    at(&p, "create", &["--capacity", "8MiB", "--ttl", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a duration"));
    assert!(!p.exists(), "no file made by a refused command");
    sc().args(["frobnicate"]).assert().code(2);
    at(&p, "invalidate", &[]).assert().code(2); // needs --hard or --soft
    at(&p, "set", &["k"]).assert().code(2); // needs a value
                                            // Options the library refuses: one line naming the option, code 1.
    at(&p, "create", &["--capacity", "8MiB", "--stripes", "0"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("stripes"));
}

#[test]
fn a_missing_file_is_an_error_and_never_created() {
    let d = TempDir::new().unwrap();
    let p = d.path().join("nothing.cache");
    for args in ON_EXISTING {
        run_on(&p, args)
            .code(1)
            .stderr(predicate::str::contains("nothing.cache"))
            .stderr(predicate::str::contains("no such file"))
            .stderr(predicate::str::contains("panicked").not());
        assert!(!p.exists(), "{args:?} created the file");
    }
}

#[test]
fn bad_files_give_one_line_errors() {
    let d = TempDir::new().unwrap();
    let text = d.path().join("notes.txt");
    std::fs::write(&text, "hello, I am not a cache\n".repeat(300)).unwrap();
    let newer = create(&d, "newer.cache", "8MiB");
    let mut bytes = std::fs::read(&newer).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes()); // format_version only
    std::fs::write(&newer, bytes).unwrap();
    let one_line = |s: &[u8]| String::from_utf8_lossy(s).trim_end().lines().count() == 1;
    for args in ON_EXISTING {
        for (path, says) in [
            (&text, "not a slotcache file"),
            (&newer, "newer"),
            (&d.path().to_path_buf(), "is a directory"),
        ] {
            let out = run_on(path, args)
                .code(1)
                .stderr(predicate::str::contains(says))
                .get_output()
                .clone();
            assert!(one_line(&out.stderr), "{args:?}: {:?}", out.stderr);
        }
    }
    assert!(std::fs::read_to_string(&text).unwrap().starts_with("hello"));
}

#[test]
fn an_unreadable_file_is_an_error() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Straight to the process's stderr: the harness captures
            // eprintln!, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n!!! SKIPPED an_unreadable_file_is_an_error: running as root, which reads a mode-000 file anyway\n"
            );
            return;
        }
        let d = TempDir::new().unwrap();
        let p = create(&d, "locked.cache", "8MiB");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        for args in ON_EXISTING {
            run_on(&p, args)
                .code(1)
                .stderr(predicate::str::contains("locked.cache"))
                .stderr(predicate::str::contains("ermission denied"));
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn set_get_del_keys_round_trip() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let val = d.path().join("value.bin");
    std::fs::write(&val, [0u8, 1, 2, 255]).unwrap();
    at(&p, "set", &["greeting", "hello"]).assert().success();
    at(&p, "set", &["bin", "--file"])
        .arg(&val)
        .assert()
        .success();
    at(&p, "set", &["piped", "-", "--ttl", "1h"])
        .write_stdin("from stdin")
        .assert()
        .success();
    at(&p, "get", &["greeting"])
        .assert()
        .success()
        .stdout("hello");
    at(&p, "get", &["piped"])
        .assert()
        .success()
        .stdout("from stdin");
    at(&p, "get", &["bin"])
        .assert()
        .success()
        .stdout(&[0u8, 1, 2, 255][..]);
    at(&p, "get", &["bin", "--hex"])
        .assert()
        .success()
        .stdout("000102ff\n");
    let g = json_of(&at(&p, "get", &["--json", "piped"]).ok_stdout());
    assert_eq!(b64(g["value_base64"].as_str().unwrap()), b"from stdin");
    assert_eq!(g["key_utf8"], "piped");
    assert_eq!(g["kind"], "raw");
    assert_eq!(g["schema"], "0000000000000000");
    let left = g["ttl_left_secs"].as_f64().unwrap();
    assert!(left > 3000.0 && left <= 3600.0, "{left}");
    at(&p, "get", &["absent"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("not found"));

    // A typed value (written by the library) prints its archived bytes.
    let cache = Cache::open(&p, Options::new().create(false)).unwrap();
    cache.set("typed", &0x0102_0304u32).unwrap();
    drop(cache);
    at(&p, "get", &["typed"])
        .assert()
        .success()
        .stdout(0x0102_0304u32.to_le_bytes().to_vec())
        .stderr(predicate::str::contains("archive"));

    let mut keys: Vec<String> = String::from_utf8(at(&p, "keys", &[]).ok_stdout())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    assert_eq!(keys, ["bin", "greeting", "piped", "typed"]);
    let pre = json_lines(&at(&p, "keys", &["--json", "--prefix", "p"]).ok_stdout());
    assert_eq!(pre.len(), 1);
    assert_eq!(b64(pre[0]["key_base64"].as_str().unwrap()), b"piped");

    let del = json_of(&at(&p, "del", &["--json", "greeting", "absent"]).ok_stdout());
    assert_eq!(del["deleted"], serde_json::json!(["greeting"]));
    assert_eq!(del["missing"], serde_json::json!(["absent"]));
    at(&p, "get", &["greeting"]).assert().code(4);
}

#[test]
fn dump_lists_entries_with_size_age_ttl_kind_and_schema() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let cache = Cache::open(&p, Options::new().create(false)).unwrap();
    cache.set("text", &Raw(b"readable")).unwrap();
    cache.set("bytes", &Raw([0xffu8, 0, 7])).unwrap();
    cache.set("typed", &7u64).unwrap();
    drop(cache);
    at(&p, "set", &["ttl", "x", "--ttl", "10m"])
        .assert()
        .success();
    let out = at(&p, "dump", &[]).ok_stdout();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().next().unwrap().starts_with("key"), "{text}");
    assert!(text.contains("\"readable\""), "{text}");
    assert!(text.contains("0xff0007"), "{text}");
    assert!(
        text.contains(&format!("{:016x}", schema_fingerprint::<u64>())),
        "{text}"
    );
    let rows = json_lines(&at(&p, "dump", &["--json"]).ok_stdout());
    assert_eq!(rows.len(), 4);
    let row = |k: &str| rows.iter().find(|r| r["key_utf8"] == k).unwrap().clone();
    assert_eq!(row("typed")["kind"], "archived");
    assert_eq!(
        row("typed")["schema"],
        format!("{:016x}", schema_fingerprint::<u64>())
    );
    assert_eq!(row("typed")["size"], 8);
    assert_eq!(row("bytes")["preview"], "0xff0007");
    assert!(row("text")["ttl_left_secs"].is_null());
    let left = row("ttl")["ttl_left_secs"].as_f64().unwrap();
    assert!(left > 500.0 && left <= 600.0, "{left}");
    assert!(row("text")["age_secs"].as_f64().unwrap() >= 0.0);
}

#[test]
fn clear_and_invalidate() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let count = |stale: bool| {
        let mut c = sc();
        c.arg("keys").arg(&p);
        if stale {
            c.arg("--stale");
        }
        String::from_utf8(c.ok_stdout()).unwrap().lines().count()
    };
    at(&p, "set", &["a", "1"]).assert().success();
    at(&p, "invalidate", &["--soft"])
        .assert()
        .success()
        .stdout(predicate::str::contains("soft"));
    assert_eq!(
        (count(false), count(true)),
        (0, 1),
        "soft: stale, still there"
    );
    at(&p, "get", &["a"]).assert().code(4);
    at(&p, "get", &["a", "--stale"])
        .assert()
        .success()
        .stdout("1");
    std::thread::sleep(Duration::from_millis(2)); // created after the invalidation
    at(&p, "set", &["b", "2"]).assert().success();
    at(&p, "invalidate", &["--hard"]).assert().success();
    assert_eq!((count(false), count(true)), (0, 0), "hard: gone");
    std::thread::sleep(Duration::from_millis(2));
    at(&p, "set", &["c", "3"]).assert().success();
    assert_eq!(count(false), 1);
    let done = json_of(&at(&p, "clear", &["--json"]).ok_stdout());
    assert_eq!(done["done"], "cleared");
    assert_eq!(count(true), 0);
}

#[test]
fn stats_reports_geometry_fill_counters_ages_and_readers() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let cache = Cache::open(&p, Options::new().create(false)).unwrap();
    for i in 0..100u32 {
        cache.set(format!("k{i}"), &Raw(vec![1u8; 50])).unwrap();
    }
    assert!(cache.get::<Raw>("k1").unwrap().is_some());
    assert!(cache.get::<Raw>("nope").unwrap().is_none());
    let guard = cache.get::<Raw>("k2").unwrap().unwrap(); // a live reader pinning a stripe
    let s = json_of(&at(&p, "stats", &["--json"]).ok_stdout());
    drop(guard);
    assert_eq!(s["geometry"]["read_only"], true, "stats opens read-only");
    assert_eq!(
        s["geometry"]["file_size"],
        std::fs::metadata(&p).unwrap().len()
    );
    assert_eq!(s["fill"]["entries"], 100);
    assert!(s["fill"]["bytes_used"].as_u64().unwrap() >= 100 * 50);
    let e = &s["fill"]["stripe_entries"];
    assert!(e["min"].as_u64() <= e["median"].as_u64() && e["median"].as_u64() <= e["max"].as_u64());
    assert_eq!(s["counters"]["hits"], 2);
    assert_eq!(s["counters"]["misses"], 1);
    assert_eq!(s["counters"]["inserts"], 100);
    assert!(s["counters"]["hit_ratio"].as_f64().unwrap() > 0.6);
    assert_eq!(s["ages"]["walked"], 100);
    assert!(s["ages"]["oldest_secs"].as_f64() >= s["ages"]["newest_secs"].as_f64());
    let me = std::process::id();
    let readers = s["readers"].as_array().unwrap();
    let mine: Vec<_> = readers.iter().filter(|r| r["owner_pid"] == me).collect();
    assert_eq!(mine.len(), 1, "{readers:?}");
    assert_eq!(mine[0]["live"], true);
    assert_eq!(mine[0]["pinned_stripes"], 1);
    assert_eq!(s["live_readers"], 1);
    let text = at(&p, "stats", &[]).ok_stdout();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("100 entries"), "{text}");
    assert!(text.contains(&format!("pid {me}")), "{text}");
    drop(cache);
}

#[test]
fn stats_watch_prints_rates() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let lines =
        json_lines(&at(&p, "stats", &["--json", "--watch", "50ms", "--count", "2"]).ok_stdout());
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert!(l["rates"]["interval_secs"].as_f64().unwrap() > 0.0);
        assert_eq!(l["rates"]["sets_per_sec"], 0.0);
        assert!(l["rates"]["hit_ratio"].is_null());
    }
    at(&p, "stats", &["--watch", "10ms", "--count", "1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\x1b[2J").and(predicate::str::contains("hits/s")));
    at(&p, "stats", &["--count", "1"]).assert().code(2); // --count needs --watch
}

/// The first position of `needle` in the file.
fn find(p: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(p).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn verify_reports_damage_with_exit_3_and_repair_resets_it() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    at(&p, "set", &["good", "healthy value"]).assert().success();
    at(&p, "set", &["bad", "MARKER-to-damage"])
        .assert()
        .success();
    let v = json_of(&at(&p, "verify", &["--json"]).ok_stdout());
    assert_eq!(v["clean"], true);
    assert_eq!(v["full_check"], true);
    assert_eq!(v["live_entries"], 2);
    assert!(v["repair"].is_null());
    // Damage one value byte: its CRC no longer matches.
    let marker = find(&p, b"MARKER-to-damage");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[marker] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    at(&p, "verify", &[])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("DAMAGED"));
    let v = json_of(
        &at(&p, "verify", &["--json"])
            .assert()
            .code(3)
            .get_output()
            .stdout,
    );
    assert_eq!(v["clean"], false);
    assert_eq!(v["bad_checksums"], 1);
    assert_eq!(std::fs::read(&p).unwrap(), bytes, "verify wrote nothing");
    let r = json_of(&at(&p, "verify", &["--repair", "--json"]).ok_stdout());
    assert_eq!(r["clean"], false, "what was found before the repair");
    assert_eq!(r["repair"]["slots_cleared"], 1);
    at(&p, "verify", &[])
        .assert()
        .success()
        .stdout(predicate::str::contains("clean"));
    at(&p, "get", &["good"])
        .assert()
        .success()
        .stdout("healthy value");
    at(&p, "get", &["bad"]).assert().code(4);
}

/// Every entry of a file: key -> (kind, schema, value, ttl left).
/// An entry as stored: key, kind, schema, value bytes, TTL left.
type Stored = (Vec<u8>, ValueKind, u64, Vec<u8>, Option<Duration>);

fn entries(p: &Path) -> Vec<Stored> {
    let c = Cache::open(p, Options::new().create(false).read_only(true)).unwrap();
    let now = std::time::SystemTime::now();
    let mut v: Vec<_> = c
        .iter()
        .map(|e| {
            let e = e.unwrap();
            let left = e
                .meta()
                .expires()
                .map(|x| x.duration_since(now).unwrap_or_default());
            (
                e.key().to_vec(),
                e.kind(),
                e.schema(),
                e.bytes().to_vec(),
                left,
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn export_then_import_into_another_capacity_keeps_every_entry() {
    let d = TempDir::new().unwrap();
    let from = create(&d, "from.cache", "8MiB");
    let cache = Cache::open(&from, Options::new().create(false)).unwrap();
    cache
        .set("typed", &String::from("an archived string"))
        .unwrap();
    cache.set("number", &42u64).unwrap();
    cache.set([0xffu8, 0, b'\n'], &Raw(b"binary key")).unwrap();
    let hour = slotcache::WriteOptions::new().ttl(Some(Duration::from_secs(3600)));
    cache
        .set_opt("expiring", &Raw(b"for an hour"), &hour)
        .unwrap();
    let gone = slotcache::WriteOptions::new().ttl(Some(Duration::from_millis(1)));
    cache
        .set_opt("expired", &Raw(b"already gone"), &gone)
        .unwrap();
    for i in 0..200u32 {
        cache
            .set(format!("bulk:{i}"), &Raw(i.to_le_bytes()))
            .unwrap();
    }
    drop(cache);
    std::thread::sleep(Duration::from_millis(5));

    let export = at(&from, "export", &[]).ok_stdout();
    let lines = json_lines(&export);
    assert_eq!(lines[0]["format"], "slotcache-export");
    assert_eq!(lines[0]["version"], 1);
    assert_eq!(lines.len(), 1 + 204, "the expired entry is skipped");
    let bin = lines
        .iter()
        .find(|l| {
            l.get("key_base64")
                .is_some_and(|k| b64(k.as_str().unwrap()) == [0xff, 0, b'\n'])
        })
        .unwrap();
    assert!(bin["key_utf8"].is_null(), "not UTF-8: no readable form");
    let dump = d.path().join("export.jsonl");
    std::fs::write(&dump, &export).unwrap();

    let to = create(&d, "to.cache", "32MiB");
    let r = json_of(
        &at(&to, "import", &["--json"])
            .write_stdin(export.clone())
            .ok_stdout(),
    );
    assert_eq!(r["imported"], 204);
    let (a, b) = (entries(&from), entries(&to));
    let fresh: Vec<_> = a.iter().filter(|e| e.0 != b"expired").collect();
    assert_eq!(fresh.len(), b.len());
    for (x, y) in fresh.iter().zip(&b) {
        assert_eq!((&x.0, x.1, x.2, &x.3), (&y.0, y.1, y.2, &y.3));
        match (x.4, y.4) {
            (None, None) => {}
            (Some(l), Some(r)) => {
                assert!(l.abs_diff(r) < Duration::from_secs(30), "{l:?} vs {r:?}")
            }
            other => panic!("TTL lost: {other:?}"),
        }
    }
    // Typed reads of the imported archives hit.
    let c = Cache::open(&to, Options::new().create(false)).unwrap();
    assert_eq!(
        c.get::<String>("typed").unwrap().unwrap().as_str(),
        "an archived string"
    );
    assert_eq!(*c.get::<u64>("number").unwrap().unwrap(), 42);
    drop(c);

    // --include-stale keeps the expired one, still stale after import.
    let with_stale = at(&from, "export", &["--include-stale"]).ok_stdout();
    assert_eq!(json_lines(&with_stale).len(), 1 + 205);
    let third = create(&d, "third.cache", "8MiB");
    at(&third, "import", &["--include-stale", "--file"])
        .arg(&dump)
        .assert()
        .success();
    at(&third, "import", &["--include-stale"])
        .write_stdin(with_stale)
        .assert()
        .success();
    at(&third, "get", &["expired"]).assert().code(4);
    at(&third, "get", &["expired", "--stale"])
        .assert()
        .success()
        .stdout("already gone");
}

#[test]
fn import_refuses_bad_input_with_the_line() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let header =
        r#"{"format":"slotcache-export","version":1,"exported_unix_ms":0,"source_file_size":0}"#;
    let cases = [
        (r#"{"format":"slotcache-export","version":99,"exported_unix_ms":0,"source_file_size":0}"#.to_string(), "newer"),
        ("not json".to_string(), "line 1"),
        (format!("{header}\n{{\"key_base64\":\"!!\",\"kind\":\"raw\",\"schema\":\"0\",\"value_base64\":\"\",\"ttl_left_ms\":null}}"), "line 2"),
        (format!("{header}\n{{\"key_base64\":\"aw==\",\"kind\":\"weird\",\"schema\":\"0\",\"value_base64\":\"\",\"ttl_left_ms\":null}}"), "neither"),
        (format!("{header}\n{{\"key_base64\":\"aw==\",\"kind\":\"raw\",\"schema\":\"5\",\"value_base64\":\"\",\"ttl_left_ms\":null}}"), "schema"),
    ];
    for (input, says) in cases {
        at(&p, "import", &[])
            .write_stdin(input)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(says));
    }
}

#[test]
fn bench_reports_ops_and_latency_percentiles_per_role() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "8MiB");
    let b = json_of(
        &at(
            &p,
            "bench",
            &[
                "--json",
                "--readers",
                "1",
                "--writers",
                "1",
                "--seconds",
                "0.3",
            ],
        )
        .args(["--keys", "500", "--value-size", "64"])
        .ok_stdout(),
    );
    for role in ["reader", "writer"] {
        let r = &b[role];
        assert_eq!(r["processes"], 1);
        assert!(r["ops"].as_u64().unwrap() > 0, "{b}");
        assert_eq!(r["errors"], 0, "{b}");
        let l = &r["latency_ns"];
        let q = |k: &str| l[k].as_u64().unwrap();
        assert!(
            q("p50") <= q("p99") && q("p99") <= q("p999") && q("p999") <= q("max"),
            "{l}"
        );
    }
    assert_eq!(b["reader"]["misses"], 0, "the keys were filled first");
    let text = at(
        &p,
        "bench",
        &[
            "--readers",
            "0",
            "--writers",
            "1",
            "--seconds",
            "0.2",
            "--keys",
            "100",
        ],
    )
    .ok_stdout();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("writers: 1 process(es)") && text.contains("p99.9"),
        "{text}"
    );
    assert!(!text.contains("readers:"), "{text}");
    at(&p, "bench", &["--value-size", "1GiB"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--value-size"));
}

#[test]
fn reading_commands_work_while_other_processes_write() {
    let d = TempDir::new().unwrap();
    let p = create(&d, "c.cache", "4MiB");
    // Writers and readers in other processes for the whole test.
    let load = std::process::Command::new(assert_cmd::cargo::cargo_bin("slotcache"))
        .arg("bench")
        .arg(&p)
        .args([
            "--readers",
            "1",
            "--writers",
            "2",
            "--seconds",
            "1.5",
            "--keys",
            "20000",
        ])
        .args(["--value-size", "200"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Reap(load);
    let mut rounds = 0;
    while guard.0.try_wait().unwrap().is_none() || rounds < 2 {
        rounds += 1;
        let s = json_of(&at(&p, "stats", &["--json"]).ok_stdout());
        assert!(
            s["fill"]["bytes_used"].as_u64().unwrap() <= s["fill"]["capacity"].as_u64().unwrap()
        );
        let rows = json_lines(&at(&p, "dump", &["--json", "--prefix", "bench:"]).ok_stdout());
        for r in &rows {
            assert_eq!(r["size"], 200, "{r}");
        }
        let v = json_of(&at(&p, "verify", &["--json"]).ok_stdout());
        assert_eq!(v["clean"], true, "{v}");
        if rounds > 50 {
            break;
        }
    }
    assert!(guard.0.wait().unwrap().success());
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        sc().args(["completions", shell])
            .assert()
            .success()
            .stdout(predicate::str::contains("slotcache").and(predicate::str::contains("export")));
    }
    sc().args(["completions", "tcsh-ish"]).assert().code(2);
}
