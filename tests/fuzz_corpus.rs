//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) under
//! stable `cargo test`, through the same functions the `cargo fuzz` targets
//! call (`fuzz/src/lib.rs`, included here as a module), so every CI run
//! re-checks every corpus input: a typed error or a usable cache for
//! arbitrary files, exact model agreement for operation sequences, and
//! only ever-stored values for sequences on a damaged file.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_logic;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

use fuzz_logic::Summary;

/// Runs every corpus file of `target`; reports all failing files at once.
fn replay(target: &str, run: fn(&[u8]) -> Summary) -> Summary {
    let files = corpus(target);
    assert!(
        files.len() >= 3,
        "fuzz/corpus/{target} holds {} inputs; expected a committed corpus",
        files.len()
    );
    let mut failed = Vec::new();
    let mut total = Summary::default();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        match std::panic::catch_unwind(|| run(&data)) {
            Ok(s) => total += s,
            Err(_) => failed.push(f.file_name().unwrap().to_string_lossy().into_owned()),
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs failed (messages above): {failed:?}\n\
         reproduce one with `cargo +nightly fuzz run {target} fuzz/corpus/{target}/<file>` in fuzz/",
        failed.len(),
        files.len()
    );
    println!(
        "{target}: {} corpus inputs replayed: {total:?}",
        files.len()
    );
    total
}

#[test]
fn open_bytes_corpus() {
    let s = replay("open_bytes", |d| {
        fuzz_logic::run_open_bytes(d);
        Summary::default()
    });
    assert_eq!(s, Summary::default());
}

#[test]
fn ops_model_corpus() {
    let s = replay("ops_model", fuzz_logic::run_ops_model);
    assert!(
        s.hits > 0 && s.misses > 0 && s.writes > 0,
        "a vacuous replay: {s:?}"
    );
}

#[test]
fn ops_bitflip_corpus() {
    let s = replay("ops_bitflip", fuzz_logic::run_ops_bitflip);
    assert!(s.hits > 0 && s.writes > 0, "a vacuous replay: {s:?}");
}

#[test]
fn options_corpus() {
    let s = replay("options", fuzz_logic::run_options);
    assert!(
        s.steps > 0 && s.errors > 0 && s.writes > 0,
        "a vacuous replay: {s:?}"
    );
}

/// The extreme options the fuzzer explores, run by hand: every duration
/// extreme on the handle and per call, refused capacities, zero counts.
#[test]
fn extreme_options_cases() {
    use fuzz_logic::{Call, Cap, Dur, OptionsCase};
    let durs = [
        Dur::Zero,
        Dur::Nanos(1),
        Dur::Millis(5),
        Dur::Secs(u32::MAX),
        Dur::JustPast(11),
        Dur::Max,
    ];
    let calls = |d: Dur| {
        vec![
            Call::Set {
                key_len: 3,
                val_len: 100,
                ttl: Some(d),
            },
            Call::Set {
                key_len: 1025,
                val_len: 1,
                ttl: None,
            },
            Call::Set {
                key_len: 4,
                val_len: u32::MAX,
                ttl: Some(Dur::Max),
            },
            Call::GetOrCreate {
                key: 1,
                ttl: Some(Some(d)),
                lock_timeout: Some(d),
                expiration: Some(d),
                block: true,
            },
            Call::GetOrCreate {
                key: 1,
                ttl: Some(None),
                lock_timeout: Some(Dur::Max),
                expiration: None,
                block: false,
            },
            Call::Read {
                key_len: 3,
                which: 0,
            },
            Call::Read {
                key_len: 2000,
                which: 3,
            },
            Call::Limits(u64::MAX),
        ]
    };
    let base = OptionsCase {
        capacity: Cap::Kib(2048),
        max_entries: None,
        stripes: Some(2),
        segments: None,
        reader_slots: None,
        regen_stripes: None,
        default_ttl: None,
        mode: None,
        pin_wait: None,
        lock_timeout: None,
        expiration: None,
        calls: Vec::new(),
    };
    let mut total = Summary::default();
    for d in durs {
        total += fuzz_logic::run_options_case(&OptionsCase {
            default_ttl: Some(d),
            lock_timeout: Some(d),
            expiration: Some(d),
            pin_wait: Some(d),
            calls: calls(d),
            ..base.clone()
        });
    }
    for (cap, max_entries, stripes, segments, readers, regen) in [
        (Cap::Huge(0, 0), None, None, None, None, None),
        (Cap::Huge(1, 14), None, None, None, None, None),
        (Cap::Huge(2, 0), None, None, None, None, None),
        (Cap::Bytes(0), None, None, None, None, None),
        (Cap::Bytes(4096), None, None, None, None, None),
        (Cap::Kib(1024), Some(0), None, None, None, None),
        (Cap::Kib(1024), Some(u64::MAX), None, None, None, None),
        (Cap::Kib(1024), Some(1 << 40), None, None, None, None),
        (Cap::Kib(1024), None, Some(0), None, None, None),
        (Cap::Kib(1024), None, Some(u32::MAX), None, None, None),
        (Cap::Kib(1024), None, None, Some(0), None, None),
        (Cap::Kib(1024), None, None, Some(u32::MAX), None, None),
        (Cap::Kib(1024), None, None, None, Some(0), None),
        (Cap::Kib(1024), None, None, None, Some(u32::MAX), None),
        (Cap::Kib(1024), None, None, None, None, Some(0)),
        (Cap::Kib(1024), None, None, None, None, Some(u32::MAX)),
    ] {
        let s = fuzz_logic::run_options_case(&OptionsCase {
            capacity: cap,
            max_entries,
            stripes,
            segments,
            reader_slots: readers,
            regen_stripes: regen,
            calls: calls(Dur::Max),
            ..base.clone()
        });
        assert_eq!(s.errors, 1, "refused: {s:?}");
        total += s;
    }
    println!("{total:?}");
    assert!(total.writes > 0 && total.hits > 0, "{total:?}");
}

