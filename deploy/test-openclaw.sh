#!/usr/bin/env bash
# Proves the compose recipe against the REAL OpenClaw gateway (openclaw@2026.9.6 from the npm
# registry), without a container engine, by reproducing what docker-compose.yml sets up:
#
# - one network namespace (created here with `ip netns`; compose: gatewarden's), in which
#   the gateway listens on loopback and gatewarden on 0.0.0.0:18789; the client comes from
#   outside through a veth pair, as a published port does;
# - the named volume: a state directory, seeded by the recipe's own openclaw-init commands
#   and owned by uid 1000, with OpenClaw's own modes (it chmods 0700/0600 itself);
# - the gateway (uid 1000) started with the recipe's command line, gatewarden (uid 1000, as
#   `user:` says) with the image's config and the recipe's environment;
# - the recipe's health checks.
#
# Then the real `openclaw` CLI, run from outside the namespace, must: pass with the right
# token; be refused by gatewarden (close 1008, logged token_mismatch) with a wrong one; not
# reach the gateway's port directly; pass after `openclaw config set gateway.auth.token`
# rotates the token; pass after the gateway restarts (compose: `restart openclaw-gateway`).
# It also runs `gatewarden doctor` as uid 65532 against the same state (the mistake the
# recipe avoids) and checks that it says "permission denied", not "does not exist".
#
# Cached install: $GATEWARDEN_CI_CACHE (default /var/cache/gatewarden-ci), ~650 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

uid=1000
ns=gwtest$$
host_ip=10.231.$(( $$ % 250 )).1
ns_ip=10.231.$(( $$ % 250 )).2

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$ns" ]; then
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip link del "v$ns" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 40 "$f" >&2; done; exit 1; }

# shellcheck source=deploy/openclaw-install.sh
source deploy/openclaw-install.sh
command -v setpriv >/dev/null && command -v ip >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux iproute2; }
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml 2>/dev/null || python3 -m pip install -q --break-system-packages pyyaml

echo "== gatewarden binary"
cargo build --quiet --locked
install -m 755 target/debug/gatewarden "$work/gatewarden"
install -m 644 deploy/gatewarden.toml "$work/gatewarden.toml"

# What the recipe says, read from docker-compose.yml itself.
recipe() { python3 - "$@" <<'PY'
import sys, yaml, json
c = yaml.safe_load(open("docker-compose.yml"))["services"]
what = sys.argv[1]
if what == "init":
    print(c["openclaw-init"]["command"][0].replace("$$", "$"))  # compose writes $ as $$
elif what == "gateway-args":
    cmd = c["openclaw-gateway"]["command"]
    assert cmd[:2] == ["node", "dist/index.js"], cmd
    print("\n".join(cmd[2:]))
elif what == "check":
    gw, gd = c["openclaw-gateway"], c["gatewarden"]
    assert gw["network_mode"] == "service:gatewarden", gw.get("network_mode")
    assert "ports" not in gw, "the gateway publishes nothing"
    assert gd["ports"] == ["18789:18789"], gd["ports"]
    assert gw["user"] == gd["user"] == c["openclaw-init"]["user"] == "1000:1000"
    assert gd["healthcheck"]["test"] == ["CMD", "gatewarden", "health", "--ready"]
    assert any(v.endswith(":/home/node/.openclaw:ro") for v in gd["volumes"]), gd["volumes"]
    print("ok")
elif what == "gatewarden-env":
    for k, v in c["gatewarden"]["environment"].items():
        print(f"{k}={v}")
PY
}
[ "$(recipe check)" = ok ] || fail "docker-compose.yml is not the layout this script proves"

echo "== namespace $ns: gateway on its loopback, gatewarden on 0.0.0.0:18789, client outside"
if [ -z "${GATEWARDEN_TEST_NO_NETNS:-}" ] && ip netns add "$ns" 2>/dev/null \
  && ip link add "v$ns" type veth peer name eth0 netns "$ns" 2>/dev/null; then
  ip addr add "$host_ip/30" dev "v$ns"
  ip link set "v$ns" up
  ip -n "$ns" addr add "$ns_ip/30" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  nsx=(ip netns exec "$ns")
  client_ip=$ns_ip
else
  # No namespaces on this machine: the same processes on the host's loopback (the gateway
  # is then reachable directly; that one check is skipped).
  echo "   (network namespaces unavailable: loopback only)"
  ip netns del "$ns" 2>/dev/null || true
  ns=
  nsx=()
  client_ip=127.0.0.1
fi
inns() { "${nsx[@]}" "$@"; }

state=$work/volume
mkdir -p "$state"
chown "$uid:$uid" "$state"
oc_env=(env -i PATH=/usr/bin:/bin HOME="$work/home" OPENCLAW_STATE_DIR="$state"
        OPENCLAW_CONFIG_PATH="$state/openclaw.json" OPENCLAW_DISABLE_BONJOUR=1
        OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1)
