//! A write-path probe for instruction counts: `write_probe OP N [BATCH]`
//! runs `N` operations of `OP` (`set`, `delete` or `set_many`, 100-byte
//! `Raw` values over 4096 keys) after the same setup. Run it under
//! `valgrind --tool=callgrind` (release build) twice, with `N` and with
//! `0`, and divide the difference by `N` (keys, for `set_many`) to get
//! instructions per operation without the setup.

use slotcache::{Cache, Options, Raw};

fn main() -> slotcache::Result<()> {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "set".into());
    let n: usize = args.next().map_or(100_000, |a| a.parse().expect("N"));
    let batch: usize = args.next().map_or(64, |a| a.parse().expect("BATCH"));
    let dir = std::env::temp_dir().join(format!("slotcache-write-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let cache = Cache::open(dir.join("probe.cache"), Options::new().capacity(64 << 20))?;
    let keys: Vec<String> = (0..4096).map(|i| format!("key:{i}")).collect();
    let value = Raw([7u8; 100]);
    for k in &keys {
        cache.set(k, &value)?;
    }
    match op.as_str() {
        "set" => {
            for i in 0..n {
                cache.set(&keys[i % keys.len()], &value)?;
            }
        }
        "delete" => {
            // The first 4096 deletes find their key, later ones do not:
            // use N <= 4096 to measure deletes of present keys.
            for i in 0..n {
                cache.delete(&keys[i % keys.len()])?;
            }
        }
        "set_many" => {
            let mut done = 0;
            while done < n {
                let m = batch.min(n - done);
                let items = (done..done + m).map(|i| (&keys[i % keys.len()], &value));
                cache.set_many(items)?;
                done += m;
            }
        }
        other => panic!("unknown op {other}: set, delete or set_many"),
    }
    drop(cache);
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
    Ok(())
}
