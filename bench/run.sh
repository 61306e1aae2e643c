#!/usr/bin/env bash
# gatewarden benchmark: every mode against the echo upstream directly, through nginx (stock
# and tuned) and through gatewarden, with 1 and then 2 workers, in one run; loopback only.
#
# All targets of a worker count run side by side (idle ones cost nothing), and each mode
# goes round-robin over them ROUNDS times, each round starting one target later; the table
# shows medians. This VM's neighbours move absolute numbers by ±15 % within a minute, so
# only interleaved ratios are fair.
#
# Then, with 1 worker, the closest modes once more with each proxy pinned alone on CPU 1 and
# the load generator and echo server on CPU 0: the proxy is then the bottleneck, so the
# ratio measures the proxies themselves, and a round's spread drops from ±15-30 % (which
# process the scheduler puts beside which) to about ±2 %.
#
# usage: bench/run.sh [SECONDS_PER_RUN]    (writes bench/results.jsonl, prints the table)
#   env: WORKERS="1 2", ROUNDS=3, EXTRA_ROUNDS=2, MODES="handshake rtt bulk reject first_message plain idle",
#        TARGETS="direct nginx-stock nginx-tuned gatewarden gatewarden-splice", IDLE_CONNS=9000,
#        PINNED="handshake rtt reject" (modes of the pinned pass; "" skips it), PINNED_ROUNDS=5,
#        TLS_KEYS="ecdsa rsa" (the TLS pass: one per certificate kind; "" skips it),
#        TLS_MODES="handshake resume rtt bulk idle", TLS_ROUNDS=5, TLS_WORKERS=1,
#        H2_MODES="rtt bulk idle" (the HTTP/2 pass: gatewarden's wss over HTTP/2 streams against
#        wss over HTTP/1.1, same process, ECDSA; "" skips it), H2_ROUNDS=5, H2_STREAMS=100,
#        GW_BEFORE=path/to/an/older/gatewarden (adds the targets gatewarden-before and, in the
#        TLS pass, gatewarden-before-tls: a change's before/after ratio measured in the same
#        rounds, the way every other ratio is)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-1}
ROUNDS=${ROUNDS:-3}
EXTRA=${EXTRA_ROUNDS:-2}   # handshake and rtt: ROUNDS + EXTRA rounds
IDLE=${IDLE_CONNS:-9000}   # the machine's hard fd limit is 20000; a proxy needs 2 fds per connection
WORKERS=${WORKERS-1 2}   # "" skips the plain passes
MODES=${MODES:-handshake rtt bulk reject first_message plain idle}
TARGETS=${TARGETS:-direct nginx-stock nginx-tuned gatewarden gatewarden-splice}
GW_BEFORE=${GW_BEFORE:-}
[ -n "$GW_BEFORE" ] && [[ " $TARGETS " != *" gatewarden-before "* ]] && TARGETS="$TARGETS gatewarden-before"
PINNED=${PINNED-handshake rtt reject}   # first_message too: 15 s more
PINNED_ROUNDS=${PINNED_ROUNDS:-5}   # a paired interval needs more than 3 rounds
[ "$(nproc)" -ge 2 ] || PINNED=""
PIN=""   # taskset prefix of the proxies in the pinned pass
want() { [[ " $TARGETS " == *" $1 "* ]]; }
W=/tmp/gwbench
L=$W/logs
rm -rf "$W"; mkdir -p "$W/cred" "$L"
ulimit -n "$(ulimit -Hn)"

command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
cargo build --release -q
cargo build --release -q --manifest-path bench/Cargo.toml
GW=${GW:-target/release/gatewarden}   # another build: GW=path (e.g. one with --features aws-lc-rs)
LOAD=bench/target/release/bench-load
ECHO_BIN=bench/target/release/bench-echo

ECHO=127.0.0.1:28790
declare -A ADDR=([direct]=$ECHO [nginx-stock]=127.0.0.1:28791 [nginx-tuned]=127.0.0.1:28792
                 [gatewarden]=127.0.0.1:28789 [gatewarden-splice]=127.0.0.1:28793
                 [gatewarden-before]=127.0.0.1:28794
                 [nginx-tls]=127.0.0.1:28795 [gatewarden-tls]=127.0.0.1:28796
                 [gatewarden-before-tls]=127.0.0.1:28797)
