#!/usr/bin/env bash
# User-space instructions per operation, counted by callgrind: repeatable for the same binary
# and inputs whatever the machine's neighbours do (timings here move ±15 %), so a small
# change on the hot path can be seen where bench/run.sh's intervals cannot.
#
# usage: bench/callgrind.sh MODE BINARY [BINARY...]   (MODE: handshake, reject, first_message)
#   env: SECS=8 (load per run), CONNS=4, RUNS=2, KEEP=prefix (keep the callgrind files, for
#        callgrind_annotate; with binaries built with line tables)
# Each binary runs under valgrind with 1 worker in front of bench-echo; bench-load drives MODE
# for SECS; a second run without load gives the start-up and shut-down cost, subtracted.
# Prints, per binary, instructions per operation for each run.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?mode}; shift
SECS=${SECS:-8}; CONNS=${CONNS:-4}; RUNS=${RUNS:-2}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --release -q --manifest-path bench/Cargo.toml
LOAD=bench/target/release/bench-load
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
TOKEN=bench-token-0123456789abcdef
printf '%s\n' "$TOKEN" > "$W/token"
ECHO=127.0.0.1:28890
bench/target/release/bench-echo "$ECHO" >/dev/null 2>&1 &
cat > "$W/gw.toml" <<TOML
listen = "127.0.0.1:28889"
upstream = "$ECHO"
workers = 1
[admin]
listen = ""
[auth]
reject = "http"
sources = ["header", "query", "cookie", "subprotocol", "first_message"]
max_failures = 0
[limits]
max_connections = 0
max_connections_per_ip = 0
[[credentials]]
path = "$W/token"
TOML

wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# Total instructions of one run of $1, with $2 seconds of load (0: none); ops on stdout's 2nd field.
one() {
  local bin=$1 secs=$2 out=$W/cg.out ops=0
  rm -f "$out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" -c "$W/gw.toml" 2>"$W/vg.log" &
  local pid=$!
  wait_port 127.0.0.1:28889
  if [ "$secs" != 0 ]; then
    ops=$($LOAD "$MODE" 127.0.0.1:28889 --token "$TOKEN" --conns "$CONNS" --secs "$secs" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  fi
  kill -TERM "$pid"; wait "$pid" || true
  [ -n "${KEEP:-}" ] && cp "$out" "$KEEP.$(basename "$bin").$secs"
  local total
  total=$(grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}')
  echo "$total $ops"
}

for bin in "$@"; do
  read -r base _ < <(one "$bin" 0)
  for r in $(seq 1 "$RUNS"); do
    read -r total ops < <(one "$bin" "$SECS")
    python3 -c "import sys; t,b,o=map(int,sys.argv[1:4]); print(f'{sys.argv[4]} run $r: {o} ops, {(t-b)/o:,.0f} instructions per op')" \
      "$total" "$base" "$ops" "$bin"
  done
done
