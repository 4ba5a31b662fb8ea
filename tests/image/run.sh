#!/usr/bin/env bash
# `make test-image`: build the image with a real Docker engine and run the compose demo end to end.
#
# No image registry is reachable here, so nothing is pulled or pushed: the engine is Debian's
# docker.io, started by this script on a socket of its own (and stopped by its PID on any exit),
# the base image is made with debootstrap from the Debian mirror apt uses, and every image is a
# local tag. The engine's data root is kept in $GITOPS_IMAGE_CACHE between runs, so a second run
# reuses the base image and the build cache; delete that folder to start from nothing.
#
# The compose demo follows a copy of sample-repo/ made a git repository and owned by another
# uid (as a host folder mounted into the non-root container is), and passes when fibo-chain 13
# gives 466 through POST /execute on the three simulated devices.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${GITOPS_IMAGE_CACHE:-/var/tmp/gitops-orchestrator-image}
BASE_IMAGE=local/debian:bookworm
IMAGE=local/gitops-orchestrator
OTHER_UID=4242 # owns the mounted repository: neither root nor the image's user (10001)
DOCKER=/usr/bin/docker # Debian's client, of the same release as the engine it starts

log() { printf '== %s\n' "$*" >&2; }
fail() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

missing=()
for tool in /usr/sbin/dockerd:docker.io /usr/bin/docker-compose:docker-compose \
    /usr/sbin/debootstrap:debootstrap /etc/ssl/certs/ca-certificates.crt:ca-certificates \
    /usr/bin/curl:curl; do
    [ -e "${tool%%:*}" ] || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$CACHE"
# One run at a time: two engines on one data root (or one host's bridge) break each other.
exec 9>"$CACHE/lock"
flock --timeout 900 9 || fail "another make test-image holds $CACHE/lock"

WORK=$(mktemp -d /tmp/gitops-image.XXXXXX) # short: a unix socket path has at most 107 bytes
export DOCKER_HOST=unix://$WORK/docker.sock
PROJECT=gitops-image-$$
compose() { docker-compose --project-name "$PROJECT" --project-directory "$ROOT" "$@"; }

cleanup() {
    status=$?
    if [ -S "$WORK/docker.sock" ]; then
        if [ $status -ne 0 ]; then
            compose --profile demo logs --no-color --tail 40 >&2 2>&1 || true
        fi
        compose --profile demo down --volumes --remove-orphans >/dev/null 2>&1 || true
    fi
    if [ -f "$WORK/dockerd.pid" ]; then
        pid=$(cat "$WORK/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        [ $status -eq 0 ] || tail -n 20 "$WORK/dockerd.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT

log "starting dockerd (data root $CACHE/data)"
dockerd --data-root "$CACHE/data" --exec-root "$WORK/exec" -H "$DOCKER_HOST" \
    --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
for _ in $(seq 150); do
    "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 $! 2>/dev/null || fail "dockerd exited: $(tail -n 5 "$WORK/dockerd.log")"
    sleep 0.2
done
"$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not answer within 30 s"

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    # The mirror apt uses on this machine (deb822 sources first, then a one-line sources.list).
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt"
    log "making $BASE_IMAGE with debootstrap"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || fail "debootstrap: $(tail -n 5 "$WORK/debootstrap.log")"
    # This machine's own CA certificates (a proxy's, say): without them pip and apt inside
    # the build fail on certificates.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/"
        chroot "$WORK/rootfs" update-ca-certificates >/dev/null
    fi
    # apt's caches and lists (about 90 MB) are stale in an image: a build updates them itself.
    rm -rf "$WORK"/rootfs/var/cache/apt/*.bin "$WORK"/rootfs/var/cache/apt/archives/*.deb \
        "$WORK"/rootfs/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" -c . | "$DOCKER" import \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' - "$BASE_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
fi

log "building $IMAGE on $BASE_IMAGE"
# The legacy builder: it takes FROM images from the local store, with no registry lookup.
DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --build-arg BASE="$BASE_IMAGE" --tag "$IMAGE" . >/dev/null
size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
log "image size: $((size / 1000000)) MB"

log "checking the compose files"
compose config --quiet
compose --profile demo config --quiet
GITOPS_REPO=/repo docker-compose --file docker-compose.site.yml --project-directory "$ROOT" config --quiet

# The sample as a git repository owned by another uid, read-only to everyone else.
fleet=$WORK/fleet
cp -r sample-repo "$fleet"
git -C "$fleet" init --quiet --initial-branch=main
git -C "$fleet" add --all
git -C "$fleet" -c user.name=test -c user.email=test@localhost commit --quiet -m "The sample fleet"
chown -R "$OTHER_UID:$OTHER_UID" "$fleet"
chmod -R go-w,a+rX "$fleet"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
export GITOPS_REPO=/repo GITOPS_REPO_DIR=$fleet GITOPS_PUBLISH=127.0.0.1:$port
log "compose demo on $url, following $fleet (uid $OTHER_UID)"
compose --profile demo up --detach --no-build

# Ready when the deployment has run once: 466 is fibo(13) = 233 on sup1, doubled on sup2.
result=""
for _ in $(seq 120); do
    result=$(curl --silent --max-time 20 -X POST -H 'Content-Type: application/json' \
        -d '{"param0": 13}' "$url/execute/fibo-chain?wait=15" || true)
    case $result in *'"result":466'* | *'"result": 466'*) break ;; esac
    sleep 1
done
case $result in
    *'"result":466'* | *'"result": 466'*) log "POST /execute/fibo-chain 13: $result" ;;
    *) fail "fibo-chain 13 did not give 466: ${result:-no answer}; /api/v1/sync: $(curl --silent "$url/api/v1/sync")" ;;
esac

# A commit made on the host reaches the container through the read-only mount at once.
echo "A change made on the host." >>"$fleet/README.md"
git -c safe.directory="$fleet" -C "$fleet" -c user.name=test -c user.email=test@localhost \
    commit --quiet -am "A commit on the host"
sha=$(git -c safe.directory="$fleet" -C "$fleet" rev-parse HEAD)
desired() {
    curl --silent "$url/api/v1/sync" \
        | python3 -c 'import json, sys; print((json.load(sys.stdin)["desired"] or {}).get("sha"))' 2>/dev/null || true
}
for _ in $(seq 60); do
    [ "$(desired)" = "$sha" ] && break
    sleep 0.5
done
[ "$(desired)" = "$sha" ] \
    || fail "the commit $sha made on the host was not followed: $(curl --silent "$url/api/v1/sync")"
log "followed the host's commit $sha"

orchestrator=$(compose ps --quiet orchestrator)
user=$("$DOCKER" exec "$orchestrator" id -u)
[ "$user" != 0 ] || fail "the orchestrator runs as root"
"$DOCKER" inspect --format '{{range .Mounts}}{{.Destination}} {{end}}' "$orchestrator" | grep -qw /data \
    || fail "/data is not a volume"
for _ in $(seq 60); do
    health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$orchestrator")
    [ "$health" = healthy ] && break
    sleep 1
done
[ "$health" = healthy ] || fail "the orchestrator's health is $health"
log "orchestrator: uid $user, /data a volume, $health"
echo "image: 1 passed, 0 failed"
