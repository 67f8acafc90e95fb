"""Table 3 of the method paper: few-shot Omniglot, 1-shot, warp layers 2/4/6 as hyperparameters.

Runs every (ways, method, seed) through train.py, skips runs already finished, and writes
meta-validation and meta-test accuracy (mean ± 95% CI over seeds) beside the paper's numbers.

    python bench/omniglot.py --data-root ./data                            # the whole protocol (GPU)
    python bench/omniglot.py --ways 5 --seeds 0 --outer-steps 100 --meta-batch 8
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import paper
from common import ROOT, guarded, plot_curves, replace_section, run_all, summary
from tables import table

ROWS = {
    "FO": ["--method", "fo"],
    "T1-T2": ["--method", "t1t2"],
    "IFT(2)": ["--method", "ift", "--terms", "2"],
    "greedy 0.9": ["--method", "greedy", "--gamma", "0.9"],
    "greedy 0.99": ["--method", "greedy", "--gamma", "0.99"],
    "greedy 0.999": ["--method", "greedy", "--gamma", "0.999"],
    "Full": ["--method", "full"],
    # equation 6 with one query of each class behind grad L_val(w_t) at the steps t < T (the flags depend on ways)
    "greedy 0.9, 1 query per class per step": lambda ways: ["--method", "greedy", "--gamma", "0.9",
                                                             "--step-val-batch", str(ways)],
}
GAMMAS = ["greedy 0.9", "greedy 0.99", "greedy 0.999"]  # the rows "gamma chosen on meta-validation" picks from
WAYS = paper.TABLE3_WAYS


def run_dir(out, ways, row, seed, tag):
    slug = row.replace(",", "").replace(" ", "_").replace("(", "").replace(")", "")
    return os.path.join(out, tag, f"{ways}way", slug, f"seed{seed}")


def flags(row, ways):
    return ROWS[row](ways) if callable(ROWS[row]) else ROWS[row]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", default=os.path.join(ROOT, "data"))
    p.add_argument("--ways", type=int, nargs="+", default=WAYS)
    p.add_argument("--rows", nargs="+", default=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--outer-steps", type=int, default=2000)
    p.add_argument("--meta-batch", type=int, default=16)
    p.add_argument("--final-eval-tasks", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "bench-omniglot"))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    tag = f"steps{args.outer_steps}-mb{args.meta_batch}"
    jobs = [(["--config", os.path.join(ROOT, "configs", f"omniglot_{ways}way.yaml"), "--dataset", "omniglot",
              "--data-root", args.data_root, "--seed", str(seed), "--outer-steps", str(args.outer_steps),
              "--meta-batch", str(args.meta_batch), "--final-eval-tasks", str(args.final_eval_tasks),
              "--eval-every", str(args.eval_every), "--checkpoint-every", str(args.eval_every),
              "--device", args.device, "--wandb", os.environ.get("WANDB_MODE", "disabled"), *flags(row, ways)],
             run_dir(args.out, ways, row, seed, tag))
            for ways in args.ways for row in args.rows for seed in args.seeds]
    t0 = time.time()
    if not args.report_only:
        run_all(jobs, parallel=args.parallel, threads=args.threads)
    print(f"ran in {(time.time() - t0) / 60:.1f} min")
    report(args, tag)


def report(args, tag):
    def finished(row, ways):
        found = [summary(run_dir(args.out, ways, row, seed, tag)) for seed in args.seeds]
        return [s for s in found if s is not None and s.get("status") == "finished"]

    def values(key):
        return {row: [[s[key] for s in finished(row, ways)] for ways in WAYS] for row in ROWS}

    columns = [f"{w}-way" for w in WAYS]
    val = values("meta_val_acc")
    gammas = {row: val[row] for row in GAMMAS}
    tables = {key: table(columns, values(key), gammas=gammas, gamma_label="greedy, gamma chosen on meta-validation",
                         paper=paper.TABLE3 if key == "meta_val_acc" else None)
              for key in ("meta_val_acc", "meta_test_acc")}
    total = sum(s["wall_time"] for row in ROWS for ways in WAYS for s in finished(row, ways))
    text = "\n".join([
        "## Few-shot Omniglot, 1-shot (table 3)", "",
        f"`python bench/omniglot.py --outer-steps {args.outer_steps} --meta-batch {args.meta_batch} "
        f"--final-eval-tasks {args.final_eval_tasks} --seeds {' '.join(map(str, args.seeds))} "
        f"--ways {' '.join(map(str, args.ways))} --rows {' '.join(repr(r) for r in args.rows)}` "
        f"(runs under `{os.path.relpath(args.out, ROOT)}/{tag}`). "
        f"Accuracy after T = 5 inner steps on the query set, averaged over {args.final_eval_tasks} tasks per run; "
        "mean ± 95% CI over seeds (number of seeds). The paper trains 2000 outer steps.", "",
        "Meta-validation accuracy (20% of the background classes, the paper's measure):", "", tables["meta_val_acc"], "",
        "Meta-test accuracy (evaluation alphabets, which the paper does not report):", "", tables["meta_test_acc"], "",
        f"Total training time of these runs: {total / 60:.1f} min (sum of `wall_time`)."])
    for ways in args.ways:
        name = f"omniglot_{ways}way_{tag}.png"
        groups = {row: [run_dir(args.out, ways, row, s, tag) for s in args.seeds] for row in ROWS}
        if plot_curves({f"Omniglot {ways}-way 1-shot": groups}, "meta_val_acc", os.path.join(ROOT, "docs", name),
                       f"meta-validation accuracy ({args.final_eval_tasks} tasks at the end)"):
            text += f"\n\n![{ways}-way learning curves]({name})"
    replace_section(os.path.join(ROOT, "docs", "RESULTS.md"), f"omniglot_{tag}", text)


if __name__ == "__main__":
    sys.exit(guarded(main))
