#!/usr/bin/env bash
# The whole Tollgate test suite, from a fresh clone. It installs what the
# tests need (a Python virtual environment with the third-party libraries the
# conformance fixtures are built with; Debian's Chromium and ChromeDriver
# for the browser test of the sandbox's HTML report; Debian's PostgreSQL
# server binaries, from which the tests start throwaway clusters of their
# own; cargo-nextest if missing), builds the binaries the black-box tests
# drive, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pyenv.sh
. scripts/pyenv.sh

missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
if [ -n "$missing" ]; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq $missing >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
