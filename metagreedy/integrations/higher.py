"""Greedy hypergradients in a ``higher.innerloop_ctx`` loop, and higher's inner loop as metagreedy's.

**Your loop, with greedy attached** (:func:`attach`): the researcher keeps the loop; after each
``diffopt.step`` one call adds greedy's term and cuts the step's graph::

    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        hg = attach(fmodel, diffopt, warp, lambda: F.cross_entropy(fmodel(xq), yq), gamma=0.9)
        for t in range(T):
            diffopt.step(F.cross_entropy(fmodel(xs), ys))
            hg.step()
        hg.backward()            # warp[name].grad += d val_loss / d alpha; then the outer step

``inner_opt`` is a ``torch.optim`` optimizer over the adapted parameters only (SGD with momentum,
Adam, ... whatever higher differentiates); ``warp`` maps the names of the hyperparameters (as
``model.named_parameters()`` gives them) to the tensors the outer optimizer updates.

**higher as metagreedy's inner loop** (:func:`higher_forward`, :func:`higher_optimizer`): higher's
functional model and differentiable optimizers as a forward ``(w, alpha, x)`` and a pure
:class:`metagreedy.Optimizer`, so that every registered estimator (IFT, full, ...) runs on higher's
update rule; :func:`innerloop_full` is the textbook exact hypergradient through ``innerloop_ctx``.
"""
from __future__ import annotations

import collections
import functools
from typing import Callable

import torch
from torch import Tensor, nn

from ..optim import Optimizer, detach_state
from ..stream import Stream, step_in_place, supersede


def _higher():
    try:
        import higher
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the higher integration needs the `higher` package: pip install higher") from e
    return higher


# ---- your loop, with greedy attached -----------------------------------------------------------------

class HigherStream:
    """A :class:`metagreedy.stream.Stream` riding on a ``higher`` functional model and its
    differentiable optimizer. Made by :func:`attach`."""

    def __init__(self, fmodel, diffopt, hparams: dict, val_loss: Callable[[], Tensor], *, method: str = "greedy",
                 gamma: float | None = None):
        if not isinstance(hparams, dict) or not hparams:
            raise TypeError("hparams must be a non-empty dict: name (as model.named_parameters() gives it) -> tensor")
        if not getattr(diffopt, "_track_higher_grads", True):
            raise ValueError("the differentiable optimizer does not track higher gradients (track_higher_grads="
                             "False): its steps carry no graph to the hyperparameters")
        names = [n for n, _ in fmodel.named_parameters()]
        unknown = [n for n in hparams if n not in names]
        if unknown:
            raise ValueError(f"hparams names no parameter of the model: {unknown[:3]} (it has {names[:4]}...)")
        fast = list(fmodel.fast_params)
        self.fmodel, self.diffopt, self.hparams = fmodel, diffopt, hparams
        self._hyper = {n: names.index(n) for n in hparams}
        self._adapted = [i for i in range(len(fast)) if i not in self._hyper.values()]
        self._alpha = {n: fast[i] for n, i in self._hyper.items()}  # what the steps are differentiated in
        for n, a in self._alpha.items():
            given = hparams[n]
            if not isinstance(given, Tensor) or given.shape != a.shape:
                raise ValueError(f"hparams[{n!r}] must be the model's parameter of that name, of shape "
                                 f"{tuple(a.shape)}; got {getattr(given, 'shape', type(given).__name__)}")
            if not given.requires_grad:
                raise ValueError(f"hparams[{n!r}] does not require grad: it is the tensor the outer optimizer updates")
            if given is not a and (given.dtype != a.dtype or given.device != a.device
                                   or not torch.equal(given.detach(), a.detach())):
                raise ValueError(f"hparams[{n!r}] is not the model's parameter {n!r} (its values differ from the "
                                 "functional model's): pass the model's own tensors, e.g. "
                                 "dict(model.named_parameters())")
        # The functional model keeps its latest fast weights only: untracked, higher replaces its one list
        # in place (the steps still carry their graph: the differentiable optimizer tracks them). That
        # one list must be the latest, however many the model has kept so far.
        fmodel.track_higher_grads = False
        fmodel._fast_params = [fast]
        self._install = install = functools.partial(_install, fmodel, self._adapted)
        # the stream calls val_loss at w_t installed in fmodel (a closure that does not refer to self)
        self._stream = Stream(self._alpha, lambda w: (install(w), val_loss())[1], method=method, gamma=gamma)
        install(self._stream.start(tuple(fast[i] for i in self._adapted)))  # w_0: a constant
        supersede(fmodel, self._stream)

    def step(self) -> None:
        """After ``diffopt.step``: add the step's term, and cut the fast weights and the optimizer's
        state from the graph (B_t holds w_{t-1} and the state constant)."""
        fast = list(self.fmodel.fast_params)
        for n, i in self._hyper.items():
            if fast[i] is not self._alpha[n]:
                raise ValueError(f"the inner optimizer changed the hyperparameter {n!r}: give it only the adapted "
                                 "parameters")
        step_in_place(self._stream, self._install, tuple(fast[i] for i in self._adapted))
        for group in self.diffopt.state:
            for state in group.values():
                state.update(detach_state(dict(state)))

    def grad(self) -> dict:
        """The hypergradient by name, detached (see :meth:`metagreedy.stream.Stream.grad`)."""
        return self._stream.grad()

    def backward(self, scale: float = 1.0) -> dict:
        """Add ``scale`` times the hypergradient to ``hparams[name].grad``; returns :meth:`grad`. Once."""
        return self._stream._backward(scale, tuple(self.hparams[n] for n in self._alpha))

    steps = property(lambda self: self._stream.steps)
    vjps = property(lambda self: self._stream.vjps)
    val_loss = property(lambda self: self._stream.val_loss)


