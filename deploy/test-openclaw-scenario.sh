#!/usr/bin/env bash
# The token-mismatch scenario, end to end, with the REAL OpenClaw gateway, its CLI and a real
# browser (headless Chromium driven by Selenium), in a network namespace of its own so the
# README's fixed ports (18789, 18790, 9187) are free:
#
#  1. README "In front of OpenClaw", followed literally: the gateway started with
#     `--port 18790`, gateway.port left at 18789, gatewarden on 18789; a *default*
#     `openclaw gateway call health` (no --url, no --token) goes through gatewarden.
#  2. The Control UI as people open it: `http://127.0.0.1:18789/#token=…` through
#     gatewarden reaches the UI's connected first-run page (Model Setup); a wrong token shows
#     the UI's page for the gateway's refusal.
#  3. Rotation (`openclaw config set gateway.auth.token`): a stale client repeating the
#     retired token 50 times is refused by gatewarden itself (token_stale, no grace: the
#     gateway would refuse it), never reaches the gateway, is named once ([auth] stale
#     client, with its client.id), and does not lock out the CLI on the same address.
#  4. doctor asks the real gateway: accepted; a token the gateway does not hold:
#     token_mismatch.
#  5. gatewarden first, then the gateway on a fresh state directory, then the token set
#     (and the gateway restarted, as `config set` asks): the CLI passes without restarting
#     gatewarden ([auth] credential adopted).
set -euo pipefail
cd "$(dirname "$0")/.."

ns=gwscn$$
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$ns" ]; then
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 40 "$f" >&2; done; exit 1; }

# shellcheck source=deploy/openclaw-install.sh
source deploy/openclaw-install.sh
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -c 'import selenium' 2>/dev/null || python3 -m pip install -q 'selenium==4.51.0' 2>/dev/null \
  || python3 -m pip install -q --break-system-packages 'selenium==4.51.0'
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q 'websockets==17.4' 2>/dev/null \
  || python3 -m pip install -q --break-system-packages 'websockets==17.4'

echo "== gatewarden binary"
cargo build --quiet --locked
gd=$work/gatewarden
install -m 755 target/debug/gatewarden "$gd"

if [ -z "${GATEWARDEN_TEST_NO_NETNS:-}" ] && ip netns add "$ns" 2>/dev/null; then
  ip -n "$ns" link set lo up
  nsx=(ip netns exec "$ns")
else
  echo "   (network namespaces unavailable: the host's loopback, ports 18789/18790/9187 must be free)"
  ns=
  nsx=()
fi
inns() { "${nsx[@]}" "$@"; }

