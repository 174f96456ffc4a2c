//! `cargo fuzz run options`: see `slotcache_fuzz::run_options` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    slotcache_fuzz::run_options(data);
});
