//! Extreme option values and per-call arguments: every option is
//! range-checked with an error that names it, the value given and the
//! limit; every duration saturates ("forever") instead of overflowing;
//! nothing panics; a refused create leaves no file behind.

mod common;
use common::TempDir;
use slotcache::{Cache, CreateOptions, Error, Options, Raw, WriteOptions};
use std::time::Duration;

fn small() -> Options {
    Options::new().capacity(4 << 20).stripes(2)
}

/// The error of opening `opts` at a fresh path, which must not exist after.
fn refused(name: &str, opts: Options) -> Error {
    let d = TempDir::new("options", name);
    let p = d.join("c");
    let e = Cache::open(&p, opts).expect_err("must be refused");
    assert!(
        !p.exists(),
        "{name}: a refused create left a file behind ({e})"
    );
    e
}

fn assert_names(e: &Error, option: &str, found: &str) {
    match e {
        Error::InvalidOptions {
            option: o,
            found: f,
            expected,
        } => {
            assert_eq!(*o, option, "{e}");
            assert_eq!(f, found, "{e}");
            assert!(!expected.is_empty(), "{e}");
        }
        other => panic!("expected InvalidOptions({option}), got {other:?}: {other}"),
    }
}

#[test]
fn lock_timeout_max_means_no_timeout() {
    let d = TempDir::new("options", "lock-timeout");
    // On the handle and per call: a missing value is created (no overflow
    // computing a deadline), and a waiter with "forever" gets the value of
    // the creator it waited for.
    for per_call in [false, true] {
        let opts = if per_call {
            small()
        } else {
            small().lock_timeout(Duration::MAX)
        };
        let c = Cache::open(d.join(format!("c{per_call}")), opts).unwrap();
        let o = if per_call {
            CreateOptions::new().lock_timeout(Duration::MAX)
        } else {
            CreateOptions::new()
        };
        let f = c.get_or_create_opt("a", &o, || 1u64).unwrap();
        assert!(f.is_created());
        drop(f);
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = c.clone();
        let creator = std::thread::spawn(move || {
            c2.get_or_create("b", || {
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                2u64
            })
            .map(|f| f.is_created())
        });
        rx.recv().unwrap();
        let f = c.get_or_create_opt("b", &o, || 3u64).unwrap();
        assert!(!f.is_created(), "waited for the other creator");
        assert_eq!(f.into_owned().unwrap(), 2);
        assert!(creator.join().unwrap().unwrap());
    }
}

#[test]
fn huge_ttls_saturate_instead_of_wrapping() {
    let d = TempDir::new("options", "ttl");
    let six_hundred_years = Duration::from_secs(600 * 365 * 86_400);
    // Just past 2^64 ns (~584 years): wrapped modulo 2^64, 10 ns.
    let just_past = Duration::from_nanos(u64::MAX) + Duration::from_nanos(11);
    for ttl in [Duration::MAX, six_hundred_years, just_past] {
        // Stored as the file's default at creation, and as a handle's override.
        let p = d.join(format!("c{}", ttl.as_nanos()));
        let c = Cache::open(&p, small().default_ttl(ttl)).unwrap();
        c.set("k", &Raw(b"v")).unwrap();
        let g = c.get::<Raw>("k").unwrap().expect("fresh, not born expired");
        assert!(!g.meta().is_stale());
        drop(g);
        drop(c);
        let c = Cache::open(&p, small()).unwrap();
        c.set("k2", &Raw(b"v")).unwrap();
        assert!(c.get::<Raw>("k2").unwrap().is_some(), "the file's default");
        drop(c);
        let c = Cache::open(d.join("other"), small().default_ttl(ttl)).unwrap();
        c.set("k3", &Raw(b"v")).unwrap();
        assert!(c.get::<Raw>("k3").unwrap().is_some(), "a handle's default");
        // Per call, and through get_or_create.
        c.set_opt("k4", &Raw(b"v"), &WriteOptions::new().ttl(Some(ttl)))
            .unwrap();
        assert!(c.get::<Raw>("k4").unwrap().is_some());
        let o = CreateOptions::new().ttl(Some(ttl)).expiration(ttl);
        assert!(c.get_or_create_opt("k5", &o, || 5u64).unwrap().is_created());
        let f = c.get_or_create_opt("k5", &o, || 6u64).unwrap();
        assert!(!f.is_created() && !f.is_stale());
        drop(f);
        drop(c);
        std::fs::remove_file(d.join("other")).unwrap();
    }
}

