#!/usr/bin/env bash
# The whole Tollgate test suite, from a fresh clone. It installs what the
# tests need (a Python virtual environment with the third-party libraries the
# conformance fixtures are built with; cargo-nextest if missing), builds the
# binaries the black-box tests drive, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
export TOLLGATE_PYTHON="$PWD/$venv/bin/python"

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --no-fail-fast "$@"
