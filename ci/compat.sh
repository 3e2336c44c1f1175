#!/usr/bin/env bash
# Compatibility legs: the package on a ROS distro's Python, numpy and OpenCV, each in its own
# virtual environment under .cache/compat-<leg> (created here).
#
#   bash ci/compat.sh jazzy [pytest args]   Python 3.11, Jazzy's ROS wheels, numpy 1.26.4,
#       OpenCV 4.6, and the LOWEST diffusers/transformers/safetensors/huggingface_hub/rosbags
#       that requirements.txt admits (its ">=" bounds): the whole suite.
#   bash ci/compat.sh humble [pytest args]  Python 3.10, numpy 1.21.5, OpenCV 4.5.4, ROS
#       wheels for cp310, no torch: every test not marked needs_torch (the node's runtime
#       path, bags, evaluation of recorded predictions); and requirements.txt must resolve
#       next to numpy 1.21.5 without replacing it.
#
# Pythons: PYTHON_JAZZY / PYTHON_HUMBLE, else python3.11 / python3.10, else pyenv's.
set -euo pipefail
cd "$(dirname "$0")/.."
leg="${1:-}"
shift || true
case "$leg" in
  jazzy) want=3.11; python="${PYTHON_JAZZY:-}" ;;
  humble) want=3.10; python="${PYTHON_HUMBLE:-}" ;;
  *) echo "usage: bash ci/compat.sh jazzy|humble [pytest args]" >&2; exit 2 ;;
esac

is_python() {  # is_python CMD VERSION: CMD runs and is that Python version
  [ -n "$1" ] && "$1" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$2'" \
    >/dev/null 2>&1
}
if ! is_python "$python" "$want"; then
  python="python$want"
  if ! is_python "$python" "$want"; then
    python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python 2>/dev/null \
      | sort -V | tail -n 1 || true)
  fi
fi
if ! is_python "$python" "$want"; then
  echo "compat $leg: no Python $want found (set PYTHON_${leg^^}=/path/to/python$want)" >&2
  exit 2
fi

# DDS discovery never leaves this machine; callers may pick their own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
venv=".cache/compat-$leg"
pip() { "$venv/bin/python" -m pip --quiet "$@"; }

# name==lower for every "name>=lower" line of requirements.txt (the robot ranges).
lowest() { sed -n 's/^\([A-Za-z0-9_.-]*\)>=\([^,; ]*\).*/\1==\2/p' requirements.txt; }

stamp="$venv/.installed"
want_stamp=$(cat "$0" "ci/$leg.txt" requirements.txt requirements-test.txt setup.py \
  | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_stamp" ]; then
  echo "compat $leg: setting up $venv with $("$python" --version)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip install --upgrade pip
  lowest > "$venv/lowest.txt"
  # The test tools without flake8 (lint runs in the main suite; flake8 7.5 needs 3.11+).
  grep -v '^flake8' requirements-test.txt > "$venv/test.txt"
  if [ "$leg" = jazzy ]; then
    pip install torch==2.13.0  # first: the local CPU wheel
    pip install -r "ci/$leg.txt" -r requirements.txt -r "$venv/test.txt" \
      -c "$venv/lowest.txt"
  else
    pip install -r "ci/$leg.txt" -r "$venv/test.txt" \
      "$(grep '^rosbags==' "$venv/lowest.txt")"
    # What a Humble robot's `pip install -r requirements.txt` would do: resolve the newest
    # versions for Python 3.10 next to the distro's numpy 1.21.5, never replacing it.
    pip install --dry-run -r requirements.txt -c "ci/$leg.txt" >/dev/null
  fi
  pip install --no-deps -e .
  echo "$want_stamp" > "$stamp"
fi

echo "compat $leg: $("$venv/bin/python" -c '
import importlib.metadata as md, platform
names = ["numpy", "opencv-python-headless", "ros-rclpy", "torch", "diffusers",
         "transformers", "huggingface_hub", "safetensors", "rosbags"]
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"
print("python", platform.python_version(), *(f"{n} {version(n)}" for n in names))')"

if [ "$leg" = jazzy ]; then
  exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
else
  exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not needs_torch" "$@"
fi
