#!/usr/bin/env bash
# Runs Watercolor locally, without Docker or Kubernetes: creates .venv (or reuses
# it), installs the package, starts WTC_LOCAL_BACKENDS processing backends on
# localhost ports from WTC_PROCESS_PORT (32017) upwards, each with its share of
# the CPU cores, then the HTTP API on WTC_API_PORT (5000) spreading work over
# them. Every WTC_* setting in the environment is honoured; WTC_DATA_DIR defaults
# to .data/api-PORT in this folder. Settings and ports are checked before anything
# starts. Ctrl-C, SIGTERM or SIGHUP stops everything it started.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP="$VENV/.watercolor-run-installed"

pids=()
names=()
# shellcheck disable=SC2317  # only called from the traps
cleanup() {
  trap - INT TERM HUP EXIT
  local alive=() pid
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
  done
  if ((${#alive[@]})); then
    echo "==> stopping ${#alive[@]} process(es)"
    # The API (the last child) first, while the backends still answer: the work it finishes as it
    # stops succeeds, and the jobs it leaves unfinished are resumed at the next start instead of
    # failing against backends that are already gone.
    if ((${#pids[@]} > backends)); then
      kill -TERM "${pids[-1]}" 2>/dev/null || true
      wait "${pids[-1]}" 2>/dev/null || true
    fi
    kill -TERM "${alive[@]}" 2>/dev/null || true
    wait "${alive[@]}" 2>/dev/null || true
    echo "==> stopped"
  fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP
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
export WTC_PROCESS_HOST=${WTC_PROCESS_HOST:-127.0.0.1}  # the backends are for this machine's API only
# Every WTC_* setting is validated (a bad one is named with its value) and every port to be listened on
# is tried, before anything starts; what this script needs comes back as "BACKENDS FIRST_PORT API_PORT
# THREADS OPEN", parsed by the same code as the services will parse it (OPEN: 1 when the API will answer
# anyone who reaches this machine, without a key).
settings=$("$VENV/bin/python" - <<'PY'
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C ends this quietly; the script's trap says why
import os
import sys

from watercolor.config import ConfigError, load_settings
from watercolor.listen import CannotListen, check_free

try:
    s = load_settings()
except ConfigError as exc:
    sys.exit(f"run.sh: configuration error: {exc}")
first, last = s.process_port, s.process_port + s.local_backends - 1
if last > 65535:
    sys.exit(f"run.sh: {s.local_backends} backends from WTC_PROCESS_PORT={first} would need ports up to "
             f"{last}; set WTC_PROCESS_PORT lower")
if first <= s.api_port <= last:
    sys.exit(f"run.sh: WTC_API_PORT={s.api_port} is one of the backends' ports ({first}-{last}); "
             "set WTC_API_PORT or WTC_PROCESS_PORT")
try:
    for port in range(first, last + 1):
        check_free(s.process_host, port, host_setting="WTC_PROCESS_HOST", port_setting="WTC_PROCESS_PORT")
    check_free(s.api_host, s.api_port, host_setting="WTC_API_HOST", port_setting="WTC_API_PORT")
except CannotListen as exc:
    sys.exit(f"run.sh: {exc}\nrun.sh: nothing was started; another copy may be running (each copy needs "
             "its own WTC_API_PORT and WTC_PROCESS_PORT)")
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
explicit = os.environ.get("WTC_THREADS", "").strip() != ""
threads = s.threads if explicit else max(1, cores // s.local_backends)
wide_open = s.api_host in ("0.0.0.0", "::", "") and not s.api_keys.strip()
print(s.local_backends, first, s.api_port, threads, int(wide_open))
PY
)
read -r backends first_port api_port threads open <<<"$settings"
# Jobs are kept in this checkout, a folder per API port: two copies never share a job store.
export WTC_DATA_DIR=${WTC_DATA_DIR:-$PWD/.data/api-$api_port}

# --- processing backends ------------------------------------------------------------------
# Each child gets a process group of its own (job control, on only while they start), so a Ctrl-C in
# the terminal reaches only this script, whose trap stops them all: a child that stops by itself is
# then always news worth telling.
set -m
addresses=()
for ((i = 0; i < backends; i++)); do
  port=$((first_port + i))
  echo "==> starting processing backend $((i + 1))/$backends on $WTC_PROCESS_HOST:$port ($threads threads)"
  WTC_PROCESS_PORT=$port WTC_THREADS=$threads "$WATERCOLOR" process </dev/null &
  pids+=("$!")
  names+=("processing backend $((i + 1)) ($WTC_PROCESS_HOST:$port)")
  addresses+=("127.0.0.1:$port")
done
backend_list=$(IFS=,; echo "${addresses[*]}")

# --- API -------------------------------------------------------------------------------------
echo "==> starting the API on port $api_port (backends: $backend_list; jobs in $WTC_DATA_DIR)"
WTC_PROCESS_BACKENDS=$backend_list "$WATERCOLOR" api </dev/null &
pids+=("$!")
names+=("the API (port $api_port)")
set +m

# The name of the first child that is no longer running, or nothing.
exited() {
  local i
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[i]}" 2>/dev/null; then
      echo "${names[i]}"
      return
    fi
  done
}

url="http://localhost:$api_port"
echo "==> waiting for $url/readyz and every backend"
for ((tries = 0; ; tries++)); do
  if "$VENV/bin/python" - "$url/readyz" "${addresses[@]}" <<'PY'
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C ends this quietly; the script's trap says why
import socket
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
        ready = response.status == 200
    for address in sys.argv[2:]:  # listening is ready: a backend binds after loading its engine
        host, port = address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
except Exception:
    sys.exit(1)
sys.exit(0 if ready else 1)
PY
  then
    break
  fi
  gone=$(exited)
  if [ -n "$gone" ]; then
    echo "run.sh: $gone exited during start-up (see its messages above)" >&2
    exit 1
  fi
  if ((tries >= 240)); then
    echo "run.sh: $url/readyz did not answer within 120 s" >&2
    exit 1
  fi
  sleep 0.5
done
gone=$(exited)
if [ -n "$gone" ]; then
  echo "run.sh: $gone exited during start-up (see its messages above)" >&2
  exit 1
fi

cat <<EOF

Watercolor is running at $url  ($backends processing backend(s): $backend_list)

  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' '$url/v1/upscale?scale=4' -o big.png
  curl $url/v1/models
  curl $url/metrics

The default model (realesrgan-x4plus) takes many minutes per megapixel on a CPU; for a quick try add
&model=realesr-animevideov3 (about 100 times faster), or open $url/ in a browser.
EOF
if ((open)); then
  cat <<EOF
Anyone who can reach this machine's port $api_port can use it: the API listens on all addresses and
asks for no key (WTC_API_HOST=127.0.0.1 keeps it to this machine; WTC_API_KEYS=KEY asks for a key).
EOF
fi
printf '\nPress Ctrl-C to stop.\n'

# Run until a child exits (then stop the others) or a signal arrives (the traps stop them and exit).
status=0
wait -n "${pids[@]}" || status=$?
gone=$(exited)
echo "run.sh: ${gone:-a Watercolor process} exited unexpectedly (status $status); stopping the rest" >&2
exit $((status ? status : 1))
