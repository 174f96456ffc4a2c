//! The one API shape: every read and write is generic over the value kind
//! (`Value`: a typed rkyv value or `Raw` bytes); batches take any iterator;
//! `_opt` entry points take an options struct; errors are typed.

mod common;
use common::{churn, TempDir};
use slotcache::{
    Cache, CreateOptions, Error, Fetched, Memo, Options, PinHolder, Raw, Value, ValueKind,
    WriteOptions,
};
use std::error::Error as _;
use std::time::Duration;

fn opts() -> Options {
    Options::new().capacity(8 << 20).stripes(4)
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Page {
    title: String,
    views: u64,
}

#[test]
fn raw_and_typed_values_are_kinds_that_miss_each_other() {
    let d = TempDir::new("api", "kinds");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("raw", &Raw(b"hello")).unwrap();
    c.set("raw-vec", &Raw(vec![1u8, 2, 3])).unwrap();
    c.set("raw-str", &Raw("text")).unwrap();
    c.set("n", &42u64).unwrap();
    assert_eq!(&*c.get::<Raw>("raw").unwrap().unwrap(), b"hello");
    assert_eq!(&*c.get::<Raw>("raw-vec").unwrap().unwrap(), [1, 2, 3]);
    assert_eq!(&*c.get::<Raw<&str>>("raw-str").unwrap().unwrap(), b"text");
    assert_eq!(*c.get::<u64>("n").unwrap().unwrap(), 42);
    // Another kind is a counted mismatch, never a value.
    let before = c.stats().mismatched;
    assert!(c.get::<u64>("raw").unwrap().is_none());
    assert!(c.get::<Raw>("n").unwrap().is_none());
    assert!(c.get::<u32>("n").unwrap().is_none());
    assert_eq!(c.stats().mismatched, before + 3);
    // Owned copies of both kinds.
    assert_eq!(
        c.get_owned::<Raw>("raw").unwrap(),
        Some(Raw(b"hello".to_vec()))
    );
    assert_eq!(c.get_owned::<u64>("n").unwrap(), Some(42));
    assert_eq!(c.get_owned::<Raw>("missing").unwrap(), None);
    drop(c);
}

#[test]
fn batches_take_any_iterator_and_options_apply_to_every_item() {
    let d = TempDir::new("api", "batches");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    // Keys: arrays, vectors of Strings, slices, iterators.
    let pages: Vec<(String, Page)> = (0..20)
        .map(|i| {
            let p = Page {
                title: format!("p{i}"),
                views: i,
            };
            (format!("page:{i}"), p)
        })
        .collect();
    c.set_many(pages.iter().map(|(k, v)| (k, v))).unwrap();
    let keys: Vec<String> = pages.iter().map(|(k, _)| k.clone()).collect();
    let got = c.get_many::<Page>(&keys).unwrap();
    assert_eq!(got.len(), 20);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.as_ref().unwrap().views, i as u64);
    }
    drop(got);
    let got = c
        .get_many::<Page>((0..3).map(|i| format!("page:{i}")))
        .unwrap();
    assert_eq!(got[2].as_ref().unwrap().title, "p2");
    drop(got);

    // A raw batch with a TTL: expired for get_many, served by get_many_stale.
    let short = WriteOptions::new().ttl(Some(Duration::from_millis(1)));
    c.set_many_opt(
        [("r1", &Raw(&b"one"[..])), ("r2", &Raw(&b"two"[..]))],
        &short,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let fresh = c.get_many::<Raw>(["r1", "r2", "nope"]).unwrap();
    assert!(fresh.iter().all(|g| g.is_none()), "expired: misses");
    drop(fresh);
    let stale = c.get_many_stale::<Raw>(["r1", "r2", "nope"]).unwrap();
    assert_eq!(stale[0].as_deref(), Some(&b"one"[..]));
    assert_eq!(stale[1].as_deref(), Some(&b"two"[..]));
    assert!(stale[0].as_ref().unwrap().meta().is_stale());
    assert!(stale[2].is_none());
    drop(stale);

    // `ttl(None)` never expires, even with a default TTL on the handle.
    let c2 = Cache::open(d.join("c"), opts().default_ttl(Duration::from_millis(1))).unwrap();
    c2.set_many_opt([("forever", &7u32)], &WriteOptions::new().ttl(None))
        .unwrap();
    c2.set_opt("also", &Raw(b"x"), &WriteOptions::new().ttl(None))
        .unwrap();
    c2.set("default", &7u32).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(c2
        .get::<u32>("forever")
        .unwrap()
        .unwrap()
        .meta()
        .expires()
        .is_none());
    assert!(c2.get::<Raw>("also").unwrap().is_some());
    assert!(
        c2.get::<u32>("default").unwrap().is_none(),
        "the handle's default TTL"
    );
    drop((c, c2));
}

