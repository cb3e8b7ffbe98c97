#!/usr/bin/env bash
# The whole test suite, as README.md documents it: `bash tests/run.sh`.
#  1. Rust: unit tests, the server's integration tests over real sockets, and the binary's
#     end-to-end tests (SIGKILL crash durability — TANDEM_CRASH_CYCLES, default 50 — CLI, signals).
#  2. Interop: the real npm client stack (yjs + y-websocket on Node) against the binary.
#     pycrdt: yrs-based Python clients (pycrdt + its websocket provider) join busy rooms.
#  3. Browser: headless Debian chromium driven by playwright-core against the binary.
# Dependencies the Rust build does not cover are installed by tests/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/setup.sh

echo "== cargo build --release (the binary the end-to-end suites drive)"
cargo build --release --locked -p tandem
export TANDEM_BIN="$PWD/target/release/tandem"

echo "== cargo test"
cargo test --release --locked --workspace

echo "== cargo-fuzz targets build on stable (run them with: cargo +nightly fuzz run <target>)"
cargo build --locked --manifest-path fuzz/Cargo.toml

echo "== interop: yjs + y-websocket clients"
(cd tests && node --test --test-concurrency=2 interop/)

echo "== interop: pycrdt (yrs) clients joining busy rooms"
tests/.venv-pycrdt/bin/python tests/pycrdt/busy_join.py

if [ -d tests/browser ]; then
  echo "== browser: chromium + playwright-core"
  (cd tests && node --test --test-concurrency=1 browser/)
fi
