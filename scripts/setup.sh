#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything metagreedy needs, tests and learn2learn included.
# Safe to run again: what is installed already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch and torchvision first, as a matched pair (PyPI's torchvision does not import beside every torch build)
.venv/bin/python -c "import torch, torchvision" 2>/dev/null \
  || .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[experiments,test,plots]"
bash scripts/install_learn2learn.sh .venv/bin/python
echo "metagreedy is set up in .venv"
