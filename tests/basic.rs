use slotcache::{Cache, Error, Invalidation, Options, Raw, WriteOptions};
use std::time::Duration;

mod common;
use common::TempDir;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq, Clone)]
struct Item {
    id: u64,
    name: String,
    tags: Vec<u32>,
}

#[test]
fn set_get_delete_roundtrip() {
    let d = TempDir::new("basic", "rt");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20)).unwrap();
    c.set("a", &Raw(b"one")).unwrap();
    assert_eq!(&*c.get::<Raw>("a").unwrap().unwrap(), b"one");
    c.set("a", &Raw(b"two")).unwrap();
    assert_eq!(&*c.get::<Raw>("a").unwrap().unwrap(), b"two");
    let it = Item {
        id: 7,
        name: "seven".into(),
        tags: vec![1, 2, 3],
    };
    c.set("item", &it).unwrap();
    let g = c.get::<Item>("item").unwrap().unwrap();
    assert_eq!(g.id, 7);
    assert_eq!(g.name, "seven");
    assert_eq!(g.tags.len(), 3);
    drop(g);
    assert_eq!(c.get_owned::<Item>("item").unwrap(), Some(it));
    assert!(c.contains("a").unwrap());
    assert!(c.delete("a").unwrap());
    assert!(!c.delete("a").unwrap());
    assert!(c.get::<Raw>("a").unwrap().is_none());
    let st = c.stats();
    assert_eq!(st.entries, 1);
    assert!(st.hits >= 3, "{st:?}");
    assert_eq!(st.deletes, 1);
}

#[test]
fn type_mismatch_is_a_counted_miss() {
    let d = TempDir::new("basic", "mismatch");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20)).unwrap();
    c.set("k", &5u64).unwrap();
    assert!(c.get::<u32>("k").unwrap().is_none());
    assert!(c.get::<Raw>("k").unwrap().is_none());
    assert_eq!(*c.get::<u64>("k").unwrap().unwrap(), 5);
    assert_eq!(c.stats().mismatched, 2);
}

#[test]
fn eviction_keeps_size_bounded_and_reads_survive() {
    let d = TempDir::new("basic", "evict");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(2 << 20).stripes(2).segments(8)).unwrap();
    let v = vec![7u8; 1000];
    for i in 0..20_000u32 {
        c.set(format!("k{i}"), &Raw(&v)).unwrap();
        if i % 100 == 0 {
            // keep k0 hot
            let _ = c.get::<Raw>("k0").unwrap();
        }
    }
    let st = c.stats();
    assert!(st.evictions > 10_000, "{st:?}");
    // Default index sizing for 2 MiB holds the ~2K 1 KB records the log can:
    // these evictions are the log's, not the index's.
    assert_eq!(st.index_evictions, 0, "{st:?}");
    assert!(st.bytes_used <= st.capacity);
    assert!(
        c.get::<Raw>("k0").unwrap().is_some(),
        "hot key survives: {st:?}"
    );
    assert!(c.get::<Raw>("k19999").unwrap().is_some());
    assert!(c.get::<Raw>("k1").unwrap().is_none());
}

#[test]
fn ttl_and_invalidation() {
    let d = TempDir::new("basic", "ttl");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20)).unwrap();
    // Fresh before its TTL runs out (an hour: no race with a slow machine)...
    c.set_opt(
        "hour",
        &Raw(b"h"),
        &WriteOptions::new().ttl(Some(Duration::from_secs(3600))),
    )
    .unwrap();
    assert!(c.get::<Raw>("hour").unwrap().is_some());
    // ...and a miss, still visible as stale, once it has run out (polled:
    // however long the machine takes, it must expire).
    c.set_opt(
        "short",
        &Raw(b"x"),
        &WriteOptions::new().ttl(Some(Duration::from_millis(5))),
    )
    .unwrap();
    c.set("forever", &Raw(b"y")).unwrap();
    let t = std::time::Instant::now();
    while c.get::<Raw>("short").unwrap().is_some() {
        assert!(t.elapsed() < Duration::from_secs(30), "never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(c.get::<Raw>("short").unwrap().is_none());
    let stale = c.get_stale::<Raw>("short").unwrap().unwrap();
    assert!(stale.meta().is_expired());
    drop(stale);
    c.invalidate(Invalidation::Soft).unwrap();
    assert!(c.get::<Raw>("forever").unwrap().is_none());
    assert!(c
        .get_stale::<Raw>("forever")
        .unwrap()
        .unwrap()
        .meta()
        .is_stale());
    c.invalidate(Invalidation::Hard).unwrap();
    assert!(c.get_stale::<Raw>("forever").unwrap().is_none());
    c.set("new", &Raw(b"z")).unwrap();
    assert!(c.get::<Raw>("new").unwrap().is_some());
}

#[test]
fn limits_are_typed_errors() {
    let d = TempDir::new("basic", "limits");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(2 << 20).stripes(2).segments(4)).unwrap();
    let big_key = vec![1u8; slotcache::MAX_KEY_LEN + 1];
    assert!(matches!(
        c.set(&big_key, &Raw(b"v")),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        c.get::<Raw>(&big_key),
        Err(Error::KeyTooLarge { .. })
    ));
    let max = c.max_value_len(1);
    c.set("k", &Raw(&vec![0u8; max])).unwrap();
    let e = c.set("k", &Raw(&vec![0u8; max + 1])).unwrap_err();
    assert!(matches!(e, Error::ValueTooLarge { .. }), "{e}");
    assert!(e.to_string().contains(&max.to_string()));
    assert_eq!(c.get::<Raw>("k").unwrap().unwrap().len(), max);
}

