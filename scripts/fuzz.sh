#!/usr/bin/env bash
# Fuzz one target, or each in turn, for real: libFuzzer through cargo fuzz
# on the nightly toolchain, starting from the committed corpus and adding
# what it finds to it.
#
#   scripts/fuzz.sh [TARGET] [SECONDS]    (default: every target, 600 s each)
#
# Each run prints libFuzzer's last status line (executions, coverage,
# corpus). A crash leaves its input in fuzz/artifacts/TARGET/; once fixed,
# copy it into fuzz/corpus/TARGET/ so that `cargo nextest run --workspace`
# replays it on every build (fuzz/tests/corpora.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-}"
seconds="${2:-600}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

if [ -n "$target" ]; then
  targets="$target"
else
  targets=$(ls fuzz/fuzz_targets | sed 's/\.rs$//')
fi

mkdir -p target/fuzz-logs
for t in $targets; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz.sh: no target $t (fuzz/fuzz_targets/)" >&2
    exit 2
  fi
  # Fuzz into a scratch copy of the corpus, then merge back only the
  # inputs that add coverage, so the committed corpus stays small.
  work="target/fuzz-corpus/$t"
  mkdir -p "$work"
  cp -n "fuzz/corpus/$t"/* "$work"/ 2>/dev/null || true
  log="target/fuzz-logs/$t.log"
  echo "== $t: ${seconds}s (log: $log)"
  status=0
  cargo +nightly fuzz run --fuzz-dir fuzz --features libfuzzer \
    --sanitizer none --debug-assertions "$t" "$work" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    > "$log" 2>&1 || status=$?
  grep -E '^#[0-9]+' "$log" | tail -1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "fuzz.sh: $t failed (exit $status); the input is in fuzz/artifacts/$t/" >&2
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2 || true
    exit "$status"
  fi
  cargo +nightly fuzz cmin --fuzz-dir fuzz --features libfuzzer --sanitizer none \
    "$t" "$work" > /dev/null 2>&1 || true
  # Inputs of at most 8 KiB join the committed corpus (the larger ones
  # stay in the scratch copy for the next run). The bundle target is slow
  # in a debug build (each input loads two bundles): keep its committed
  # corpus to a sample.
  limit=100000
  [ "$t" = bundle ] && limit=100
  for f in $(find "$work" -maxdepth 1 -type f -size -8k | sort); do
    [ "$(ls "fuzz/corpus/$t" | wc -l)" -lt "$limit" ] || break
    cp -n "$f" "fuzz/corpus/$t"/
  done
done