def _install(fmodel, adapted: list, w: tuple) -> None:
    """Make ``w`` the fast weights at the positions ``adapted`` of the functional model."""
    fast = list(fmodel.fast_params)
    for i, x in zip(adapted, w):
        fast[i] = x
    fmodel.update_params(fast)


def attach(fmodel, diffopt, hparams: dict, val_loss: Callable[[], Tensor], *, method: str = "greedy",
           gamma: float | None = None) -> HigherStream:
    """Attach a streamed hypergradient (``greedy`` with ``gamma``, ``t1t2`` or ``fo``) to the
    ``(fmodel, diffopt)`` of ``higher.innerloop_ctx``. Call ``.step()`` after each ``diffopt.step``,
    then ``.grad()`` or ``.backward()``. ``hparams``: name -> the hyperparameter the outer optimizer
    updates (the model's parameter of that name, never in the inner optimizer); ``val_loss()``: the
    validation loss through ``fmodel`` at its current fast weights. Each step's graph is cut once its
    term is taken, and ``fmodel`` keeps its latest fast weights only, so memory does not grow with T."""
    return HigherStream(fmodel, diffopt, hparams, val_loss, method=method, gamma=gamma)


# ---- higher as metagreedy's inner loop -------------------------------------------------------------------

def higher_forward(model: nn.Module):
    """``(w, alpha, x) -> model(x)`` through ``higher``'s patched functional model."""
    fmodel = _higher().monkeypatch(model, copy_initial_weights=True, track_higher_grads=True)
    names = [name for name, _ in model.named_parameters()]

    def forward(w, alpha, x):
        merged = {**w, **alpha}
        return fmodel(x, params=[merged[n] for n in names])

    return forward


def higher_optimizer(cls: type = torch.optim.SGD, **settings) -> Optimizer:
    """higher's differentiable version of the ``torch.optim`` optimizer ``cls`` (built with
    ``settings``, e.g. ``lr=0.1, momentum=0.9``) as a pure :class:`metagreedy.Optimizer`: state in,
    state out (one dict per tensor of w, higher's own), so an estimator can hold the state constant
    (greedy's B_t) or differentiate through it (full). Each update loads w and the state into the
    wrapped optimizer, runs its update rule and reads them back."""
    higher = _higher()
    cache: dict[int, object] = {}

    def diffopt_for(n: int):
        if n not in cache:
            dummies = [nn.Parameter(torch.zeros(())) for _ in range(n)]
            cache[n] = higher.optim.get_diff_optim(cls(dummies, **settings), dummies, track_higher_grads=True)
        return cache[n]

    def init(w):
        return None  # higher starts each buffer from the first gradient, as torch.optim does

    def update(g, state, w, alpha):
        diffopt = diffopt_for(len(w))
        group = diffopt.param_groups[0]
        group["params"] = list(w)
        diffopt.state[0] = collections.defaultdict(dict, {} if state is None else {
            i: dict(s) for i, s in enumerate(state)})
        diffopt._update([list(g)])  # the update rule DifferentiableOptimizer.step applies
        return tuple(group["params"]), tuple(dict(diffopt.state[0][i]) for i in range(len(w)))

    return Optimizer(init, update, settings.get("lr"))


def higher_sgd(lr: float, momentum: float = 0.0) -> Optimizer:
    """Momentum SGD as ``higher.optim.DifferentiableSGD`` computes it (:func:`higher_optimizer`)."""
    return higher_optimizer(torch.optim.SGD, lr=lr, momentum=momentum)


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


__all__ = ["attach", "HigherStream", "higher_forward", "higher_optimizer", "higher_sgd", "innerloop_full"]
