"""``hypergradient``: the one entry point, any method, any structure of w and alpha."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import Tensor

from .estimators import METHODS, Bilevel, Hypergradient, _run, finite, with_step
from .optim import OPTIMIZERS, Optimizer, check_int


def _flatten(name: str, tree) -> tuple[tuple, Callable[[Any], Any]]:
    """(leaves, unflatten) for a tensor, a list/tuple of tensors, or a dict name -> tensor, checked:
    at least one leaf, every one a floating-point tensor."""
    if isinstance(tree, Tensor):
        leaves, unflatten = (tree,), lambda xs: xs[0]
    elif isinstance(tree, dict):
        keys = list(tree)
        leaves, unflatten = tuple(tree[k] for k in keys), lambda xs: dict(zip(keys, xs))
    elif isinstance(tree, (list, tuple)):
        kind = type(tree)
        leaves, unflatten = tuple(tree), lambda xs: kind(xs)
    else:
        raise TypeError(f"{name} must be a tensor, a list/tuple of tensors or a dict of tensors, "
                        f"got {type(tree).__name__}")
    if not leaves:
        raise ValueError(f"{name} is empty")
    for t in leaves:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must hold tensors, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must hold floating-point tensors, got {t.dtype}")
    return leaves, unflatten


def _loss_on_tuples(name: str, loss, unflatten_w, unflatten_alpha):
    """``loss`` as the estimators call it, on tuples, with what it returns checked: a floating-point
    tensor of one element. Python-side checks only, no host sync; what the loss depends on and
    whether it is finite the estimators check. The step index t, when the caller passes one, goes
    on to ``loss`` as it is given (wrap ``loss`` with ``with_step`` first where it may not take it)."""
    if not callable(loss):
        raise TypeError(f"{name} must be callable, got {type(loss).__name__}")

    def on_tuples(w, alpha, *t):
        out = loss(unflatten_w(w), unflatten_alpha(alpha), *t)
        if not isinstance(out, Tensor):
            raise TypeError(f"{name} must return a tensor, got {type(out).__name__}")
        if not out.is_floating_point():
            raise TypeError(f"{name} must return a floating-point tensor, got {out.dtype}")
        if out.numel() != 1:
            raise ValueError(f"{name} must return a scalar, got a tensor of shape {tuple(out.shape)}")
        return out

    return on_tuples


def _train_loss_on_tuples(train_loss, unflatten_w, unflatten_alpha):
    """train_loss on tuples as ``(w, alpha, t)``, whether it takes t or not."""
    if not callable(train_loss):
        raise TypeError(f"train_loss must be callable, got {type(train_loss).__name__}")
    return with_step(_loss_on_tuples("train_loss", with_step(train_loss), unflatten_w, unflatten_alpha))


def make_optimizer(optimizer: str | Optimizer, lr, momentum: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
    """The inner optimizer by name (its factory checks the settings), or ``optimizer`` itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer == "sgd":
        return OPTIMIZERS["sgd"](lr, momentum)
    if optimizer == "adam":
        return OPTIMIZERS["adam"](lr, betas, eps)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose from {sorted(OPTIMIZERS)}")


def method_options(method: str) -> list[str]:
    """The keyword options a registered method takes (e.g. ``gamma`` for greedy)."""
    params = inspect.signature(METHODS[method]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def hypergradient(train_loss, val_loss, params, hparams, *, steps: int, lr=0.1, momentum: float = 0.0,
                  method: str = "greedy", optimizer: str | Optimizer = "sgd", betas=(0.9, 0.999),
                  eps: float = 1e-8, **options) -> Hypergradient:
    """The hypergradient of ``val_loss(w_T, alpha)`` with respect to ``alpha = hparams``, where
    ``w_T`` is ``steps`` inner optimizer steps on ``train_loss`` from ``w_0 = params``.

    ``train_loss(params, hparams)`` and ``val_loss(params, hparams)`` return floating-point scalar
    tensors and receive the same structure (tensor, list/tuple or dict) as given; train_loss must
    depend on ``params``, val_loss on ``params`` or ``hparams``. ``params`` is never modified.
    ``train_loss(params, hparams, t)``, when it takes a third argument, receives the inner step t
    (1 .. steps): step t sees the same mini-batch in every method and every replay, if the loss
    picks it by t (a loader drawn once per call), not by advancing an iterator.
    ``lr`` may be a float, or a tensor that is one of ``hparams`` (a learned learning rate), or a
    callable of the hparams leaves. ``options`` go to the method: ``gamma``/``variant`` (greedy), ``terms``/
    ``neumann_lr`` (ift), ``k`` (truncated), ``step_val_loss(params, hparams, t)`` (greedy: the
    validation loss of the terms t < T, e.g. a validation mini-batch per inner step).

    Bad input raises a TypeError or ValueError that names the argument or the loss; a NaN or
    infinite final train_loss or val_loss raises :class:`NonFiniteLoss` (a ValueError).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)}")
    allowed = method_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"method {method!r} takes no option(s) {unknown}; it takes {allowed}")
    check_int("steps (T)", steps, 1)

    w0, unflatten_w = _flatten("params", params)
    alpha, unflatten_alpha = _flatten("hparams", hparams)
    w0 = tuple(w.detach() for w in w0)
    alpha = tuple(a if a.requires_grad else a.detach().requires_grad_() for a in alpha)

    if isinstance(lr, Tensor) and lr.requires_grad:
        index = next((i for i, a in enumerate(alpha) if a is lr), None)
        if index is None:
            raise ValueError("lr is a tensor that requires grad but is not one of hparams")
        lr = lambda a, i=index: a[i]  # noqa: E731

    if options.get("step_val_loss") is not None:
        options["step_val_loss"] = _loss_on_tuples("step_val_loss", options["step_val_loss"], unflatten_w,
                                                   unflatten_alpha)

    problem = Bilevel(
        train_loss=_train_loss_on_tuples(train_loss, unflatten_w, unflatten_alpha),
        val_loss=_loss_on_tuples("val_loss", val_loss, unflatten_w, unflatten_alpha),
        optimizer=make_optimizer(optimizer, lr, momentum, betas, eps),
        T=steps,
    )
    est = METHODS[method](problem, w0, alpha, **options)
    return Hypergradient(unflatten_alpha(est.grad), unflatten_w(est.params), est.vjps, est.train_loss, est.val_loss,
                         method)


def inner_loop(train_loss, params, hparams, *, steps: int, lr=0.1, momentum: float = 0.0,
               optimizer: str | Optimizer = "sgd", betas=(0.9, 0.999), eps: float = 1e-8):
    """w_T: ``steps`` inner optimizer steps on ``train_loss`` from ``params`` with ``hparams`` fixed
    (``train_loss(params, hparams, t)`` at step t when it takes t, as in :func:`hypergradient`),
    and no hypergradient (evaluation, the "w/o HPO" baseline). Same structure as ``params``.
    Checks its input as :func:`hypergradient` does, and raises :class:`NonFiniteLoss` when the last
    train_loss is NaN or infinite."""
    check_int("steps (T)", steps, 1)
    w0, unflatten_w = _flatten("params", params)
    alpha, unflatten_alpha = _flatten("hparams", hparams)
    alpha = tuple(a.detach() for a in alpha)
    problem = Bilevel(_train_loss_on_tuples(train_loss, unflatten_w, unflatten_alpha), None,
                      make_optimizer(optimizer, lr, momentum, betas, eps), steps)
    w, _, loss = _run(problem, tuple(w.detach() for w in w0), problem.optimizer.init(w0), alpha, steps)
    finite("train_loss", loss)
    return unflatten_w(w)
