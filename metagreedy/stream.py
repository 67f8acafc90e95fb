"""Hypergradients streamed from the researcher's own inner loop: greedy, T1-T2 and first order.

Greedy's term at step t, ``grad_{w_t} val_loss(w_t) B_t`` with ``B_t = dPhi(w_{t-1}, alpha)/dalpha``
taken with w_{t-1} and the optimizer state held constant, needs nothing from earlier steps but a
running sum. So it can ride along a loop the user wrote: after each inner step the loop hands w_t
(still carrying the one step's graph) to :meth:`Stream.step`, which adds the step's term and hands
back w_t cut from the graph, so the next step starts from a constant. Memory does not grow with T
and no trajectory is kept::

    stream = mg.stream(alpha, lambda w: val_loss(w, alpha), method="greedy", gamma=0.9)
    w = stream.start(w0)
    for t in range(1, T + 1):
        w, state = my_step(w, state, alpha, t)   # any differentiable step: w_t = Phi(w_{t-1}, alpha)
        w, state = stream.step(w, state)         # term t added; w_t and the state cut from the graph
    stream.backward()                            # alpha.grad += the hypergradient; then the outer step

On the same problem it gives what ``mg.hypergradient(..., method=...)`` gives (tests/test_stream.py).
The loop integrations for ``higher`` and learn2learn (:mod:`metagreedy.integrations`) attach this
object to their functional models and learners.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Callable

import torch
from torch import Tensor

from .api import _flatten
from .estimators import METHODS, _grad, finite
from .optim import check_real, detach_state

# The estimators that need only the current step: how each treats a step before the last.
#   greedy: add gamma^(T-t) grad_{w_t} val_loss(w_t) B_t (one VJP each step)
#   t1t2:   keep the step's graph until the next step replaces it; only step T's term counts (one VJP)
#   fo:     drop the step's graph (no VJP)
STREAMED = {"greedy": ("gamma",), "t1t2": (), "fo": ()}

NO_PATH = ("no inner step carried a graph to hparams (alpha), so the hypergradient would be the direct term "
           "alone: take the steps differentiably (create_graph=True; a learner adapting with first_order=False) "
           "with the very tensors given as hparams (not copies, not the pre-clone parameters of a learner). If "
           "the inner loop does not depend on alpha, method='fo' gives that direct term")
STATE_HINT = ("the step's graph reaches back past w_{t-1}: pass the optimizer's state to step() (w, state = "
              "stream.step(w, state)) and continue the loop from the w and state it returns")


def leaves(tensors) -> tuple:
    """Each tensor cut from its graph, as a leaf that requires grad."""
    return tuple(t.detach().requires_grad_() for t in tensors)


class Stream:
    """A hypergradient of ``val_loss(w_T, alpha)`` with respect to ``hparams`` (alpha), fed once per
    inner step of the caller's loop. Make it with :func:`stream`.

    A call that fails (``val_loss`` raising, a refused argument) changes nothing: the step can be
    taken again. Mistakes that would give a wrong hypergradient without an error are refused: a
    step() on the weights the last one returned (no inner step between), steps that never reach
    alpha, a second backward()."""

    def __init__(self, hparams, val_loss: Callable[[Any], Tensor], *, method: str = "greedy",
                 gamma: float | None = None):
        if method not in STREAMED:
            if isinstance(method, str) and method in METHODS:
                raise ValueError(f"method {method!r} cannot be streamed: choose from {sorted(STREAMED)} (full and "
                                 "truncated need the trajectory, ift a Hessian at w_T: use mg.hypergradient)")
            raise ValueError(f"unknown method {method!r}: the streamed methods are {sorted(STREAMED)}")
        if gamma is not None and method != "greedy":
            raise TypeError(f"method {method!r} takes no gamma (greedy does)")
        gamma = 0.9 if gamma is None else gamma
        check_real("gamma", gamma, 0.0, 1.0, open_high=False)
        if not callable(val_loss):
            raise TypeError(f"val_loss must be callable, got {type(val_loss).__name__}")
        self.alpha, self._unflatten_alpha = _flatten("hparams", hparams)
        if not all(a.requires_grad for a in self.alpha):
            raise ValueError("hparams must require grad: they are the tensors the loop's steps are differentiated in")
        if len({id(a) for a in self.alpha}) < len(self.alpha):
            raise ValueError("hparams holds the same tensor twice: its hypergradient would be counted twice")
        self.method, self.gamma, self._val = method, float(gamma), val_loss
        self.steps, self.vjps = 0, 0  # inner steps seen (T so far); vector-Jacobian products taken
        self.val_loss = None  # val_loss(w_T) as a float, once grad() has run
        self._acc = tuple(torch.zeros_like(a) for a in self.alpha)  # sum_t gamma^(t_last - t) term_t (greedy)
        self._reached = False  # greedy: whether a step's VJP reached alpha
        self._given = ()  # the tensors start() or the last step() returned: the next step must not be them
        self._at_last = None  # (w_t leaves, unflatten) of the last step
        self._pending = None  # t1t2: (w_t with its graph) of the last step, its VJP not yet taken
        self._val_grads = None  # greedy: (grad_w, grad_alpha, val_loss) at the last step's w_t
        self._result = None
        self._error = None  # set when the stream can no longer give a right answer; raised again
        self._added = False  # backward() has run

    def start(self, params):
        """w_0 as leaves cut from any graph (the same structure as ``params``): the loop's first step
        must start from a constant, as every later one does."""
        flat, unflatten = _flatten("params", params)
        self._given = leaves(flat)
        return unflatten(self._given)

    def step(self, params, state=None):
        """Take in w_t, the result of one inner step from the w_{t-1} that :meth:`start` or the
        previous :meth:`step` returned; return w_t cut from the graph (and ``state``, the optimizer's
        state, detached, when given: B_t holds it constant). The loop must go on from what this
        returns, state included: a step that reaches back past w_{t-1} is refused under greedy, and
        under t1t2 cannot be seen."""
        self._usable()
        if self._result is not None:
            raise RuntimeError("step() after grad(): this stream's hypergradient is already taken; start a new one")
        flat, unflatten = _flatten("params", params)
        if self._given and len(flat) == len(self._given) and all(x is y for x, y in zip(flat, self._given)):
            raise RuntimeError("step() on the very weights the last step() (or start()) returned: take the inner "
                               "step first, and call step() once per inner step")
        if self.method != "fo" and not any(x.requires_grad for x in flat):
            raise ValueError("the weights given to step() carry no graph (none requires grad): " + NO_PATH)
        cut = leaves(flat)
        if self.method == "greedy":
            val_grads = self._at(cut, unflatten)
            term, reached = self._vjp(flat, val_grads[0])
            self._val_grads, self._reached = val_grads, self._reached or reached
            self._acc = tuple(self.gamma * s + g for s, g in zip(self._acc, term))  # acc_t = gamma acc_{t-1} + term_t
        elif self.method == "t1t2":
            self._pending = flat
        self.steps += 1
        self._at_last, self._given = (cut, unflatten), cut
        out = unflatten(cut)
        return out if state is None else (out, detach_state(state))

    def grad(self):
        """The hypergradient, shaped like ``hparams``, detached: ``grad_alpha val_loss(w_T)`` plus the
        method's terms. Computed once; :meth:`step` may not follow."""
        self._usable()
        if self._result is None:
            if not self.steps:
                raise RuntimeError("grad() before any step(): the stream has seen no inner step")
            if self.method == "greedy":
                _, direct, val = self._val_grads
                inner, reached = self._acc, self._reached
            else:
                u, direct, val = self._at(*self._at_last)
                inner, reached = (self._vjp(self._pending, u) if self.method == "t1t2" else (None, True))
                self._pending = None  # its graph is spent
            if not reached:
                self._error = ValueError(NO_PATH)
                raise self._error
            total = direct if inner is None else tuple(d + s for d, s in zip(direct, inner))
            self.val_loss = finite("val_loss", val)
            self._result = self._unflatten_alpha(tuple(g.detach() for g in total))
        return self._result

    def backward(self, scale: float = 1.0):
        """Add ``scale`` times the hypergradient to each hyperparameter's ``.grad`` (as
        ``loss.backward()`` would: a hyperparameter that is not a leaf, ``alpha = f(raw)``, passes it
        on to ``raw.grad``), for the outer optimizer's step; returns :meth:`grad`. Once per stream."""
        return self._backward(scale, self.alpha)

    def _backward(self, scale, targets: tuple):
        """:meth:`backward` into ``targets`` (alpha's tensors, or those the caller's outer optimizer
        holds for them, in alpha's order)."""
        check_real("scale", scale, -math.inf, math.inf)
        if self._added:
            raise RuntimeError("backward() twice: the hypergradient is already in .grad (grad() returns it again)")
        grads = self.grad()
        flat, _ = _flatten("grad", grads)
        torch.autograd.backward(targets, tuple(float(scale) * g for g in flat))
        self._added = True
        return grads

    def _usable(self) -> None:
        if self._error is not None:
            raise self._error

    def _at(self, cut: tuple, unflatten):
        """(grad_w val_loss, grad_alpha val_loss, val_loss) at the leaves ``cut``, one backward pass."""
        with torch.enable_grad():
            loss = self._val(unflatten(cut))
            if not isinstance(loss, Tensor) or loss.numel() != 1 or not loss.is_floating_point():
                raise TypeError("val_loss must return a floating-point scalar tensor")
            grads = _grad(loss, cut + self.alpha, unused="val_loss depends on neither w nor hparams (alpha)")
        return grads[: len(cut)], grads[len(cut):], loss.detach()

    def _vjp(self, w_t: tuple, u: tuple) -> tuple:
        """(u B_t, whether it reached alpha): the vector u back through the one step that made
        ``w_t``, into alpha."""
        carried = [(x, g) for x, g in zip(w_t, u) if x.requires_grad]
        if not carried:
            return tuple(torch.zeros_like(a) for a in self.alpha), False
        outs, vecs = zip(*carried)
        try:
            grads = torch.autograd.grad(outs, self.alpha, grad_outputs=vecs, allow_unused=True)
        except RuntimeError as e:
            if "second time" in str(e):
                raise RuntimeError(STATE_HINT) from e
            raise
        self.vjps += 1
        return (tuple(torch.zeros_like(a) if g is None else g for g, a in zip(grads, self.alpha)),
                any(g is not None for g in grads))


