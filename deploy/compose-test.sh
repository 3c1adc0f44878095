#!/usr/bin/env bash
# End-to-end test of deploy/docker-compose.yml:
#   build the image (build-image.sh) → `compose up` → a topic with RF 3 →
#   produce and consume from the host → stop one broker (the controller) →
#   produce and consume again → restart it → it catches up → `compose down -v`.
#
# Exits 0 with a SKIP message when no Docker engine (or compose) is reachable.
# Environment: KEEP=1 leaves the cluster running (no `down -v`) on success,
# COMPOSE_PROJECT (default strand-compose-test), WAIT_SECS (default 90).
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=${COMPOSE_PROJECT:-strand-compose-test}
WAIT_SECS=${WAIT_SECS:-90}
TOPIC=compose-test
BOOT=127.0.0.1:19292,127.0.0.1:19293,127.0.0.1:19294
PORTS=(19292 19293 19294)
METRICS_PORTS=(19392 19393 19394)

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'compose-test: FAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "compose-test: SKIP: no Docker engine reachable (docker info failed)"
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    echo "compose-test: SKIP: neither the 'docker compose' plugin nor docker-compose is installed"
    exit 0
fi
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$DEPLOY_DIR/docker-compose.yml" "$@"; }

for p in "${PORTS[@]}" "${METRICS_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        fail "port 127.0.0.1:$p is in use (is deploy/local-cluster.sh running?)"
    fi
done

