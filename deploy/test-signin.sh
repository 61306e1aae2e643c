#!/usr/bin/env bash
# gatewarden against a real OpenID provider: the npm `oidc-provider` (tests/signin/provider.mjs)
# on loopback issues JWT access tokens; tests/signin/jwt_check.py drives the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "${prov:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
# shellcheck source=deploy/openclaw-install.sh
source deploy/openclaw-install.sh
(cd tests/signin && PATH="$(dirname "$node"):$PATH" npm ci --silent --no-audit --no-fund >/dev/null)
cargo build --release --quiet
"$node" tests/signin/provider.mjs >"$work/provider.log" 2>&1 &
prov=$!
for _ in $(seq 1 100); do grep -q '^listening ' "$work/provider.log" && break; sleep 0.1; done
issuer=$(sed -n 's/^listening //p' "$work/provider.log")
[ -n "$issuer" ] || { cat "$work/provider.log"; echo "FAIL: the provider did not start"; exit 1; }
python3 tests/signin/jwt_check.py target/release/gatewarden "$issuer" "$work"
