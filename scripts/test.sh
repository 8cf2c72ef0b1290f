#!/usr/bin/env bash
# The project's checks, in CI's order: notebooks clean -> notebooks and library in sync -> nbdev_test -> pytest.
# Run after scripts/setup.sh. Fails on the first failing step; pytest collecting no test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
echo "== 1/4 nbdev_clean leaves no diff"
nbdev_clean
if [ -n "$(git status --porcelain -- nbs)" ]; then
  git status --porcelain -- nbs; echo "Notebooks are not clean: run nbdev_clean and commit the result"; exit 1
fi
echo "== 2/4 nbdev_export leaves no diff"
nbdev_export
if [ -n "$(git status --porcelain -- stock_twins)" ]; then
  git status --porcelain -- stock_twins; echo "Notebooks and library are not in sync: run nbdev_export and commit both"; exit 1
fi
echo "== 3/4 nbdev_test"
nbdev_test --n_workers 2 --timing
echo "== 4/4 pytest"
set +e
python -m pytest -q -p no:cacheprovider tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi
exit "$rc"
