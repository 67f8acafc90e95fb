"""Differentiable optimizers against torch.optim, step for step."""
import pytest
import torch

import metagreedy as mg


def trajectories(make_ours, make_torch, steps=25):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(6, 4, generator=gen)
    b = torch.randn(6, generator=gen)
    loss = lambda w: ((A @ w[0] - b) ** 2).sum() + (w[1] ** 4).sum()  # noqa: E731
    w0 = [torch.randn(4, generator=gen), torch.randn(3, generator=gen)]

    ref = [p.clone().requires_grad_() for p in w0]
    opt = make_torch(ref)
    ours, state = tuple(p.clone() for p in w0), None
    o = make_ours()
    state = o.init(ours)
    for _ in range(steps):
        opt.zero_grad()
        loss(ref).backward()
        opt.step()
        w = tuple(p.clone().requires_grad_() for p in ours)
        g = torch.autograd.grad(loss(w), w)
        ours, state = o.update(g, state, w, ())
        ours = tuple(p.detach() for p in ours)
        for r, p in zip(ref, ours):
            torch.testing.assert_close(p, r.detach(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_sgd_matches_torch(momentum):
    trajectories(lambda: mg.sgd(0.01, momentum), lambda p: torch.optim.SGD(p, lr=0.01, momentum=momentum))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_matches_torch(betas):
    trajectories(lambda: mg.adam(0.05, betas, 1e-8), lambda p: torch.optim.Adam(p, lr=0.05, betas=betas, eps=1e-8))


def test_greedy_with_adam_equals_full_at_T1():
    """Adam's state enters B_t through g only; at T=1 greedy must equal reverse mode."""
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(8, 3, generator=gen), torch.randn(8, generator=gen)
    tl = lambda w, a: ((X @ w[0] - y) ** 2).mean() + (a[0] * w[0] ** 2).sum()  # noqa: E731
    vl = lambda w, a: (w[0] ** 2).sum()  # noqa: E731
    args = (tl, vl, [torch.randn(3, generator=gen)], [torch.rand(3, generator=gen).requires_grad_()])
    a = mg.hypergradient(*args, steps=1, lr=0.1, optimizer="adam", method="full").grad[0]
    b = mg.hypergradient(*args, steps=1, lr=0.1, optimizer="adam", method="greedy", gamma=0.5).grad[0]
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
