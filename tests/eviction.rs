//! The probation ring and its ghosts through the public API (format.md
//! §5.4): keys read in probation are promoted to main, keys never read
//! leave a ghost and come back straight to main, main reinserts what was
//! read since its last pass, and a writer killed (`SIGKILL`) while it
//! promotes leaves a file that verifies clean and keeps working.

mod common;

use common::{child, child_role, KillOnDrop, TempDir};
use slotcache::{Cache, Options, Raw, Stats};
use std::time::{Duration, Instant};

/// One stripe, so every key shares the rings the test watches.
fn one_stripe() -> Options {
    Options::new().capacity(2 << 20).stripes(1).segments(8)
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
    // 200-byte values under short keys: 272-byte records.
    (c.info().file_size / 272 / 8) as u32
}

#[test]
fn read_keys_are_promoted_and_unread_ones_leave_ghosts_that_come_back_to_main() {
    let d = TempDir::new("eviction", "ghosts");
    let c = Cache::open(d.join("c"), one_stripe()).unwrap();
    let lap = probation_lap(&c);
    // Keys read while in probation fill main (every exit is a promotion):
    // past several laps main has wrapped and holds no unread entry.
    write_read(&c, "warm", 12 * lap);
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
    // Written again, its ghost sends it straight to main: it survives
    // another probation lap without being read.
    c.set("cold", &Raw(&VALUE)).unwrap();
    assert_eq!(c.stats().ghost_hits - st2.ghost_hits, 1);
    write_read(&c, "again", 2 * lap);
    assert!(
        c.get::<Raw>("cold").unwrap().is_some(),
        "in main, not in probation: {:?}",
        c.stats()
    );
    assert!(c.verify().unwrap().is_clean());
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