TLS_KEYS=${TLS_KEYS-ecdsa rsa}
TLS_MODES=${TLS_MODES:-handshake resume rtt bulk idle}
TLS_ROUNDS=${TLS_ROUNDS:-5}
TLS_WORKERS=${TLS_WORKERS:-1}   # nginx worker_processes and gatewarden workers in the TLS pass
H2_MODES=${H2_MODES-rtt bulk idle}
H2_ROUNDS=${H2_ROUNDS:-5}
H2_STREAMS=${H2_STREAMS:-100}   # WebSocket streams per HTTP/2 connection (rtt: 32, bulk: 4 in all)
ADDR[gatewarden-h2]=${ADDR[gatewarden-tls]}   # the same server, reached over HTTP/2
TLSKIND=""   # the certificate kind of the TLS pass under way
TLS_DIR=$W/tls
declare -A PIDS
TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
# Away from the logs: gatewarden watches the credential's directory and its parent (to see
# the directory itself replaced), and log writes there would wake its watcher thread.
echo "$TOKEN" > "$W/cred/token"
OUT=bench/results.jsonl; : > "$OUT"

cleanup() {
  for f in "$W"/nginx-*.pid; do [ -f "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; }; done
  for p in "${PIDS[@]}"; do kill "${p%%,*}" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }
ticks() { local t=0; for p in ${1//,/ }; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }

# Every server runs in a session of its own, as nginx does once it daemonizes: with the
# kernel's autogroup scheduling (sched_autogroup_enabled=1, the default here) CPU is shared
# fairly between sessions first, so a proxy left in this script's session would share one
# slice with the load generator while nginx had a slice to itself. (Before 2026-11-28
# gatewarden ran that way: 12x nginx's involuntary context switches, 0.75-0.95x handshakes.)
setsid $ECHO_BIN $ECHO 1 > /dev/null &
PIDS[direct]=$!
wait_port $ECHO

start_nginx() {  # flavour workers
  local flavour=$1 workers=$2 tuned="" addr=${ADDR[nginx-$1]} ssl=""
  [ "$flavour" = tuned ] && tuned="proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k;"
  # TLS: the tuned proxy buffers, and the session cache a production site sets (tickets are
  # on by default) so reconnecting clients resume.
  if [ "$flavour" = tls ]; then
    tuned="proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k;"
    ssl="ssl; ssl_certificate $TLS_DIR/chain.pem; ssl_certificate_key $TLS_DIR/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m"
  fi
  cat > "$W/nginx-$flavour.conf" <<NGINX
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $W/nginx-$flavour.pid;
error_log $L/nginx-$flavour-error.log warn;
events { worker_connections 19000; }
http {
  access_log $L/nginx-$flavour-access.log;
  map \$http_authorization \$auth_header { default 0; "Bearer $TOKEN" 1; }
  map \$arg_token \$auth_query { default 0; "$TOKEN" 1; }
  map "\$auth_header\$auth_query" \$authorized { default 0; ~1 1; }
  map \$http_upgrade \$connection_upgrade { default upgrade; "" close; }
  server {
    listen $addr $ssl;
    proxy_http_version 1.1;
    proxy_set_header Upgrade \$http_upgrade;
    proxy_set_header Connection \$connection_upgrade;
    proxy_read_timeout 1h;
    $tuned
    # nginx cannot read a token inside the first WebSocket frame: proxied unchecked.
    location /openclaw { proxy_pass http://$ECHO; }
    location / {
      if (\$authorized = 0) { return 401; }
      proxy_pass http://$ECHO;
    }
  }
}
NGINX
  $PIN nginx -c "$W/nginx-$flavour.conf"
  wait_port "$addr"
  local master; master=$(cat "$W/nginx-$flavour.pid")
  PIDS[nginx-$flavour]="$master,$(pgrep -d, -P "$master")"
}

start_gatewarden() {  # variant workers
  local variant=$1 workers=$2 zero_copy=false addr=${ADDR[$1]} tls=""
  [ "$variant" = gatewarden-splice ] && zero_copy=true
  [[ "$variant" == *-tls ]] && tls="[tls]
cert = \"$TLS_DIR/chain.pem\"
key = \"$TLS_DIR/leaf.key\""
  cat > "$W/$variant.toml" <<TOML
listen = "$addr"
upstream = "$ECHO"
workers = $workers
[admin]
listen = ""
[auth]
reject = "http"      # 401 like nginx
# The token file is plain, so the first frame is not a source by default; first_message needs it.
sources = ["header", "query", "cookie", "subprotocol", "first_message"]
max_failures = 0     # the reject mode is one IP failing on purpose
[limits]
max_connections = 0         # nginx has no connection caps either; idle opens thousands
max_connections_per_ip = 0  # from one IP
[splice]
zero_copy = $zero_copy
[[credentials]]
path = "$W/cred/token"
$tls
TOML
  local bin=$GW
  [[ "$variant" == gatewarden-before* ]] && bin=$GW_BEFORE
  $PIN setsid "$bin" -c "$W/$variant.toml" 2> "$L/$variant.log" &
  PIDS[$variant]=$!
  wait_port "$addr"
}

stop_proxies() {
  for f in "$W"/nginx-*.pid; do
    [ -f "$f" ] || continue
    local m; m=$(cat "$f"); kill "$m"; while kill -0 "$m" 2>/dev/null; do sleep 0.1; done; rm -f "$f"
  done
  for v in gatewarden gatewarden-splice gatewarden-before gatewarden-tls gatewarden-before-tls; do
    if [ -n "${PIDS[$v]:-}" ]; then kill "${PIDS[$v]}"; wait "${PIDS[$v]}" || true; unset "PIDS[$v]"; fi
  done
}

run_one() {  # target workers mode round [pinned]
  local name=$1 workers=$2 mode=$3 round=$4 pinned=${5:-false} conns=16 load=$LOAD
  [ "$pinned" = true ] && load="taskset -c 0 $LOAD"
  case $mode in rtt) conns=32;; bulk) conns=4;; idle) conns=$IDLE;; esac
  local pids=${PIDS[${name/%-h2/-tls}]} p0 e0 t0 line p1 e1 t1
  p0=$(ticks "$pids"); e0=$(ticks "${PIDS[direct]}"); t0=$(date +%s.%N)
  # resume: handshakes that resume a TLS session (the client keeps one session cache).
  local lmode=$mode extra=()
  [ "$mode" = resume ] && { lmode=handshake; extra=(--resume 1); }
  [[ "$name" == *-tls || "$name" == *-h2 ]] && extra+=(--tls-ca "$TLS_DIR/ca.pem")
  [[ "$name" == *-h2 ]] && extra+=(--h2 "$H2_STREAMS")
  line=$($load "$lmode" "${ADDR[$name]}" --token "$TOKEN" --conns $conns --secs "$SECS" --pids "$pids" "${extra[@]}")
  [ "$mode" = resume ] && line=${line/\"mode\":\"handshake\"/\"mode\":\"resume\"}
  p1=$(ticks "$pids"); e1=$(ticks "${PIDS[direct]}"); t1=$(date +%s.%N)
  local el pcpu ecpu
  el=$(echo "$t1 - $t0" | bc -l)
  pcpu=$(echo "($p1 - $p0) / 100 / $el * 100" | bc -l)
  ecpu=$(echo "($e1 - $e0) / 100 / $el * 100" | bc -l)
  [ "$name" = direct ] && pcpu=0
  # The proxy's CPU time (user + system, from /proc) per operation (see report.py).
  local count per_op
  count=$(sed -E 's/.*"count":([0-9]+).*/\1/' <<< "$line")
  [ "$mode" = bulk ] && count=$((count / 65536))   # bytes echoed -> 64 KiB messages
  per_op=$(echo "($p1 - $p0) * 10000 / ($count + (${count} == 0))" | bc -l)
  [ "$name" = direct ] && per_op=0
  echo "${line%\}},\"target\":\"$name\",\"workers\":$workers,\"round\":$round,\"proxy_cpu_pct\":$(printf %.0f "$pcpu"),\"echo_cpu_pct\":$(printf %.0f "$ecpu"),\"proxy_cpu_us_per_op\":$(printf %.2f "$per_op"),\"pinned\":$pinned,\"tls\":\"$TLSKIND\"}" | tee -a "$OUT"
  # Let closing tunnels and TIME_WAIT sockets settle.
  if [ "$mode" = idle ]; then sleep 1; else sleep 0.2; fi
}

# ROUNDS rounds of MODE over TARGETS. Each round starts one target later: no target always
# runs right after the same others (their TIME_WAIT sockets, their cache footprint) or
# always first.
rotate() {  # rounds workers mode pinned targets...
  local rounds=$1 workers=$2 mode=$3 pinned=$4 round k; shift 4
  local targets=("$@") n=$#
  for round in $(seq "$rounds"); do
    for k in $(seq 0 $((n - 1))); do
      run_one "${targets[$(( (k + round - 1) % n ))]}" "$workers" "$mode" "$round" "$pinned"
    done
  done
}

first=1
for workers in $WORKERS; do
  echo "== workers $workers"
  for t in nginx-stock nginx-tuned; do want "$t" && start_nginx "${t#nginx-}" "$workers"; done
  for t in gatewarden gatewarden-splice gatewarden-before; do want "$t" && start_gatewarden "$t" "$workers"; done
  for mode in $MODES; do
    rounds=$ROUNDS
    case $mode in
      idle) rounds=1;;                                  # memory, not speed: no noise to average
      handshake|rtt|plain) rounds=$((ROUNDS + EXTRA));; # the closest ratios: more rounds
    esac
    targets=()
    for t in $TARGETS; do
      case "$t/$mode" in
        direct/reject) continue;;                  # nothing to reject without a proxy
        gatewarden-splice/bulk) ;;
        gatewarden-splice/*) continue;;            # splice(2) only moves large payloads
        gatewarden-before/idle) continue;;         # memory: no change to compare
      esac
      [ "$t" = direct ] && [ $first = 0 ] && continue   # direct does not depend on workers
      targets+=("$t")
    done
    rotate "$rounds" "$workers" "$mode" false "${targets[@]}"
  done
  stop_proxies
  first=0
done

if [ -n "$PINNED" ]; then
  echo "== 1 worker, pinned: proxies on CPU 1, load generator and echo server on CPU 0"
  taskset -a -p -c 0 "${PIDS[direct]}" > /dev/null
  PIN="taskset -c 1"
  for t in nginx-stock nginx-tuned; do want "$t" && start_nginx "${t#nginx-}" 1; done
  want gatewarden && start_gatewarden gatewarden 1
  want gatewarden-before && start_gatewarden gatewarden-before 1
  targets=()
  for t in nginx-stock nginx-tuned gatewarden gatewarden-before; do want "$t" && targets+=("$t"); done
  for mode in $PINNED; do
    rotate "$PINNED_ROUNDS" 1 "$mode" true "${targets[@]}"
  done
  stop_proxies
fi
# A CA and a leaf for `localhost` of the given kind (ecdsa: P-256; rsa: 2048 bits).
make_certs() {
  local kind=$1 newkey
  case $kind in
    ecdsa) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1);;
    rsa) newkey=(-newkey rsa:2048);;
  esac
  rm -rf "$TLS_DIR"; mkdir -p "$TLS_DIR"; cd "$TLS_DIR"
  openssl req -x509 "${newkey[@]}" -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req "${newkey[@]}" -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 2 -extfile ext 2>/dev/null
  cat leaf.pem ca.pem > chain.pem
  cd - > /dev/null
}

# TLS: gatewarden terminating TLS against nginx (OpenSSL) terminating TLS, 1 worker each, with
# plain gatewarden beside as the cost of TLS itself; per certificate kind.
for kind in $TLS_KEYS; do
  echo "== TLS, $kind certificate: nginx (OpenSSL) and gatewarden (rustls), $TLS_WORKERS worker(s)"
  TLSKIND=$kind
  make_certs "$kind"
  start_nginx tls "$TLS_WORKERS"
  start_gatewarden gatewarden-tls "$TLS_WORKERS"
  start_gatewarden gatewarden "$TLS_WORKERS"
  [ -n "$GW_BEFORE" ] && start_gatewarden gatewarden-before-tls "$TLS_WORKERS"
  for mode in $TLS_MODES; do
    rounds=$TLS_ROUNDS
    [ "$mode" = idle ] && rounds=1
    targets=(nginx-tls gatewarden-tls)
    [ -n "$GW_BEFORE" ] && targets+=(gatewarden-before-tls)
    [ "$mode" = resume ] || targets+=(gatewarden)
    rotate "$rounds" "$TLS_WORKERS" "$mode" false "${targets[@]}"
  done
  stop_proxies
  TLSKIND=""
done
# WebSockets over HTTP/2 (RFC 8441) against wss over HTTP/1.1: the same gatewarden process,
# the client choosing ALPN h2 (H2_STREAMS streams to a connection) or http/1.1.
if [ -n "$H2_MODES" ]; then
  echo "== wss over HTTP/2 and over HTTP/1.1, ECDSA certificate, 1 worker"
  TLSKIND=h2-ecdsa
  make_certs ecdsa
  for mode in $H2_MODES; do
    if [ "$mode" = idle ]; then
      # Memory: each in a fresh process, so neither finds pages the other left behind.
      for t in gatewarden-tls gatewarden-h2; do
        start_gatewarden gatewarden-tls 1
        run_one "$t" 1 idle 1
        stop_proxies
      done
      continue
    fi
    start_gatewarden gatewarden-tls 1
    rotate "$H2_ROUNDS" 1 "$mode" false gatewarden-tls gatewarden-h2
    stop_proxies
  done
  TLSKIND=""
fi
python3 bench/report.py "$OUT"
