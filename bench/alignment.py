"""How each estimator's hypergradient lines up with the exact one on Omniglot tasks.

For a few 5-way 1-shot tasks (10 queries per class, T = 5, momentum SGD lr 0.1 / 0.9, float64 on
the CPU) at the network's initial warp layers, or at the warp layers of a trained run's checkpoint
(--run): the cosine between each estimate and the exact hypergradient (``full``), and the ratio of
their norms. Used to look into IFT(2)'s collapse in meta-training (docs/RESULTS.md).

    python bench/alignment.py --data-root ./data --tasks 5
    python bench/alignment.py --data-root ./data --run results/table3/5way/ift2/seed0
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import metagreedy as mg  # noqa: E402
from metagreedy import checkpoint  # noqa: E402
from metagreedy import nn as mgnn  # noqa: E402
from metagreedy.data import FewShotTasks  # noqa: E402
from metagreedy.data.omniglot import load_omniglot  # noqa: E402
from metagreedy.models import WarpConvNet  # noqa: E402

ESTIMATES = {"fo": {"method": "fo"}, "t1t2": {"method": "t1t2"}, "greedy 0.9": {"method": "greedy", "gamma": 0.9},
             "ift(2)": {"method": "ift", "terms": 2}, "ift(2), eta 0.01": {"method": "ift", "terms": 2, "neumann_lr": 0.01}}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="./data")
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--run", help="a run directory: use its checkpoint's warp layers and initial weights")
    args = p.parse_args()
    torch.manual_seed(0)
    model = WarpConvNet(5).double()
    w, alpha = mgnn.split(model, WarpConvNet.WARP)
    if args.run:
        payload = checkpoint.load(args.run)
        alpha = {n: payload["hparams"][n].double().requires_grad_() for n in alpha}
        w = {n: t.double() for n, t in payload["task_state"]["w0"].items()} if "task_state" in payload else w
        print(f"warp layers of {args.run} at outer step {payload['step']}")
    images = load_omniglot(args.data_root, background=True)[0]
    episodes = FewShotTasks(images, ways=5, shots=1, queries=10, seed=0)
    flat = lambda g: torch.cat([x.flatten() for x in g.values()])  # noqa: E731
    for i in range(args.tasks):
        xs, ys, xq, yq = (t.double() if t.is_floating_point() else t for t in episodes[i])
        train_loss, val_loss = mgnn.losses(mgnn.module_forward(model), F.cross_entropy, (xs, ys), (xq, yq))

        def estimate(**kw):
            return flat(mg.hypergradient(train_loss, val_loss, w, alpha, steps=5, lr=0.1, momentum=0.9, **kw).grad)
        exact = estimate(method="full")
        cells = [f"task {i}: |exact| {exact.norm():.3g}"]
        for label, kw in ESTIMATES.items():
            g = estimate(**kw)
            cells.append(f"{label}: cos {float(g @ exact / (g.norm() * exact.norm())):+.3f}, "
                         f"norm ratio {float(g.norm() / exact.norm()):.3g}")
        print("; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
