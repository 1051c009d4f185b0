#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them: `bash scripts/test.sh [pytest args]`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PY=${PYTHON:-python3}

# PyTorch first: 2.13.0 is the CPU wheel on CPU-only machines (a bare range would pull a multi-GB CUDA build).
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
# dev: pytest and friends; ray: the Ray backend of `genex compare` (tests/test_ray_backend.py starts a local instance).
"$PY" -m pip install -q -e '.[dev,ray]'
# The example third-party plugin package, installed for real so its entry points are discovered.
if [ -f examples/generative-explorer-extras/pyproject.toml ]; then
  "$PY" -m pip install -q -e examples/generative-explorer-extras
fi
# Chromium for the real-browser tests (Debian's package; never `playwright install`, which downloads a browser).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser tests will be skipped"
fi
exec "$PY" -m pytest "$@"
