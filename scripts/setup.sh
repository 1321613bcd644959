#!/usr/bin/env bash
# Create .venv and install tamper-search from the pinned set in requirements.lock.
#   bash scripts/setup.sh          the project
#   bash scripts/setup.sh test     the project and the test tools
# torch is installed first, pinned, so that pip takes the CPU build where one is at hand
# instead of resolving an unpinned torch to several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "test" ] && extra="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
# What was installed, and from which pyproject.toml + requirements.lock: a second run with the
# same files skips pip (the install is editable: code changes need none). Delete it to reinstall.
stamp=.venv/tamper-search-installed
files=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if ! grep -qxF -e "$files ${extra}" -e "$files [test]" "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==$(grep -E '^torch==' requirements.lock | cut -d= -f3)"
  .venv/bin/python -m pip install -q -c requirements.lock -e ".${extra}"
  echo "$files ${extra}" > "$stamp"
fi
.venv/bin/python -c "import torch, ray; print(f'tamper-search ready: torch {torch.__version__}, ray {ray.__version__}')"
