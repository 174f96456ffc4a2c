//! `cargo fuzz run open_bytes`: see `slotcache_fuzz::run_open_bytes` (fuzz/src/lib.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotcache_fuzz::run_open_bytes(data));
