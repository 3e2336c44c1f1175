#!/usr/bin/env bash
# One entry point for a fresh machine with only Python 3.10+ (no ROS, no GPU needed):
#   bash run.sh demo [demo args]   set up .venv, then run the node on the bundled sequence
#   bash run.sh test [pytest args] set up .venv, then run the whole test suite + flake8
#   bash run.sh setup              only set up .venv
# Set-up is idempotent: it reinstalls only when a requirements file changed. In a shell,
# `. .venv/bin/activate` afterwards puts `e2e-depth` on PATH.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  local stamp="$VENV/.e2e_depth_ros-installed"
  # Exact pins of this repository's environment (requirements.txt holds a robot's ranges);
  # requirements-backends.txt, when present, adds the optional inference backends.
  local files=(requirements-lock.txt requirements-ros.txt requirements-test.txt)
  [ -f requirements-backends.txt ] && files+=(requirements-backends.txt)
  local want
  want=$(cat "${files[@]}" setup.py | sha256sum)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first and pinned: the local CPU wheel; anything else pulls a CUDA build.
    "$VENV/bin/python" -m pip install --quiet "$(grep -E '^torch==' requirements-lock.txt)"
    "$VENV/bin/python" -m pip install --quiet "${files[@]/#/--requirement=}"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
  fi
}

# DDS discovery never leaves this machine; callers may pick their own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"

command="${1:-demo}"
shift || true
case "$command" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/python" -m e2e_depth_ros.offline.demo "$@" ;;
  test)
    setup
    "$VENV/bin/python" -m flake8 e2e_depth_ros test benchmarks launch
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  *) echo "usage: bash run.sh [demo|test|setup] [args]" >&2; exit 2 ;;
esac
