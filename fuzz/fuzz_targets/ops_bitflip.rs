//! `cargo fuzz run ops_bitflip`: see `slotcache_fuzz::run_ops_bitflip` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcache_fuzz::run_ops_bitflip(data);
});