#[test]
fn hot_set_survives_a_stream_of_one_time_writes() {
    let d = TempDir::new("basic", "hot");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20).stripes(4)).unwrap();
    let v = vec![1u8; 200];
    let hot: Vec<String> = (0..500).map(|i| format!("hot{i}")).collect();
    for k in &hot {
        c.set(k, &Raw(&v)).unwrap();
    }
    let (mut hits, mut reads) = (0u64, 0u64);
    // Stream 20x the cache's capacity of keys that are written once and
    // never read, while the hot keys keep being read.
    for i in 0..200_000u32 {
        c.set(format!("cold{i}"), &Raw(&v)).unwrap();
        if i % 10 == 0 {
            let k = &hot[(i as usize / 10) % hot.len()];
            reads += 1;
            match c.get::<Raw>(k).unwrap() {
                Some(_) => hits += 1,
                None => c.set(k, &Raw(&v)).unwrap(), // a miss refills, as a cache user would
            }
        }
    }
    let st = c.stats();
    assert!(st.evictions > 100_000, "{st:?}");
    assert!(st.reinserts > 0, "{st:?}");
    let ratio = hits as f64 / reads as f64;
    assert!(
        ratio > 0.95,
        "hot-set hit ratio {ratio:.3} ({hits}/{reads}), {st:?}"
    );
    // The one-time keys from long ago are gone.
    assert!(c.get::<Raw>("cold0").unwrap().is_none());
}

#[test]
fn full_index_evicts_within_the_bucket() {
    let d = TempDir::new("basic", "index");
    let p = d.join("c");
    let c = Cache::open(
        &p,
        Options::new().capacity(8 << 20).stripes(2).max_entries(64),
    )
    .unwrap();
    let slots = c.info().index_slots;
    for i in 0..10_000u32 {
        c.set(i.to_le_bytes(), &Raw(b"v")).unwrap();
    }
    let st = c.stats();
    assert!(st.entries <= slots, "{st:?} slots {slots}");
    assert!(st.evictions >= 10_000 - slots, "{st:?}");
    // The log (8 MiB) never filled: every eviction was the index's.
    assert_eq!(st.index_evictions, st.evictions, "{st:?}");
    assert!(
        c.get::<Raw>(9999u32.to_le_bytes()).unwrap().is_some(),
        "the newest entry is there"
    );
    let live = (0..10_000u32)
        .filter(|i| c.contains(i.to_le_bytes()).unwrap())
        .count() as u64;
    assert_eq!(live, st.entries);
}

