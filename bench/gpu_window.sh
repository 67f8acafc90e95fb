#!/usr/bin/env bash
# One GPU window of at most BUDGET_S seconds: measure first (throughput candidates, float32/TF32
# against float64), then advance the campaign with what is left, then pack results/ and docs/ into
# OUT_DIR/window.tgz. MEASURE=0 skips the measurements; PARALLEL (default 2) cells side by side: with
# --loop graph one run fills an H200 (docs/PERFORMANCE.md), a second hides loading and evaluations.
#   bash bench/gpu_window.sh BUDGET_S OUT_DIR [PLAN]
# Needs .devdata/ and .whl/ from scripts/prepare_gpu_window.sh beside the checkout. Every step that
# fails is said and the window goes on to the next; the campaign's cells stop with exact
# checkpoints, so the next window, on any machine, continues where this one ended.
set -u
budget=${1:?usage: gpu_window.sh BUDGET_S OUT_DIR [PLAN]}
out=${2:?usage: gpu_window.sh BUDGET_S OUT_DIR [PLAN]}
plan=${3:-configs/campaign/table3.yaml}
device=${DEVICE:-cuda}  # DEVICE=cpu rehearses the window on a machine without a GPU
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
PY=${PY:-python3}
data=${DATA_DIR:-data}  # where the .devdata archives are unpacked (a relative path: run configs record it)
mkdir -p "$out" "$data" /tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
for f in .devdata/*.tgz; do [ -f "$f" ] && tar xzf "$f" -C "$data"; done
for f in "$data"/*/raw/*.gz; do [ -f "$f" ] && [ ! -f "${f%.gz}" ] && gunzip -k "$f"; done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  if [ "${MEASURE:-1}" = 1 ]; then  # MEASURE=0: the whole window for the campaign
  echo "== throughput ($(left) s left)"
  timeout $(( $(left) * 3 / 10 )) $PY bench/throughput.py --device $device --seconds "${SECONDS_EACH:-5}" \
    --meta-batch "${META_BATCH:-16}" --parallel 4 || echo "throughput did not finish"
  echo "== precision ($(left) s left)"
  timeout $(( $(left) / 4 )) $PY bench/precision.py --device $device --steps ${PRECISION_STEPS:-5 20} --tasks 8 \
    --data-root "$data" || echo "precision did not finish"
  fi
  echo "== campaign ($(left) s left)"
  $PY bench/campaign.py run --plan "$plan" --budget-s $(( $(left) - 30 )) --parallel "${PARALLEL:-2}" \
    --device $device --data-root "$data" || echo "campaign run ended with an error"
  $PY bench/campaign.py report
  $PY bench/campaign.py status
} 2>&1 | tee "$out/window.log"
tar czf "$out/window.tgz" results docs
echo "packed $(du -h "$out/window.tgz" | cut -f1) in $(( $(date +%s) - start )) s"
