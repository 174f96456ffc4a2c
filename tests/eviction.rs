//! The probation ring and its ghosts through the public API (format.md
//! §5.4): keys read in probation are promoted to main, keys never read
//! leave a ghost and come back straight to main when the admission sketch
//! estimates them at least as frequent as main's next victim (else to
//! probation again), main reinserts what was read since its last pass, a
//! loop over more keys than fit keeps a stable part cached, a damaged
//! sketch changes nothing but those decisions, and a writer
//! killed (`SIGKILL`) while it promotes leaves a file that verifies clean
//! and keeps working.

mod common;

use common::{child, child_role, KillOnDrop, TempDir};
use slotcache::{Cache, Options, Raw, Stats};
use std::time::{Duration, Instant};

/// One stripe, so every key shares the rings the test watches.
fn one_stripe() -> Options {
    Options::new().capacity(2 << 20).stripes(1).segments(8)
}

/// One stripe with an index (and so an admission sketch) sized for far
/// more entries than the log holds: the sketch's counters are sparse, so
/// its estimates are the exact counts the tests reason about (a dense
/// sketch overestimates by what other keys add to the same counters).
fn sparse_sketch() -> Options {
    one_stripe().capacity(6 << 20).max_entries(1 << 18)
}

const VALUE: [u8; 200] = [3u8; 200];

/// Writes `n` keys `{tag}{i}` and reads each right after writing it (so it
/// is promoted when it leaves probation).
fn write_read(c: &Cache, tag: &str, n: u32) {
    for i in 0..n {
        let k = format!("{tag}{i}");
        c.set(&k, &Raw(&VALUE)).unwrap();
        assert!(c.get::<Raw>(&k).unwrap().is_some());
    }
}

/// Records a probation ring holds at most (a probation lap, with margin).
fn probation_lap(c: &Cache) -> u32 {
    // 200-byte values under short keys: 272-byte records; probation has
    // one of the stripe's 8 segments (format.md §2.1).
    let i = c.info();
    (i.segments as u64 * i.segment_size / 272 / 8) as u32 + 1
}

/// A [`sparse_sketch`] cache in a new directory named `name`, and its
/// probation lap, after keys read while in probation filled main (every
/// exit is a promotion): past 12 probation laps main has wrapped and holds
/// no unread entry.
fn warmed(name: &str) -> (TempDir, Cache, u32) {
    let d = TempDir::new("eviction", name);
    let c = Cache::open(d.join("c"), sparse_sketch()).unwrap();
    let lap = probation_lap(&c);
    write_read(&c, "warm", 12 * lap);
    (d, c, lap)
}

/// Writes `n` keys `{tag}{i}` and never reads them.
fn write_only(c: &Cache, tag: &str, n: u32) {
    for i in 0..n {
        c.set(format!("{tag}{i}"), &Raw(&VALUE)).unwrap();
    }
}

