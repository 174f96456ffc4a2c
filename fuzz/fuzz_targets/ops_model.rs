//! `cargo fuzz run ops_model`: see `slotcache_fuzz::run_ops_model` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcache_fuzz::run_ops_model(data);
});
