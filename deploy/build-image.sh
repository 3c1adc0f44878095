#!/usr/bin/env bash
# Builds the `strand:local` Docker image without pulling any base image:
#   1. a statically linked `strand` (glibc, crt-static) is built on this host,
#   2. checked to be static (ldd / ELF headers),
#   3. copied with an empty /data directory into deploy/.image/,
#   4. `docker build` of deploy/Dockerfile (FROM scratch).
#
# With STRAND_BIN=<path> nothing is built: that binary goes into the image,
# and when it is dynamically linked (a `cargo test` debug build) the shared
# libraries and loader `ldd` names go with it, at the same paths, so the
# tests package the binary Cargo already built instead of rebuilding.
#
#   deploy/build-image.sh [--binary-only]
#
# Environment: IMAGE (default strand:local), CARGO_TARGET_DIR, STRAND_BIN.
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

rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/data" "$CONTEXT/root"

if [[ -n ${STRAND_BIN:-} ]]; then
    BIN=$STRAND_BIN
    [[ -x $BIN ]] || die "STRAND_BIN=$BIN is not an executable"
    echo "packaging the prebuilt $BIN"
    ldd_out=$(ldd "$BIN" 2>&1 || true)
    case $ldd_out in
        *"not a dynamic executable"* | *"statically linked"*) ;;
        *)
            # Each line is "name => /path (addr)" or "/path (addr)"; vdso has no file.
            while read -r lib; do
                [[ -f $lib ]] || die "ldd names $lib, which does not exist"
                mkdir -p "$CONTEXT/root$(dirname "$lib")"
                cp -L "$lib" "$CONTEXT/root$lib"
            done < <(printf '%s\n' "$ldd_out" | grep -o '/[^ ]*' | sort -u)
            echo "with its shared libraries: $(cd "$CONTEXT/root" && find . -type f | tr '\n' ' ')"
            ;;
    esac
else
    # An explicit --target keeps these objects (built with crt-static) apart
    # from the ordinary target/release build, and makes proc-macros and
    # build scripts build for the host without crt-static.
    echo "building a static strand binary (cargo build --release -p strand-cli --target $TRIPLE)…"
    (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p strand-cli --target "$TRIPLE") \
        || die "cargo build failed"
    [[ -x $BIN ]] || die "no binary at $BIN"

    # Static check. ldd prints "not a dynamic executable" for a static
    # executable and "statically linked" for a static PIE (what rustc makes
    # by default).
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
fi
"$BIN" --version >/dev/null || die "$BIN does not run"

cp "$BIN" "$CONTEXT/strand"
echo "binary: $CONTEXT/strand ($(du -h "$CONTEXT/strand" | cut -f1))"

[[ ${1:-} == --binary-only ]] && exit 0

command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "no Docker engine reachable (docker info failed)"
echo "docker build -t $IMAGE $DEPLOY_DIR"
docker build -t "$IMAGE" "$DEPLOY_DIR"
echo "built image $IMAGE"
