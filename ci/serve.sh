#!/usr/bin/env bash
# The Triton leg: a real Triton server (`e2e-depth serve`, PyTriton) in its own virtual
# environment, and the client tests of the main suite's environment against it.
#
#   bash ci/serve.sh setup          only create or update .cache/serve (the server's venv)
#   bash ci/serve.sh [pytest args]  set up, start one server on 127.0.0.1 with tiny
#       checkpoints, run test/test_triton*.py with E2E_DEPTH_TRITON_URL pointing at it (the
#       tests that stop and restart a server start their own from .cache/serve), then stop
#       every process this script started, by PID.
#
# PyTriton pins numpy < 2, so the server cannot live in .venv (numpy 2); the client needs only
# tritonclient (requirements-test.txt). Python: PYTHON_SERVE, else python3.11, else pyenv's.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
venv=".cache/serve"
python="${PYTHON_SERVE:-python3.11}"
if ! "$python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
  python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11.*/bin/python 2>/dev/null \
    | sort -V | tail -n 1 || true)
fi

setup() {
  local stamp="$venv/.installed" want
  want=$(cat "$0" ci/serve.txt requirements.txt requirements-lock.txt setup.py | sha256sum)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "serve: setting up $venv with $("$python" --version)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --quiet)
  "${pip[@]}" install --upgrade pip
  "${pip[@]}" install torch==2.13.0  # first: the local CPU wheel
  # The model libraries at the lock's pins, but numpy/OpenCV from ci/serve.txt (numpy < 2).
  grep -vE '^(torch|numpy|opencv|tqdm|matplotlib|#)' requirements-lock.txt > "$venv/lock.txt"
  "${pip[@]}" install -r ci/serve.txt -r requirements.txt -c "$venv/lock.txt"
  "${pip[@]}" install --no-deps -e .
  echo "$want" > "$stamp"
}

setup
[ "${1:-}" = setup ] && exit 0
.venv/bin/python -c 'import tritonclient.grpc, tritonclient.http' 2>/dev/null \
  || bash run.sh setup

work=$(mktemp -d)
pids=()
stop_all() {  # every process this script started, by PID (the server stops its tritonserver)
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_all EXIT

"$venv/bin/e2e-depth" tiny-checkpoint "$work/depth" --task depth >/dev/null
"$venv/bin/e2e-depth" tiny-checkpoint "$work/normals" --task normals >/dev/null
read -r http grpc metrics < <("$venv/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
"$venv/bin/e2e-depth" serve --depth-model "$work/depth" --normals-model "$work/normals" \
  --device cpu --host 127.0.0.1 --http-port "$http" --grpc-port "$grpc" \
  --metrics-port "$metrics" > "$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  if curl -sf "http://127.0.0.1:$http/v2/models/e2e_depth/ready" >/dev/null; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.5
done
curl -sf "http://127.0.0.1:$http/v2/models/e2e_depth/ready" >/dev/null \
  || { cat "$work/server.log" >&2; exit 1; }
echo "serve: e2e-depth serve ready on 127.0.0.1 (http $http, grpc $grpc, metrics $metrics)"
export E2E_DEPTH_TRITON_URL="grpc://127.0.0.1:$grpc"
export E2E_DEPTH_TRITON_HTTP_URL="http://127.0.0.1:$http"
export E2E_DEPTH_TRITON_METRICS_URL="http://127.0.0.1:$metrics/metrics"
export E2E_DEPTH_TRITON_CHECKPOINTS="$work/depth:$work/normals"
export E2E_DEPTH_SERVE_PYTHON="$PWD/$venv/bin/python"
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider -m triton test "$@" || status=$?
exit "$status"
