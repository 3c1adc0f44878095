#!/usr/bin/env bash
# Development certificates for a TLS cluster, written by `strand cert`:
#
#   deploy/dev-certs.sh DIR NAME:NODE_ID:HOST[,HOST...] ... [--client USER]...
#
# Writes DIR/ca.pem (+ ca-key.pem), one certificate per broker named
# DIR/NAME.pem and DIR/NAME-key.pem (for node NODE_ID, valid for each HOST),
# and DIR/USER.pem for each client. An existing CA in DIR is reused, so
# running it again adds or renews certificates without changing the trust.
#
# Broker keys are made readable by the containers' user (uid 10001) where the
# caller may chown, else world-readable: these are development keys. For
# production, issue certificates of the same shape from your own CA (the
# broker's node id in the URI SAN `urn:strand:node:<id>`, see docs/SECURITY.md).
#
# Environment: STRAND (default: strand on PATH) is the binary to run.
set -euo pipefail

STRAND=${STRAND:-strand}
[[ $# -ge 2 ]] || { sed -n '2,16p' "$0"; exit 2; }
DIR=$1
shift
mkdir -p "$DIR"
[[ -f $DIR/ca-key.pem ]] || "$STRAND" cert ca --dir "$DIR" >/dev/null

while [[ $# -gt 0 ]]; do
    if [[ $1 == --client ]]; then
        "$STRAND" cert client --dir "$DIR" --user "$2" >/dev/null
        shift 2
        continue
    fi
    IFS=: read -r name id hosts <<<"$1"
    [[ -n $name && -n $id && -n $hosts ]] || { echo "dev-certs: expected NAME:NODE_ID:HOSTS, got $1" >&2; exit 2; }
    args=()
    IFS=, read -ra hs <<<"$hosts"
    for h in "${hs[@]}"; do args+=(--host "$h"); done
    "$STRAND" cert broker --dir "$DIR" --node-id "$id" "${args[@]}" >/dev/null
    if [[ $name != "broker-$id" ]]; then
        mv "$DIR/broker-$id.pem" "$DIR/$name.pem"
        mv "$DIR/broker-$id-key.pem" "$DIR/$name-key.pem"
    fi
    chown 10001 "$DIR/$name-key.pem" 2>/dev/null || chmod 0644 "$DIR/$name-key.pem"
    shift
done
ls "$DIR"