mkdir -p "$work/home" && chown "$uid:$uid" "$work/home"
as_gw() { inns setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
# `node dist/index.js` in OpenClaw's image is the package's dist/index.js here.
shim=$work/bin
mkdir -p "$shim"
printf '#!/bin/sh\nexec %s "$@"\n' "$node" > "$shim/node"
chmod 755 "$shim/node"

echo "== first start on an empty volume: the recipe's openclaw-init"
init=$(recipe init)
(cd "$oc_pkg" && as_gw "${oc_env[@]}" PATH="$shim:/usr/bin:/bin" sh -c "$init") >"$work/init.log" 2>&1 \
  || fail "openclaw-init"
(cd "$oc_pkg" && as_gw "${oc_env[@]}" PATH="$shim:/usr/bin:/bin" sh -c "$init") >>"$work/init.log" 2>&1 \
  || fail "openclaw-init, second run"
# `config get` redacts secrets: read the seeded token from the file (the client's copy).
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gateway"]["auth"]["token"])' "$state/openclaw.json")
[ ${#token} -ge 32 ] || fail "no token seeded (got '${token}')"

start_gateway() {
  mapfile -t args < <(recipe gateway-args)
  (cd "$oc_pkg" && exec "${nsx[@]}" setpriv --reuid="$uid" --regid="$uid" --clear-groups \
     "${oc_env[@]}" "$node" dist/index.js "${args[@]}") >>"$work/gateway.log" 2>&1 &
  gateway_pid=$!
  pids+=("$gateway_pid")
  for _ in $(seq 1 240); do
    inns curl -fsS -o /dev/null "http://127.0.0.1:18790/readyz" 2>/dev/null && return 0
    kill -0 "$gateway_pid" 2>/dev/null || fail "the gateway exited"
    sleep 0.5
  done
  fail "the gateway did not become ready in 120 s"
}
echo "== the gateway, as uid $uid, with the recipe's command"
start_gateway
stat -c '%a %u' "$state" | grep -q '^700 1000$' || fail "state directory is not OpenClaw's 0700 (got $(stat -c '%a %u' "$state"))"
stat -c '%a %u' "$state/openclaw.json" | grep -q '^600 1000$' || fail "openclaw.json is not 0600"

echo "== gatewarden, as uid $uid, with the image's config and the recipe's environment"
mapfile -t gd_env < <(recipe gatewarden-env)
inns setpriv --reuid="$uid" --regid="$uid" --clear-groups env -i PATH=/usr/bin:/bin \
  GATEWARDEN_CONFIG="$work/gatewarden.toml" \
  GATEWARDEN_CREDENTIALS__SOURCES="[{name=\"gateway\",path=\"$state/openclaw.json\",format=\"json5\"}]" \
  "${gd_env[@]}" "$work/gatewarden" >"$work/gatewarden.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q '\[listen\] listening' "$work/gatewarden.log" && break; sleep 0.1; done
grep -q '\[listen\] listening' "$work/gatewarden.log" || fail "gatewarden did not start"
grep -q 'first_message' "$work/gatewarden.log" || fail "in-band tokens not on in front of OpenClaw"
as_gw env -i GATEWARDEN_CONFIG="$work/gatewarden.toml" "$work/gatewarden" health --ready >/dev/null \
  || fail "the recipe's health check (readiness)"

# The real CLI, from outside the namespace, with an empty config of its own.
client_dir=$work/client
mkdir -p "$client_dir"
call() {
  env -i PATH=/usr/bin:/bin HOME="$client_dir" OPENCLAW_CONFIG_PATH="$client_dir/openclaw.json" \
    OPENCLAW_STATE_DIR="$client_dir" OPENCLAW_DISABLE_BONJOUR=1 OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1 \
    "$node" "$oc_pkg/openclaw.mjs" gateway call health --url "ws://$client_ip:18789" --token "$1" >"$work/call.out" 2>&1
}
fp() { printf '%s' "$1" | sha256sum | cut -c1-8; }

echo "== the right token passes"
call "$token" || fail "the real CLI with the right token: $(cat "$work/call.out")"
grep -q "\[ws\] connected.*source=first_message.*fp:$(fp "$token")" "$work/gatewarden.log" \
  || fail "gatewarden did not log the in-band accept"

echo "== a wrong token is refused by gatewarden with 1008"
if call "wrong-$token"; then fail "a wrong token passed"; fi
grep -q "token mismatch" "$work/call.out" || fail "the CLI did not see a token mismatch: $(cat "$work/call.out")"
grep -q "\[ws\] unauthorized.*reason=token_mismatch.*presented=fp:$(fp "wrong-$token")" "$work/gatewarden.log" \
  || fail "gatewarden did not refuse it itself"

echo "== the gateway's port is not reachable from outside the namespace"
if [ -n "$ns" ] && curl -fsS -m 3 -o /dev/null "http://$ns_ip:18790/healthz" 2>/dev/null; then
  fail "gateway port reachable"
fi

echo "== rotation: openclaw config set gateway.auth.token"
new_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
(cd "$oc_pkg" && as_gw "${oc_env[@]}" "$node" dist/index.js config set gateway.auth.token "$new_token") >>"$work/init.log" 2>&1 \
  || fail "config set"
for _ in $(seq 1 100); do grep -q "credentials applied.*current=fp:$(fp "$new_token")" "$work/gatewarden.log" && break; sleep 0.1; done
grep -q "credentials applied.*current=fp:$(fp "$new_token")" "$work/gatewarden.log" || fail "gatewarden did not apply the rotation"
ok=
for _ in $(seq 1 30); do call "$new_token" && { ok=1; break; }; sleep 1; done   # the gateway reloads on its own (~0.5 s)
[ -n "$ok" ] || fail "the new token after rotation: $(cat "$work/call.out")"

echo "== gateway restart (compose: restart openclaw-gateway): gatewarden and clients carry on"
kill -TERM "$gateway_pid"
wait "$gateway_pid" 2>/dev/null || true
start_gateway
call "$new_token" || fail "after the gateway restarted: $(cat "$work/call.out")"

echo "== the mistake the recipe avoids: gatewarden as uid 65532 cannot read the state"
out=$(inns setpriv --reuid=65532 --regid=65532 --clear-groups env -i PATH=/usr/bin:/bin \
  HOME="$work" GATEWARDEN_CONFIG="$work/gatewarden.toml" GATEWARDEN_ADMIN__LISTEN="" \
  GATEWARDEN_CREDENTIALS__SOURCES="[{path=\"$state/openclaw.json\",format=\"json5\"}]" \
  "$work/gatewarden" doctor 2>&1 || true)
grep -q "cannot be read: permission denied (gatewarden runs as uid 65532, its directory $state is owned by uid 1000 mode 0700" <<<"$out" \
  || fail "doctor as 65532: $out"

echo "== kubernetes layout: the Secret's file 0440 root:10001 (fsGroup), gateway uid 1000 and gatewarden uid 65532 in that group"
kill -TERM "$gateway_pid"; wait "$gateway_pid" 2>/dev/null || true
pkill -TERM -f "$work/gatewarden" 2>/dev/null || true
secret=$work/secret
mkdir -p "$secret" "$work/k8s-state"
k8s_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
python3 - "$repo/deploy/kubernetes/gatewarden.yaml" "$secret/openclaw.json" "$k8s_token" <<'PY'
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
secret = next(d for d in docs if d["kind"] == "Secret")
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
assert pod["enableServiceLinks"] is False and pod["securityContext"]["fsGroup"] == 10001
vol = next(v for v in pod["volumes"] if "secret" in v)
assert vol["secret"]["defaultMode"] == 0o440
open(sys.argv[2], "w").write(secret["stringData"]["openclaw.json"].replace("REPLACE-ME", sys.argv[3]))
PY
chown -R 0:10001 "$secret"; chmod 0440 "$secret/openclaw.json"; chmod 0755 "$secret"
chown "$uid:$uid" "$work/k8s-state"
k8s_env=(env -i PATH=/usr/bin:/bin HOME="$work/home" OPENCLAW_CONFIG_PATH="$secret/openclaw.json"
         OPENCLAW_STATE_DIR="$work/k8s-state" OPENCLAW_DISABLE_BONJOUR=1 OPENCLAW_NO_AUTO_UPDATE=1 OPENCLAW_OFFLINE=1)
mapfile -t args < <(recipe gateway-args)
(cd "$oc_pkg" && exec "${nsx[@]}" setpriv --reuid="$uid" --regid="$uid" --groups=10001 \
   "${k8s_env[@]}" "$node" dist/index.js "${args[@]}") >>"$work/gateway-k8s.log" 2>&1 &
k8s_gw=$!; pids+=("$k8s_gw")
for _ in $(seq 1 240); do
  inns curl -fsS -o /dev/null "http://127.0.0.1:18790/readyz" 2>/dev/null && break
  kill -0 "$k8s_gw" 2>/dev/null || fail "the gateway exited with the Secret's config"
  sleep 0.5
done
inns setpriv --reuid=65532 --regid=65532 --groups=10001 env -i PATH=/usr/bin:/bin \
  GATEWARDEN_CONFIG="$work/gatewarden.toml" GATEWARDEN_ADMIN__LISTEN="" \
  GATEWARDEN_CREDENTIALS__SOURCES="[{name=\"gateway\",path=\"$secret/openclaw.json\",format=\"json5\"}]" \
  "$work/gatewarden" >"$work/gatewarden-k8s.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q '\[listen\] listening' "$work/gatewarden-k8s.log" && break; sleep 0.1; done
grep -q "credential loaded.*fingerprint=$(fp "$k8s_token")" "$work/gatewarden-k8s.log" || fail "gatewarden (65532, fsGroup) did not read the Secret"
ok=
for _ in $(seq 1 30); do call "$k8s_token" && { ok=1; break; }; sleep 1; done
[ -n "$ok" ] || fail "kubernetes layout: $(cat "$work/call.out")"

echo "ok      compose recipe proven with openclaw@$OPENCLAW_VERSION: in-band accept, refusal by gatewarden, rotation, gateway restart, uid diagnosis; kubernetes Secret/fsGroup layout"
