#!/usr/bin/env bash
# The Python example, end to end (what CI runs):
#   venv + requirements, stubs from proto/proto/strand.proto, a throwaway
#   broker on a free port, then check_vectors.py, native.py, raw.py and
#   discover.py against it. Exits non-zero if anything fails.
#
#   bash examples/python/run.sh
#
# Environment:
#   STRAND_BIN     the strand binary (default: target/debug/strand in the repo)
#   STRAND_PY_VENV where the venv lives (default: examples/python/.venv, reused)
#   PYTHON         the interpreter that creates the venv (default: python3)
#   BROKER_WAIT_S  how long the broker may take to be SERVING (default: 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STRAND_BIN="${STRAND_BIN:-$ROOT/target/debug/strand}"
VENV="${STRAND_PY_VENV:-$HERE/.venv}"
PYTHON="${PYTHON:-python3}"
BROKER_WAIT_S="${BROKER_WAIT_S:-30}"

now_ms() { date +%s%3N; }
T0=$(now_ms)
elapsed() { local ms=$(( $(now_ms) - T0 )); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }
step() { printf '\n== %s  [%s]\n' "$1" "$(elapsed)"; }

if [[ ! -x "$STRAND_BIN" ]]; then
  echo "run.sh: no strand binary at $STRAND_BIN (cargo build, or set STRAND_BIN)" >&2
  exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strand-py.XXXXXX")"
BROKER_PID=""
cleanup() {
  local rc=$?
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$WORK/broker.log" ]]; then
    echo "--- broker log (last 40 lines of $WORK/broker.log)" >&2
    tail -n 40 "$WORK/broker.log" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "venv $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --disable-pip-version-check --quiet -r "$HERE/requirements.txt"
"$PY" --version

step "stubs from proto/proto/strand.proto into $HERE/gen"
rm -rf "$HERE/gen"
mkdir -p "$HERE/gen"
"$PY" -m grpc_tools.protoc -I "$ROOT/proto/proto" \
  --python_out="$HERE/gen" --grpc_python_out="$HERE/gen" "$ROOT/proto/proto/strand.proto"
ls "$HERE/gen"

step "broker $STRAND_BIN"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export STRAND_ADDR="127.0.0.1:$PORT"
export STRAND_TOPIC_PREFIX="py-$(date +%s)-$$"
# A cluster of one on a fresh data directory, whatever the caller's environment says.
env -u STRAND_PEERS -u STRAND_JOIN -u STRAND_CONFIG -u STRAND_ADVERTISED_ADDR -u STRAND_NODE_ID \
    -u STRAND_METRICS_LISTEN -u STRAND_LISTEN -u STRAND_DATA_DIR \
  "$STRAND_BIN" broker --listen "$STRAND_ADDR" --data-dir "$WORK/data" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
echo "pid $BROKER_PID, listening on $STRAND_ADDR, data in $WORK/data, topics $STRAND_TOPIC_PREFIX-*"
(cd "$HERE" && "$PY" discover.py --wait "$BROKER_WAIT_S" --pid "$BROKER_PID")
echo "SERVING after $(elapsed)"

FAILED=()
SUMMARY=()
for script in check_vectors.py native.py raw.py discover.py; do
  step "$script"
  start=$(now_ms)
  if (cd "$HERE" && "$PY" "$script"); then status=ok; else status=FAILED; FAILED+=("$script"); fi
  SUMMARY+=("$(printf '%-18s %-6s %5d ms' "$script" "$status" $(( $(now_ms) - start )))")
done

if ! kill -0 "$BROKER_PID" 2>/dev/null; then
  echo "run.sh: the broker exited during the run" >&2
  FAILED+=("broker")
fi

step "summary"
printf '  %s\n' "${SUMMARY[@]}"
if (( ${#FAILED[@]} )); then
  echo "run.sh: FAILED: ${FAILED[*]} (total $(elapsed))" >&2
  exit 1
fi
echo "run.sh: all passed (total $(elapsed))"
