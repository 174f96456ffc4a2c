//! Prints the ratio tables of `BENCHMARKS.md` from the last `cargo bench`.
fn main() {}