#[test]
fn other_extreme_durations_do_not_panic() {
    let d = TempDir::new("options", "durations");
    let c = Cache::open(
        d.join("c"),
        small()
            .pin_wait(Duration::MAX)
            .expiration(Duration::MAX)
            .default_ttl(Duration::ZERO),
    )
    .unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    // A zero TTL: expired as soon as written (stale, never fresh).
    assert!(c.get::<Raw>("k").unwrap().is_none());
    assert!(c.get_stale::<Raw>("k").unwrap().is_some());
    let o = CreateOptions::new()
        .lock_timeout(Duration::ZERO)
        .expiration(Duration::ZERO)
        .ttl(Some(Duration::ZERO));
    assert!(c.get_or_create_opt("z", &o, || 1u64).unwrap().is_created());
    drop(c);
}

#[test]
fn out_of_range_options_name_the_option_the_value_and_the_limit() {
    assert_names(
        &refused("entries0", small().max_entries(0)),
        "max_entries",
        "0",
    );
    assert_names(
        &refused("entries-max", small().max_entries(u64::MAX)),
        "max_entries",
        &u64::MAX.to_string(),
    );
    // capacity(u64::MAX) alone: about the capacity, not about an option the
    // caller never set; refused before anything is preallocated.
    assert_names(
        &refused("cap-max", Options::new().capacity(u64::MAX)),
        "capacity",
        &u64::MAX.to_string(),
    );
    assert_names(
        &refused("cap-huge", Options::new().capacity(1 << 60)),
        "capacity",
        &(1u64 << 60).to_string(),
    );
    assert_names(
        &refused("cap0", Options::new().capacity(0)),
        "capacity",
        "0",
    );
    assert_names(
        &refused("cap-small", Options::new().capacity(100_000).stripes(64)),
        "capacity",
        "100000",
    );
    assert_names(&refused("stripes0", small().stripes(0)), "stripes", "0");
    assert_names(
        &refused("stripes-max", small().stripes(u32::MAX)),
        "stripes",
        &u32::MAX.to_string(),
    );
    assert_names(&refused("segments", small().segments(3)), "segments", "3");
    assert_names(
        &refused("readers", small().reader_slots(0)),
        "reader_slots",
        "0",
    );
    assert_names(
        &refused("regen", small().regen_stripes(0)),
        "regen_stripes",
        "0",
    );
    assert_names(
        &refused("mode", small().mode(0o10000)),
        "mode",
        &0o10000.to_string(),
    );
}

#[test]
fn per_call_arguments_never_panic() {
    let d = TempDir::new("options", "calls");
    let c = Cache::open(d.join("c"), small()).unwrap();
    assert_eq!(c.max_value_len(usize::MAX), 0);
    assert_eq!(c.max_value_len(slotcache::MAX_KEY_LEN + 1), 0);
    assert!(c.max_value_len(slotcache::MAX_KEY_LEN) > 0);
    let long = vec![b'k'; slotcache::MAX_KEY_LEN + 1];
    assert!(matches!(
        c.set(&long, &Raw(b"v")),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        c.get::<Raw>(&long),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(c.delete(&long), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(c.contains(&long), Err(Error::KeyTooLarge { .. })));
    assert!(matches!(
        c.get_or_create(&long, || 1u64),
        Err(Error::KeyTooLarge { .. })
    ));
    let _ = c.key_placement(&long);
    let big = vec![0u8; c.max_value_len(1) + 1];
    assert!(matches!(
        c.set("k", &Raw(&big)),
        Err(Error::ValueTooLarge { .. })
    ));
    // Nothing stored was lost by the refused calls.
    c.set("k", &Raw(b"v")).unwrap();
    assert!(c.set(&long, &Raw(b"v")).is_err());
    assert_eq!(&*c.get::<Raw>("k").unwrap().unwrap(), b"v");
    drop(c);
}
