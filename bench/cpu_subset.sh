#!/usr/bin/env bash
# The part of the paper's protocol that fits on a 2-core CPU in about two hours, in priority order.
# This is exactly what produced the numbers in docs/RESULTS.md and docs/PERFORMANCE.md; on a GPU,
# run the bench scripts without the restricting flags for the whole protocol.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
$PY bench/toy.py
$PY bench/memory.py
$PY bench/omniglot.py --data-root "$DATA" --ways 5 --seeds 0 --outer-steps 100 --meta-batch 8 \
    --eval-every 50 --parallel 2 --threads 1
$PY bench/perf.py --device cpu --repeats 5
$PY bench/hyper_cleaning.py --data-root "$DATA" --datasets mnist --noise 0.3 --protocols paper --seeds 0 1 2 \
    --val-batch 1000 --parallel 2 --threads 1
$PY bench/hyper_cleaning.py --data-root "$DATA" --datasets mnist --noise 0.3 --protocols paper --seeds 0 \
    --rows "greedy 0.9" --val-batch 0 --threads 2
$PY bench/hyper_cleaning.py --data-root "$DATA" --datasets mnist --noise 0.3 --protocols heldout --seeds 0 \
    --val-batch 1000 --parallel 2 --threads 1 --rows "w/o HPO" "T1-T2" "IFT(5)" "greedy 0.9" "greedy 0.99" \
    "greedy 0.999" "Full" "oracle (clean examples only)"
$PY bench/hyper_cleaning.py --data-root "$DATA" --protocols paper --seeds 0 --val-batch 1000 --parallel 2 --threads 1 \
    --datasets mnist fashion_mnist --noise 0.5 0.3 --rows "w/o HPO" "greedy 0.9" "T1-T2" "IFT(5)" "oracle (clean examples only)"
$PY bench/omniglot.py --data-root "$DATA" --ways 5 --seeds 1 2 --outer-steps 100 --meta-batch 8 --eval-every 50 \
    --parallel 2 --threads 1 --rows "greedy 0.9" "greedy 0.9, 1 query per class per step"
$PY bench/memory.py --net hyper-cleaning omniglot --steps 5 10 20 50 100
# the reports over every finished run (the commands above each rewrite their section with their own seeds)
$PY bench/hyper_cleaning.py --data-root "$DATA" --report-only --protocols paper heldout --seeds 0 1 2 --val-batch 1000
$PY bench/omniglot.py --data-root "$DATA" --report-only --ways 5 --seeds 0 1 2 --outer-steps 100 --meta-batch 8 \
    --eval-every 50
