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
