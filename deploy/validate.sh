#!/usr/bin/env bash
# Validates the deploy recipes offline, with tools from package registries:
# - docker-compose.yml against the Compose Specification schema (check-jsonschema's vendored
#   `vendor.compose-spec`), since no Docker engine runs here;
# - deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-validate, strict);
# - deploy/systemd/gatewarden.service with `systemd-analyze verify` (Debian's systemd),
#   failing on any warning (it exits 0 on unknown keys otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VALIDATE_VENV:-"${TMPDIR:-/tmp}/gatewarden-validate-venv"}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q check-jsonschema==0.39.0 kubernetes-validate==1.37.0
fi
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

echo "== compose: docker-compose.yml against the compose-spec schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

echo "== kubernetes: deploy/kubernetes (strict, Kubernetes 1.37 schemas)"
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml

echo "== systemd: deploy/systemd/gatewarden.service"
# verify checks that ExecStart exists: point it at the binary this checkout builds, and
# nothing else changes.
bin="$PWD/target/release/gatewarden"
[ -x "$bin" ] || cargo build --release --locked
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/gatewarden|$bin|" deploy/systemd/gatewarden.service > "$tmp/gatewarden.service"
out=$(systemd-analyze verify "$tmp/gatewarden.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "$out"; echo "systemd-analyze reported problems" >&2; exit 1; fi
echo "ok -- systemd-analyze verify: no warnings"

echo "== systemd: deploy/systemd/gatewarden.toml (the VM config) loads, admin on loopback"
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
# With stand-in certificate and credential files where the config names them, `check`
# validates every key; the admin listener must not be reachable from outside the VM.
python3 - deploy/systemd/gatewarden.toml <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
assert c["admin"]["listen"].startswith("127.0.0.1:"), c["admin"]
assert c["listen"] == "0.0.0.0:443" and c["credentials"][0]["format"] == "json5", c
PY
mkdir -p "$tmp/vm"
sed -e "s|/etc/letsencrypt/live/gateway.example.com|$tmp/vm|; s|/home/openclaw/.openclaw|$tmp/vm|" \
    -e 's|listen = "0.0.0.0:443"|listen = "127.0.0.1:0"|' deploy/systemd/gatewarden.toml > "$tmp/vm/gatewarden.toml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=gateway.example.com \
  -keyout "$tmp/vm/privkey.pem" -out "$tmp/vm/fullchain.pem" -days 2 2>/dev/null
printf '{ gateway: { auth: { mode: "token", token: "%s" } } }\n' "$(openssl rand -hex 24)" > "$tmp/vm/openclaw.json"
"$bin" check -c "$tmp/vm/gatewarden.toml" >/dev/null || { echo "the VM config does not load" >&2; exit 1; }
echo "ok -- the VM config loads; admin on loopback"
