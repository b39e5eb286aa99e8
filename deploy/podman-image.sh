#!/usr/bin/env bash
# Build the shoal image with podman on a machine that reaches no container registry, then run it and check
# that it becomes ready, runs as non-root, and stops cleanly on SIGTERM.
#
# usage: deploy/podman-image.sh [all|base|build|check|cluster]     (default: all: each in turn)
#
#   base   make localhost/shoal-base from a Debian bookworm root filesystem (debootstrap --variant=minbase
#          with python3 and python3-venv, from the Debian mirror apt uses) and `podman import` it;
#          skipped when the image exists (REBUILD_BASE=1 forces it)
#   build  build wheels of shoal and its dependencies on this machine (pip reaches the package index here,
#          the build container does not), then `podman build --network none` FROM the base image
#   check  run the image (embedded Redis, --network none, read-only root), wait for the Dockerfile's own
#          HEALTHCHECK to pass, read /readyz from inside, check the user, stop with SIGTERM, expect exit 0;
#          then, if host networking works, run it again with --network host and read /readyz from outside
#   cluster three containers of the image with --network host on one redis-server on loopback (REDIS_SERVER,
#          default: redis-server beside PYTHON or on PATH), each on its own ports: they agree on a master, run a
#          task submitted with the image's own CLI, and when the master's container is stopped (SIGTERM) it
#          exits 0 and another node is master
#
# Needs root, podman, runc and debootstrap (apt-get install podman runc debootstrap). podman runs with runc
# and lowered ulimits: crun cannot set RLIMIT_NOFILE here.
# Environment: IMAGE (localhost/shoal:dev), BASE_IMAGE (localhost/shoal-base), MIRROR (from apt's sources),
# PYTHON (the python whose pip builds the wheels: .venv/bin/python, else python3), WORK (a temp dir).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
step="${1:-all}"
usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" >&2; }
case "$step" in all | base | build | check | cluster) ;; -h | --help) usage; exit 0 ;; *) usage; exit 2 ;; esac
for tool in podman runc; do
  command -v "$tool" >/dev/null || { echo "podman-image: $tool is missing (apt-get install podman runc)" >&2; exit 2; }
done
IMAGE="${IMAGE:-localhost/shoal:dev}"
BASE_IMAGE="${BASE_IMAGE:-localhost/shoal-base}"
PYTHON="${PYTHON:-$([ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}"
WORK="${WORK:-$(mktemp -d /var/tmp/shoal-image.XXXXXX)}"
U=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
P=(podman --runtime runc)
# Every container: read-only root (the data volume and podman's /tmp, /run tmpfs stay writable), and no
# healthcheck timer (podman would ask systemd for one); the checks run the HEALTHCHECK with `podman healthcheck run`.
RUN=("${U[@]}" --read-only --health-interval disable)
NAME="shoal-check-$$"