#[test]
fn entries_view_their_values_checked_like_get() {
    let d = TempDir::new("api", "entry");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("raw", &Raw(b"bytes")).unwrap();
    c.set(
        "page",
        &Page {
            title: "Home".into(),
            views: 3,
        },
    )
    .unwrap();
    let mut seen = 0;
    for e in c.iter() {
        let e = e.unwrap();
        match e.kind() {
            ValueKind::Raw => {
                assert_eq!(e.value::<Raw>(), Some(&b"bytes"[..]));
                assert!(e.value::<Page>().is_none());
            }
            ValueKind::Archived => {
                assert_eq!(e.value::<Page>().unwrap().title, "Home");
                assert!(e.value::<Raw>().is_none());
                assert!(e.value::<u64>().is_none(), "another schema");
            }
            _ => unreachable!(),
        }
        seen += 1;
    }
    assert_eq!(seen, 2);
    drop(c);
}

/// The same code works for both kinds through the `Value` bound.
fn cached_or<'c, V: Value>(c: &'c Cache, key: &str, make: impl FnOnce() -> V) -> Fetched<'c, V> {
    c.get_or_create(key, make).unwrap()
}

#[test]
fn raw_bytes_get_dogpile_protection_from_every_entry_point() {
    let d = TempDir::new("api", "rawdogpile");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let f = cached_or(&c, "r", || Raw(b"made".to_vec()));
    assert!(f.is_created());
    assert_eq!(f.into_owned().unwrap(), Raw(b"made".to_vec()));
    let f = cached_or::<Raw>(&c, "r", || unreachable!("cached"));
    assert!(!f.is_created());
    assert_eq!(f.into_owned().unwrap(), Raw(b"made".to_vec()));
    // `should_cache` applies to raw values too.
    let non_empty = |v: &Raw| !v.0.is_empty();
    let o = CreateOptions::new().should_cache(&non_empty);
    assert!(c
        .get_or_create_opt("e", &o, || Raw(Vec::new()))
        .unwrap()
        .is_created());
    assert!(
        c.get::<Raw>("e").unwrap().is_none(),
        "refused by should_cache"
    );
    // Fallible and batch creators.
    let r = c.get_or_try_create("t", || Err::<Raw, _>("boom"));
    assert!(matches!(r, Err(slotcache::CreateError::Creator("boom"))));
    drop(r);
    let got = c
        .get_or_create_many(["r", "m1", "m2"], |ks| {
            let mut sorted = ks.to_vec();
            sorted.sort();
            assert_eq!(sorted, [&b"m1"[..], &b"m2"[..]], "in lock order");
            ks.iter().map(|k| Raw(k.to_vec())).collect()
        })
        .unwrap();
    let got: Vec<Raw> = got.into_iter().map(|f| f.into_owned().unwrap()).collect();
    assert_eq!(
        got,
        [
            Raw(b"made".to_vec()),
            Raw(b"m1".to_vec()),
            Raw(b"m2".to_vec())
        ]
    );
    // Batch options: a TTL for every created value.
    let o = CreateOptions::new().ttl(Some(Duration::from_millis(1)));
    c.get_or_create_many_opt(["x1"], &o, |ks| vec![7u64; ks.len()])
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(
        c.get::<u64>("x1").unwrap().is_none(),
        "created with the call's TTL"
    );
    drop(c);
}

