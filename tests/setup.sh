#!/usr/bin/env bash
# Installs what the end-to-end suites need and is not part of the Rust build: Node packages for
# the interop and browser suites, and Debian's chromium for the browser suite. Idempotent and
# quick when everything is present. Needs root (or sudo) only to install chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs a Debian package unless its command is already on PATH.
need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "== installing $pkg (Debian package)"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$pkg"
}

need chromium chromium
# The TLS interop and browser tests make a throwaway self-signed certificate with the openssl CLI
need openssl openssl

if ! command -v node >/dev/null 2>&1; then
  echo "node is required for the interop and browser suites" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install
if [ ! -f tests/node_modules/.package-lock.json ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
  echo "== npm ci (tests)"
  (cd tests && npm ci --no-audit --no-fund)
fi

# The pycrdt interop test (tests/pycrdt): a venv with the pinned yrs-based Python client stack,
# reinstalled when requirements.txt changes. Needs `python3 -m venv` (Debian: python3-venv).
if [ ! -f tests/.venv-pycrdt/.installed ] || [ tests/pycrdt/requirements.txt -nt tests/.venv-pycrdt/.installed ]; then
  echo "== python venv (tests/pycrdt)"
  rm -rf tests/.venv-pycrdt
  python3 -m venv tests/.venv-pycrdt
  tests/.venv-pycrdt/bin/pip install --quiet --disable-pip-version-check -r tests/pycrdt/requirements.txt
  touch tests/.venv-pycrdt/.installed
fi

# The browser suite's staleness test rebuilds web-demo/src with the demo's own esbuild
if [ ! -f web-demo/node_modules/.package-lock.json ] || [ web-demo/package-lock.json -nt web-demo/node_modules/.package-lock.json ]; then
  echo "== npm ci (web-demo)"
  npm --prefix web-demo ci --no-audit --no-fund
fi
