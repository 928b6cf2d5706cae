#!/usr/bin/env bash
# Build the soberana image with buildah and write the OCI archive build/image/soberana.oci.tar.
#
# Steps (each skipped when its result is already there; a failing step is named, with the end of
# its log and what to do):
#   1. tools:   buildah, podman, mmdebstrap, umoci, skopeo, runc (apt-get install when missing)
#   2. base:    a Debian bookworm minbase root file system with python3, python3-venv and
#               ca-certificates (mmdebstrap), cached as a tarball under ~/.cache/soberana/ keyed by
#               everything that makes it, imported as the local image localhost/soberana-base:KEY
#   3. image:   buildah bud --isolation chroot --network host on the Containerfile, tagged
#               localhost/soberana:KEY, where KEY hashes the Containerfile, the ignore file,
#               pyproject.toml, setup.py, every file under operator/ and serving/ and the base;
#               its dependencies stage is tagged localhost/soberana-deps:KEY2 (base, Containerfile,
#               pyproject.toml, setup.py) and reused; older builds are removed. The host's CA
#               bundle reaches pip as the build secret pip-ca (kept in no layer)
#   4. archive: build/image/soberana.oci.tar (+ soberana.key, soberana.ref beside it)
# An unchanged KEY reuses the image and the archive: a second run takes about a second.
#
# Environment: SOBERANA_CACHE_DIR (default ~/.cache/soberana), SOBERANA_IMAGE_BASE (use this base
# image instead of making one, e.g. docker.io/library/python:3.12-slim-bookworm), PIP_CERT (the CA
# bundle for pip; default /etc/ssl/certs/ca-certificates.crt when present).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${SOBERANA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/soberana}
OUT=$ROOT/build/image
ARCHIVE=$OUT/soberana.oci.tar
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
MIRROR=http://deb.debian.org/debian
TOOLS=(buildah podman mmdebstrap umoci skopeo runc)
STARTED=$SECONDS
STEP=""
STEP_LOG=""
STEP_STARTED=$SECONDS

say() { echo "[soberana image] $*" >&2; }

took() { [[ -z $STEP ]] || say "  ... $(basename "$STEP_LOG" .log): $((SECONDS - STEP_STARTED))s"; }

step() {
    took
    STEP_STARTED=$SECONDS
    STEP=$1
    STEP_LOG=$OUT/logs/$2.log
    mkdir -p "$OUT/logs"
    : >"$STEP_LOG"
    say "$STEP ..."
}

# run CMD...: append its output to the step's log; on failure name the step, show the log's end
run() {
    echo "\$ $*" >>"$STEP_LOG"
    if ! "$@" >>"$STEP_LOG" 2>&1; then
        say "FAILED: $STEP (exit code of: $*)"
        say "end of $STEP_LOG:"
        tail -n 30 "$STEP_LOG" >&2
        say "what to do: $HINT"
        exit 1
    fi
}

sha() { sha256sum | cut -c1-16; }

# ---------------------------------------------------------------- 1. tools
missing=()
for tool in "${TOOLS[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    step "installing ${missing[*]} with apt-get" tools
    HINT="install them yourself (Debian/Ubuntu: apt-get install ${TOOLS[*]}) and run again"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { say "FAILED: $STEP: not root and no sudo. $HINT"; exit 1; }
        SUDO=(sudo)
    fi
    run "${SUDO[@]}" apt-get update -qq
    run "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${TOOLS[@]}"
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/image.lock"
flock 9   # one build at a time (make image and the image test may race)

# ---------------------------------------------------------------- 2. base
if [[ -n ${SOBERANA_IMAGE_BASE:-} ]]; then
    BASE=$SOBERANA_IMAGE_BASE
