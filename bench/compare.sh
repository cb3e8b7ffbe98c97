#!/usr/bin/env bash
# Runs the same `tandem bench` workloads against Tandem and its peers — @y/websocket-server
# (LevelDB persistence), Hocuspocus (SQLite extension) and y-sweet (local file store) — on
# loopback, in one run, and writes the tables into BENCHMARKS.md.
#
# Peers are installed by package name into bench/.peers (gitignored; reused when present):
# npm packages pinned in bench/peers/package-lock.json, y-sweet with `cargo install --locked`.
#
# Knobs (environment):
#   SERVERS="tandem tandem-async y-websocket hocuspocus y-sweet relay"   which servers to run
#     (tandem: sync durability, an fsync before every acknowledgement; tandem-async: async
#     durability, as every peer persists, for fanout and saturate only; relay: the floor,
#     `tandem bench-relay`, which forwards frames and nothing else, for fanout only)
#   FANOUT_SECS=10  SAT_STEP_SECS=4  SAT_MAX_STEPS=13  INGEST_OPS=  (empty = whole trace)
#   INGEST_MAX_SECS=300  a server still pushing the trace after this long is reported as such
#   COLD_REPEAT=3   CONN_CLIENTS=1000   TRACES=<dir>   OUT=BENCHMARKS.md   PEERS_DIR=bench/.peers
#   QUICK=1         tiny sizes, to check the script itself (minutes → seconds)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/bench/.peers}"
OUT="${OUT:-$ROOT/BENCHMARKS.md}"
TRACES="${TRACES:-$ROOT/bench/traces}"
SERVERS="${SERVERS:-tandem tandem-async y-websocket hocuspocus y-sweet relay}"
FANOUT_SECS="${FANOUT_SECS:-10}"
SAT_STEP_SECS="${SAT_STEP_SECS:-4}"
SAT_MAX_STEPS="${SAT_MAX_STEPS:-13}"
INGEST_OPS="${INGEST_OPS:-}"
INGEST_MAX_SECS="${INGEST_MAX_SECS:-300}"
COLD_REPEAT="${COLD_REPEAT:-3}"
CONN_CLIENTS="${CONN_CLIENTS:-1000}"
if [[ "${QUICK:-}" == 1 ]]; then
  FANOUT_SECS=2 SAT_STEP_SECS=1 SAT_MAX_STEPS=2 INGEST_OPS=${INGEST_OPS:-5000} COLD_REPEAT=1 CONN_CLIENTS=100
fi
YSWEET_VERSION=0.9.1
COMMAND="$0 $*"
[[ -n "${QUICK:-}" ]] && COMMAND="QUICK=$QUICK $COMMAND"

log() { printf '[compare] %s\n' "$*" >&2; }

install_peers() {
  mkdir -p "$PEERS_DIR/node"
  if ! cmp -s "$ROOT/bench/peers/package-lock.json" "$PEERS_DIR/node/package-lock.json" \
     || [[ ! -d "$PEERS_DIR/node/node_modules" ]]; then
    log "installing npm peers into $PEERS_DIR/node"
    cp "$ROOT/bench/peers/package.json" "$ROOT/bench/peers/package-lock.json" "$PEERS_DIR/node/"
    (cd "$PEERS_DIR/node" && npm ci --no-audit --no-fund >&2)
  fi
  # ESM resolves imports from the script's own directory: keep the launcher beside node_modules.
  cp "$ROOT/bench/hocuspocus-server.mjs" "$PEERS_DIR/node/"
  if [[ " $SERVERS " == *" y-sweet "* && ! -x "$PEERS_DIR/ysweet/bin/y-sweet" ]]; then
    log "building y-sweet $YSWEET_VERSION with cargo install (takes a while, once)"
    nice -n 10 cargo install "y-sweet@$YSWEET_VERSION" --locked --root "$PEERS_DIR/ysweet" >&2
  fi
}

