#!/usr/bin/env bash
# Plaintext against mutual TLS on one broker, alternated round by round
# (benches/README.md, "What TLS costs"):
#   cargo build --release -p strand-cli && benches/tls-compare.sh [ROUNDS]
# Full-speed produce (100 B and 1 KiB) and consume, then fixed-rate produce
# at 20,000 and 300,000 records/s; one JSON line per run from `strand bench`.
set -euo pipefail
S=${STRAND:-$(cd "$(dirname "$0")/.." && pwd)/target/release/strand}
ROUNDS=${1:-2}
PORT=${PORT:-29292}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cd "$WORK"
"$S" cert ca --dir certs >/dev/null
"$S" cert broker --dir certs --node-id 1 >/dev/null
"$S" cert client --dir certs --user bench >/dev/null

run() {
    local mode=$1 B=() C=()
    if [[ $mode == tls ]]; then
        B=(--tls-ca certs/ca.pem --tls-cert certs/broker-1.pem --tls-key certs/broker-1-key.pem)
        C=(--tls-ca certs/ca.pem --tls-cert certs/bench.pem --tls-key certs/bench-key.pem)
    fi
    rm -rf data
    "$S" broker --data-dir data --listen "127.0.0.1:$PORT" "${B[@]}" >broker.log 2>&1 &
    local bp=$!
    local c=("$S" --bootstrap "127.0.0.1:$PORT" "${C[@]}")
    for _ in $(seq 50); do "${c[@]}" topic list >/dev/null 2>&1 && break; sleep 0.1; done
    "${c[@]}" topic create p --partitions 1 >/dev/null
    "${c[@]}" topic create k --partitions 1 >/dev/null
    "${c[@]}" topic create r --partitions 1 >/dev/null
    echo "$mode produce-100B $("${c[@]}" bench produce --topic p --records 2000000 --record-size 100 | tail -1)"
    echo "$mode consume-100B $("${c[@]}" bench consume --topic p --records 2000000 | tail -1)"
    echo "$mode produce-1KiB $("${c[@]}" bench produce --topic k --records 300000 --record-size 1024 | tail -1)"
    for rate in 20000 300000; do
        echo "$mode rate-$rate $("${c[@]}" bench produce --topic r --records $((rate * 5)) --record-size 100 --rate $rate --linger-ms 0 | tail -1)"
    done
    kill "$bp"
    wait "$bp" 2>/dev/null || true
}

for ((r = 1; r <= ROUNDS; r++)); do
    run plain
    run tls
done
