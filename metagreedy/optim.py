"""Differentiable inner optimizers: the update map Phi(w, alpha) as a pair of pure functions.

An optimizer is ``Optimizer(init, update)`` (optax's shape): ``init(w) -> state`` and
``update(g, state, w, alpha) -> (w_new, state_new)``. Nothing is done in place, so autograd can
differentiate through any number of steps. ``alpha`` is passed to ``update`` so that a learning
rate can itself be a hyperparameter (give ``lr`` as a callable of ``alpha``). A callable ``lr`` may
return one rate per tensor of ``w`` (a tuple), e.g. a learning rate per layer.

The factories check their settings once, when the optimizer is made; ``update`` checks nothing.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple, Sequence, Union

import torch
from torch import Tensor

LR = Union[float, Tensor, Callable[[Sequence[Tensor]], Union[float, Tensor]]]


class Optimizer(NamedTuple):
    init: Callable[[Sequence[Tensor]], Any]
    update: Callable[[Sequence[Tensor], Any, Sequence[Tensor], Sequence[Tensor]], tuple]
    lr: LR | None = None  # the step size, for estimators that need one (IFT's Neumann series)


def check_int(name: str, value, low: int) -> None:
    """TypeError unless ``value`` is an int (a bool is not), ValueError unless it is >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_real(name: str, value, low: float, high: float = math.inf, *, open_low: bool = False,
               open_high: bool = True) -> None:
    """TypeError unless ``value`` is a real number, ValueError unless it is finite and in the
    interval from ``low`` to ``high`` (closed at ``low`` and open at ``high`` unless told)."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {interval}, got {type(value).__name__}")
    x = float(value)
    inside = (low < x if open_low else low <= x) and (x < high if open_high else x <= high)
    if not (math.isfinite(x) and inside):
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


def _check_lr(lr: LR) -> None:
    """A number, or a constant one-element tensor on the CPU, must be finite and >= 0. A callable
    or a tensor that requires grad (a learned lr) has no value yet; reading a tensor on an
    accelerator would cost a host sync."""
    if callable(lr) or (isinstance(lr, Tensor) and (lr.requires_grad or lr.device.type != "cpu" or lr.numel() != 1)):
        return
    check_real("lr", lr.item() if isinstance(lr, Tensor) else lr, 0.0)


def _resolve(lr: LR, alpha, n: int) -> tuple:
    """The step size of each of the ``n`` tensors of w: ``lr``'s value for all, or the tuple a
    callable ``lr`` returns, one per tensor."""
    eta = lr(alpha) if callable(lr) else lr
    if isinstance(eta, (tuple, list)):
        if len(eta) != n:
            raise ValueError(f"lr gave {len(eta)} learning rates for {n} tensors of params")
        return tuple(eta)
    return (eta,) * n


def sgd(lr: LR, momentum: float = 0.0) -> Optimizer:
    """torch.optim.SGD (dampening 0, no Nesterov): v_t = momentum v_{t-1} + g_t, w_t = w_{t-1} - lr v_t, v_0 = 0."""
    _check_lr(lr)
    check_real("momentum", momentum, 0.0, 1.0)

    def init(w):
        return tuple(torch.zeros_like(wi) for wi in w)

    def update(g, v, w, alpha):
        eta = _resolve(lr, alpha, len(w))
        v = tuple(momentum * vi + gi for vi, gi in zip(v, g)) if momentum else tuple(g)
        return tuple(wi - e * vi for wi, e, vi in zip(w, eta, v)), v

    return Optimizer(init, update, lr)


class AdamState(NamedTuple):
    step: int
    m: tuple
    v: tuple


def adam(lr: LR, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Optimizer:
    """torch.optim.Adam's update (no weight decay, no amsgrad), written out of place.

    Its square root has an infinite derivative at a second moment of exactly zero: a coordinate
    whose training gradient is exactly zero at step 1 gives NaN in reverse mode.
    """
    _check_lr(lr)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    b1, b2 = betas
    check_real("betas[0]", b1, 0.0, 1.0)
    check_real("betas[1]", b2, 0.0, 1.0)
    check_real("eps", eps, 0.0, open_low=True)

    def init(w):
        zeros = tuple(torch.zeros_like(wi) for wi in w)
        return AdamState(0, zeros, zeros)

    def update(g, state, w, alpha):
        eta = _resolve(lr, alpha, len(w))
        t = state.step + 1
        m = tuple(b1 * mi + (1 - b1) * gi for mi, gi in zip(state.m, g))
        v = tuple(b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(state.v, g))
        c1, c2 = 1 - b1**t, (1 - b2**t) ** 0.5
        w = tuple(wi - (e / c1) * mi / (vi.sqrt() / c2 + eps) for wi, e, mi, vi in zip(w, eta, m, v))
        return w, AdamState(t, m, v)

    return Optimizer(init, update, lr)


def detach_state(state):
    """The optimizer state with every tensor cut from the graph (NamedTuples, tuples, lists and dicts
    kept)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple):
        items = [detach_state(s) for s in state]
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


OPTIMIZERS = {"sgd": sgd, "adam": adam}
