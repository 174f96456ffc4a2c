#!/usr/bin/env bash
# Fuzzing for slotcache: runs each cargo-fuzz target of fuzz/ for a fixed
# time, starting from its committed corpus, when a nightly toolchain is
# installed (cargo-fuzz is installed if missing). Without nightly, or when
# cargo-fuzz cannot be installed, prints "SKIPPED fuzzing: <reason>" and
# exits 0. (The corpora are replayed on stable by `cargo test` in any case:
# tests/fuzz_corpus.rs.)
#
# Exits non-zero when a target finds a crash, a hang (timeout) or runs out
# of memory, or when the targets do not build. Crashing inputs are left in
# fuzz/artifacts/<target>/ (not tracked); new corpus inputs go to a
# temporary directory, so the committed corpus is never modified.
#
# Environment:
#   SLOTCACHE_FUZZ_SECONDS    seconds per target (default 60)
#   SLOTCACHE_FUZZ_TARGETS    targets to run (default: all of them)
#   SLOTCACHE_FUZZ_SANITIZER  address (default) or none
set -uo pipefail
cd "$(dirname "$0")/.."

skip() {
    echo
    echo "######################################################################"
    echo "SKIPPED fuzzing: $*"
    echo "######################################################################"
    exit 0
}

seconds=${SLOTCACHE_FUZZ_SECONDS:-60}
targets=${SLOTCACHE_FUZZ_TARGETS:-"open_bytes ops_model ops_bitflip options"}
sanitizer=${SLOTCACHE_FUZZ_SANITIZER:-address}

echo "== fuzzing (${seconds}s per target: $targets)"
command -v rustup >/dev/null 2>&1 || skip "rustup is not installed"
nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ { print $1; exit }')
[ -n "$nightly" ] || skip "no nightly toolchain (\`rustup toolchain list\` shows none)"
echo "toolchain: $nightly"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    start=$(date +%s)
    if ! cargo install cargo-fuzz --locked; then
        skip "cargo-fuzz is not installed and \`cargo install cargo-fuzz --locked\` failed"
    fi
    echo "cargo-fuzz installed in $(($(date +%s) - start))s"
fi
cargo fuzz --version

echo "== cargo +$nightly fuzz build"
start=$(date +%s)
if ! cargo "+$nightly" fuzz build -s "$sanitizer"; then
    echo "FAILED: the fuzz targets do not build with $nightly"
    exit 1
fi
echo "built in $(($(date +%s) - start))s"

work=$(mktemp -d)
# Scratch cache files (one per input, removed after it; a crashing input
# leaves its file behind) go to memory when possible, and are all removed
# at exit.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch=$(mktemp -d /dev/shm/slotcache-fuzz.XXXXXX)
else
    scratch="$work/scratch"
    mkdir -p "$scratch"
fi
export SLOTCACHE_FUZZ_DIR="$scratch"
trap 'rm -rf "$work" "$scratch"' EXIT
failed=()
for t in $targets; do
    echo "== fuzz $t (${seconds}s)"
    mkdir -p "$work/$t"
    start=$(date +%s)
    # The first directory receives new inputs; the committed corpus only seeds.
    cargo "+$nightly" fuzz run -s "$sanitizer" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
        >"$work/$t.log" 2>&1
    rc=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::number_of_executed_units|^Done ' "$work/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        echo "FAILED: fuzz target $t exited with $rc after $(($(date +%s) - start))s:"
        grep -A4 -m4 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$work/$t.log" || true
        echo "-- end of its output:"
        grep -v -E '^#[0-9]|^ +[0-9]+: |^ +at ' "$work/$t.log" | tail -n 40
        echo "(crashing input in fuzz/artifacts/$t/; replay it with"
        echo " cargo +$nightly fuzz run $t fuzz/artifacts/$t/<file>)"
        failed+=("$t")
    else
        echo "ok: $t ran $(($(date +%s) - start))s without a finding"
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED fuzzing: ${failed[*]}"
    exit 1
fi
echo "fuzzing: all targets ran clean"
