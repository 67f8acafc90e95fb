"""Greedy hypergradients in a learn2learn ``clone()`` / ``adapt()`` loop (MAML, MetaSGD, GBML).

The researcher keeps the loop; after each ``adapt`` one call adds greedy's term and cuts the
learner's weights from the graph::

    learner = maml.clone()
    hg = attach(learner, warp, lambda: F.cross_entropy(net(learner, warp_layers, xq), yq), gamma=0.9)
    for t in range(T):
        learner.adapt(F.cross_entropy(net(learner, warp_layers, xs), ys))
        hg.step()
    hg.backward()                # alpha.grad += d val_loss / d alpha; then the outer step

The adapted weights w are the parameters of ``learner.module``; the hyperparameters alpha are any
tensors the steps depend on that learn2learn does not adapt: warp layers kept outside the learner,
MetaSGD's learning rates, GBML's learned transform (pass the original wrapper's, e.g.
``dict(gbml.compute_update.named_parameters())``; the clone's are copies with a graph to them).
A clone keeps every step's graph on its own; cut after each step, it keeps one, so memory does not
grow with T. learn2learn is not imported here: the learner is used as the ``nn.Module`` it is.
"""
from __future__ import annotations

import functools
from typing import Callable

from torch import Tensor, nn

from ..stream import Stream, step_in_place, supersede


class LearnerStream:
    """A :class:`metagreedy.stream.Stream` riding on a learn2learn learner. Made by :func:`attach`."""

    def __init__(self, learner: nn.Module, hparams, val_loss: Callable[[], Tensor], *, method: str = "greedy",
                 gamma: float | None = None):
        module = getattr(learner, "module", learner)
        if not isinstance(module, nn.Module):
            raise TypeError(f"learner must be an nn.Module (a learn2learn clone), got {type(learner).__name__}")
        if method != "fo" and getattr(learner, "first_order", False):
            raise ValueError(f"{method}: the learner adapts to first order (first_order=True), so its steps carry "
                             "no graph to the hyperparameters; clone it with first_order=False")
        slots, seen = [], {}  # (submodule, name, index) of every parameter of the module, shared ones once
        for sub in module.modules():
            for name, p in sub._parameters.items():
                if p is not None:
                    slots.append((sub, name, seen.setdefault(id(p), len(seen))))
        self.module, self._slots = module, slots
        self._install = install = functools.partial(_install, slots)
        # the stream calls val_loss at w_t installed in the learner (a closure that does not refer to self)
        self._stream = Stream(hparams, lambda w: (install(w), val_loss())[1], method=method, gamma=gamma)
        hyper = {id(a) for a in self._stream.alpha}
        if any(id(p) in hyper for p in self._weights()):
            raise ValueError("a hyperparameter is among the learner's adapted parameters: keep alpha outside "
                             "learner.module (learn2learn adapts every parameter of it)")
        if any(isinstance(sub._parameters[name], nn.Parameter) for sub, name, _ in slots):
            raise ValueError("the learner's module holds nn.Parameter objects, so it is not a clone: attach to "
                             "maml.clone() (attach replaces the learner's weights with its own tensors)")
        install(self._stream.start(self._weights()))  # w_0: a constant
        supersede(learner, self._stream)

    def _weights(self) -> tuple:
        """The learner's current parameters, one per distinct tensor, in a fixed order."""
        out = {}
        for sub, name, k in self._slots:
            out.setdefault(k, sub._parameters[name])
        return tuple(out[k] for k in range(len(out)))

    def step(self) -> None:
        """After ``learner.adapt``: add the step's term and cut the learner's weights from the graph."""
        step_in_place(self._stream, self._install, self._weights())

    def grad(self):
        """The hypergradient, shaped like ``hparams``, detached."""
        return self._stream.grad()

    def backward(self, scale: float = 1.0):
        """Add ``scale`` times the hypergradient to each hyperparameter's ``.grad``; returns :meth:`grad`."""
        return self._stream.backward(scale)

    steps = property(lambda self: self._stream.steps)
    vjps = property(lambda self: self._stream.vjps)
    val_loss = property(lambda self: self._stream.val_loss)


def _install(slots: list, w: tuple) -> None:
    """Put the tensors ``w`` in the learner's parameter slots, as learn2learn's own update_module does."""
    for sub, name, k in slots:
        sub._parameters[name] = w[k]


def attach(learner: nn.Module, hparams, val_loss: Callable[[], Tensor], *, method: str = "greedy",
           gamma: float | None = None) -> LearnerStream:
    """Attach a streamed hypergradient (``greedy`` with ``gamma``, ``t1t2`` or ``fo``) to a learn2learn
    learner (``maml.clone()``, ``metasgd.clone()``, ``gbml.clone()``, or any module whose parameters
    the loop replaces as learn2learn does). Call ``.step()`` after each ``learner.adapt``, then
    ``.grad()`` or ``.backward()``. ``hparams``: alpha (a tensor, list or dict of tensors that require
    grad, outside ``learner.module``); ``val_loss()``: the validation loss through the learner."""
    return LearnerStream(learner, hparams, val_loss, method=method, gamma=gamma)


__all__ = ["attach", "LearnerStream"]
