"""The inner loop through ``higher``: its functional model runs the forward pass and its
differentiable SGD takes each inner step, so every registered estimator runs on a ``higher`` loop.

``higher`` keeps optimizer state inside the ``DifferentiableOptimizer``; :func:`higher_sgd` wraps it
as a pure :class:`metagreedy.Optimizer` (state in, state out), so an estimator can hold the state
constant (greedy's ``B_t``) or differentiate through it (full). ``higher`` is imported here only.
"""
from __future__ import annotations

import torch
from torch import nn

from .optim import Optimizer


def _higher():
    try:
        import higher
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the higher inner loop needs the `higher` package: pip install higher") from e
    return higher


def higher_forward(model: nn.Module):
    """``(w, alpha, x) -> model(x)`` through ``higher``'s patched functional model."""
    fmodel = _higher().monkeypatch(model, copy_initial_weights=True, track_higher_grads=True)
    names = [name for name, _ in model.named_parameters()]

    def forward(w, alpha, x):
        merged = {**w, **alpha}
        return fmodel(x, params=[merged[n] for n in names])

    return forward


def higher_sgd(lr: float, momentum: float = 0.0) -> Optimizer:
    """Momentum SGD as ``higher.optim.DifferentiableSGD`` computes it, as a pure optimizer.

    The wrapped optimizer is rebuilt for the number of tensors it is handed; each update loads the
    given parameters and momentum buffers into it, runs its update rule, and reads them back."""
    higher = _higher()
    cache: dict[int, object] = {}

    def diffopt_for(n: int):
        if n not in cache:
            dummies = [nn.Parameter(torch.zeros(())) for _ in range(n)]
            opt = torch.optim.SGD(dummies, lr=lr, momentum=momentum)
            cache[n] = higher.optim.get_diff_optim(opt, dummies, track_higher_grads=True)
        return cache[n]

    def init(w):
        return None  # higher starts the momentum buffer as the first gradient, as torch.optim.SGD does

    def update(g, state, w, alpha):
        diffopt = diffopt_for(len(w))
        group = diffopt.param_groups[0]
        group["params"] = list(w)
        diffopt.state[0] = {i: {} for i in range(len(w))} if state is None else {
            i: {"momentum_buffer": buf} for i, buf in enumerate(state)}
        diffopt._update([list(g)])  # the update rule DifferentiableOptimizer.step applies
        new_w = tuple(group["params"])
        new_state = tuple(diffopt.state[0][i]["momentum_buffer"] for i in range(len(w))) if momentum else ()
        return new_w, new_state

    return Optimizer(init, update, lr)


def innerloop_full(model: nn.Module, adapted: list[str], train_batch, val_batch, loss_fn, *,
                   steps: int, lr: float, momentum: float = 0.0) -> dict:
    """The textbook exact hypergradient with ``higher.innerloop_ctx``: unroll ``steps`` of momentum
    SGD on the adapted parameters, backpropagate the validation loss to every other parameter.
    A reference for ``method="full"`` (and the peer it is timed against). ``train_batch`` is one
    ``(x, y)`` for every step, or a function of the step t = 1 .. ``steps`` giving step t's batch."""
    higher = _higher()
    adapted_set = set(adapted)
    inner = [p for n, p in model.named_parameters() if n in adapted_set]
    hyper = {n: p for n, p in model.named_parameters() if n not in adapted_set}
    opt = torch.optim.SGD(inner, lr=lr, momentum=momentum)
    batch_at = train_batch if callable(train_batch) else lambda t: train_batch
    xv, yv = val_batch
    with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for t in range(1, steps + 1):
            xt, yt = batch_at(t)
            diffopt.step(loss_fn(fmodel(xt), yt))
        val = loss_fn(fmodel(xv), yv)
        grads = torch.autograd.grad(val, list(hyper.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(hyper, grads))