def supersede(owner, stream: Stream, _attached=weakref.WeakKeyDictionary()) -> None:
    """Record ``stream`` as the one attached to ``owner`` (a functional model, a learner); the one
    attached before it, if alive and unfinished, fails from now on: the two would cut each other's
    graphs."""
    old = _attached.get(owner)
    old = old() if old is not None else None
    if old is not None and old._result is None:
        old._error = RuntimeError("this stream was replaced by a later attach() to the same model: its steps no "
                                  "longer see the loop's graph")
    _attached[owner] = weakref.ref(stream)


def step_in_place(stream: Stream, install: Callable[[tuple], None], w: tuple) -> None:
    """:meth:`Stream.step` for a loop whose model holds w (``install`` puts tensors in the model, as
    the integrations' ``val_loss`` does before it runs): after it the model holds w_t cut from the
    graph, or, when the step fails, w_t itself again, so that the step can be taken again."""
    try:
        install(stream.step(w))
    except BaseException:
        install(w)
        raise


def stream(hparams, val_loss: Callable[[Any], Tensor], *, method: str = "greedy",
           gamma: float | None = None) -> Stream:
    """A :class:`Stream` for the caller's own inner loop. ``hparams``: alpha (a tensor, list/tuple or
    dict of tensors that require grad, used by the loop's steps); ``val_loss(w)``: the validation loss
    at w (the structure the loop passes to :meth:`Stream.step`), alpha closed over; ``method``:
    ``greedy`` (with ``gamma``, default 0.9), ``t1t2`` or ``fo``."""
    return Stream(hparams, val_loss, method=method, gamma=gamma)


__all__ = ["Stream", "stream", "STREAMED", "leaves", "supersede", "step_in_place"]
