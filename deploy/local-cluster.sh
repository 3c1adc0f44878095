#!/usr/bin/env bash
# A Strand cluster of N brokers on this machine, for development and demos.
#
#   deploy/local-cluster.sh start [N]   build (if needed) and start N brokers (default 3)
#   deploy/local-cluster.sh status      which brokers run, then `strand cluster status`
#   deploy/local-cluster.sh stop        SIGTERM every broker of the pid files, SIGKILL after a timeout
#   deploy/local-cluster.sh clean       stop, then delete data directories and logs
#
# Broker i (1..N) listens on 127.0.0.1:$((19292+i-1)) and serves metrics and
# health on 127.0.0.1:$((19392+i-1)); its data directory, log and pid file are
# deploy/.local-cluster/node-i{,.log,.pid}. Needs only bash, coreutils and
# the Rust toolchain (curl is used for health checks when present).
#
# Environment (all optional):
#   STRAND_LOCAL_DIR            state directory        [deploy/.local-cluster]
#   STRAND_LOCAL_PORT           first client port      [19292]
#   STRAND_LOCAL_METRICS_PORT   first metrics port     [19392]
#   STRAND_LOCAL_WAIT_SECS      start-up deadline      [60]
#   STRAND_LOCAL_STOP_SECS      SIGTERM grace period   [10]
#   STRAND_LOCAL_CONFIG         TOML config passed to every broker (--config)
#   STRAND_BIN                  use this binary, do not build
#   RUST_LOG                    broker log level       [info]
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
STATE=${STRAND_LOCAL_DIR:-$DEPLOY_DIR/.local-cluster}
HOST=127.0.0.1
BASE_PORT=${STRAND_LOCAL_PORT:-19292}
METRICS_BASE_PORT=${STRAND_LOCAL_METRICS_PORT:-19392}
WAIT_SECS=${STRAND_LOCAL_WAIT_SECS:-60}
STOP_SECS=${STRAND_LOCAL_STOP_SECS:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
BIN=${STRAND_BIN:-$TARGET_DIR/release/strand}

log() { printf '%s\n' "$*"; }
die() { printf 'local-cluster: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- processes

# True if $1 is a live (not zombie) process whose command line is the broker
# of node $2 of this state directory, so a recycled pid is never signalled.
is_broker() {
    local pid=$1 node=$2 stat cmdline
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    if [[ -d /proc/$pid ]]; then
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
        stat=${stat##*) }
        [[ ${stat%% *} == [ZX] ]] && return 1
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    elif [[ ! -d /proc/self ]]; then
        # No procfs (macOS, BSD): ask ps.
        stat=$(ps -p "$pid" -o stat= 2>/dev/null) || return 1
        [[ $stat == Z* ]] && return 1
        cmdline=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
    else
        return 1
    fi
    [[ $cmdline == *"broker"*"--data-dir $STATE/node-$node "* ]]
}

pid_files() {
    local f
    for f in "$STATE"/node-*.pid; do
        [[ -f $f ]] && printf '%s\n' "$f"
    done
    return 0
}

node_of() { local n=${1##*/node-}; printf '%s' "${n%.pid}"; }

# "node pid" of every broker of the pid files that still runs.
running() {
    local f pid node
    while IFS= read -r f; do
        node=$(node_of "$f")
        pid=$(cat "$f" 2>/dev/null || true)
        if is_broker "$pid" "$node"; then printf '%s %s\n' "$node" "$pid"; fi
    done < <(pid_files)
}

bootstrap_of() {
    local n=$1 i list=""
    for ((i = 1; i <= n; i++)); do list+="${list:+,}$HOST:$((BASE_PORT + i - 1))"; done
    printf '%s' "$list"
}

cluster_size() {
    if [[ -f $STATE/size ]]; then cat "$STATE/size"; else pid_files | wc -l | tr -d ' '; fi
}

# HTTP status code of GET http://$1:$2$3, "000" when nothing answers.
http_status() {
    local code
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$1:$2$3" 2>/dev/null) || true
    else
        # bash's /dev/tcp, in a subshell so a refused connection cannot end the script.
        code=$( {
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3
            IFS=' ' read -r -t 2 _ status _ <&3 || exit 1
            printf '%s' "$status"
        } 2>/dev/null) || true
    fi
    printf '%s' "${code:-000}"
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# ------------------------------------------------------------------ binary

binary_is_fresh() {
    [[ -x $BIN ]] || return 1
    local newer
    newer=$(cd "$ROOT" && find Cargo.toml Cargo.lock proto storage cluster client broker \
        \( -name tests -o -name benches -o -name examples -o -name target \) -prune \
        -o -type f -newer "$BIN" -print 2>/dev/null | head -n 1)
    [[ -z $newer ]]
}

ensure_binary() {
    if [[ -n ${STRAND_BIN:-} ]]; then
        [[ -x $BIN ]] || die "STRAND_BIN=$BIN is not an executable"
        return
    fi
    if binary_is_fresh; then
        return
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
    log "building the release binary (cargo build --release -p strand-cli)…"
    (cd "$ROOT" && cargo build --release -p strand-cli) || die "cargo build failed"
    [[ -x $BIN ]] || die "the build did not produce $BIN (CARGO_TARGET_DIR?)"
}

supports_metrics() { "$BIN" broker --help 2>/dev/null | grep -q -- '--metrics-listen'; }

# ------------------------------------------------------------------ commands

# 0 when the JSON of `cluster status` shows a controller and $2 brokers, all up.
cluster_ok() {
    local json=$1 n=$2 ups
    [[ $json =~ \"controller_id\":([0-9]+) ]] || return 1
    ((BASH_REMATCH[1] > 0)) || return 1
    ups=$(grep -o '"up":true' <<<"$json" | wc -l | tr -d ' ')
    ((ups == n)) && ! grep -q '"up":false' <<<"$json"
}

show_logs() {
    local i
    for ((i = 1; i <= $1; i++)); do
        if [[ -f $STATE/node-$i.log ]]; then
            printf -- '--- last lines of %s\n' "$STATE/node-$i.log" >&2
            tail -n 15 "$STATE/node-$i.log" >&2
        fi
    done
}

cmd_start() {
    local n=${1:-3}
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "the number of brokers must be a positive integer, not '$n'"
    mkdir -p "$STATE"

    local live
    live=$(running)
    if [[ -n $live ]]; then
        local count size
        count=$(wc -l <<<"$live" | tr -d ' ')
        size=$(cluster_size)
        if ((count == size)) && ((size == n)); then
            log "local cluster already running: $count brokers (pids $(cut -d' ' -f2 <<<"$live" | tr '\n' ' '| sed 's/ $//'))"
            log "bootstrap: $(bootstrap_of "$n")"
            return 0
        fi
        die "$count of $size brokers of a $size-broker cluster are running; '$0 stop' first"
    fi
    rm -f "$STATE"/node-*.pid

    # The data directories remember their peers: a cluster cannot change size in place.
    if [[ -f $STATE/size ]] && [[ $(cat "$STATE/size") != "$n" ]] && compgen -G "$STATE/node-*/" >/dev/null; then
        die "$STATE holds the data of a $(cat "$STATE/size")-broker cluster; start that size or '$0 clean' first"
    fi

    ensure_binary
    local metrics=0
    if supports_metrics; then metrics=1; else log "note: this strand binary has no --metrics-listen; starting without metrics"; fi

    local i port mport peers=""
    for ((i = 1; i <= n; i++)); do
        port=$((BASE_PORT + i - 1))
        mport=$((METRICS_BASE_PORT + i - 1))
        peers+="${peers:+,}$i@$HOST:$port"
        port_in_use "$port" && die "port $HOST:$port is already in use (STRAND_LOCAL_PORT moves the cluster)"
        ((metrics)) && port_in_use "$mport" && die "port $HOST:$mport is already in use (STRAND_LOCAL_METRICS_PORT moves the metrics ports)"
    done
    printf '%s\n' "$n" >"$STATE/size"

    for ((i = 1; i <= n; i++)); do
        port=$((BASE_PORT + i - 1))
        mport=$((METRICS_BASE_PORT + i - 1))
        local args=(broker --node-id "$i" --listen "$HOST:$port" --data-dir "$STATE/node-$i" --peers "$peers")
        ((metrics)) && args+=(--metrics-listen "$HOST:$mport")
        [[ -n ${STRAND_LOCAL_CONFIG:-} ]] && args+=(--config "$STRAND_LOCAL_CONFIG")
        printf '\n=== %s starting broker %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$i" >>"$STATE/node-$i.log"
        # Settings meant for one broker must not leak in from the caller's environment.
        env -u STRAND_ADVERTISED_ADDR -u STRAND_CONFIG -u STRAND_METRICS_LISTEN \
            RUST_LOG="${RUST_LOG:-info}" "$BIN" "${args[@]}" </dev/null >>"$STATE/node-$i.log" 2>&1 &
        printf '%s\n' "$!" >"$STATE/node-$i.pid"
    done

    local boot json="" deadline=$((SECONDS + WAIT_SECS)) ready
    boot=$(bootstrap_of "$n")
    log "waiting up to ${WAIT_SECS}s for $n brokers to form a cluster…"
    while :; do
        for ((i = 1; i <= n; i++)); do
            if ! is_broker "$(cat "$STATE/node-$i.pid")" "$i"; then
                show_logs "$n"
                cmd_stop >/dev/null
                die "broker $i exited during start-up (log: $STATE/node-$i.log)"
            fi
        done
        if json=$("$BIN" --bootstrap "$boot" cluster status --format json 2>/dev/null) && cluster_ok "$json" "$n"; then
            ready=1
            if ((metrics)); then
                for ((i = 1; i <= n; i++)); do
                    [[ $(http_status "$HOST" $((METRICS_BASE_PORT + i - 1)) /health/ready) == 200 ]] || ready=0
                done
            fi
            ((ready)) && break
        fi
        if ((SECONDS >= deadline)); then
            show_logs "$n"
            log "last cluster status: ${json:-<no answer>}" >&2
            cmd_stop >/dev/null
            die "the cluster did not come up within ${WAIT_SECS}s; brokers stopped"
        fi
        sleep 0.5
    done

    local controller=${json#*\"controller_id\":}
    controller=${controller%%[!0-9]*}
    log "local cluster of $n brokers is up (controller: broker $controller)"
    for ((i = 1; i <= n; i++)); do
        port=$((BASE_PORT + i - 1))
        mport=$((METRICS_BASE_PORT + i - 1))
        if ((metrics)); then
            log "  broker $i  $HOST:$port  metrics http://$HOST:$mport/metrics  pid $(cat "$STATE/node-$i.pid")"
        else
            log "  broker $i  $HOST:$port  pid $(cat "$STATE/node-$i.pid")"
        fi
    done
    log "logs and data: $STATE"
    log "bootstrap: $boot"
    log "  export STRAND_BOOTSTRAP=$boot"
}

# Milliseconds since the epoch (bash 5's EPOCHREALTIME, else whole seconds).
now_ms() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        local t=${EPOCHREALTIME/,/.}
        printf '%s' $((${t%.*} * 1000 + 10#${t#*.} / 1000))
    else
        printf '%s' $(($(date +%s) * 1000))
    fi
}

# Waits up to $1 seconds for the "node:pid" brokers that follow to exit;
# prints those still running.
wait_gone() {
    local deadline=$(($(now_ms) + $1 * 1000)) entry left
    shift
    while :; do
        left=()
        for entry in "$@"; do
            if is_broker "${entry#*:}" "${entry%%:*}"; then left+=("$entry"); fi
        done
        if ((${#left[@]} == 0)) || (($(now_ms) >= deadline)); then
            ((${#left[@]} == 0)) || printf '%s\n' "${left[@]}"
            return 0
        fi
        set -- "${left[@]}"
        sleep 0.2
    done
}

cmd_stop() {
    local f pid node live=()
    while IFS= read -r f; do
        node=$(node_of "$f")
        pid=$(cat "$f" 2>/dev/null || true)
        if is_broker "$pid" "$node"; then
            kill -TERM "$pid" 2>/dev/null || true
            live+=("$node:$pid")
        fi
    done < <(pid_files)
    if ((${#live[@]} == 0)); then
        rm -f "$STATE"/node-*.pid
        log "local cluster is not running"
        return 0
    fi

    local remaining entry killed=0
    remaining=$(wait_gone "$STOP_SECS" "${live[@]}")
    if [[ -n $remaining ]]; then
        for entry in $remaining; do
            log "broker ${entry%%:*} (pid ${entry#*:}) did not stop within ${STOP_SECS}s: SIGKILL" >&2
            kill -KILL "${entry#*:}" 2>/dev/null || true
            killed=$((killed + 1))
        done
        # shellcheck disable=SC2086 # node:pid words
        remaining=$(wait_gone 5 $remaining)
        [[ -z $remaining ]] || die "could not stop: $remaining"
    fi
    rm -f "$STATE"/node-*.pid
    if ((killed)); then
        log "stopped ${#live[@]} broker(s), $killed of them with SIGKILL"
    else
        log "stopped ${#live[@]} broker(s)"
    fi
}

cmd_status() {
    local size live i pid any=0
    size=$(cluster_size)
    if ((size == 0)); then
        log "local cluster is not running (no state in $STATE)"
        return 3
    fi
    live=$(running)
    for ((i = 1; i <= size; i++)); do
        pid=$(grep "^$i " <<<"$live" | cut -d' ' -f2 || true)
        if [[ -n $pid ]]; then
            log "broker $i: running (pid $pid, $HOST:$((BASE_PORT + i - 1)))"
            any=1
        else
            log "broker $i: not running"
        fi
    done
    if ((!any)); then
        log "local cluster is not running"
        return 3
    fi
    [[ -x $BIN ]] || die "no strand binary at $BIN"
    "$BIN" --bootstrap "$(bootstrap_of "$size")" cluster status
}

cmd_clean() {
    cmd_stop
    if [[ -d $STATE ]]; then
        # Only ever delete a directory this script created.
        [[ -f $STATE/size || -z $(ls -A "$STATE") ]] || die "$STATE does not look like local-cluster state; not deleting it"
        rm -rf "$STATE"
        log "deleted $STATE"
    fi
}

case "${1:-}" in
    start) cmd_start "${2:-3}" ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