#[test]
fn background_regeneration_takes_options() {
    let d = TempDir::new("api", "background");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    fn never(_: &u64) -> bool {
        false
    }
    c.set_opt(
        "k",
        &1u64,
        &WriteOptions::new().ttl(Some(Duration::from_millis(1))),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let o = CreateOptions::new().should_cache(&never);
    let (f, handle) = c.get_or_create_background_opt("k", &o, || 2u64).unwrap();
    assert!(f.is_stale(), "the stale value is served at once");
    drop(f);
    handle
        .expect("a regeneration thread")
        .join()
        .unwrap()
        .unwrap();
    // should_cache refused the new value: the old one is still the only one.
    assert_eq!(*c.get_stale::<u64>("k").unwrap().unwrap(), 1);
    drop(c);
}

#[test]
fn memo_results_can_be_raw() {
    let d = TempDir::new("api", "memo");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let render = Memo::new(&c, "render", |n: &u32| {
        Raw(format!("<p>{n}</p>").into_bytes())
    });
    assert_eq!(
        render.call(&3).unwrap().into_owned().unwrap(),
        Raw(b"<p>3</p>".to_vec())
    );
    assert_eq!(&*render.get(&3).unwrap().unwrap(), b"<p>3</p>");
    let o = CreateOptions::new().ttl(None);
    assert!(!render.call_opt(&3, &o).unwrap().is_created());
    drop(render);
    drop(c);
}

#[test]
fn a_creator_returning_the_wrong_number_of_values_is_a_contract_error() {
    let d = TempDir::new("api", "contract");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    let inserts = c.stats().inserts;
    let e = c
        .get_or_create_many(["a", "b"], |_| vec![1u64])
        .unwrap_err();
    match &e {
        Error::CreatorContract {
            op,
            expected,
            found,
        } => {
            assert_eq!(*op, "get_or_create_many");
            assert!(expected.starts_with("2 values"), "{e}");
            assert_eq!(found, "1 values", "{e}");
        }
        other => panic!("expected CreatorContract, got {other}"),
    }
    assert!(e.to_string().contains("expected 2 values"), "{e}");
    assert_eq!(c.stats().inserts, inserts, "nothing stored");
    // The locks were released: the next call creates.
    let got = c.get_or_create_many(["a", "b"], |ks| vec![5u64; ks.len()]);
    assert_eq!(got.unwrap().len(), 2);
    drop(c);
}

#[test]
fn a_value_that_disappears_while_the_creator_runs_is_created_in_another_round() {
    let d = TempDir::new("api", "rounds");
    let c = Cache::open(d.join("c"), opts()).unwrap();
    c.set("kept", &1u64).unwrap();
    // Round 1: "kept" is found fresh (noted, no guard kept), "new" is
    // created; meanwhile the creator replaces "kept" by a value of another
    // kind, so it is missing when read back. Round 2 creates it.
    let mut calls = Vec::new();
    let got = c
        .get_or_create_many(["kept", "new"], |ks| {
            calls.push(ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
            c.set("kept", &Raw(b"another kind")).unwrap();
            vec![2u64; ks.len()]
        })
        .unwrap();
    assert_eq!(calls, [vec![b"new".to_vec()], vec![b"kept".to_vec()]]);
    assert!(got.iter().all(|f| f.is_created()));
    let got: Vec<u64> = got.into_iter().map(|f| f.into_owned().unwrap()).collect();
    assert_eq!(got, [2, 2]);
    assert_eq!(*c.get::<u64>("kept").unwrap().unwrap(), 2);
    drop(c);
}

#[test]
fn pinned_errors_name_the_holder() {
    let d = TempDir::new("api", "pinned");
    let c = Cache::open(d.join("c"), opts().pin_wait(Duration::from_millis(20))).unwrap();
    c.set("held", &Raw(b"v")).unwrap();
    let g = c.get::<Raw>("held").unwrap().unwrap();
    let e = churn(&c, 3, "x").unwrap_err();
    match &e {
        Error::Pinned { holder, .. } => {
            assert!(matches!(holder, PinHolder::CallingThread(_)), "{e}")
        }
        other => panic!("expected Pinned, got {other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("held by the calling thread itself"), "{msg}");
    assert!(msg.contains("reader slot"), "{msg}");
    assert!(!msg.contains(&u32::MAX.to_string()), "no sentinel: {msg}");
    drop(g);
    assert_eq!(
        PinHolder::ReadOnlyProcess.to_string(),
        "held by a read-only process"
    );
    assert_eq!(PinHolder::Reader(3).to_string(), "reader slot 3");
    drop(c);
}

#[test]
fn serialization_errors_keep_their_source() {
    let e = Error::Deserialize {
        source: "bad archive".into(),
    };
    assert_eq!(e.source().unwrap().to_string(), "bad archive");
    assert_eq!(e.to_string(), "deserializing the value failed: bad archive");
    let e = Error::Serialize {
        source: "too deep".into(),
    };
    assert_eq!(e.source().unwrap().to_string(), "too deep");
    assert_eq!(e.to_string(), "serializing the value failed: too deep");
}

/// `get_entry` finds a record of any kind with one lookup, as a reader:
/// counted as a hit (or a miss), stale only when asked for.
#[test]
fn get_entry_finds_any_kind_in_one_lookup() {
    let d = TempDir::new("api", "get-entry");
    let c = Cache::open(d.path().join("c"), opts()).unwrap();
    c.set("raw", &Raw(b"bytes")).unwrap();
    c.set("typed", &9u64).unwrap();
    c.set_opt(
        "old",
        &Raw(b"o"),
        &WriteOptions::new().ttl(Some(Duration::ZERO)),
    )
    .unwrap();
    let before = c.stats();
    let e = c.get_entry("raw").unwrap().expect("raw entry");
    assert_eq!(
        (e.key(), e.bytes(), e.kind()),
        (&b"raw"[..], &b"bytes"[..], ValueKind::Raw)
    );
    assert_eq!(e.schema(), 0);
    drop(e);
    let e = c.get_entry("typed").unwrap().expect("typed entry");
    assert_eq!(e.kind(), ValueKind::Archived);
    assert_eq!(e.schema(), slotcache::schema_fingerprint::<u64>());
    assert_eq!(e.value::<u64>().map(|v| v.to_native()), Some(9));
    assert!(e.value::<Raw>().is_none(), "another kind");
    drop(e);
    assert!(c.get_entry("missing").unwrap().is_none());
    assert!(c.get_entry("old").unwrap().is_none(), "expired: a miss");
    let e = c.get_entry_stale("old").unwrap().expect("stale on request");
    assert!(e.meta().is_expired());
    drop(e);
    let after = c.stats();
    assert_eq!(after.hits - before.hits, 3);
    assert_eq!(after.misses - before.misses, 2);
    assert!(matches!(
        c.get_entry(vec![0u8; slotcache::MAX_KEY_LEN + 1]),
        Err(Error::KeyTooLarge { .. })
    ));
}
