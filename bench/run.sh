#!/usr/bin/env bash
# gatewarden benchmark: every mode against the echo upstream directly, through nginx (stock
# and tuned) and through gatewarden, with 1 and then 2 workers, in one run; loopback only.
# usage: bench/run.sh [SECONDS_PER_MODE]      (writes bench/results.jsonl, prints a table)
#   env: WORKERS="1 2" (worker counts), TARGETS="direct nginx-stock nginx-tuned gatewarden",
#        MODES="handshake rtt bulk reject first_message idle", IDLE_CONNS=9000
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
IDLE=${IDLE_CONNS:-9000}
WORKERS=${WORKERS:-1 2}
TARGETS=${TARGETS:-direct nginx-stock nginx-tuned gatewarden gatewarden-splice}
MODES=${MODES:-handshake rtt bulk reject first_message idle}
want() { [[ " $TARGETS " == *" $1 "* ]]; }   # the machine's hard fd limit is 20000; a proxy needs 2 fds per connection
W=/tmp/gwbench
rm -rf "$W"; mkdir -p "$W"
ulimit -n "$(ulimit -Hn)"

command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
cargo build --release -q
cargo build --release -q --manifest-path bench/Cargo.toml
GW=target/release/gatewarden
LOAD=bench/target/release/bench-load
ECHO_BIN=bench/target/release/bench-echo

ECHO=127.0.0.1:28790 PROXY=127.0.0.1:28789
TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
# In a directory of its own: gatewarden watches the credential's directory, and the log
# files written during the run must not wake its watcher.
mkdir -p "$W/cred"; echo "$TOKEN" > "$W/cred/token"
OUT=bench/results.jsonl; : > "$OUT"

$ECHO_BIN $ECHO 1 > /dev/null &
ECHO_PID=$!
trap 'kill $ECHO_PID 2>/dev/null; [ -f $W/nginx.pid ] && kill $(cat $W/nginx.pid) 2>/dev/null; pkill -f "gatewarden -c $W" 2>/dev/null; true' EXIT
sleep 0.3

ticks() { local t=0; for p in ${1//,/ }; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }

# run TARGET_NAME WORKERS ADDR PIDS
run_modes() {
  local name=$1 workers=$2 addr=$3 pids=$4
  for mode in $MODES; do
    [ "$name" = direct ] && [ "$mode" = reject ] && continue
    # splice(2) only changes how tunnel payloads move: measured where that shows.
    [ "$name" = gatewarden-splice ] && [[ " rtt bulk " != *" $mode "* ]] && continue
    local conns=16
    case $mode in rtt) conns=32;; bulk) conns=4;; idle) conns=$IDLE;; esac
    local p0 e0 t0 line p1 e1 t1
    p0=$(ticks "$pids"); e0=$(ticks $ECHO_PID); t0=$(date +%s.%N)
    line=$($LOAD $mode $addr --token "$TOKEN" --conns $conns --secs "$SECS" --pids "$pids")
    p1=$(ticks "$pids"); e1=$(ticks $ECHO_PID); t1=$(date +%s.%N)
    local el; el=$(echo "$t1 - $t0" | bc -l)
    local pcpu; pcpu=$(echo "($p1 - $p0) / 100 / $el * 100" | bc -l)
    local ecpu; ecpu=$(echo "($e1 - $e0) / 100 / $el * 100" | bc -l)
    [ "$name" = direct ] && pcpu=0
    echo "${line%\}},\"target\":\"$name\",\"workers\":$workers,\"proxy_cpu_pct\":$(printf %.0f "$pcpu"),\"echo_cpu_pct\":$(printf %.0f "$ecpu")}" | tee -a "$OUT"
    sleep 0.5   # let TIME_WAIT sockets and closing tunnels settle between modes
  done
}

nginx_conf() {  # workers tuned
  local tuned=""
  [ "$2" = tuned ] && tuned="proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k;"
  cat > "$W/nginx.conf" <<NGINX
worker_processes $1;
worker_rlimit_nofile 20000;
pid $W/nginx.pid;
error_log $W/nginx-error.log warn;
events { worker_connections 19000; }
http {
  access_log $W/nginx-access.log;
  map \$http_authorization \$auth_header { default 0; "Bearer $TOKEN" 1; }
  map \$arg_token \$auth_query { default 0; "$TOKEN" 1; }
  map "\$auth_header\$auth_query" \$authorized { default 0; ~1 1; }
  map \$http_upgrade \$connection_upgrade { default upgrade; "" close; }
  server {
    listen $PROXY;
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
}

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }

if want direct; then echo "== direct"; run_modes direct 0 $ECHO "$ECHO_PID"; fi
for workers in $WORKERS; do
  for flavour in stock tuned; do
    want nginx-$flavour || continue
    echo "== nginx $flavour, worker_processes $workers"
    nginx_conf $workers $flavour
    nginx -c "$W/nginx.conf"
    wait_port $PROXY
    run_modes "nginx-$flavour" $workers $PROXY "$(pgrep -d, -f "nginx: (master|worker)")"
    kill "$(cat $W/nginx.pid)"; while pgrep -f "nginx: master" >/dev/null; do sleep 0.1; done; rm -f $W/nginx.pid
  done
  for variant in gatewarden gatewarden-splice; do
    want $variant || continue
    zero_copy=false; [ $variant = gatewarden-splice ] && zero_copy=true
    echo "== $variant, workers $workers"
    cat > "$W/gatewarden.toml" <<TOML
listen = "$PROXY"
upstream = "$ECHO"
workers = $workers
[admin]
listen = ""
[auth]
reject = "http"      # 401 like nginx
max_failures = 0     # the reject mode is one IP failing on purpose
[limits]
max_connections = 0         # nginx has no connection caps either; idle opens thousands
max_connections_per_ip = 0  # from one IP
[splice]
zero_copy = $zero_copy
[[credentials]]
path = "$W/cred/token"
TOML
    $GW -c "$W/gatewarden.toml" 2> "$W/$variant.log" &
    GW_PID=$!
    wait_port $PROXY
    run_modes $variant $workers $PROXY "$GW_PID"
    kill $GW_PID; wait $GW_PID || true
  done
done
python3 bench/report.py "$OUT"