/// Two-choice buckets: an index sized with `max_entries(n)` holds n random
/// keys without a single bucket eviction (with one bucket per key, about
/// 0.85% of them would evict a bucket-mate).
#[test]
fn index_holds_max_entries_random_keys() {
    let d = TempDir::new("basic", "twochoice");
    let p = d.join("c");
    let n = 50_000u64;
    let c = Cache::open(&p, Options::new().capacity(32 << 20).max_entries(n)).unwrap();
    let items: Vec<([u8; 8], Raw<[u8; 4]>)> = (0..n)
        .map(|i| {
            (
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes(),
                Raw([7u8; 4]),
            )
        })
        .collect();
    for chunk in items.chunks(4096) {
        c.set_many(chunk.iter().map(|(k, v)| (k, v))).unwrap();
    }
    let st = c.stats();
    assert_eq!(
        (st.entries, st.evictions, st.index_evictions),
        (n, 0, 0),
        "{st:?}"
    );
    assert!(items.iter().all(|(k, _)| c.contains(k).unwrap()));
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn batches_clear_and_flush() {
    let d = TempDir::new("basic", "batch");
    let p = d.join("c");
    let c = Cache::open(&p, Options::new().capacity(8 << 20).stripes(8)).unwrap();
    let items: Vec<(String, Raw)> = (0..300)
        .map(|i| (format!("k{i}"), Raw(format!("v{i}").into_bytes())))
        .collect();
    c.set_many(items.iter().map(|(k, v)| (k, v))).unwrap();
    let keys: Vec<&str> = items
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(["absent"])
        .collect();
    let got = c.get_many::<Raw>(&keys).unwrap();
    assert_eq!(got.len(), 301);
    for (i, g) in got.iter().take(300).enumerate() {
        assert_eq!(g.as_deref(), Some(format!("v{i}").as_bytes()));
    }
    assert!(got[300].is_none());
    drop(got);
    let typed: Vec<(String, Item)> = (0..50)
        .map(|i| {
            (
                format!("t{i}"),
                Item {
                    id: i,
                    name: format!("n{i}"),
                    tags: vec![i as u32],
                },
            )
        })
        .collect();
    c.set_many(typed.iter().map(|(k, v)| (k.as_str(), v)))
        .unwrap();
    let g = c.get_many::<Item>(&["t7", "t49", "nope"]).unwrap();
    assert_eq!(g[0].as_ref().unwrap().id, 7);
    assert_eq!(g[1].as_ref().unwrap().name, "n49");
    assert!(g[2].is_none());
    drop(g);
    assert_eq!(c.stats().entries, 350);
    c.flush().unwrap();
    c.clear().unwrap();
    assert_eq!(c.stats().entries, 0);
    assert!(!c.contains("k1").unwrap());
    assert!(c.get::<Item>("t7").unwrap().is_none());
    c.set("after", &Raw(b"clear")).unwrap();
    assert_eq!(&*c.get::<Raw>("after").unwrap().unwrap(), b"clear");
}

#[test]
fn default_ttl_is_stored_in_the_file() {
    let d = TempDir::new("basic", "defttl");
    let p = d.join("c");
    let c = Cache::open(
        &p,
        Options::new()
            .capacity(8 << 20)
            .default_ttl(Duration::from_millis(40)),
    )
    .unwrap();
    c.set("k", &Raw(b"v")).unwrap();
    let exp = c
        .get::<Raw>("k")
        .unwrap()
        .unwrap()
        .meta()
        .expires()
        .expect("has a TTL");
    assert!(exp > std::time::SystemTime::now());
    drop(c);
    // Another handle (as another process would) adopts the stored default.
    let c = Cache::open(&p, Options::new()).unwrap();
    c.set("k2", &Raw(b"v")).unwrap();
    assert!(c
        .get::<Raw>("k2")
        .unwrap()
        .unwrap()
        .meta()
        .expires()
        .is_some());
    std::thread::sleep(Duration::from_millis(80));
    assert!(c.get::<Raw>("k").unwrap().is_none());
    assert!(c.get::<Raw>("k2").unwrap().is_none());
    assert_eq!(c.stats().expired, 2);
}

/// A second `Cache::open` of the same file in one process. On Unix it shares
/// the first handle's descriptor, mutexes and locks (classic `fcntl` locks
/// need one descriptor per file per process); on Windows it is a second
/// file handle with mutexes of its own, whose `LockFileEx` locks exclude the
/// first handle's as another process's would. Either way two writers never
/// work inside one stripe at once: the per-stripe counters are a plain load
/// and store under the stripe lock, so a lost update would show.
#[test]
fn two_handles_in_one_process_exclude_each_other() {
    let d = TempDir::new("basic", "handles");
    let p = d.join("c");
    let a = Cache::open(&p, Options::new().capacity(8 << 20).stripes(2)).unwrap();
    let b = Cache::open(&p, Options::new()).unwrap();
    const N: u64 = 1500;
    let writers: Vec<_> = [&a, &b, &a, &b]
        .into_iter()
        .enumerate()
        .map(|(t, c)| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..N {
                    c.set(format!("t{t}-{i}"), &Raw(&[t as u8; 100])).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let st = b.stats();
    assert_eq!(st.inserts, 4 * N, "{st:?}");
    assert_eq!(a.stats().inserts, 4 * N);
    for t in 0..4u8 {
        let g = a.get::<Raw>(format!("t{t}-{}", N - 1)).unwrap().unwrap();
        assert_eq!(&*g, &[t; 100][..]);
    }
}

#[test]
fn a_key_given_twice_in_one_batch_ends_with_its_last_value() {
    let d = TempDir::new("basic", "batch-dup");
    let c = Cache::open(d.join("c"), Options::new().capacity(8 << 20).stripes(8)).unwrap();
    // 40 keys, each given 5 times in one call with its round as the value,
    // interleaved across stripes so the grouping reorders the items.
    let items: Vec<(String, Raw<Vec<u8>>)> = (0..5)
        .flat_map(|round| (0..40).map(move |i| (format!("k{i}"), Raw(vec![round as u8; 3]))))
        .collect();
    c.set_many(items.iter().map(|(k, v)| (k, v))).unwrap();
    for i in 0..40 {
        let got = c.get::<Raw>(format!("k{i}")).unwrap().unwrap();
        assert_eq!(&*got, &[4u8; 3], "k{i}");
    }
    assert_eq!(c.stats().entries, 40);
}