# server NAME PORT DATA → sets URL, CMD, OPTS (extra bench options), VERSION
server() {
  local name=$1 port=$2 data=$3
  OPTS=()
  case $name in
    tandem|tandem-async)
      local mode=sync; [[ $name == tandem-async ]] && mode=async
      URL="ws://127.0.0.1:$port"
      CMD="$ROOT/target/release/tandem serve --listen 127.0.0.1:$port --data $data --durability $mode --log-level warn"
      OPTS=(--stop-signal kill)
      VERSION="tandem $(git -C "$ROOT" rev-parse --short HEAD) ($mode durability)" ;;
    y-websocket)
      URL="ws://127.0.0.1:$port"
      CMD="env HOST=127.0.0.1 PORT=$port YPERSISTENCE=$data node $PEERS_DIR/node/node_modules/@y/websocket-server/src/server.js"
      OPTS=(--stop-signal term --settle-ms 3000)
      VERSION="@y/websocket-server $(node -p "require('$PEERS_DIR/node/node_modules/@y/websocket-server/package.json').version") + y-leveldb (YPERSISTENCE)" ;;
    hocuspocus)
      URL="ws://127.0.0.1:$port"
      CMD="env HOST=127.0.0.1 PORT=$port DB=$data.sqlite node $PEERS_DIR/node/hocuspocus-server.mjs"
      OPTS=(--stop-signal term --settle-ms 3000 --framing hocuspocus)
      VERSION="@hocuspocus/server $(node -p "require('$PEERS_DIR/node/node_modules/@hocuspocus/server/package.json').version") + extension-sqlite" ;;
    y-sweet)
      # y-sweet 0.9.1 routes sockets at /d/:doc/ws/:doc and 404s unknown docs: create them first.
      URL="ws://127.0.0.1:$port/d/{room}/ws/{room}"
      CMD="$PEERS_DIR/ysweet/bin/y-sweet serve $data --host 127.0.0.1 --port $port"
      # It persists by checkpoint (default every 10 s) and not on SIGTERM: settle past one.
      OPTS=(--stop-signal term --settle-ms 12000 --create-room "http://127.0.0.1:$port/doc/new")
      VERSION="y-sweet $YSWEET_VERSION (local file store)" ;;
    relay)
      URL="ws://127.0.0.1:$port"
      CMD="$ROOT/target/release/tandem bench-relay --listen 127.0.0.1:$port"
      VERSION="tandem bench-relay $(git -C "$ROOT" rev-parse --short HEAD) (floor: forwards frames; no CRDT, no storage, no echo)" ;;
    *) log "unknown server $name"; exit 2 ;;
  esac
}

main() {
  install_peers
  log "building tandem"
  (cd "$ROOT" && cargo build --release -p tandem >&2)
  local bin="$ROOT/target/release/tandem"
  local results; results="$(mktemp -d)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  local port=18700
  local started; started=$(date -u +%FT%TZ)
  # CPU time the hypervisor gave to other guests ("steal") makes a run slower across the board;
  # render.mjs reports its share of the run.
  head -n 1 /proc/stat > "$results/procstat.start"
  for s in $SERVERS; do
    port=$((port + 1))
    server "$s" "$port" "$work/$s"
    printf '%s\n' "$VERSION" > "$results/$s.version"
    run() {
      local wl=$1; shift
      log "$s: $wl"
      mkdir -p "$work/$s"
      if ! RUST_BACKTRACE=0 "$bin" bench --url "$URL" --server-cmd "$CMD" --traces "$TRACES" --label "$s" \
          --timeout-secs 180 "${OPTS[@]}" "$wl" "$@" > "$results/$s.$wl.out" 2>"$results/$s.$wl.err"; then
        log "$s $wl failed: $(tail -n 3 "$results/$s.$wl.err")"
        printf '{"workload":"%s","label":"%s","failed":%s}\n' "$wl" "$s" \
          "$(sed -n '/^Caused by:/{n;p;q}' "$results/$s.$wl.err" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(s.trim())))')" \
          > "$results/$s.$wl.json"
      else
        tail -n 1 "$results/$s.$wl.out" > "$results/$s.$wl.json"
      fi
      cat "$results/$s.$wl.out" >&2 || true
      rm -rf "$work/$s" "$work/$s.sqlite"
    }
    run fanout --rooms 10 --clients 10 --hz 10 --secs "$FANOUT_SECS"
    mv "$results/$s.fanout.json" "$results/$s.fanout-10x10.json"
    run fanout --rooms 100 --clients 5 --hz 5 --secs "$FANOUT_SECS"
    mv "$results/$s.fanout.json" "$results/$s.fanout-100x5.json"
    # The relay writes every frame on its own, with no batching: at saturate's rates it is not a
    # floor, so it stops here.
    [[ $s == relay ]] && continue
    run saturate --rooms 10 --clients 10 --start-hz 2 --factor 1.5 \
      --step-secs "$SAT_STEP_SECS" --max-steps "$SAT_MAX_STEPS"
    # Tandem runs the rest in sync mode only: the issue sets ingest in sync durability, and
    # coldload and connections time reads and idle memory, which the mode does not touch.
    [[ $s == tandem-async ]] && continue
    if [[ -n "$INGEST_OPS" ]]; then run ingest --ops "$INGEST_OPS" --max-secs "$INGEST_MAX_SECS"
    else run ingest --max-secs "$INGEST_MAX_SECS"; fi
    run coldload --repeat "$COLD_REPEAT"
    run connections --clients "$CONN_CLIENTS"
  done
  head -n 1 /proc/stat > "$results/procstat.end"
  node "$ROOT/bench/render.mjs" "$results" "$OUT" "$COMMAND" "$started" "$SERVERS"
  log "wrote $OUT (raw results in $results)"
}

main "$@"
