#!/usr/bin/env bash
# Set up stock_twins in ./.venv: the torch pin first (CPU build here; the CUDA build on a GPU machine), then the
# package with its dev tools. Safe to run again: it reuses the venv and installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[dev]"
echo "set-up done: $(.venv/bin/python -c 'import stock_twins, torch; print("stock_twins", stock_twins.__version__, "| torch", torch.__version__)')"