home=$work/home
mkdir -p "$home/.openclaw"
quiet=(OPENCLAW_DISABLE_BONJOUR=1 OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1)
# The user's `openclaw`, with their HOME (state in ~/.openclaw) and nothing else set.
# Leading VAR=value arguments are added to its environment.
oc() {
  local envs=()
  while [ $# -gt 0 ] && [[ $1 == [A-Z]*=* ]]; do envs+=("$1"); shift; done
  inns env -i PATH=/usr/bin:/bin HOME="$home" "${quiet[@]}" "${envs[@]}" "$node" "$oc_pkg/openclaw.mjs" "$@"
}
fp() { printf '%s' "$1" | sha256sum | cut -c1-8; }
wait_log() { # file pattern [seconds]
  for _ in $(seq 1 $(( ${3:-30} * 10 ))); do grep -q -- "$2" "$1" && return 0; sleep 0.1; done
  fail "no line matching '$2' in $1"
}
# Waits for the gateway just started ($gateway_pid) to answer /readyz on 18790.
gateway_ready() {
  for _ in $(seq 1 240); do
    inns curl -fsS -o /dev/null "http://127.0.0.1:18790/readyz" 2>/dev/null && return 0
    kill -0 "$gateway_pid" 2>/dev/null || fail "$1 exited"
    sleep 0.5
  done
  fail "$1 did not become ready in 120 s"
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# An existing install, as `openclaw onboard` leaves it: local mode on 18789, no token.
cat >"$home/.openclaw/openclaw.json" <<'JSON'
{"gateway":{"mode":"local","port":18789,"bind":"loopback","auth":{"mode":"token"}},
 "update":{"checkOnStart":false},"agents":{"defaults":{"heartbeat":{"every":"0m"}}}}
JSON

echo "== 1. README step 1, literally"
if oc config get gateway.auth.token >"$work/cli.log" 2>&1; then fail "a token was already set"; fi
oc config set gateway.auth.token "$(openssl rand -hex 24)" >>"$work/cli.log" 2>&1 || fail "config set"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"]["auth"]["token"])' "$home/.openclaw/openclaw.json")
"${nsx[@]}" env -i PATH=/usr/bin:/bin HOME="$home" "${quiet[@]}" \
  "$node" "$oc_pkg/openclaw.mjs" gateway run --port 18790 >>"$work/gateway.log" 2>&1 &
gateway_pid=$!; pids+=("$gateway_pid")
gateway_ready "the gateway"
echo "== 1. README step 2: gatewarden on 18789"
"${nsx[@]}" env -i PATH=/usr/bin:/bin HOME="$home" "$gd" --listen 127.0.0.1:18789 --upstream 127.0.0.1:18790 \
  >"$work/gatewarden.log" 2>&1 &
gd_pid=$!; pids+=("$gd_pid")
wait_log "$work/gatewarden.log" '\[listen\] listening'
echo "== 1. README step 3: a default CLI call goes through gatewarden"
oc gateway call health >"$work/call.out" 2>&1 || fail "default gateway call health: $(cat "$work/call.out")"
wait_log "$work/gatewarden.log" "\[ws\] connected.*source=first_message.*presented=fp:$(fp "$token")" 5
[ "$(oc config get gateway.port 2>/dev/null | tail -n 1)" = 18789 ] || fail "gateway.port moved"

echo "== 2. the Control UI in headless Chromium, through gatewarden"
inns python3 deploy/ui_check.py "http://127.0.0.1:18789/#token=$token" connected 60 >"$work/ui.out" 2>&1 \
  || fail "the UI with the right token: $(cat "$work/ui.out")"
cat "$work/ui.out"
inns python3 deploy/ui_check.py "http://127.0.0.1:18789/#token=wrong-$token" refused 60 >"$work/ui.out" 2>&1 \
  || fail "the UI with a wrong token: $(cat "$work/ui.out")"
cat "$work/ui.out"
wait_log "$work/gatewarden.log" "\[auth\] stale client.*presented=fp:$(fp "wrong-$token").*client.id=openclaw-control-ui" 5

echo "== 3. rotation; a stale client keeps its old token; the CLI on the same address passes"
old=$token
oc config set gateway.auth.token "$(openssl rand -hex 24)" >>"$work/cli.log" 2>&1 || fail "config set (rotation)"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"]["auth"]["token"])' "$home/.openclaw/openclaw.json")
wait_log "$work/gatewarden.log" "credentials applied.*current=fp:$(fp "$token").*grace=none"
wait_log "$work/gateway.log" "config hot reload applied (gateway.auth.token" 30
before=$(grep -c "token mismatch\|unauthorized" "$work/gateway.log" || true)
inns python3 - "$old" >"$work/stale.out" 2>&1 <<'PY' || fail "stale client: $(cat "$work/stale.out")"
import asyncio, json, sys
import websockets
async def once(token):
    async with websockets.connect("ws://127.0.0.1:18789/", open_timeout=10) as ws:
        json.loads(await asyncio.wait_for(ws.recv(), 10))  # connect.challenge
        await ws.send(json.dumps({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4, "role": "operator", "scopes": ["operator.read"],
            "client": {"id": "cli", "mode": "cli", "version": "2026.9.6", "platform": "linux"},
            "auth": {"token": token}}}))
        res = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert res["ok"] is False, res
        return res["error"]["details"]["authReason"]
async def main():
    reasons = [await once(sys.argv[1]) for _ in range(50)]
    print(sorted(set(reasons)))
asyncio.run(main())
PY
grep -q "token_stale\|token_mismatch" "$work/stale.out" || fail "stale client reasons: $(cat "$work/stale.out")"
oc gateway call health >"$work/call.out" 2>&1 || fail "the CLI after a stale client: $(cat "$work/call.out")"
grep -q "reason=token_stale.*presented=fp:$(fp "$old")" "$work/gatewarden.log" || fail "the retired token was not refused as token_stale"
[ "$(grep -c "\[auth\] stale client.*presented=fp:$(fp "$old")" "$work/gatewarden.log")" = 1 ] || fail "the stale client was not named exactly once"
grep -q "\[auth\] stale client.*presented=fp:$(fp "$old").*client.id=cli" "$work/gatewarden.log" || fail "stale client without client.id"
after=$(grep -c "token mismatch\|unauthorized" "$work/gateway.log" || true)
[ "$before" = "$after" ] || fail "the retired token reached the gateway ($before -> $after refusals in its log)"
if grep -q "rate_limited" "$work/gatewarden.log"; then fail "the address was throttled"; fi

echo "== 4. doctor asks the real gateway"
inns env -i PATH=/usr/bin:/bin HOME="$home" GATEWARDEN_ADMIN__LISTEN= "$gd" doctor --listen 127.0.0.1:0 --upstream 127.0.0.1:18790 \
  >"$work/doctor.out" 2>&1 || fail "doctor: $(cat "$work/doctor.out")"
grep -q "accepts the token gatewarden presents (fp:$(fp "$token")" "$work/doctor.out" || fail "doctor: $(cat "$work/doctor.out")"
printf '%s\n' "$old" >"$work/old-token"
if inns env -i PATH=/usr/bin:/bin HOME="$home" GATEWARDEN_ADMIN__LISTEN= "$gd" doctor --listen 127.0.0.1:0 \
     --upstream 127.0.0.1:18790 --token-file "$work/old-token" >"$work/doctor.out" 2>&1; then
  fail "doctor passed a token the gateway does not hold"
fi
grep -q "refuses the token gatewarden presents (fp:$(fp "$old").*token_mismatch" "$work/doctor.out" || fail "doctor: $(cat "$work/doctor.out")"

echo "== 5. gatewarden first, then the gateway on a fresh state directory, then the token"
stop "$gd_pid"; stop "$gateway_pid"
fresh=$work/fresh-state
"${nsx[@]}" env -i PATH=/usr/bin:/bin HOME="$home" OPENCLAW_STATE_DIR="$fresh" "$gd" \
  --listen 127.0.0.1:18789 --upstream 127.0.0.1:18790 >"$work/gatewarden-fresh.log" 2>&1 &
gd_pid=$!; pids+=("$gd_pid")
wait_log "$work/gatewarden-fresh.log" "waiting for it"
if inns env -i "$gd" health --ready >/dev/null 2>&1; then fail "ready without a credential"; fi
"${nsx[@]}" env -i PATH=/usr/bin:/bin HOME="$home" OPENCLAW_STATE_DIR="$fresh" "${quiet[@]}" \
  "$node" "$oc_pkg/openclaw.mjs" gateway run --port 18790 --bind loopback --allow-unconfigured >>"$work/gateway-fresh.log" 2>&1 &
gateway_pid=$!; pids+=("$gateway_pid")
gateway_ready "the fresh gateway"
fresh_token=$(openssl rand -hex 24)
oc OPENCLAW_STATE_DIR="$fresh" config set gateway.auth.token "$fresh_token" >>"$work/cli.log" 2>&1 || fail "config set (fresh)"
wait_log "$work/gatewarden-fresh.log" "\[auth\] credential adopted.*$(fp "$fresh_token")"
# A gateway that started on a runtime-only token applies a persisted one at its restart
# (`config set` says so); gatewarden is not restarted.
stop "$gateway_pid"
"${nsx[@]}" env -i PATH=/usr/bin:/bin HOME="$home" OPENCLAW_STATE_DIR="$fresh" "${quiet[@]}" \
  "$node" "$oc_pkg/openclaw.mjs" gateway run --port 18790 --bind loopback --allow-unconfigured >>"$work/gateway-fresh.log" 2>&1 &
gateway_pid=$!; pids+=("$gateway_pid")
gateway_ready "the fresh gateway after its restart"
inns env -i "$gd" health --ready >/dev/null || fail "not ready after the credential was adopted"
ok=
for _ in $(seq 1 10); do
  oc OPENCLAW_STATE_DIR="$fresh" gateway call health --url ws://127.0.0.1:18789 --token "$fresh_token" \
    >"$work/call.out" 2>&1 && { ok=1; break; }
  sleep 1
done
[ -n "$ok" ] || fail "the CLI on the fresh state: $(cat "$work/call.out")"
kill -0 "$gd_pid" || fail "gatewarden restarted"

echo "== no secret in gatewarden's logs"
for t in "$old" "$token" "$fresh_token"; do
  if grep -qF -- "$t" "$work"/gatewarden*.log; then fail "a token appears in gatewarden's log"; fi
done

echo "ok      token-mismatch scenario proven with openclaw@$OPENCLAW_VERSION: README steps (default CLI through gatewarden), Control UI in Chromium (connected; wrong token refused), stale client without lock-out or upstream refusals, doctor asking the gateway, gateway config adopted after start"