else
    ARCH=$(dpkg --print-architecture)
    MMDEBSTRAP_OPTS=(
        --variant=minbase --include="$BASE_PACKAGES" --architectures="$ARCH"
        --aptopt='APT::Install-Recommends "false"' --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
    )
    SOURCES=(
        "deb $MIRROR $SUITE main"
        "deb $MIRROR $SUITE-updates main"
        "deb http://deb.debian.org/debian-security $SUITE-security main"
    )
    BASE_KEY=$(printf '%s\n' "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "${SOURCES[@]}" | sha)
    BASE=localhost/soberana-base:$BASE_KEY
    BASE_TAR=$CACHE/image-base-$BASE_KEY/rootfs.tar
    if [[ ! -s $BASE_TAR ]]; then
        step "making the base root file system (mmdebstrap $SUITE minbase: $BASE_PACKAGES)" base
        HINT="check that $MIRROR is reachable (apt-get update works) and that there is disk space"
        mkdir -p "$(dirname "$BASE_TAR")"
        run mmdebstrap --format=tar "${MMDEBSTRAP_OPTS[@]}" "$SUITE" "$BASE_TAR.partial" "${SOURCES[@]}"
        mv "$BASE_TAR.partial" "$BASE_TAR"
        say "  base root file system: $(du -h "$BASE_TAR" | cut -f1) ($BASE_TAR)"
    fi
    if ! podman image exists "$BASE" 2>/dev/null; then
        step "importing the base as $BASE" base-import
        HINT="check 'podman info' (container storage under /var/lib/containers) and disk space"
        run podman import "$BASE_TAR" "$BASE"
    fi
fi

# ---------------------------------------------------------------- 3. image
KEY=$(
    {
        echo "base $BASE"
        # the same files the build context holds (.containerignore), in a stable order
        find Containerfile .containerignore pyproject.toml setup.py operator serving -type f \
            ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha
)
IMAGE=localhost/soberana:$KEY
if [[ -s $ARCHIVE && "$(cat "$OUT/soberana.key" 2>/dev/null)" == "$KEY" ]] &&
    podman image exists "$IMAGE" 2>/dev/null; then
    say "$IMAGE and $ARCHIVE are up to date (key $KEY)"
    exit 0
fi

if ! podman image exists "$IMAGE" 2>/dev/null; then
    HINT="read the log above: pip needs PyPI (and PIP_CERT if a proxy re-signs TLS); a Python error
    at the last step comes from the source (the build runs soberana --help)"
    BUD=(buildah bud --isolation chroot --network host --layers --force-rm --format oci
        --build-arg "BASE=$BASE")
    CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    [[ -s $CA ]] && BUD+=(--secret "id=pip-ca,src=$CA")
    # the dependencies stage gets a name of its own, so that pruning keeps its cached layers
    DEPS=localhost/soberana-deps:$({ echo "$BASE"; cat Containerfile pyproject.toml setup.py; } | sha)
    if ! podman image exists "$DEPS" 2>/dev/null; then
        step "installing the dependencies (stage deps, $DEPS)" deps
        run "${BUD[@]}" --target deps -f Containerfile -t "$DEPS" .
    fi
    step "building $IMAGE (buildah bud, base $BASE)" build
    run "${BUD[@]}" -f Containerfile -t "$IMAGE" .
    step "removing older builds" prune
    REPOS=(localhost/soberana localhost/soberana-deps)
    [[ -n ${BASE_TAR:-} ]] && REPOS+=(localhost/soberana-base)
    for repo in "${REPOS[@]}"; do
        for old in $(podman images --format '{{.Repository}}:{{.Tag}}' "$repo"); do
            # not fatal: a container may still run an older image (another checkout's test)
            [[ $old == "$IMAGE" || $old == "$DEPS" || $old == "$BASE" ]] ||
                podman rmi "$old" >>"$STEP_LOG" 2>&1 || say "  kept $old (in use)"
        done
    done
    # untagged layers that no named image builds on
    podman image prune --force >>"$STEP_LOG" 2>&1 || say "  pruning failed: see $STEP_LOG"
    for dir in "$CACHE"/image-base-*; do
        [[ -z ${BASE_TAR:-} || $dir == "$(dirname "$BASE_TAR")" ]] || rm -rf "$dir"
    done
fi

# ---------------------------------------------------------------- 4. archive
step "writing $ARCHIVE" archive
HINT="check disk space under $OUT"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
rm -f "$ARCHIVE" "$ARCHIVE.partial" "$OUT/soberana.key" "$OUT/soberana.ref"
run buildah push "$IMAGE" "oci-archive:$ARCHIVE.partial:ghcr.io/soberana/soberana:$VERSION"
mv "$ARCHIVE.partial" "$ARCHIVE"
echo "$KEY" >"$OUT/soberana.key"
echo "$IMAGE" >"$OUT/soberana.ref"
took
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "done in $((SECONDS - STARTED))s: $IMAGE, $((SIZE / 1000000)) MB unpacked;" \
    "$ARCHIVE $(($(stat -c %s "$ARCHIVE") / 1000000)) MB"
