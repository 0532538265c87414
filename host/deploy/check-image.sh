#!/usr/bin/env bash
# Builds the container image and proves it works the way the Kubernetes
# Deployment runs it: as uid 10001, read-only root filesystem, no
# capabilities, the compile cache in a volume. Checks, in order:
#   - the seed tenant answers on 9800 and the admin endpoint is ready;
#   - the process runs as the unprivileged user and the cache was written;
#   - a second container on the same cache volume loads the compiled guest
#     from the cache instead of compiling it;
#   - `docker stop` (SIGTERM) stops it gracefully with exit status 0.
#
#   host/deploy/check-image.sh [IMAGE]     (default: tcphost:check, built here)
#
# Needs a Docker daemon and the Dockerfile's base images. Not part of CI,
# whose machine has neither (see docs/production.md, "Containers and Kubernetes").
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${1:-tcphost:check}
if [[ $# -eq 0 ]]; then
    docker build --build-arg TCPHOST_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" -t "$image" .
fi

run=tcphost-check-$$
volume=tcphost-check-cache-$$
containers=()
cleanup() {
    for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    docker volume rm -f "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() {
    echo "check-image: FAILED: $*" >&2
    for c in "${containers[@]}"; do
        echo "--- log of $c" >&2
        docker logs "$c" >&2 2>&1 || true
    done
    exit 1
}

docker volume create "$volume" >/dev/null

# Starts a container like the Deployment's pod; prints its name.
start() {
    local name=$1
    containers+=("$name")
    docker run -d --name "$name" \
        --read-only --cap-drop ALL --security-opt no-new-privileges \
        -v "$volume:/var/cache/tcphost" \
        -p 127.0.0.1::9800 -p 127.0.0.1::9090 \
        "$image" >/dev/null
}

# The host port Docker published for container port $2 of container $1.
port_of() {
    docker port "$1" "$2/tcp" | head -n 1 | sed 's/.*://'
}

# Waits up to 60 s for the admin endpoint of $1 to report ready.
wait_ready() {
    local admin
    admin=$(port_of "$1" 9090)
    for _ in $(seq 1 120); do
        if curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1; then
            return 0
        fi
        if [[ "$(docker inspect -f '{{.State.Running}}' "$1")" != true ]]; then
            fail "$1 exited before it was ready"
        fi
        sleep 0.5
    done
    fail "$1 was not ready within 60 s"
}

# One line to the seed tenant of $1; the reply must be the seed's.
check_reply() {
    local port reply
    port=$(port_of "$1" 9800)
    reply=$(python3 - "$port" <<'EOF'
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(b"hello from check-image\n")
    print(s.recv(2048).decode(errors="replace"))
EOF
)
    [[ "$reply" =~ ^rust\ socket\ server\ :\ [0-9]{1,2}$ ]] \
        || fail "$1 answered '$reply', not the seed's reply"
}

first=$run-1
start "$first"
wait_ready "$first"
check_reply "$first"
echo "check-image: the seed tenant answers; the admin endpoint reports ready"
user=$(docker top "$first" -eo pid,uid,comm | awk 'NR > 1 && $3 == "tcphost" { print $2 }')
[[ "$user" == 10001 ]] || fail "the host runs as uid '$user', not 10001"
echo "check-image: the host runs as uid 10001, read-only, with no capabilities"
cached=$(docker run --rm --entrypoint /bin/sh -v "$volume:/cache" "$image" \
    -c 'ls /cache/*.cwasm 2>/dev/null | wc -l')
[[ "$cached" -ge 1 ]] || fail "no compiled guest in the cache volume"
echo "check-image: the compiled guest is in the cache volume"
admin=$(port_of "$first" 9090)
curl -fsS "http://127.0.0.1:$admin/metrics" | grep -q '^tcphost_' \
    || fail "no tcphost_ metrics on the admin endpoint"
echo "check-image: the admin endpoint serves metrics"
docker stop -t 30 "$first" >/dev/null
status=$(docker inspect -f '{{.State.ExitCode}}' "$first")
[[ "$status" == 0 ]] || fail "$first exited with status $status after SIGTERM"
docker logs "$first" 2>&1 | grep -q 'received SIGTERM' \
    || fail "$first did not log the graceful stop"
echo "check-image: SIGTERM stops it gracefully, exit status 0"

second=$run-2
start "$second"
wait_ready "$second"
check_reply "$second"
docker logs "$second" 2>&1 | grep -q 'loaded compiled component from the cache' \
    || fail "$second compiled the guest again instead of loading it from the cache"
echo "check-image: a second container on the volume loads the guest from the cache"
docker stop -t 30 "$second" >/dev/null

size=$(docker image inspect -f '{{.Size}}' "$image")
echo "check-image: $image passed (image size $((size / 1024 / 1024)) MiB)"
