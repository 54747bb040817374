#!/usr/bin/env bash
# Set up everything on a fresh machine, then run the main job (`orcnn demo`).
#   bash scripts/setup.sh            # install + demo
#   bash scripts/setup.sh --no-demo  # install only (what CI uses)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins the torch/torchvision pair known to work on CPU-only machines.
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,export]'

# ROS 2's own .msg parser (rosidl_adapter) for the message tests: Debian's python3-rosidl,
# used with the system python3. Optional for users; the tests say when it is missing.
if ! /usr/bin/python3 -c 'import rosidl_adapter.parser' 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-rosidl >/dev/null
  else
    echo "note: python3-rosidl not installed (needs root apt-get); .msg parser tests will fail" >&2
  fi
fi

if [ "${1:-}" != "--no-demo" ]; then
  .venv/bin/orcnn demo
fi
