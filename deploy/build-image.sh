#!/usr/bin/env bash
# Builds the `strand:local` Docker image without pulling any base image:
#   1. a statically linked `strand` (glibc, crt-static) is built on this host,
#   2. checked to be static (ldd / ELF headers),
#   3. copied with an empty /data directory into deploy/.image/,
#   4. `docker build` of deploy/Dockerfile (FROM scratch).
#
#   deploy/build-image.sh [--binary-only]
#
# Environment: IMAGE (default strand:local), CARGO_TARGET_DIR.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
IMAGE=${IMAGE:-strand:local}
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=$TARGET_DIR/$TRIPLE/release/strand
CONTEXT=$DEPLOY_DIR/.image

die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

[[ $(uname -m) == x86_64 ]] || die "this script builds for $TRIPLE; on $(uname -m) change TRIPLE (and the image platform)"

# An explicit --target keeps these objects (built with crt-static) apart from
# the ordinary target/release build, and makes proc-macros and build scripts
# build for the host without crt-static.
echo "building a static strand binary (cargo build --release -p strand-cli --target $TRIPLE)…"
(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p strand-cli --target "$TRIPLE") \
    || die "cargo build failed"
[[ -x $BIN ]] || die "no binary at $BIN"

# Static check. ldd prints "not a dynamic executable" for a static executable
# and "statically linked" for a static PIE (what rustc makes by default).
if command -v ldd >/dev/null 2>&1; then
    ldd_out=$(ldd "$BIN" 2>&1 || true)
    case $ldd_out in
        *"not a dynamic executable"* | *"statically linked"*) echo "ldd: $ldd_out" ;;
        *) die "$BIN is dynamically linked:"$'\n'"$ldd_out" ;;
    esac
fi
if command -v readelf >/dev/null 2>&1; then
    readelf -l "$BIN" | grep -q 'INTERP' && die "$BIN has a program interpreter (dynamic loader)"
    readelf -d "$BIN" | grep -q '(NEEDED)' && die "$BIN needs shared libraries"
    echo "readelf: no interpreter, no shared libraries"
fi
"$BIN" --version >/dev/null || die "$BIN does not run"

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/data"
cp "$BIN" "$CONTEXT/strand"
echo "static binary: $CONTEXT/strand ($(du -h "$CONTEXT/strand" | cut -f1))"

[[ ${1:-} == --binary-only ]] && exit 0

command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed)"
echo "docker build -t $IMAGE $DEPLOY_DIR"
docker build -t "$IMAGE" "$DEPLOY_DIR"
echo "built image $IMAGE"
