"""How large each method's hypergradients and validation losses get during a campaign plan's runs.

For every setting and method label of a plan that has run into DIR (default results/): over the
logged outer steps of its finished cells (each keeps every evaluation row and about 25 others), the
median and the largest ``hypergrad_norm``, the share of steps whose ``val_loss`` is above chance (log
of the number of ways: the adapted network is worse than a uniform guess), and each seed's final
meta-validation accuracy (``summary.json``: the evaluation the report's tables show, not the last
periodic one). Used for IFT's Neumann step (docs/RESULTS.md).

    python -m bench.norms --plan ift_neumann
    python -m bench.norms --plan table3_mb1 --figure docs/table3_mb1_norms.png
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import statistics

from harness.campaign.plan import load_plan, resolved, state

from .common import ROOT, guarded, metrics


def summarise(plan, out: str) -> list[dict]:
    """A row per (setting, method label) with finished cells."""
    rows = []
    settings = list(dict.fromkeys(c.setting for c in plan.cells))
    for setting, label in itertools.product(settings, plan.methods):
        cells = [c for c in plan.cells if c.method == label and c.setting == setting
                 and state(c, out)["state"] in ("done", "diverged")]
        runs = [(c.seed, metrics(os.path.join(out, c.path))) for c in cells]
        if not runs:
            continue
        chance = math.log(resolved(cells[0].args).get("ways") or 10)
        steps = [r for _, rows_ in runs for r in rows_ if "hypergrad_norm" in r]
        norms = [r["hypergrad_norm"] for r in steps]
        final = [state(c, out)["summary"].get("meta_val_acc") for c in cells]
        rows.append({"setting": ", ".join(f"{k} {v}" for k, v in setting), "method": label,
                     "seeds": [seed for seed, _ in runs], "steps": len(steps),
                     "steps_per_seed": [sum("hypergrad_norm" in r for r in rows_) for _, rows_ in runs],
                     "median": statistics.median(norms), "max": max(norms),
                     "above_chance": sum(r["val_loss"] > chance for r in steps) / len(steps),
                     "final_acc": [a for a in final if a is not None]})
    return rows


def figure(plan, out: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label in plan.methods:
        cells = [c for c in plan.cells if c.method == label and state(c, out)["state"] in ("done", "diverged")]
        xs, ys = [], []
        for c in cells:
            for r in metrics(os.path.join(out, c.path)):
                if "hypergrad_norm" in r:
                    xs.append(r["step"])
                    ys.append(r["hypergrad_norm"])
        if xs:
            ax.scatter(xs, ys, s=6, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel("hypergradient norm (logged steps, all seeds)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", required=True, help="a plan's name: its cells are DIR/<plan>/...")
    p.add_argument("--out", default=os.path.join(ROOT, "results"), help="the campaign's directory (default results/)")
    p.add_argument("--figure", help="also draw the finished cells' logged hypergradient norms into this PNG")
    args = p.parse_args()
    plan = load_plan(os.path.join(args.out, args.plan, "plan.yaml"))
    print("| setting | method | seeds | logged steps per seed | median norm | largest norm | val_loss above chance | "
          "final meta-validation accuracy per seed |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in summarise(plan, args.out):
        accs = ", ".join(f"{100 * a:.1f}" for a in r["final_acc"])
        per_seed = sorted(set(r["steps_per_seed"]))
        steps = str(per_seed[0]) if len(per_seed) == 1 else ", ".join(map(str, r["steps_per_seed"]))
        print(f"| {r['setting']} | {r['method']} | {', '.join(map(str, r['seeds']))} | {steps} | {r['median']:.3g} | "
              f"{r['max']:.3g} | {100 * r['above_chance']:.0f}% | {accs} |")
    if args.figure:
        figure(plan, args.out, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    sys.exit(guarded(main))
