//! A hot-`set` loop for instruction counts of the write path: 200 000
//! `set` (`Raw`, 100 bytes) over 4096 keys, then 100 000 `delete`s
//! alternating with re-`set`s. Run it under `valgrind --tool=callgrind`
//! (release build) to compare two revisions or the two stripe lock kinds:
//! `hot_set byte-range` creates the file with byte-range stripe locks
//! (`Options::byte_range_locks`, a hidden option), no argument with the
//! platform's default kind.

use slotcache::{Cache, Options, Raw};

fn main() -> slotcache::Result<()> {
    let byte_range = std::env::args().nth(1).as_deref() == Some("byte-range");
    let dir = std::env::temp_dir().join(format!("slotcache-hot-set-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let opts = Options::new()
        .capacity(64 << 20)
        .byte_range_locks(byte_range);
    let cache = Cache::open(dir.join("hot.cache"), opts)?;
    let keys: Vec<String> = (0..4096).map(|i| format!("key:{i}")).collect();
    let value = Raw([7u8; 100]);
    for i in 0..200_000 {
        cache.set(&keys[i % keys.len()], &value)?;
    }
    let mut deleted = 0;
    for i in 0..100_000 {
        let k = &keys[i % keys.len()];
        deleted += cache.delete(k)? as usize;
        cache.set(k, &value)?;
    }
    assert_eq!(deleted, 100_000);
    drop(cache);
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
    Ok(())
}
