"""``nn.Module`` models as bilevel problems: some parameters are adapted in the inner loop (``w``),
the others are hyperparameters (``alpha``: warp layers, a learned initialisation, ...).

Both are dicts keyed by the names ``named_parameters()`` gives, so estimates can be logged per
hyperparameter. ``call`` runs the module functionally with ``w`` and ``alpha`` merged; losses built
on it plug straight into :func:`metagreedy.hypergradient`.
"""
from __future__ import annotations

from typing import Callable, Iterable

from torch import Tensor, nn
from torch.func import functional_call


def split(model: nn.Module, hyper: Callable[[str], bool] | Iterable[str]) -> tuple[dict, dict]:
    """``(w, alpha)``: detached copies of the adapted parameters and the hyperparameters (those
    whose name ``hyper`` accepts, or starts with one of the given prefixes), alpha requiring grad."""
    if not callable(hyper):
        prefixes = tuple(hyper)
        hyper = lambda name: name.startswith(prefixes)  # noqa: E731
    w, alpha = {}, {}
    for name, p in model.named_parameters():
        if hyper(name):
            alpha[name] = p.detach().clone().requires_grad_()
        else:
            w[name] = p.detach().clone()
    if not alpha:
        raise ValueError("no parameter was selected as a hyperparameter")
    return w, alpha


def call(model: nn.Module, w: dict, alpha: dict, *args, **kwargs) -> Tensor:
    """The module's forward pass with parameters ``w`` and ``alpha`` (buffers from the module)."""
    return functional_call(model, {**w, **alpha}, args, kwargs)


def losses(forward, loss_fn, train_batch, val_batch):
    """``(train_loss, val_loss)`` for ``hypergradient`` from a forward ``(w, alpha, x) -> out``,
    a ``loss_fn(out, y)`` and the two ``(x, y)`` batches (support/query, train/validation)."""
    (xt, yt), (xv, yv) = train_batch, val_batch

    def train_loss(w, alpha):
        return loss_fn(forward(w, alpha, xt), yt)

    def val_loss(w, alpha):
        return loss_fn(forward(w, alpha, xv), yv)

    return train_loss, val_loss


def module_forward(model: nn.Module):
    """``(w, alpha, x) -> model(x)`` through ``torch.func.functional_call``."""
    return lambda w, alpha, x: call(model, w, alpha, x)


__all__ = ["split", "call", "losses", "module_forward"]
