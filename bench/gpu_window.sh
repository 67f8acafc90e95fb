#!/usr/bin/env bash
# One GPU window of at most BUDGET_S seconds: measure first (throughput candidates, float32/TF32
# against float64), then advance the campaign with what is left, then pack results/ and docs/ into
# OUT_DIR/window.tgz. MEASURE=0 skips the measurements. Each PLAN[:N] runs its cells N at a time
# (default PARALLEL, 2: with --loop graph one run at meta-batch 16 fills an H200, docs/PERFORMANCE.md,
# a second hides loading and evaluations); several plans run side by side, each its own campaign
# process (their cells are in separate directories). MPS=1 starts NVIDIA's multi-process service
# first, so that the small kernels of many processes share the GPU at once (skipped if it fails).
#   bash bench/gpu_window.sh BUDGET_S OUT_DIR [PLAN[:N] ...]
# Needs .devdata/ and .whl/ from scripts/prepare_gpu_window.sh beside the checkout. Every step that
# fails is said and the window goes on to the next; the campaign's cells stop with exact
# checkpoints, so the next window, on any machine, continues where this one ended.
set -u
budget=${1:?usage: gpu_window.sh BUDGET_S OUT_DIR [PLAN[:N] ...]}
out=${2:?usage: gpu_window.sh BUDGET_S OUT_DIR [PLAN[:N] ...]}
shift 2
plans=("${@:-configs/campaign/table3.yaml}")
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
  timeout $(( $(left) * 3 / 10 )) $PY -m bench.throughput --device $device --seconds "${SECONDS_EACH:-5}" \
    --meta-batch "${META_BATCH:-16}" --parallel 4 || echo "throughput did not finish"
  echo "== precision ($(left) s left)"
  timeout $(( $(left) / 4 )) $PY -m bench.precision --device $device --steps ${PRECISION_STEPS:-5 20} --tasks 8 \
    --data-root "$data" || echo "precision did not finish"
  fi
  if [ "${MPS:-0}" = 1 ]; then
    if nvidia-cuda-mps-control -d && $PY -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
      echo "MPS started"
    else
      echo quit | nvidia-cuda-mps-control 2>/dev/null; echo "MPS did not start: processes share the GPU by time slices"
    fi
  fi
  echo "== campaign ($(left) s left): ${plans[*]}"
  end=$(( $(left) - 30 ))
  for spec in "${plans[@]}"; do
    plan=${spec%%:*}; n=${PARALLEL:-2}; [ "$spec" != "$plan" ] && n=${spec##*:}
    $PY -m bench.campaign run --plan "$plan" --budget-s $end --parallel "$n" --device $device --data-root "$data" \
      --threads "${THREADS:-0}" > "$out/$(basename "$plan" .yaml).log" 2>&1 || echo "campaign $plan ended with an error" &
  done
  wait
  for spec in "${plans[@]}"; do tail -n 30 "$out/$(basename "${spec%%:*}" .yaml).log"; done
  $PY -m bench.campaign report
  $PY -m bench.campaign status
} 2>&1 | tee "$out/window.log"
tar czf "$out/window.tgz" results docs
echo "packed $(du -h "$out/window.tgz" | cut -f1) in $(( $(date +%s) - start )) s"
