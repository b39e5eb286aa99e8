#!/usr/bin/env bash
# Build the shoal image with podman on a machine that reaches no container registry, then run it and check
# that it becomes ready, runs as non-root, and stops cleanly on SIGTERM.
#
# usage: deploy/podman-image.sh [all|base|build|check]     (default: all = base + build + check)
#
#   base   make localhost/shoal-base from a Debian bookworm root filesystem (debootstrap --variant=minbase
#          with python3 and python3-venv, from the Debian mirror apt uses) and `podman import` it;
#          skipped when the image exists (REBUILD_BASE=1 forces it)
#   build  build wheels of shoal and its dependencies on this machine (pip reaches the package index here,
#          the build container does not), then `podman build --network none` FROM the base image
#   check  run the image (embedded Redis, --network none, read-only root), wait for the Dockerfile's own
#          HEALTHCHECK to pass, read /readyz from inside, check the user, stop with SIGTERM, expect exit 0;
#          then, if host networking works, run it again with --network host and read /readyz from outside
#
# Needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap). podman runs with runc
# and lowered ulimits: crun cannot set RLIMIT_NOFILE here.
# Environment: IMAGE (localhost/shoal:dev), BASE_IMAGE (localhost/shoal-base), MIRROR (from apt's sources),
# PYTHON (the python whose pip builds the wheels: .venv/bin/python, else python3), WORK (a temp dir).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
step="${1:-all}"
IMAGE="${IMAGE:-localhost/shoal:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/shoal-base}"
PYTHON="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
WORK="${WORK:-$(mktemp -d /var/tmp/shoal-image.XXXXXX)}"
U=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
P=(podman --runtime runc)
NAME="shoal-check-$$"

case "$step" in all | base | build | check) ;; *) sed -n 2,22p "$0" >&2; exit 2 ;; esac
for tool in podman runc; do
  command -v "$tool" >/dev/null || { echo "podman-image: $tool is missing (apt-get install podman runc)" >&2; exit 2; }
done
cleanup() {
  "${P[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${P[@]}" volume rm -f "$NAME" >/dev/null 2>&1 || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
t0=$(date +%s)
say() { echo "[$(($(date +%s) - t0))s] $*"; }

apt_mirror() {
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v security | head -n1 | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//')
  echo "${uri:-http://deb.debian.org/debian}"
}

make_base() {
  if "${P[@]}" image exists "$BASE_IMAGE" && [ -z "${REBUILD_BASE:-}" ]; then
    say "base: $BASE_IMAGE exists"
    return
  fi
  command -v debootstrap >/dev/null || { echo "podman-image: debootstrap is missing" >&2; exit 2; }
  local mirror="${MIRROR:-$(apt_mirror)}" rootfs="$WORK/rootfs"
  say "base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -cf "$WORK/rootfs.tar" .
  "${P[@]}" import --change 'CMD ["python3"]' "$WORK/rootfs.tar" "$BASE_IMAGE" >/dev/null 2>&1
  rm -rf "$rootfs" "$WORK/rootfs.tar"
  say "base: imported $BASE_IMAGE ($("${P[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes)"
}

build_image() {
  local ctx="$WORK/context"
  mkdir -p "$ctx/wheelhouse"
  cp -r "$here/Dockerfile" "$here/.dockerignore" "$here/pyproject.toml" "$here/README.md" "$here/shoal" "$ctx/"
  say "build: wheels for shoal and its dependencies"
  # setuptools builds shoal in the container; async-timeout is what redis needs on Debian's Python 3.11.2
  # (a python_full_version marker that this machine's Python may not match)
  "$PYTHON" -m pip wheel -q --wheel-dir "$ctx/wheelhouse" "$here" "setuptools>=68" "async-timeout>=4.0.3" \
    >"$WORK/wheels.log" 2>&1 \
    || { tail -n 20 "$WORK/wheels.log" >&2; exit 1; }
  say "build: podman build FROM $BASE_IMAGE ($(ls "$ctx/wheelhouse" | wc -l) wheels)"
  "${P[@]}" build "${U[@]}" --format docker --network none --layers=false \
    --build-arg BASE="$BASE_IMAGE" --build-arg PIP_EXTRA="--no-index --find-links=/src/wheelhouse" \
    -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; exit 1; }
  say "build: $IMAGE ($("${P[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
}

in_container() { "${P[@]}" exec "$NAME" "$@"; }

readyz_inside() {
  in_container python3 -c "import urllib.request as u; r = u.urlopen('http://127.0.0.1:8080/readyz', timeout=2); \
print(r.status, r.read().decode())"
}

wait_healthy() {
  local deadline=$(($(date +%s) + 60))
  until "${P[@]}" healthcheck run "$NAME" >/dev/null 2>&1; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "podman-image: not healthy after 60 s; logs:" >&2
      "${P[@]}" logs "$NAME" 2>&1 | tail -n 30 >&2
      exit 1
    fi
    sleep 0.5
  done
}

stop_expect_zero() {
  "${P[@]}" stop -t 40 "$NAME" >/dev/null
  local code
  code=$("${P[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
  say "check: stopped with SIGTERM, exit code $code"
  [ "$code" = 0 ] || { "${P[@]}" logs "$NAME" 2>&1 | tail -n 30 >&2; exit 1; }
  "${P[@]}" rm "$NAME" >/dev/null
}

check_image() {
  say "check: run $IMAGE (--network none, --read-only, embedded Redis)"
  "${P[@]}" volume create "$NAME" >/dev/null
  "${P[@]}" run -d --name "$NAME" "${U[@]}" --network none --read-only -v "$NAME:/var/lib/shoal" \
    --hostname shoal-check -e SHOAL_NAME=shoal-check "$IMAGE" >/dev/null
  wait_healthy
  say "check: HEALTHCHECK passes"
  say "check: /readyz from inside: $(readyz_inside)"
  say "check: user $(in_container id -u):$(in_container id -g), PID 1 is $(in_container cat /proc/1/cmdline | tr '\0' ' ')"
  [ "$(in_container id -u)" != 0 ] || { echo "podman-image: the node runs as root" >&2; exit 1; }
  stop_expect_zero

  local port grpc proxy
  read -r port grpc proxy < <("$PYTHON" -c 'import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  say "check: run with --network host on 127.0.0.1:$port"
  if ! "${P[@]}" run -d --name "$NAME" "${U[@]}" --network host --read-only -v "$NAME:/var/lib/shoal" \
    -e SHOAL_NAME=shoal-check -e SHOAL_HTTP="127.0.0.1:$port" -e SHOAL_GRPC="127.0.0.1:$grpc" -e SHOAL_PROXY="127.0.0.1:$proxy" \
    "$IMAGE" >/dev/null 2>"$WORK/host.err"; then
    say "check: --network host not available here: $(head -c 300 "$WORK/host.err")"
    return
  fi
  wait_healthy
  local answer
  answer=$("$PYTHON" -c "import urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open(\
'http://127.0.0.1:$port/readyz', timeout=2); print(r.status, r.read().decode())")
  say "check: /readyz from the host: $answer"
  stop_expect_zero
}

case "$step" in
  base) make_base ;;
  build) build_image ;;
  check) check_image ;;
  all) make_base; build_image; check_image ;;
esac
say "done"
