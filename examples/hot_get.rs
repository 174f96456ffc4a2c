//! A hot-`get` loop for instruction counts of the read path: 64 keys of
//! 100-byte raw values, then `N` `get::<Raw>` over them (`N` is the first
//! argument, 200 000 by default; run it with `0` too and subtract, so only
//! the loop is counted). Run it under `valgrind --tool=callgrind` (release
//! build) to compare two revisions.

use slotcache::{Cache, Options, Raw};

fn main() -> slotcache::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(200_000, |a| a.parse().expect("a number of gets"));
    let dir = std::env::temp_dir().join(format!("slotcache-hot-get-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let cache = Cache::open(dir.join("hot.cache"), Options::new().capacity(8 << 20))?;
    let keys: Vec<String> = (0..64).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        cache.set(k, &Raw([7u8; 100]))?;
    }
    // The first read claims this thread's reader slot: not part of the loop.
    assert!(cache.get::<Raw>(&keys[0])?.is_some());
    let mut sum = 0usize;
    for i in 0..n {
        let g = cache.get::<Raw>(&keys[i % keys.len()])?.expect("hot key");
        sum += g.len();
    }
    assert_eq!(sum, n * 100);
    drop(cache);
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
    Ok(())
}
