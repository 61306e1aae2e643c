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