REDIS_PID=""
cleanup() {
  for c in "$NAME" "$NAME-1" "$NAME-2" "$NAME-3"; do
    "${P[@]}" rm -f "$c" >/dev/null 2>&1 || true
    "${P[@]}" volume rm -f "$c" >/dev/null 2>&1 || true
  done
  [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
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
  cp -r "$here/Dockerfile" "$here/.dockerignore" "$here/pyproject.toml" "$here/constraints.txt" "$here/README.md" \
    "$here/src" "$ctx/"
  say "build: wheels for shoal and its dependencies"
  # at the versions constraints.txt pins; setuptools builds shoal in the container; async-timeout is what
  # redis needs on Debian's Python 3.11.2 (a python_full_version marker that this machine's Python may not match)
  "$PYTHON" -m pip wheel -q -c "$here/constraints.txt" --wheel-dir "$ctx/wheelhouse" "$here" "setuptools>=68" \
    "async-timeout>=4.0.3" \
    >"$WORK/wheels.log" 2>&1 \
    || { tail -n 20 "$WORK/wheels.log" >&2; exit 1; }
  say "build: podman build FROM $BASE_IMAGE ($(find "$ctx/wheelhouse" -name "*.whl" | wc -l) wheels)"
  local old
  old=$("${P[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  "${P[@]}" build "${U[@]}" --format docker --network none --layers=false \
    --build-arg BASE="$BASE_IMAGE" --build-arg PIP_EXTRA="--no-index --find-links=/src/wheelhouse" \
    -t "$IMAGE" "$ctx" >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; exit 1; }
  if [ -n "$old" ] && [ "$old" != "$("${P[@]}" image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    "${P[@]}" rmi "$old" >/dev/null 2>&1 || true  # the previous build, now untagged
  fi
  say "build: $IMAGE ($("${P[@]}" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
}

in_container() { "${P[@]}" exec "$NAME" "$@"; }

# N distinct free loopback ports, below the kernel's ephemeral range (where any outgoing connection could take
# one before it is bound), picked by shoal's own helper.
free_ports() {
  "$PYTHON" -c 'import socket, sys
try:
    from shoal.store.embedded import free_port
except ImportError:  # a python without shoal: any free port
    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
ports = set()
while len(ports) < int(sys.argv[1]):
    ports.add(free_port())
print(*ports)' "$1"
}

readyz_inside() {
  in_container python3 -c "import urllib.request as u; r = u.urlopen('http://127.0.0.1:8080/readyz', timeout=2); \
print(r.status, r.read().decode())"
}

wait_healthy() {
  local name="${1:-$NAME}" deadline=$(($(date +%s) + 120))
  until "${P[@]}" healthcheck run "$name" >/dev/null 2>&1; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "podman-image: $name not healthy after 120 s; logs:" >&2
      "${P[@]}" logs "$name" 2>&1 | tail -n 30 >&2
      exit 1
    fi
    sleep 0.5
  done
}

stop_expect_zero() {
  local name="${1:-$NAME}" code
  # podman also reports here that it has no systemd to remove a healthcheck timer from: kept in podman.log
  "${P[@]}" stop -t 40 "$name" >/dev/null 2>>"$WORK/podman.log"
  code=$("${P[@]}" inspect --format '{{.State.ExitCode}}' "$name")
  say "check: $name stopped with SIGTERM, exit code $code"
  [ "$code" = 0 ] || { "${P[@]}" logs "$name" 2>&1 | tail -n 30 >&2; exit 1; }
  "${P[@]}" rm "$name" >/dev/null 2>>"$WORK/podman.log"
}

check_image() {
  say "check: run $IMAGE (--network none, --read-only, embedded Redis)"
  "${P[@]}" volume create "$NAME" >/dev/null
  "${P[@]}" run -d "${RUN[@]}" --name "$NAME" --network none -v "$NAME:/var/lib/shoal" \
    --hostname shoal-check -e SHOAL_NAME=shoal-check "$IMAGE" >/dev/null 2>>"$WORK/podman.log" \
    || { tail -n 5 "$WORK/podman.log" >&2; exit 1; }
  wait_healthy
  say "check: HEALTHCHECK passes"
  say "check: /readyz from inside: $(readyz_inside)"
  say "check: user $(in_container id -u):$(in_container id -g), PID 1 is $(in_container cat /proc/1/cmdline | tr '\0' ' ')"
  [ "$(in_container id -u)" != 0 ] || { echo "podman-image: the node runs as root" >&2; exit 1; }
  stop_expect_zero

  local port grpc proxy
  read -r port grpc proxy < <(free_ports 3)
  say "check: run with --network host on 127.0.0.1:$port"
  if ! "${P[@]}" run -d "${RUN[@]}" --name "$NAME" --network host -v "$NAME:/var/lib/shoal" \
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

cluster_check() {
  local redis_server="${REDIS_SERVER:-$(dirname "$PYTHON")/redis-server}"
  [ -x "$redis_server" ] || redis_server=$(command -v redis-server) \
    || { echo "podman-image: no redis-server (set REDIS_SERVER)" >&2; exit 2; }
  local ports token i
  read -r -a ports < <(free_ports 10)
  "$redis_server" --port "${ports[9]}" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  local deadline=$(($(date +%s) + 10))
  until "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5)' \
      "${ports[9]}" 2>/dev/null; do
    if ! kill -0 "$REDIS_PID" 2>/dev/null || [ "$(date +%s)" -gt "$deadline" ]; then
      echo "podman-image: redis-server did not start on :${ports[9]}:" >&2; cat "$WORK/redis.log" >&2; exit 1
    fi
    sleep 0.1
  done
  token=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))')
  say "cluster: three containers of $IMAGE (--network host) on redis-server :${ports[9]}"
  for i in 1 2 3; do
    "${P[@]}" run -d "${RUN[@]}" --name "$NAME-$i" --network host -v "$NAME-$i:/var/lib/shoal" \
      -e SHOAL_NAME="node-$i" -e SHOAL_REDIS="redis://127.0.0.1:${ports[9]}/0" -e SHOAL_TOKEN="$token" \
      -e SHOAL_HTTP="127.0.0.1:${ports[i * 3 - 3]}" -e SHOAL_GRPC="127.0.0.1:${ports[i * 3 - 2]}" \
      -e SHOAL_PROXY="127.0.0.1:${ports[i * 3 - 1]}" -e SHOAL_SHUTDOWN_GRACE=5 "$IMAGE" >/dev/null
  done
  for i in 1 2 3; do wait_healthy "$NAME-$i"; done
  say "cluster: all three pass their HEALTHCHECK"
  cli() { "${P[@]}" exec -e SHOAL_TOKEN="$token" "$NAME-$1" shoal --api "http://127.0.0.1:${ports[$1 * 3 - 3]}" "${@:2}"; }
  local status master
  status=$(cli 1 cluster status --json)
  master=$("$PYTHON" -c 'import json, sys; v = json.load(sys.stdin); print(v["master"])' <<<"$status")
  say "cluster: $("$PYTHON" -c 'import json, sys; v = json.load(sys.stdin)
print("master", v["master"], "epoch", v["epoch"], "nodes", [(n["name"], n["state"], n["role"]) for n in v["nodes"]])' <<<"$status")"
  local task
  task=$(cli 2 task submit echo "hello from a container" --wait --json | "$PYTHON" -c \
    'import json, sys; t = json.load(sys.stdin)["task"]; print(t["state"], "on", t["node"])')
  say "cluster: a task submitted through node-2 ended $task"
  [ "${task%% *}" = SUCCEED ] || { echo "podman-image: the task did not succeed" >&2; exit 1; }
  local victim="${master#node-}" other
  other=$((victim % 3 + 1))
  stop_expect_zero "$NAME-$victim"
  local deadline=$(($(date +%s) + 30)) now_master="$master"
  while [ "$now_master" = "$master" ] || [ "$now_master" = None ]; do
    [ "$(date +%s)" -le "$deadline" ] || { echo "podman-image: no new master within 30 s" >&2; exit 1; }
    sleep 0.5
    now_master=$(cli "$other" cluster status --json \
      | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["master"])' 2>/dev/null || echo None)
  done
  say "cluster: after $master stopped, the master is $now_master"
  for i in 1 2 3; do
    [ "$i" = "$victim" ] || stop_expect_zero "$NAME-$i"
  done
}

case "$step" in
  cluster) cluster_check ;;
  base) make_base ;;
  build) build_image ;;
  check) check_image ;;
  all) make_base; build_image; check_image; cluster_check ;;
esac
say "done"
