#!/usr/bin/env bash
# Regenerate README.md from nbs/index.ipynb (nbdev_readme needs quarto, which this project does not require).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.venv/bin:$PATH" jupyter nbconvert --to markdown nbs/index.ipynb --output-dir . --output README --log-level ERROR
