#!/usr/bin/env bash
# Installs what the end-to-end suites need and is not part of the Rust build: Node packages for
# the interop and browser suites, and Debian's chromium for the browser suite. Idempotent and
# quick when everything is present. Needs root (or sudo) only to install chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing chromium (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi

# The TLS interop and browser tests make a throwaway self-signed certificate with the openssl CLI
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl (Debian package)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends openssl
fi

if ! command -v node >/dev/null 2>&1; then
  echo "node is required for the interop and browser suites" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install
if [ ! -f tests/node_modules/.package-lock.json ] || [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
  echo "== npm ci (tests)"
  (cd tests && npm ci --no-audit --no-fund)
fi

# The browser suite's staleness test rebuilds web-demo/src with the demo's own esbuild
if [ ! -f web-demo/node_modules/.package-lock.json ] || [ web-demo/package-lock.json -nt web-demo/node_modules/.package-lock.json ]; then
  echo "== npm ci (web-demo)"
  npm --prefix web-demo ci --no-audit --no-fund
fi
