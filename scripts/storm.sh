#!/usr/bin/env bash
# The fault storms at full size (tests/tests/blackbox/storms.rs): three
# gateways on one PostgreSQL killed 100 times over 5 minutes of load, one
# on SQLite killed 50 times, PostgreSQL restarted three times mid-load,
# and the data folder's filesystem filled up under load. Each prints its
# figures: faults, acknowledged entries, entries in the export, entries
# lost. The test suite runs the same storms, shorter.
#
#   scripts/storm.sh            (about 20 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pyenv.sh
. scripts/pyenv.sh
export TOLLGATE_STORM=full
cargo build --workspace --bins --locked
cargo nextest run -p tollgate-tests --locked --no-capture --test-threads 1 storms:: \
  2>&1 | grep -E '^storm |^(durable|reads)|PASS|FAIL|SKIPPED|panicked'
