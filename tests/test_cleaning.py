"""Hyper-cleaning in miniature: greedy hypergradients find planted noisy labels."""
import torch
import torch.nn.functional as F

import metagreedy as mg
from metagreedy.data.cleaning import corrupt
from metagreedy.rng import keyed_generator


def test_greedy_outer_steps_down_weight_corrupted_examples():
    gen = keyed_generator(0)
    k, d, n = 4, 5, 200
    centres = 3 * torch.randn(k, d, generator=gen)
    y = torch.randint(k, (n,), generator=gen)
    x = centres[y] + torch.randn(n, d, generator=gen)
    yv = torch.randint(k, (400,), generator=gen)
    xv = centres[yv] + torch.randn(400, d, generator=gen)
    noisy, corrupted = corrupt(y, 0.3, k, gen)

    def train_loss(w, a):
        return (torch.sigmoid(a["alpha"]) * F.cross_entropy(x @ w["W"] + w["b"], noisy, reduction="none")).mean()

    def val_loss(w, a):
        return F.cross_entropy(xv @ w["W"] + w["b"], yv)

    w0 = {"W": torch.zeros(d, k), "b": torch.zeros(k)}
    alpha = torch.zeros(n, requires_grad=True)
    outer = torch.optim.Adam([alpha], lr=0.1)
    for _ in range(15):
        res = mg.hypergradient(train_loss, val_loss, w0, {"alpha": alpha}, steps=20, lr=0.5, momentum=0.9,
                               method="greedy", gamma=0.9)
        alpha.grad = res.grad["alpha"]
        outer.step()
    weights = torch.sigmoid(alpha.detach())
    assert weights[corrupted].mean() < weights[~corrupted].mean() - 0.1
    flagged = weights < 0.5
    assert (flagged & corrupted).sum() > 0.6 * corrupted.sum()  # recall
    assert (flagged & corrupted).sum() > 0.6 * flagged.sum()  # precision
