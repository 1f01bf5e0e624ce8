#!/usr/bin/env bash
# Runs Watercolor locally, without Docker or Kubernetes: creates .venv (or reuses
# it), installs the package, starts WTC_LOCAL_BACKENDS processing backends on
# localhost ports from WTC_PROCESS_PORT (32017) upwards, each with its share of
# the CPU cores, then the HTTP API on WTC_API_PORT (5000) spreading work over
# them. Every WTC_* setting in the environment is honoured. Ctrl-C or SIGTERM
# stops everything it started.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.watercolor-run-installed"

pids=()
# shellcheck disable=SC2317  # only called from the traps
cleanup() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    echo "==> stopping ${#pids[@]} process(es)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "==> stopped"
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# --- install -----------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "run.sh: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
  }
  echo "==> creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
wanted="$(cat pyproject.toml)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
  echo "==> installing watercolor into $VENV (first run: this downloads the models' packages)"
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
         "$VENV/bin/python" -m pip install -e '.[api,process]'; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "run.sh: installing failed (whole log: $log)" >&2
    exit 1
  fi
  printf '%s' "$wanted" >"$STAMP"
fi
WATERCOLOR="$VENV/bin/watercolor"

# --- settings ------------------------------------------------------------------------------
backends=${WTC_LOCAL_BACKENDS:-2}
first_port=${WTC_PROCESS_PORT:-32017}
api_port=${WTC_API_PORT:-5000}
cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
threads=${WTC_THREADS:-$(( cores / backends > 0 ? cores / backends : 1 ))}

# Validate every WTC_* setting before starting anything (names the bad variable and value).
"$VENV/bin/python" -c '
import sys
from watercolor.config import ConfigError, load_settings
try:
    load_settings()
except ConfigError as exc:
    sys.exit(f"run.sh: configuration error: {exc}")
'
case "$backends" in ''|*[!0-9]*) echo "run.sh: WTC_LOCAL_BACKENDS must be a number" >&2; exit 2;; esac

# --- processing backends ------------------------------------------------------------------
addresses=()
for ((i = 0; i < backends; i++)); do
  port=$((first_port + i))
  echo "==> starting processing backend $((i + 1))/$backends on 127.0.0.1:$port ($threads threads)"
  WTC_PROCESS_HOST=${WTC_PROCESS_HOST:-127.0.0.1} WTC_PROCESS_PORT=$port WTC_THREADS=$threads \
    "$WATERCOLOR" process &
  pids+=("$!")
  addresses+=("127.0.0.1:$port")
done
backend_list=$(IFS=,; echo "${addresses[*]}")

# --- API -------------------------------------------------------------------------------------
echo "==> starting the API on port $api_port (backends: $backend_list)"
WTC_PROCESS_BACKENDS=$backend_list "$WATERCOLOR" api &
pids+=("$!")

url="http://localhost:$api_port"
echo "==> waiting for $url/readyz"
for ((tries = 0; ; tries++)); do
  if "$VENV/bin/python" - "$url/readyz" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
  then
    break
  fi
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run.sh: a process exited during start-up (see its messages above)" >&2
      exit 1
    fi
  done
  if ((tries >= 240)); then
    echo "run.sh: $url/readyz did not answer within 120 s" >&2
    exit 1
  fi
  sleep 0.5
done

cat <<EOF

Watercolor is running at $url  ($backends processing backend(s): $backend_list)

  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' '$url/v1/upscale?scale=4' -o big.png
  curl $url/v1/models
  curl $url/metrics

Press Ctrl-C to stop.
EOF

# Run until a child exits (then stop the others) or a signal arrives (the traps stop them).
status=0
wait -n "${pids[@]}" || status=$?
echo "run.sh: a Watercolor process exited (status $status); stopping the rest" >&2
exit "$status"
