#!/usr/bin/env bash
# Builds the image's runtime stage offline and proves it, as far as this machine allows:
# no Docker engine and no registry here, `podman build` works, `podman run` does not.
#
# 1. A Debian bookworm base image made offline (debootstrap --variant=minbase, podman import)
#    stands in for the default distroless base (BASE_IMAGE build arg).
# 2. The binary is built outside (cargo build --release) and taken from the build context
#    (BINARY_FROM=prebuilt), so no Rust image is pulled.
# 3. The image's metadata is checked (user, entrypoint, ports, HEALTHCHECK, config path,
#    labels), its filesystem is mounted, and its entrypoint runs from that filesystem
#    (chroot, as the image's non-root UID) with the image's own config; `gatewarden health`
#    (the HEALTHCHECK command) is run against it, then SIGTERM must exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap
    break
  }
done
podman=(podman --storage-driver vfs)
base=localhost/gatewarden-base:bookworm
image=localhost/gatewarden:test
work=$(mktemp -d)
pid=
mnt=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$mnt" ] && "${podman[@]}" image umount "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if ! "${podman[@]}" image exists "$base"; then
  echo "== base image: debootstrap --variant=minbase bookworm"
  debootstrap --variant=minbase bookworm "$work/rootfs" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -c . | "${podman[@]}" import - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

echo "== binary: cargo build --release"
cargo build --release --locked
ls -l target/release/gatewarden

echo "== podman build (runtime stage, offline)"
"${podman[@]}" build --isolation chroot --format docker -f deploy/Dockerfile --target runtime \
  --build-arg BINARY_FROM=prebuilt --build-arg BASE_IMAGE="$base" \
  --build-arg SOURCE_URL="file://$PWD" --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$image" . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }

echo "== image metadata"
"${podman[@]}" image inspect "$image" >"$work/inspect.json"
python3 - "$work/inspect.json" <<'PY'
import json, sys
img = json.load(open(sys.argv[1]))[0]
cfg = img["Config"]
# podman lists the health check beside Config, docker inside it.
health = cfg.get("Healthcheck") or img.get("Healthcheck") or {}
checks = {
    "non-root fixed UID": cfg.get("User") == "65532:65532",
    "ENTRYPOINT gatewarden": cfg.get("Entrypoint") == ["gatewarden"],
    "EXPOSE 18789 9187": {"18789/tcp", "9187/tcp"} <= set(cfg.get("ExposedPorts") or {}),
    "HEALTHCHECK gatewarden health": health.get("Test") == ["CMD", "gatewarden", "health"],
    "config at /etc/gatewarden/gatewarden.toml": "GATEWARDEN_CONFIG=/etc/gatewarden/gatewarden.toml" in (cfg.get("Env") or []),
    "OCI labels": (cfg.get("Labels") or {}).get("org.opencontainers.image.title") == "gatewarden"
        and (cfg.get("Labels") or {}).get("org.opencontainers.image.revision", "") not in ("", "unknown")
        and "example.invalid" not in (cfg.get("Labels") or {}).get("org.opencontainers.image.source", ""),
}
for name, ok in checks.items():
    print(("ok      " if ok else "FAILED  ") + name)
sys.exit(0 if all(checks.values()) else 1)
PY

echo "== run the entrypoint from the image's filesystem"
mnt=$("${podman[@]}" image mount "$image")
test -x "$mnt/usr/local/bin/gatewarden"
test -f "$mnt/etc/gatewarden/gatewarden.toml"
read -r proxy_port admin_port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
chroot_bin=$(command -v chroot)
# The image's config, with only the addresses moved to free loopback ports.
env -i PATH=/usr/local/bin:/usr/bin:/bin GATEWARDEN_CONFIG=/etc/gatewarden/gatewarden.toml \
  GATEWARDEN_LISTEN="127.0.0.1:$proxy_port" GATEWARDEN_ADMIN__LISTEN="127.0.0.1:$admin_port" \
  "$chroot_bin" --userspec=65532:65532 "$mnt" /usr/local/bin/gatewarden >"$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  grep -q '\[admin\] listening' "$work/run.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/run.log"; exit 1; }
  sleep 0.1
done
grep -q '\[admin\] listening' "$work/run.log" || { cat "$work/run.log"; exit 1; }
# The HEALTHCHECK as the image runs it: no URL, the admin address from the image's config
# and environment.
env -i PATH=/usr/local/bin:/usr/bin:/bin GATEWARDEN_CONFIG=/etc/gatewarden/gatewarden.toml \
  GATEWARDEN_ADMIN__LISTEN="127.0.0.1:$admin_port" \
  "$chroot_bin" --userspec=65532:65532 "$mnt" /usr/local/bin/gatewarden health
kill -TERM "$pid"
wait "$pid" && rc=0 || rc=$?
pid=
[ "$rc" = 0 ] || { echo "SIGTERM exit code $rc"; cat "$work/run.log"; exit 1; }
echo "ok      entrypoint ran as 65532 from the image, healthy, exited 0 on SIGTERM"

size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
basesize=$("${podman[@]}" image inspect --format '{{.Size}}' "$base")
echo "== sizes: binary $(stat -c %s target/release/gatewarden) B; image $size B on a $basesize B debootstrap base (gatewarden's layers: $((size - basesize)) B)"
