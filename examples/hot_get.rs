//! A hot-`get` loop for instruction counts of the read path: 64 keys of
//! 100-byte raw values, then 200 000 `get::<Raw>` over them. Run it under
//! `valgrind --tool=callgrind` (release build) to compare two revisions:
//! the loop dominates the count.

use slotcache::{Cache, Options, Raw};

fn main() -> slotcache::Result<()> {
    let dir = std::env::temp_dir().join(format!("slotcache-hot-get-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let cache = Cache::open(dir.join("hot.cache"), Options::new().capacity(8 << 20))?;
    let keys: Vec<String> = (0..64).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        cache.set(k, &Raw([7u8; 100]))?;
    }
    let mut sum = 0usize;
    for i in 0..200_000 {
        let g = cache.get::<Raw>(&keys[i % keys.len()])?.expect("hot key");
        sum += g.len();
    }
    assert_eq!(sum, 200_000 * 100);
    drop(cache);
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
    Ok(())
}
