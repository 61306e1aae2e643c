#!/usr/bin/env bash
# Proves issue #39 against the REAL OpenClaw gateway (openclaw@2026.9.6), its CLI and the
# device-signing client openclaw-node@0.14.0, all from the npm registry (cached):
#
# A. password mode, upstream_auth.inject = "password": the CLI and openclaw-node pass with
#    their own stable gatewarden tokens; a read-only credential (scopes = ["operator.read"])
#    calls health and is refused (scope_not_allowed) when it asks for more; the gateway's
#    password rotates (`openclaw config set gateway.auth.password`): the gateway closes the
#    live session with 4001, and after a gateway restart both clients pass again with the
#    same tokens; no secret is in any log; `check` and `doctor` agree with the gateway.
# B. trusted-proxy mode, upstream_auth.inject = "trusted_proxy", the client in a network
#    namespace of its own (a client the gateway can attribute): a named client is accepted
#    and the gateway logs `authenticated user connected … user=<name>`; a client-sent
#    x-forwarded-user never reaches it; a client known only from its first frame is refused
#    (identity_required); `doctor` says the gateway takes gatewarden's naming, and names
#    the pitfalls of a gateway config that has them.
# C. a paired device: auth.device_tokens = "gateway", the gateway attributing clients through
#    gatewarden (trustedProxies, forwarded_headers): openclaw-node asks for pairing, is
#    approved (`openclaw devices approve`), gets a device token through gatewarden, and
#    reconnects with its device token only (authenticated_by=gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=$(mktemp -d)
chmod 755 "$work"
ns=gwm$$
host_ip=10.232.$(( $$ % 250 )).1
ns_ip=10.232.$(( $$ % 250 )).2
base=$(( 21000 + ($$ % 400) * 20 ))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  ip link del "v$ns" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  # oldest first, so the files of the failing step end the output (CI keeps its tail)
  # shellcheck disable=SC2012
  for f in $(ls -tr "$work"/*.log "$work"/*.out 2>/dev/null); do echo "--- $f" >&2; tail -n 30 "$f" >&2; done
  exit 1
}

# shellcheck source=deploy/openclaw-install.sh
source deploy/openclaw-install.sh
command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq iproute2; }
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets==17.4 2>/dev/null \
  || python3 -m pip install -q --break-system-packages websockets==17.4
ocn=$cache/openclaw-node/node_modules/openclaw-node
if [ ! -f "$ocn/dist/index.mjs" ]; then
  mkdir -p "$cache/openclaw-node"
  (cd "$cache/openclaw-node" && PATH="$(dirname "$node"):$PATH" npm install --silent --no-audit --no-fund --ignore-scripts openclaw-node@0.14.0 >/dev/null)
  chmod -R a+rX "$cache/openclaw-node"
fi

echo "== gatewarden binary"
cargo build --quiet --locked
gw_bin=$repo/target/debug/gatewarden

echo "== client namespace $ns ($ns_ip → gatewarden on $host_ip)"
ip netns add "$ns"
ip link add "v$ns" type veth peer name eth0 netns "$ns"
ip addr add "$host_ip/30" dev "v$ns"
ip link set "v$ns" up
ip -n "$ns" addr add "$ns_ip/30" dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }
ipbin=$(command -v ip)

secret() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
cli_token=$(secret); node_token=$(secret); reader_token=$(secret)
printf 'cli %s\nnode %s\n' "$cli_token" "$node_token" > "$work/clients"
printf 'reader %s\n' "$reader_token" > "$work/readers"
chmod 600 "$work/clients" "$work/readers"

oc_env() { # DIR: the environment of a gateway (or its admin CLI) with state in DIR
  echo env -i PATH=/usr/bin:/bin HOME="$1/home" OPENCLAW_STATE_DIR="$1" \
    OPENCLAW_CONFIG_PATH="$1/openclaw.json" OPENCLAW_DISABLE_BONJOUR=1 \
    OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1
}
write_gateway() { # DIR PORT AUTH_JSON [EXTRA_GATEWAY_JSON]
  mkdir -p "$1/home"
  cat > "$1/openclaw.json" <<JSON
{"gateway":{"mode":"local","port":$2,"bind":"loopback","auth":$3${4:+,$4}},
 "update":{"checkOnStart":false},"agents":{"defaults":{"heartbeat":{"every":"0m"}}}}
JSON
}
start_gateway() { # DIR PORT NAME
  # shellcheck disable=SC2046
  (cd "$oc_pkg" && exec $(oc_env "$1") "$node" openclaw.mjs gateway run --port "$2" --bind loopback) \
    >>"$work/$3.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  eval "${3}_pid=$pid"
  for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$2/readyz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || fail "gateway $3 exited"
    sleep 0.5
  done
  fail "gateway $3 not ready in 120 s"
}
stop_gateway() { # NAME
  local pid
  pid=$(eval echo "\$${1}_pid")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}
oc_admin() { # DIR ARGS...: the gateway host's own openclaw CLI
  local dir=$1; shift
  # shellcheck disable=SC2046
  (cd "$oc_pkg" && $(oc_env "$dir") "$node" openclaw.mjs "$@")
}
start_gatewarden() { # CONFIG NAME
  "$gw_bin" --config "$1" >"$work/$2.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "\[listen\] listening" "$work/$2.log" && return 0; sleep 0.1; done
  fail "gatewarden $2 did not listen"
}
wait_log() { # FILE PATTERN: up to 60 s
  for _ in $(seq 1 600); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  fail "no '$2' in $1"
}
cli() { # NAME URL TOKEN [METHOD]: the official CLI from its own empty config; output in NAME.out
  local home=$work/cli-$1
  mkdir -p "$home"
  (cd "$oc_pkg" && env -i PATH=/usr/bin:/bin HOME="$home" OPENCLAW_CONFIG_PATH="$home/openclaw.json" \
    OPENCLAW_STATE_DIR="$home" OPENCLAW_OFFLINE=1 OPENCLAW_NO_AUTO_UPDATE=1 \
    ${in_ns:+"$ipbin" netns exec "$ns"} "$node" openclaw.mjs gateway call "${4:-health}" --url "$2" --token "$3") \
    >"$work/$1.out" 2>&1
}
cat > "$work/node-client.mjs" <<EOF
// usage: node node-client.mjs URL TOKEN IDENTITY [SCOPES]: one connect and a health call
import { OpenClawClient } from "$ocn/dist/index.mjs";
const [url, token, identity, scopes] = process.argv.slice(2);
const c = new OpenClawClient({ url, token: token || undefined, deviceIdentityPath: identity,
  autoReconnect: false, ...(scopes ? { scopes: scopes.split(",") } : {}) });
c.on("error", () => {});
let closed = null;
c.on("disconnected", () => {});
try {
  const hello = await c.connect();
  await c.health();
  console.log(JSON.stringify({ ok: true, deviceToken: Boolean(hello.auth?.deviceToken) }));
  if (process.env.HOLD) { await new Promise((r) => c.once("disconnected", r)); console.log("disconnected"); }
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e?.message || e) }));
}
await c.disconnect().catch(() => {});
process.exit(0);
EOF
node_client() { # NAME URL TOKEN IDENTITY [SCOPES]
  ${in_ns:+ip netns exec "$ns"} env NODE_NO_WARNINGS=1 "$node" "$work/node-client.mjs" "$2" "$3" "$4" "${5:-}" \
    >"$work/$1.out" 2>&1 || true
  grep -q '"ok":true' "$work/$1.out"
}

# ---------------------------------------------------------------- A. password mode
gwa=$work/gw-password; pa=$base; la=$((base + 1))
pw1=$(secret); pw2=$(secret)
write_gateway "$gwa" "$pa" "{\"mode\":\"password\",\"password\":\"$pw1\"}"
cat > "$work/a.toml" <<EOF
listen = "127.0.0.1:$la"
upstream = "127.0.0.1:$pa"
[admin]
listen = "127.0.0.1:$((base + 2))"
[upstream_auth]
inject = "password"
credential = "gateway"
[[credentials]]
name = "gateway"
path = "$gwa/openclaw.json"
format = "json5"
pointer = "/gateway/auth/password"
[[credentials]]
path = "$work/clients"
format = "lines"
[[credentials]]
path = "$work/readers"
format = "lines"
scopes = ["operator.read"]
EOF
echo "== A. password mode: gateway on $pa, gatewarden on $la"
start_gateway "$gwa" "$pa" gwa
start_gatewarden "$work/a.toml" gwda
"$gw_bin" check --config "$work/a.toml" >"$work/a-check.out" 2>&1 || fail "check"
grep -q '# gateway: ok: the gateway .* is in password mode and gatewarden injects for it' "$work/a-check.out" \
  || fail "check does not see the modes agree"
"$gw_bin" doctor --config "$work/a.toml" >"$work/a-doctor.out" 2>&1 || true
grep -q 'accepts the password gatewarden presents' "$work/a-doctor.out" || fail "doctor: the gateway does not accept the password"

cli a-cli "ws://127.0.0.1:$la" "$cli_token" || fail "the CLI with its own token"
node_client a-node "ws://127.0.0.1:$la" "$node_token" "$work/a-node-id.json" || fail "openclaw-node with its own token"
grep -q '"publicKeyPem"' "$work/a-node-id.json" || fail "openclaw-node made no device identity (not a signing client)"
wait_log "$work/gwda.log" 'client=node client_id=gateway-client'
echo "   CLI and openclaw-node (device-signed) pass with their own tokens"

cli a-reader "ws://127.0.0.1:$la" "$reader_token" || fail "a read-only credential cannot call health"
node_client a-reader-wide "ws://127.0.0.1:$la" "$reader_token" "$work/a-reader-id.json" \
  && fail "a read-only credential got operator.write"
wait_log "$work/gwda.log" 'reason=scope_not_allowed'
echo "   reader: health passes with operator.read, a read+write connect is refused (scope_not_allowed)"

HOLD=1 node_client a-hold "ws://127.0.0.1:$la" "$node_token" "$work/a-node-id.json" &
hold=$!
wait_log "$work/a-hold.out" '"ok":true'
oc_admin "$gwa" config set gateway.auth.password "$pw2" >"$work/a-rotate.out" 2>&1 || fail "config set gateway.auth.password"
wait_log "$work/gwda.log" 'code=4001 reason="gateway auth changed" by=upstream .*client=node'
wait "$hold" || true
grep -q disconnected "$work/a-hold.out" || fail "openclaw-node was not disconnected by the rotation"
wait_log "$work/gwda.log" '\[reload\] credentials applied'
echo "   password rotated: the gateway closed the live session with 4001"
stop_gateway gwa
start_gateway "$gwa" "$pa" gwa
cli a-cli2 "ws://127.0.0.1:$la" "$cli_token" || fail "the CLI after the rotation and restart"
node_client a-node2 "ws://127.0.0.1:$la" "$node_token" "$work/a-node-id.json" || fail "openclaw-node after the rotation and restart"
echo "   after a gateway restart both clients pass again with the same tokens"
for s in "$pw1" "$pw2" "$cli_token" "$node_token" "$reader_token"; do
  grep -qF -- "$s" "$work/gwda.log" "$work/gwa.log" && fail "a secret reached a log"
done
echo "   no secret in gatewarden's or the gateway's log"

# ---------------------------------------------------------------- B. trusted-proxy mode
gwb=$work/gw-trusted; pb=$((base + 5)); lb=$((base + 6))
write_gateway "$gwb" "$pb" '{"mode":"trusted-proxy","trustedProxy":{"userHeader":"x-forwarded-user","allowLoopback":true}}' \
  '"trustedProxies":["127.0.0.1/32"]'
cat > "$work/b.toml" <<EOF
listen = "$host_ip:$lb"
upstream = "127.0.0.1:$pb"
[admin]
listen = "127.0.0.1:$((base + 7))"
[auth]
sources = ["header", "query", "first_message"]
[upstream_auth]
inject = "trusted_proxy"
[[credentials]]
path = "$work/clients"
format = "lines"
[[credentials]]
path = "$work/readers"
format = "lines"
scopes = ["operator.read"]
EOF
echo "== B. trusted-proxy mode: gateway on $pb, gatewarden on $host_ip:$lb, clients from $ns_ip"
start_gateway "$gwb" "$pb" gwb
start_gatewarden "$work/b.toml" gwdb
OPENCLAW_CONFIG_PATH=$gwb/openclaw.json "$gw_bin" doctor --config "$work/b.toml" >"$work/b-doctor.out" 2>&1 || true
grep -q 'trusted-proxy mode) accepts the user gatewarden names' "$work/b-doctor.out" || fail "doctor: trusted-proxy"
in_ns=1
cli b-cli "ws://$host_ip:$lb/?token=$cli_token" "$cli_token" || fail "a named client in trusted-proxy mode"
wait_log "$work/gwb.log" 'authenticated user connected .*user=cli'
cat > "$work/spoof.py" <<'PY'
import asyncio, json, sys
import websockets
async def main(url):
    async with websockets.connect(url, additional_headers={"x-forwarded-user": "mallory", "x-forwarded-for": "203.0.113.9"}) as ws:
        assert json.loads(await ws.recv())["event"] == "connect.challenge"
        await ws.send(json.dumps({"type": "req", "id": "spoof", "method": "connect", "params": {
            "minProtocol": 4, "maxProtocol": 4, "role": "operator", "scopes": ["operator.read"],
            "client": {"id": "cli", "mode": "cli", "version": "2026.9.6", "platform": "linux"}}}))
        print(json.dumps(json.loads(await ws.recv()).get("ok")))
asyncio.run(main(sys.argv[1]))
PY
inns python3 "$work/spoof.py" "ws://$host_ip:$lb/?token=$node_token" >"$work/b-spoof.out" 2>&1 || fail "the spoofing client"
grep -q true "$work/b-spoof.out" || fail "the spoofing client was not accepted as itself"
wait_log "$work/gwb.log" 'authenticated user connected .*user=node'
grep -q mallory "$work/gwb.log" && fail "a client-sent x-forwarded-user reached the gateway"
echo "   named clients accepted as user=cli and user=node; a client-sent x-forwarded-user never arrives"
cli b-reader "ws://$host_ip:$lb/?token=$reader_token" "$reader_token" || fail "a read-only client's health in trusted-proxy mode"
wait_log "$work/gwb.log" 'authenticated user connected .*user=reader'
echo "   a read-only client (x-openclaw-scopes: operator.read) calls health as user=reader"
cli b-inband "ws://$host_ip:$lb" "$cli_token" && fail "a first-frame-only client passed in trusted-proxy mode"
wait_log "$work/gwdb.log" 'reason=identity_required'
echo "   a client known only from its first frame is refused (identity_required)"
in_ns=
cat > "$work/b-broken.json" <<'JSON'
{"gateway":{"auth":{"mode":"trusted-proxy","token":"left-over","trustedProxy":{"userHeader":"x-forwarded-user"}}}}
JSON
# On loopback, as a sidecar in the gateway's network namespace would be.
sed "s|^listen = .*|listen = \"127.0.0.1:$lb\"|" "$work/b.toml" > "$work/b-loopback.toml"
OPENCLAW_CONFIG_PATH=$work/b-broken.json "$gw_bin" check --config "$work/b-loopback.toml" >"$work/b-check.out" 2>&1 || true
for pitfall in 'does not start with both' 'no allowLoopback' 'trustedProxies does not name' 'cannot attribute'; do
  grep -q "$pitfall" "$work/b-check.out" || fail "check does not name: $pitfall"
done
echo "   check names the pitfalls of a broken trusted-proxy config"

# ---------------------------------------------------------------- C. a paired device
gwc=$work/gw-paired; pc=$((base + 10)); lc=$((base + 11))
pw3=$(secret)
write_gateway "$gwc" "$pc" "{\"mode\":\"password\",\"password\":\"$pw3\"}" '"trustedProxies":["127.0.0.1/32"]'
sed -e "s|127.0.0.1:$la|$host_ip:$lc|" -e "s|127.0.0.1:$pa|127.0.0.1:$pc|" -e "s|127.0.0.1:$((base + 2))|127.0.0.1:$((base + 12))|" \
  -e "s|$gwa/openclaw.json|$gwc/openclaw.json|" "$work/a.toml" > "$work/c.toml"
sed -i '1i forwarded_headers = true' "$work/c.toml"
printf '[auth]\ndevice_tokens = "gateway"\n' >> "$work/c.toml"
echo "== C. a paired device: gateway on $pc (attributes clients through gatewarden), gatewarden on $host_ip:$lc"
start_gateway "$gwc" "$pc" gwc
start_gatewarden "$work/c.toml" gwdc
in_ns=1
# The gateway's first device connect can be slow on a loaded machine; a connect that failed
# for another reason than pairing is tried again (a stale client is not an attacker), and
# what it saw is kept in c-first-N.out.
for try in 1 2 3; do
  node_client c-first "ws://$host_ip:$lc" "$node_token" "$work/c-node-id.json" && fail "a remote device passed without pairing"
  grep -qi 'pairing' "$work/c-first.out" && break
  grep -q 'pairing required' "$work/gwdc.log" && break
  cp "$work/c-first.out" "$work/c-first-$try.out"
  echo "   first connect, try $try: $(cat "$work/c-first.out"); gatewarden: $(tail -n 3 "$work/gwdc.log" | tr '\n' ' ')"
done
wait_log "$work/gwdc.log" 'pairing required'
echo "   first connect: $(cat "$work/c-first.out")"
req=$(grep -o 'requestId: [0-9a-f-]*' "$work/gwdc.log" | tail -1 | cut -d' ' -f2)
[ -n "$req" ] || fail "no pairing request id"
oc_admin "$gwc" devices approve "$req" >"$work/c-approve.out" 2>&1 || fail "devices approve"
node_client c-paired "ws://$host_ip:$lc" "$node_token" "$work/c-node-id.json" || fail "the approved device"
grep -q '"deviceToken":true' "$work/c-paired.out" || fail "no device token handed over"
wait_log "$work/gwdc.log" "gave this client's device a device token"
grep -q '"deviceToken"' "$work/c-node-id.json" || fail "openclaw-node did not keep its device token"
node_client c-device-only "ws://$host_ip:$lc" "" "$work/c-node-id.json" || fail "reconnect with the device token only"
wait_log "$work/gwdc.log" 'client=node .*authenticated_by=gateway'
in_ns=
for s in "$pw3" "$node_token"; do
  grep -qF -- "$s" "$work/gwdc.log" "$work/gwc.log" && fail "a secret reached a log"
done
dt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["deviceToken"])' "$work/c-node-id.json")
grep -qF -- "$dt" "$work/gwdc.log" && fail "the device token reached gatewarden's log"
echo "   openclaw-node paired, got its device token through gatewarden, and reconnected with it alone (authenticated_by=gateway)"

echo "OK: password injection, trusted-proxy identity, scopes and device tokens against the real gateway"
