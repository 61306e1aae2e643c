#!/usr/bin/env bash
# Checks the monitoring files: the Prometheus rules load and fire on gatewarden's series
# (promtool, Debian's `prometheus` package), and every metric the rules and the Grafana
# dashboard name is one gatewarden exports (registered in src/metrics/).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
promtool check rules deploy/monitoring/gatewarden-rules.yml
promtool test rules deploy/monitoring/rules-test.yml
python3 - <<'PY'
import json, re, sys
import glob
registered = set(re.findall(r'r\.register\(\s*"([a-z_0-9]+)"', "".join(open(f).read() for f in glob.glob("src/metrics/*.rs"))))
text = open("deploy/monitoring/gatewarden-rules.yml").read()
dash = json.load(open("deploy/monitoring/grafana-dashboard.json"))
text += "\n".join(t["expr"] for p in dash["panels"] for t in p["targets"])
text += dash["templating"]["list"][1]["query"]
unknown = set()
for name in set(re.findall(r"gatewarden_([a-z_0-9]+)", text)):
    base = re.sub(r"_(total|bucket|sum|count|info)$", "", name)
    if name not in registered and base not in registered:
        unknown.add("gatewarden_" + name)
if unknown:
    sys.exit(f"metrics named in deploy/monitoring/ that gatewarden does not export: {sorted(unknown)}")
print(f"ok      monitoring: rules and dashboard name {len(registered)} registered metric families correctly")
PY
