"""The toy problem's figure and table (method paper, figure 2): validation loss and cosine to the
exact hypergradient over 1000 outer steps, for T in {5, 10, 20} and every method.

    python -m bench.toy            # runs configs/campaign/toy.yaml; writes docs/toy.png and the toy section of docs/RESULTS.md

The runs are the cells of a campaign plan (resumable): the campaign's records under
runs/toy/results/ and each run's full metrics under runs/toy/full/, which the figure needs (a
committed campaign keeps only a thinned curve). Minutes of CPU: not committed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

from harness.campaign.plan import load_plan, resolved, state

from .campaign import main as campaign
from .common import ROOT, guarded, metrics, pyplot, replace_section, save_figure

EARLY = 100
PLAN = os.path.join(ROOT, "configs", "campaign", "toy.yaml")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "toy"), help="where the runs go")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=3600)
    args = p.parse_args()
    out, keep = os.path.join(args.out, "results"), os.path.join(args.out, "full")
    rc = campaign(["run", "--plan", PLAN, "--budget-s", str(args.budget_s), "--parallel", str(args.parallel),
                   "--threads", "1", "--device", "cpu", "--out", out, "--keep", keep])
    if rc != 0:
        return rc
    plan = load_plan(PLAN)
    results = {(dict(c.setting)["T"], c.method): metrics(os.path.join(keep, c.path)) for c in plan.cells}
    seconds = sum(state(c, out)["seconds"] for c in plan.cells)
    steps = sorted({T for T, _ in results})
    plot(results, plan.methods, steps, os.path.join(ROOT, "docs", "toy.png"))
    table(results, plan.methods, steps, resolved(plan.cells[0].args, ROOT).outer_steps, seconds)
    return 0


def plot(results, methods, steps, path):
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(2, len(steps), figsize=(5 * len(steps), 7), squeeze=False)
    for j, T in enumerate(steps):
        for name in methods:
            rows = results[(T, name)]
            x = [r["step"] for r in rows]
            axes[0][j].plot(x, [r["val_loss"] for r in rows], label=name, lw=1.2)
            axes[1][j].plot(x, [float(r["cosine"]) for r in rows], label=name, lw=1.0)
        axes[0][j].set_title(f"T = {T}")
        axes[0][j].set_yscale("log")
        axes[0][j].set_ylabel("validation loss")
        axes[1][j].set_ylabel("cosine to exact hypergradient")
        axes[1][j].set_xlabel("outer step")
        axes[1][j].set_ylim(-1.05, 1.05)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def table(results, methods, steps, outer_steps, seconds):
    lines = ["## Toy problem (figure 2)", "",
             f"`python -m bench.toy` (plan `configs/campaign/toy.yaml`: {outer_steps} outer steps per run, inner and "
             f"outer SGD with lr 0.1, float64; the {len(results)} runs took {seconds / 60:.1f} min summed over runs, "
             "one thread each). Per T: the final "
             "validation loss; the mean cosine between each estimate and the exact (closed-form) hypergradient "
             f"over the first {EARLY} outer steps (steps where either vector is below 1e-12 have no angle and "
             "are left out); and the first outer step whose validation loss is within 1e-6 of the best any "
             "method reached at that T (`never` if none). Greedy eq. 6 stops moving where its own estimate "
             "vanishes while the exact hypergradient does not: its curves end in a plateau above the others.", "", "![toy](toy.png)", "",
                  "| method | " + " | ".join(f"T={T}: final val loss | cosine | reached best at" for T in steps) + " |",
             "| --- | " + " | ".join("--- | --- | ---" for _ in steps) + " |"]
    best = {T: min(r["val_loss"] for name in methods for r in results[(T, name)]) for T in steps}
    for name in methods:
        cells = []
        for T in steps:
            rows = results[(T, name)]
            live = [r["cosine"] for r in rows[:EARLY] if isinstance(r["cosine"], float)]
            reached = next((r["step"] for r in rows if r["val_loss"] <= best[T] + 1e-6), "never")
            cells += [f"{rows[-1]['val_loss']:.4g}", f"{statistics.mean(live):.3f}" if live else "-", str(reached)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    replace_section(os.path.join(ROOT, "docs", "RESULTS.md"), "toy", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(guarded(main))
