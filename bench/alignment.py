"""How each estimator's hypergradient lines up with the exact one on Omniglot tasks, and whether
IFT's Neumann series can converge there.

For a few 5-way 1-shot tasks (10 queries per class, T = 5, momentum SGD lr 0.1 / 0.9, float64 on
the CPU) at the network's initial warp layers, or at the warp layers of a trained run's checkpoint
(--run): the cosine between each estimate and the exact hypergradient (``full``), and the ratio of
their norms. With --spectrum, also the extreme eigenvalues of the train_loss Hessian H at w_T (power
iteration on Hessian-vector products) and, for each Neumann step eta, the spectral radius of
I - eta H: the series eta sum_j (I - eta H)^j converges to H^-1 only when it is below 1, and its
K-th term grows like radius^K when it is above. Used to look into IFT(2)'s collapse in
meta-training (docs/RESULTS.md).

    python -m bench.alignment --data-root ./data --tasks 5 --spectrum
    python -m bench.alignment --data-root ./data --run results/table3/5way/ift2/seed0
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

from .common import ROOT, guarded

import metagreedy as mg  # noqa: E402
from harness import checkpoint  # noqa: E402
from metagreedy import nn as mgnn  # noqa: E402
from metagreedy.data import FewShotTasks  # noqa: E402
from metagreedy.data.omniglot import load_omniglot  # noqa: E402
from metagreedy.models import WarpConvNet  # noqa: E402

ESTIMATES = {"fo": {"method": "fo"}, "t1t2": {"method": "t1t2"}, "greedy 0.9": {"method": "greedy", "gamma": 0.9},
             **{f"ift({k}), eta {eta}": {"method": "ift", "terms": k, "neumann_lr": eta}
                for k in (2, 5) for eta in (0.1, 0.01, 0.001)}}
ETAS = (0.1, 0.01, 0.001)


def extreme_eigenvalues(hvp, like, iters: int = 100):
    """(largest, smallest) eigenvalue of a symmetric operator given by ``hvp``: power iteration
    for the one of largest magnitude, then on (H - that) for the other end of the spectrum."""
    def power(op):
        v = [torch.randn_like(x) for x in like]
        value = 0.0
        for _ in range(iters):
            norm = torch.sqrt(sum((x * x).sum() for x in v))
            v = [x / norm for x in v]
            hv = op(v)
            value = float(sum((a * b).sum() for a, b in zip(v, hv)))
            v = hv
        return value
    first = power(hvp)
    second = power(lambda v: [a - first * b for a, b in zip(hvp(v), v)]) + first
    return max(first, second), min(first, second)


def spectrum(train_loss, w, alpha, steps):
    """Extreme eigenvalues of the Hessian of train_loss in w at w_T (alpha fixed)."""
    w_T = mg.inner_loop(train_loss, w, alpha, steps=steps, lr=0.1, momentum=0.9)
    names = list(w_T)
    leaves = {n: w_T[n].detach().requires_grad_() for n in names}
    grads = torch.autograd.grad(train_loss(leaves, alpha), [leaves[n] for n in names], create_graph=True)

    def hvp(v):
        return list(torch.autograd.grad(grads, [leaves[n] for n in names], grad_outputs=v, retain_graph=True))
    torch.manual_seed(0)
    return extreme_eigenvalues(hvp, [leaves[n] for n in names])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="./data")
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--run", help="a run directory: use its checkpoint's warp layers and initial weights")
    p.add_argument("--spectrum", action="store_true", help="also the Hessian's extreme eigenvalues at w_T")
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
        if args.spectrum:
            high, low = spectrum(train_loss, w, {n: a.detach() for n, a in alpha.items()}, 5)
            radii = ", ".join(f"eta {eta}: {max(abs(1 - eta * high), abs(1 - eta * low)):.3g}" for eta in ETAS)
            cells.append(f"H at w_T: eigenvalues in [{low:.3g}, {high:.3g}]; radius of I - eta H: {radii}")
        print("; ".join(cells), flush=True)


if __name__ == "__main__":
    sys.exit(guarded(main))