STARTED=0
cleanup() {
    local rc=$?
    if ((STARTED)); then
        if ((rc != 0)); then
            echo "--- compose ps / logs after the failure:" >&2
            dc ps >&2 || true
            dc logs --tail 40 >&2 || true
        fi
        if [[ ${KEEP:-0} == 1 && $rc == 0 ]]; then
            echo "KEEP=1: cluster left running; '${COMPOSE[*]} -p $PROJECT -f $DEPLOY_DIR/docker-compose.yml down -v' removes it"
        else
            dc down -v --remove-orphans >/dev/null 2>&1 || dc down -v || true
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION SECONDS COMMAND… : polls COMMAND until it succeeds.
wait_for() {
    local desc=$1 secs=$2 deadline
    shift 2
    deadline=$((SECONDS + secs))
    DIAG=""
    until "$@"; do
        ((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for $desc${DIAG:+ (last: $DIAG)}"
        sleep 1
    done
}

step "building the image"
"$DEPLOY_DIR/build-image.sh"
STRAND=$DEPLOY_DIR/.image/strand # the image's binary, run on the host as the client

step "development certificates (TLS is on by default)"
CERTS=$(mktemp -d)
trap 'rm -rf "$CERTS"' RETURN 2>/dev/null || true
export STRAND_CERTS=$CERTS
SUBNET=${STRAND_SUBNET_PREFIX:-172.28.92}
STRAND=$STRAND "$DEPLOY_DIR/dev-certs.sh" "$CERTS" \
    "broker-1:1:strand-1,$SUBNET.11,127.0.0.1,localhost" \
    "broker-2:2:strand-2,$SUBNET.12,127.0.0.1,localhost" \
    "broker-3:3:strand-3,$SUBNET.13,127.0.0.1,localhost" \
    --client admin
chmod 0755 "$CERTS"
# The host's client authenticates as user `admin`.
export STRAND_TLS_CA=$CERTS/ca.pem STRAND_TLS_CERT=$CERTS/admin.pem STRAND_TLS_KEY=$CERTS/admin-key.pem
strand() { "$STRAND" --bootstrap "$BOOT" "$@"; }
metrics=0
"$STRAND" broker --help | grep -q -- --metrics-listen && metrics=1

status_json() { strand cluster status --format json 2>/dev/null; }
container() { dc ps -q "strand-$1"; }
health() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$(container "$1")" 2>/dev/null; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

# The innermost JSON objects on stdin with "node_id":$1 (brokers of
# `cluster status`, replica lags of `topic describe`).
objects_of_node() { grep -o '{[^{}]*}' | grep -E "\"node_id\":$1([,}]|\$)" || true; }

# The partition objects of $TOPIC in a `cluster status --format json` answer
# (not its per-topic totals, which carry no "partition").
topic_partitions() { grep -o '{[^{}]*}' <<<"$1" | grep "\"topic\":\"$TOPIC\"" | grep '"partition":' || true; }

# A controller, the brokers "$@" up (the others down), every partition of
# $TOPIC (if any) led by an up broker.
cluster_is() {
    local json n up down p
    json=$(status_json) || return 1
    [[ $json =~ \"controller_id\":([0-9]+) ]] && ((BASH_REMATCH[1] > 0)) || return 1
    for n in 1 2 3; do
        up=$(objects_of_node "$n" <<<"$json")
        if [[ " $* " == *" $n "* ]]; then [[ $up == *'"up":true'* ]] || return 1; else [[ $up == *'"up":false'* ]] || return 1; fi
    done
    while IFS= read -r p; do
        [[ -z $p ]] && continue
        [[ $p =~ \"leader\":([0-9]+) ]] || return 1
        [[ " $* " == *" ${BASH_REMATCH[1]} "* ]] || return 1
    done <<<"$(topic_partitions "$json")"
}

all_healthy() {
    local n
    for n in "$@"; do [[ $(health "$n") == healthy ]] || return 1; done
    if ((metrics)); then
        for n in "$@"; do [[ $(http_code "http://127.0.0.1:${METRICS_PORTS[n - 1]}/health/ready") == 200 ]] || return 1; done
    fi
}

produce() { # count prefix: keyed records, spread over every partition
    local out
    out=$(seq 1 "$1" | sed "s/.*/key-&:$2-&/" | strand produce "$TOPIC" --key-separator :) || fail "produce: $out"
    echo "$out"
    [[ $out == "$1 of $1 records acknowledged"* ]] || fail "expected all $1 records acknowledged"
}

consume_all() { # expected-count [bootstrap]
    local got
    got=$("$STRAND" --bootstrap "${2:-$BOOT}" consume "$TOPIC" --from-beginning --max-messages "$1" --timeout-ms 30000 | wc -l | tr -d ' ')
    echo "consumed $got records"
    [[ $got == "$1" ]] || fail "expected $1 records, consumed $got"
}

# Broker $1 holds every entry: its lag is 0 in every partition's replica
# list (topic describe) and, with metrics, every broker reports the same log
# end offset for every partition of $TOPIC.
has_everything() {
    local n=$1 desc lags
    desc=$(strand topic describe "$TOPIC" --format json 2>&1) || { DIAG=$desc; return 1; }
    lags=$(objects_of_node "$n" <<<"$desc")
    DIAG="replica lag of broker $n: $(tr '\n' ' ' <<<"$lags")"
    [[ $(grep -c . <<<"$lags") == 3 ]] || return 1
    ! grep -v '"lag":0[,}]' <<<"$lags" | grep -q . || return 1
    if ((metrics)); then
        local i leo first=""
        for i in 1 2 3; do
            leo=$(curl -s -m 2 "http://127.0.0.1:${METRICS_PORTS[i - 1]}/metrics" \
                | grep "^strand_partition_log_end_offset{[^}]*topic=\"$TOPIC\"" \
                | sed -n 's/.*partition="\([0-9]*\)".*} *\([0-9.e+]*\).*/p\1=\2/p' | sort | tr '\n' ' ') || return 1
            DIAG="log end offsets: broker 1 ${first:-$leo}, broker $i $leo"
            [[ $(wc -w <<<"$leo") == 3 ]] || return 1
            [[ -z $first ]] && first=$leo
            [[ $leo == "$first" ]] || return 1
        done
        LEO_REPORT=$first
    fi
}

# Nothing under-replicated: with metrics, every broker's
# strand_under_replicated_partitions is 0; without, `cluster status` lists no
# lagging replica for $TOPIC.
all_in_sync() {
    local json i v
    if ((metrics)); then
        for i in 1 2 3; do
            v=$(curl -s -m 2 "http://127.0.0.1:${METRICS_PORTS[i - 1]}/metrics" | sed -n 's/^strand_under_replicated_partitions \([0-9]*\).*/\1/p')
            DIAG="strand_under_replicated_partitions on broker $i: ${v:-missing}"
            [[ $v == 0 ]] || return 1
        done
        return 0
    fi
    json=$(status_json) || return 1
    DIAG=$json
    [[ $json == *'"under_replicated":0'* ]] || return 1
    [[ -z $(topic_partitions "$json" | grep -v '"lagging":\[\]') ]]
}

# Informational: lagging replicas `cluster status` reports.
status_lagging() { strand cluster status --format json 2>/dev/null | grep -o '{[^{}]*"lagging":\[[0-9][^{}]*}' || true; }

step "starting three brokers (${COMPOSE[*]} -p $PROJECT up -d)"
STARTED=1
dc up -d
wait_for "a controller and 3 brokers up" "$WAIT_SECS" cluster_is 1 2 3
wait_for "3 healthy containers" "$WAIT_SECS" all_healthy 1 2 3
strand cluster status
# The health check itself, as Docker runs it, inside a container.
docker exec "$(container 1)" /strand --bootstrap 127.0.0.1:9292 cluster status >/dev/null \
    || fail "the health check command fails inside the container"
echo "health check command: exit 0 inside strand-1; all containers healthy"
if ((metrics)); then
    echo "GET /health/live: $(http_code http://127.0.0.1:19392/health/live), GET /health/ready: $(http_code http://127.0.0.1:19392/health/ready)"
else
    echo "note: the image's strand has no --metrics-listen; metrics and HTTP health not checked"
fi

step "topic $TOPIC: 3 partitions, replication factor 3; produce and consume from the host"
strand topic create "$TOPIC" --partitions 3 --replication-factor 3
wait_for "leaders for $TOPIC" "$WAIT_SECS" cluster_is 1 2 3
produce 100 before
consume_all 100

VICTIM=$(status_json | sed -n 's/.*"controller_id":\([0-9]*\).*/\1/p')
[[ $VICTIM =~ ^[123]$ ]] || fail "no controller id in cluster status"
step "stopping strand-$VICTIM (the controller)"
dc stop "strand-$VICTIM"
UP=$(for n in 1 2 3; do [[ $n == "$VICTIM" ]] || printf '%s ' "$n"; done)
# shellcheck disable=SC2086 # the list of brokers still up
wait_for "a new controller and leaders on the brokers still up" "$WAIT_SECS" cluster_is $UP
strand cluster status
produce 100 during
consume_all 200

step "restarting strand-$VICTIM"
dc start "strand-$VICTIM"
wait_for "3 brokers up" "$WAIT_SECS" cluster_is 1 2 3
wait_for "strand-$VICTIM healthy" "$WAIT_SECS" all_healthy "$VICTIM"
LEO_REPORT=""
wait_for "strand-$VICTIM to hold every entry" "$WAIT_SECS" has_everything "$VICTIM"
echo "strand-$VICTIM caught up: lag 0 in every partition"
[[ -n $LEO_REPORT ]] && echo "log end offsets per partition, identical on brokers 1, 2 and 3: $LEO_REPORT"
wait_for "no under-replicated partitions" "$WAIT_SECS" all_in_sync
if [[ -n $(status_lagging) ]]; then
    # Seen with the broker as of this writing: `cluster status` (and the "!"
    # of `topic describe`) mark followers of idle partitions out of sync even
    # at lag 0, while strand_under_replicated_partitions says 0.
    echo "note: cluster status reports lagging replicas at lag 0 (idle partitions):"
    status_lagging
fi
produce 100 after
wait_for "strand-$VICTIM to hold every entry" "$WAIT_SECS" has_everything "$VICTIM"
wait_for "no under-replicated partitions" "$WAIT_SECS" all_in_sync
strand cluster status
strand topic describe "$TOPIC"
[[ -n $LEO_REPORT ]] && echo "log end offsets per partition, identical on brokers 1, 2 and 3: $LEO_REPORT"
consume_all 300 "127.0.0.1:${PORTS[VICTIM - 1]}"

step "compose-test: PASSED"