#[test]
fn read_keys_are_promoted_and_unread_ones_leave_ghosts_that_come_back_to_main() {
    let (_d, c, lap) = warmed("ghosts");
    let st = c.stats();
    assert!(st.promotions > 0 && st.ghosts == 0, "{st:?}");
    assert!(
        st.evictions > 0,
        "main wrapped: its tail was evicted {st:?}"
    );
    // A key written once and never read leaves probation as a ghost.
    c.set("cold", &Raw(&VALUE)).unwrap();
    write_read(&c, "push", 2 * lap);
    let st2 = c.stats();
    assert!(c.get::<Raw>("cold").unwrap().is_none(), "{st2:?}");
    assert_eq!(st2.ghosts - st.ghosts, 1, "{st2:?}");
    // Written again, its ghost sends it straight to main (its estimate,
    // two writes, ties main's victims': a write and a promotion of an
    // entry read once, count 0 since): it survives another probation lap
    // without being read.
    c.set("cold", &Raw(&VALUE)).unwrap();
    let st3 = c.stats();
    assert_eq!(st3.ghost_hits - st2.ghost_hits, 1);
    assert_eq!(st3.ghost_rejections, 0, "{st3:?}");
    write_read(&c, "again", 2 * lap);
    assert!(
        c.get::<Raw>("cold").unwrap().is_some(),
        "in main, not in probation: {:?}",
        c.stats()
    );
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn the_sketch_sends_a_rare_returning_ghost_to_probation_and_a_frequent_one_to_main() {
    // Main holds keys written once and read once in probation: estimate 2
    // each (the write, and the hit folded in at promotion).
    let (_d, c, lap) = warmed("admission");
    // Two keys written once, never read: ghosts.
    c.set("rare", &Raw(&VALUE)).unwrap();
    c.set("freq", &Raw(&VALUE)).unwrap();
    write_read(&c, "push", 2 * lap);
    assert!(c.get::<Raw>("rare").unwrap().is_none());
    assert!(c.get::<Raw>("freq").unwrap().is_none());
    // Every live entry is read once more: main's victims count 1 hit.
    for (tag, n) in [("warm", 12 * lap), ("push", 2 * lap)] {
        for i in 0..n {
            let _ = c.get::<Raw>(format!("{tag}{i}")).unwrap();
        }
    }
    // "rare" comes back: estimate 2 (two writes) against the victim's 2
    // plus its hit: refused, written to probation.
    let before = c.stats();
    c.set("rare", &Raw(&VALUE)).unwrap();
    let after = c.stats();
    assert_eq!(after.ghost_hits - before.ghost_hits, 1, "{after:?}");
    assert_eq!(
        after.ghost_rejections - before.ghost_rejections,
        1,
        "{after:?}"
    );
    assert!(after.sketch_additions > before.sketch_additions);
    // In probation, unread, it leaves again with the next two laps.
    write_only(&c, "flush", 2 * lap);
    assert!(c.get::<Raw>("rare").unwrap().is_none(), "{:?}", c.stats());
    // "freq" keeps coming back (a cache-aside miss and write each time):
    // each return adds one to its estimate until it beats main's victim,
    // and then it goes to main.
    let mut returns = 0;
    loop {
        returns += 1;
        assert!(returns <= 6, "never admitted: {:?}", c.stats());
        let before = c.stats();
        c.set("freq", &Raw(&VALUE)).unwrap();
        let after = c.stats();
        assert_eq!(after.ghost_hits - before.ghost_hits, 1, "{after:?}");
        let refused = after.ghost_rejections - before.ghost_rejections;
        // Unread writes leave main alone: only probation turns over.
        write_only(&c, &format!("cycle{returns}-"), 2 * lap);
        let cached = c.get::<Raw>("freq").unwrap().is_some();
        assert_eq!(cached, refused == 0, "return {returns}: {after:?}");
        if cached {
            break;
        }
    }
    assert!(returns >= 2, "the first return was refused as \"rare\" was");
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn a_loop_over_more_keys_than_fit_keeps_a_stable_part_cached() {
    let d = TempDir::new("eviction", "loop");
    let c = Cache::open(d.join("c"), one_stripe()).unwrap();
    let i = c.info();
    // 1.1 times the records the stripe's rings hold: more than fit, and
    // few enough that keys come back while their ghost is remembered.
    let keys = (i.segments as u64 * i.segment_size / 272 * 11 / 10) as u32;
    let (mut requests, mut hits) = (0u64, 0u64);
    let rounds = 12;
    for round in 0..rounds {
        for k in 0..keys {
            let key = format!("loop{k}");
            let hit = c.get::<Raw>(&key).unwrap().is_some();
            if !hit {
                c.set(&key, &Raw(&VALUE)).unwrap();
            }
            if round >= rounds - 4 {
                requests += 1;
                hits += hit as u64;
            }
        }
    }
    let st = c.stats();
    // LRU and FIFO hit nothing on a loop longer than the cache; admission
    // by frequency keeps some keys resident.
    let ratio = hits as f64 / requests as f64;
    eprintln!("loop hit ratio {ratio:.3}: {st:?}");
    assert!(
        ratio > 0.1,
        "hit ratio {ratio:.3} over the last rounds: {st:?}"
    );
    assert!(
        st.ghost_hits > st.ghost_rejections && st.ghost_rejections > 0,
        "{st:?}"
    );
    assert!(c.verify().unwrap().is_clean());
}

/// Little-endian `u64` at `off` of `b`.
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

#[test]
fn a_damaged_sketch_only_changes_which_ghosts_enter_main() {
    let d = TempDir::new("eviction", "damaged-sketch");
    let path = d.join("c");
    let c = Cache::open(&path, one_stripe()).unwrap();
    let lap = probation_lap(&c);
    write_read(&c, "warm", 12 * lap);
    drop(c);
    // Every byte of the sketch region (format.md §2.4a: from the end of
    // the index to the data region) set to 0xFF, every counter 15, and
    // the stripe's addition count (stripe entry byte 184) about to wrap.
    let mut file = std::fs::read(&path).unwrap();
    let stripes = u32::from_le_bytes(file[24..28].try_into().unwrap()) as u64;
    let buckets = u32::from_le_bytes(file[40..44].try_into().unwrap()) as u64;
    let (index_off, data_off) = (le64(&file, 104), le64(&file, 112));
    let sketch_off = index_off + stripes * buckets * 64;
    assert!(sketch_off < data_off, "a sketch region");
    file[sketch_off as usize..data_off as usize].fill(0xFF);
    file[4096 + 184..4096 + 192].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    std::fs::write(&path, &file).unwrap();
    let c = Cache::open(&path, one_stripe()).unwrap();
    // Keys written, left unread (ghosts), written again, read: ghosts come
    // back and the writer decides on the damaged counts.
    for round in 0..4 {
        write_only(&c, "ghost", lap);
        write_read(&c, &format!("read{round}-"), lap);
    }
    for i in 0..lap {
        let k = format!("ghost{i}");
        if let Some(v) = c.get::<Raw>(&k).unwrap() {
            assert_eq!(&*v, &VALUE[..], "{k}");
        }
    }
    let st = c.stats();
    assert!(st.ghost_hits > 0, "{st:?}");
    assert!(
        st.sketch_additions < u64::MAX - 2,
        "the count wrapped: {st:?}"
    );
    let r = c.verify().unwrap();
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn main_reinserts_what_was_read_since_its_last_pass_and_forgets_the_rest() {
    let d = TempDir::new("eviction", "reinsert");
    let c = Cache::open(d.join("c"), one_stripe()).unwrap();
    let lap = probation_lap(&c);
    // Records in main's ring: writing that many moves main's tail past
    // every entry once, and not twice (it holds at most 7 of 8 segments).
    let info = c.info();
    let main_lap = (info.segments as u64 * info.segment_size / 272) as u32;
    write_read(&c, "fill", main_lap + lap);
    // Three keys promoted to main; "twice" then read twice there, "once"
    // once, "never" not at all.
    for k in ["twice", "once", "never"] {
        c.set(k, &Raw(&VALUE)).unwrap();
        assert!(c.get::<Raw>(k).unwrap().is_some());
    }
    write_read(&c, "a", 2 * lap);
    let promoted = c.stats().promotions;
    for k in ["twice", "twice", "once"] {
        assert!(c.get::<Raw>(k).unwrap().is_some(), "{k} is in main");
    }
    let before = c.stats();
    // One lap of main: "never" is evicted, "once" and "twice" reinserted.
    write_read(&c, "b", main_lap);
    let st = c.stats();
    assert!(st.promotions > promoted);
    assert!(st.reinserts - before.reinserts >= 2, "{st:?}");
    assert!(c.get::<Raw>("never").unwrap().is_none(), "{st:?}");
    assert!(c.get::<Raw>("once").unwrap().is_some(), "{st:?}");
    // "once" was just read again; "twice" kept one of its two hits.
    // Another lap without reading "twice": it is reinserted once more.
    write_read(&c, "c", main_lap);
    assert!(c.get::<Raw>("twice").unwrap().is_some(), "{:?}", c.stats());
    // Written bytes by reinsertion and promotion are counted.
    let st = c.stats();
    assert!(st.rewritten_bytes >= 272 * (st.promotions + st.reinserts));
    assert!(c.verify().unwrap().is_clean());
}

#[test]
fn keys_larger_than_a_probation_segment_go_to_main() {
    let d = TempDir::new("eviction", "large");
    let c = Cache::open(d.join("c"), one_stripe()).unwrap();
    let big = vec![9u8; c.max_value_len(5)];
    c.set("large", &Raw(&big)).unwrap();
    // Many probation laps of small unread keys: the large entry lives in
    // main, which no promotion pushes (nothing here is read).
    let lap = probation_lap(&c);
    for i in 0..3 * lap {
        c.set(format!("small{i}"), &Raw(&VALUE)).unwrap();
    }
    assert_eq!(&*c.get::<Raw>("large").unwrap().unwrap(), &big[..]);
    assert_eq!(c.stats().ghost_hits, 0);
}

/// How long a promoter runs before the parent kills it, at most.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn child_entry() {
    let Some((role, path)) = child_role() else {
        return;
    };
    assert_eq!(role, "promoter");
    let c = Cache::open(&path, one_stripe()).unwrap();
    let start = Instant::now();
    let mut i = 0u64;
    // Every second key is read once (promoted at its probation exit), the
    // others are not (ghosts); every tenth comes back (ghost hits).
    while start.elapsed() < CHILD_LIMIT {
        let k = format!("p{}", if i % 10 == 9 { i - 9 } else { i });
        c.set(&k, &Raw(&VALUE)).unwrap();
        if i % 2 == 0 {
            let _ = c.get::<Raw>(&k).unwrap();
        }
        i += 1;
    }
}

fn promotions(c: &Cache) -> u64 {
    let st: Stats = c.stats();
    st.promotions
}

#[test]
fn a_writer_killed_while_promoting_leaves_a_clean_file() {
    let d = TempDir::new("eviction", "killed");
    let path = d.join("c");
    let c = Cache::open(&path, one_stripe()).unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..6 {
        let mut kid = KillOnDrop(child("promoter", &path).spawn().unwrap());
        // Wait until the child is promoting, then kill it a little later
        // (at a point of the loop no one chooses).
        let base = promotions(&c);
        let start = Instant::now();
        while promotions(&c) < base + 50 {
            assert!(
                start.elapsed() < CHILD_LIMIT,
                "round {round}: no promotions"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 20_000));
        kid.0.kill().unwrap();
        kid.0.wait().unwrap();
        let r = c.verify().unwrap();
        assert!(r.is_clean(), "round {round}: {r:?}");
        // The next writer finishes whatever the dead one left.
        write_read(&c, &format!("after{round}-"), 500);
        let r = c.verify().unwrap();
        assert!(r.is_clean(), "round {round}, after writing: {r:?}");
        assert!(c.get::<Raw>(format!("after{round}-499")).unwrap().is_some());
    }
    assert!(
        c.stats().ghosts > 0 && c.stats().ghost_hits > 0,
        "{:?}",
        c.stats()
    );
}
