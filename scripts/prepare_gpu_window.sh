#!/usr/bin/env bash
# Prepare, on a machine with the data and a network, what a GPU machine without either needs for
# bench/gpu_window.sh: the data as archives in .devdata/ and the packages its image lacks as wheels
# in .whl/ (both git-ignored; carry them to the GPU machine with the checkout).
#   bash scripts/prepare_gpu_window.sh DATA_ROOT [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: prepare_gpu_window.sh DATA_ROOT [PYTHON_VERSION]}
py=${2:-3.12}
mkdir -p .devdata .whl
[ -d "$root/omniglot-py" ] && tar czf .devdata/omniglot.tgz -C "$root" omniglot-py
for name in MNIST FashionMNIST; do
  [ -d "$root/$name/raw" ] && tar czf ".devdata/$name.tgz" -C "$root" --exclude='*-ubyte' "$name/raw"
done
# pure-Python packages the GPU image lacks: higher (the per-task loop and the perf bench's peer)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux2014_x86_64 -d .whl "higher==0.2.1" || \
  python3 -m pip download -q --no-deps -d .whl "higher==0.2.1"
ls -la .devdata .whl