/// The checks run for real: long pseudo-random sequences of every
/// operation (every geometry, guards held across writes, reopens, damage)
/// go through the same code, and do hit, miss and write.
#[test]
fn synthetic_sequences_pass_the_model_checks() {
    let mut model = Summary::default();
    let mut flip = Summary::default();
    for seed in 0..24u64 {
        model += fuzz_logic::run_ops_model(&fuzz_logic::synth_input(seed, 200, false));
        flip += fuzz_logic::run_ops_bitflip(&fuzz_logic::synth_input(seed, 200, true));
    }
    println!("model: {model:?}\nbitflip: {flip:?}");
    assert!(
        model.steps > 2000 && model.hits > 100 && model.writes > 200,
        "{model:?}"
    );
    assert!(flip.steps > 500 && flip.writes > 50, "{flip:?}");
    // The template file opens as it is, raw and patched with a fixed header.
    fuzz_logic::run_open_bytes(&[fuzz_logic::open_flags::TEMPLATE]);
    let mut raw = vec![0u8];
    raw.extend_from_slice(fuzz_logic::template());
    fuzz_logic::run_open_bytes(&raw);
}

/// Writes the hand-made seed inputs into `fuzz/corpus/` (run on purpose:
/// `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`). The
/// rest of the corpus comes from fuzzing, minimized with `cargo fuzz cmin`.
#[test]
#[ignore = "writes seed files into fuzz/corpus; run on purpose"]
fn write_seed_corpus() {
    use fuzz_logic::open_flags as f;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    for (i, seed) in [1u64, 2, 3].into_iter().enumerate() {
        put(
            "ops_model",
            &format!("synth-{i}"),
            &fuzz_logic::synth_input(seed, 150, false),
        );
        put(
            "ops_bitflip",
            &format!("synth-{i}"),
            &fuzz_logic::synth_input(seed, 150, true),
        );
    }
    // A valid small cache file, as it is (raw mode).
    let mut raw = vec![0u8];
    raw.extend_from_slice(fuzz_logic::template());
    put("open_bytes", "raw-template", &raw);
    // The empty file (created on open) and a non-slotcache file.
    put("open_bytes", "empty", &[]);
    put("open_bytes", "raw-text", b"\x00this is not a cache file");
    // The template, untouched, read-only, and with `OnCorrupt::Reset`.
    put("open_bytes", "template", &[f::TEMPLATE]);
    put("open_bytes", "template-ro", &[f::TEMPLATE | f::READ_ONLY]);
    // A damaged header (stripes field) repaired, relaid out and resized.
    put(
        "open_bytes",
        "template-relayout",
        &[f::TEMPLATE | f::RELAYOUT, 24, 0, 1, 3],
    );
    // A truncated file whose header says so, and a damaged one reset.
    put(
        "open_bytes",
        "template-truncated",
        &[f::TEMPLATE | f::RESIZE | f::FIX_SIZE | f::FIX_CRC, 0, 1],
    );
    put(
        "open_bytes",
        "template-reset",
        &[f::TEMPLATE | f::RESET, 30, 0, 1, 9],
    );
}
