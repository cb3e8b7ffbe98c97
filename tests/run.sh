#!/usr/bin/env bash
# The whole test suite: Rust unit + integration tests (including crash durability and bad input
# against the real binary), then the Node interop and browser suites when their dependencies are
# installed (.ci/run installs them). Run from anywhere: `bash tests/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build --release (the binary the end-to-end suites drive)"
cargo build --release --locked -p tandem
export TANDEM_BIN="$PWD/target/release/tandem"

echo "== cargo test"
cargo test --release --locked --workspace
