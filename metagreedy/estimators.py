"""Hypergradient estimators: one function each, one signature, one registry.

Every estimator is ``estimator(problem, w0, alpha, **options) -> Hypergradient`` where ``problem`` is a
:class:`Bilevel` (``train_loss``, ``val_loss``, the inner ``optimizer`` and ``T`` steps), ``w0`` and
``alpha`` are tuples of tensors, and the losses take ``(w, alpha)`` as tuples. Inner dynamics:
``w_t, s_t = Phi(w_{t-1}, s_{t-1}, alpha)``, one optimizer step on ``train_loss``.

``train_loss`` may take the inner step as a third argument, ``train_loss(w, alpha, t)``: step t
(1-based) is taken on ``train_loss(w_{t-1}, alpha, t)``, e.g. the t-th mini-batch of a loader drawn
once per hypergradient. Every estimator calls it with that t, in every replay of the inner loop,
so step t sees the same batch wherever it is computed (IFT's Hessian at w_T uses t = T).

``vjps`` counts vector-Jacobian products through the inner gradient map ``(w, alpha) -> grad_w
train_loss``: the second-order products a method pays for, the paper's #JVPs column. Plain first
derivatives (the inner step itself, ``grad val_loss``) are not counted.

Checks cost no host sync: a loss that depends on none of the tensors it should is seen in the
autograd graph, and a NaN or infinite loss where the final losses become Python floats.
"""
from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .optim import Optimizer, check_int, check_real, detach_state

Loss = Callable[[Sequence[Tensor], Sequence[Tensor]], Tensor]
StepLoss = Callable[[Sequence[Tensor], Sequence[Tensor], int], Tensor]  # (w, alpha, t) -> loss


class Bilevel(NamedTuple):
    train_loss: Loss | StepLoss  # (w, alpha) or (w, alpha, t)
    val_loss: Loss
    optimizer: Optimizer
    T: int


class NonFiniteLoss(ValueError):
    """train_loss or val_loss is NaN or infinite at the end of the inner loop.

    Checked once, where an estimate turns its final losses into Python floats, not at every inner
    step (a host sync each on an accelerator): a non-finite loss at an earlier step makes its
    gradient, and so w and the final losses, non-finite too."""


_DEFERRED = False  # set by deferred_finite_checks()


def finite(name: str, loss: Tensor) -> float:
    """``loss`` as a float; NonFiniteLoss if it is NaN or infinite (inside deferred_finite_checks(),
    ``loss`` itself, unchecked)."""
    if _DEFERRED:
        return loss
    value = float(loss)
    if not math.isfinite(value):
        raise NonFiniteLoss(f"{name} is {value}")
    return value


@contextlib.contextmanager
def deferred_finite_checks():
    """Within it, estimates keep their final losses as tensors, unchecked: no host sync, so that
    the computation can be captured in a CUDA graph (metagreedy.cuda_graph). Whoever replays it
    checks the losses with :func:`finite` afterwards."""
    global _DEFERRED
    before, _DEFERRED = _DEFERRED, True
    try:
        yield
    finally:
        _DEFERRED = before


class Hypergradient(NamedTuple):
    """What an estimator and :func:`metagreedy.hypergradient` return. An estimator gives ``grad`` and
    ``params`` as it takes alpha and w, tuples of tensors, and no ``method``; ``hypergradient`` gives
    them in the structure its caller passed (a tensor, list/tuple or dict), with the method's name."""
    grad: Any  # d val_loss(w_T, alpha) / d alpha, one tensor per hyperparameter, detached
    params: Any  # w_T, detached
    vjps: int  # vector-Jacobian products through grad_w train_loss (the paper's #JVPs)
    train_loss: float  # train_loss(w_{T-1}, alpha), the last inner step's loss
    val_loss: float  # val_loss(w_T, alpha)
    method: str = ""


def _grad(out: Tensor, inputs, grad_outputs=None, create_graph=False, retain_graph=None,
          unused: str | None = None) -> tuple:
    """autograd.grad that returns zeros (not None) for inputs ``out`` does not depend on; when it
    depends on none of them and ``unused`` is given, a ValueError with that message instead."""
    if isinstance(out, Tensor) and not out.requires_grad:
        grads = (None,) * len(inputs)
    else:
        grads = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, create_graph=create_graph,
                                    retain_graph=retain_graph, allow_unused=True)
    if unused is not None and all(g is None for g in grads):
        raise ValueError(unused)
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs))


def takes_step(loss) -> bool:
    """Whether ``loss`` accepts the inner step as a third positional argument, ``(w, alpha, t)``,
    read from its signature (a loss without one, e.g. a builtin, is taken as ``(w, alpha)``)."""
    try:
        inspect.signature(loss).bind(None, None, None)
    except (TypeError, ValueError):  # too few parameters, or no signature to read
        return False
    return True


def with_step(loss: Loss | StepLoss) -> StepLoss:
    """``loss`` as ``(w, alpha, t) -> loss``: t passed on when ``loss`` takes it, dropped when it
    takes ``(w, alpha)`` only. Decided once, here, not at every call."""
    if getattr(loss, "with_step", False):
        return loss
    if takes_step(loss):
        def indexed(w, alpha, t):
            return loss(w, alpha, t)
    else:
        def indexed(w, alpha, t):
            return loss(w, alpha)
    indexed.with_step = True
    return indexed


def indexed(problem: Bilevel) -> Bilevel:
    """``problem`` with ``train_loss`` taking ``(w, alpha, t)``, as the estimators call it."""
    return problem._replace(train_loss=with_step(problem.train_loss))


def _leaves(ts) -> tuple:
    return tuple(t.detach().requires_grad_() for t in ts)


def _add(xs, ys, scale: float = 1.0) -> tuple:
    return tuple(x + scale * y for x, y in zip(xs, ys))


def _step(problem: Bilevel, w, state, alpha, graph: bool, t: int):
    """Inner step t from w_{t-1}, on ``train_loss(w_{t-1}, alpha, t)``. With ``graph`` the result stays differentiable in ``alpha``
    (and in ``w`` and ``state`` when those carry a graph); without, it is detached."""
    with torch.enable_grad():
        w = _leaves(w) if not graph else tuple(x if x.requires_grad else _leaves((x,))[0] for x in w)
        loss = problem.train_loss(w, alpha, t)
        g = _grad(loss, w, create_graph=graph,
                  unused="train_loss does not depend on params (w): the inner loop would not move them")
        w_new, state_new = problem.optimizer.update(g, state, w, alpha)
    if not graph:
        w_new, state_new = tuple(x.detach() for x in w_new), detach_state(state_new)
    return w_new, state_new, loss.detach()


def _greedy_term(problem: Bilevel, w, state, alpha, u_fn, t: int):
    """Step t from w_{t-1} with the optimizer state held constant and return ``(w_t, s_t, loss, u B_t,
    val_grads)`` where ``B_t = dPhi(w_{t-1}, s_{t-1}, alpha) / dalpha`` and ``(u, val_grads) =
    u_fn(w_t, t)``: one VJP."""
    w_new, state_new, loss = _step(problem, _leaves(w), detach_state(state), alpha, graph=True, t=t)
    w_det = tuple(x.detach() for x in w_new)
    u, val_grads = u_fn(w_det, t)
    term = _grad(w_new, alpha, grad_outputs=u)  # differentiates through grad_w train_loss: the VJP
    return w_det, detach_state(state_new), loss, term, val_grads


def _val_grads(problem: Bilevel, w, alpha, leaves: bool = True):
    """(grad_w val_loss(w, alpha), grad_alpha val_loss(w, alpha), val_loss) in one backward pass;
    with ``leaves=False``, ``w`` keeps its graph and grad_alpha goes through it."""
    with torch.enable_grad():
        w = _leaves(w) if leaves else w
        loss = problem.val_loss(w, alpha)
        grads = _grad(loss, tuple(w) + tuple(alpha),
                      unused="val_loss depends on neither params (w) nor hparams (alpha)")
    return grads[: len(w)], grads[len(w):], loss.detach()


def _val_gradient_at(problem: Bilevel, alpha, step_val_loss: StepLoss | None = None):
    """``u_fn`` for :func:`_greedy_term`: u_t = grad_w val_loss(w_t). At t = T it keeps all of
    ``_val_grads`` so they serve as the direct term at w_T; before T it skips grad_alpha (not
    needed) and uses ``step_val_loss(w, alpha, t)`` instead of ``val_loss`` when one is given."""
    def u_fn(w, t):
        if t == problem.T:
            grads = _val_grads(problem, w, alpha)
            return grads[0], grads
        with torch.enable_grad():
            w = _leaves(w)
            loss = problem.val_loss(w, alpha) if step_val_loss is None else step_val_loss(w, alpha, t)
            return _grad(loss, w), None
    return u_fn


def _run(problem: Bilevel, w, state, alpha, steps: int):
    """Steps 1 .. ``steps`` from w_0, without a graph: (w, state, the last step's train_loss)."""
    loss = torch.tensor(float("nan"))
    for t in range(1, steps + 1):
        w, state, loss = _step(problem, w, state, alpha, graph=False, t=t)
    return w, state, loss


def _finish(problem, w, alpha, indirect, vjps, train_loss, val_grads=None) -> Hypergradient:
    """The estimate ``grad_alpha L_val(w_T) + indirect``; ``val_grads`` at w_T when already computed."""
    _, direct, val = val_grads if val_grads is not None else _val_grads(problem, w, alpha)
    grad = direct if indirect is None else _add(direct, indirect)
    return Hypergradient(tuple(x.detach() for x in grad), tuple(w), vjps, finite("train_loss", train_loss),
                         finite("val_loss", val))


def greedy(problem: Bilevel, w0, alpha, *, gamma: float = 0.9, variant: str = "eq6",
           step_val_loss: StepLoss | None = None) -> Hypergradient:
    """Greedy (equation 6): grad_alpha L_val(w_T) + sum_t gamma^(T-t) grad_{w_t} L_val(w_t) B_t.

    ``variant="final"`` uses grad_{w_T} L_val(w_T) in every term instead; it replays the
    trajectory once to get that vector first. Neither keeps the trajectory: memory is O(P + H).
    ``step_val_loss(w, alpha, t)`` (eq6 only), when given, replaces L_val in the terms t < T, e.g.
    a validation mini-batch per step; the term t = T and the direct term use ``val_loss``."""
    if variant not in ("eq6", "final"):
        raise ValueError(f"greedy: variant must be 'eq6' or 'final', got {variant!r}")
    check_real("gamma", gamma, 0.0, 1.0, open_high=False)
    if variant == "final" and step_val_loss is not None:
        raise ValueError("greedy: step_val_loss applies to variant='eq6' only ('final' uses grad L_val(w_T) throughout)")
    problem = indexed(problem)
    T, state = problem.T, problem.optimizer.init(w0)
    if variant == "final":
        w_T, _, _ = _run(problem, w0, state, alpha, T)
        final = _val_grads(problem, w_T, alpha)
        u_fn = lambda w, t: (final[0], final)  # noqa: E731
    else:
        u_fn = _val_gradient_at(problem, alpha, step_val_loss)
    acc = tuple(torch.zeros_like(a) for a in alpha)
    w, loss, last = w0, None, None
    for t in range(1, T + 1):
        w, state, loss, term, last = _greedy_term(problem, w, state, alpha, u_fn, t)
        acc = _add(tuple(gamma * a for a in acc), term)  # acc_t = gamma acc_{t-1} + term_t
    return _finish(problem, w, alpha, acc, T, loss, last)


def t1t2(problem: Bilevel, w0, alpha) -> Hypergradient:
    """T1-T2 (Luketina et al. 2016): grad_alpha L_val(w_T) + grad_{w_T} L_val(w_T) B_T, the last step only."""
    problem = indexed(problem)
    w, state, _ = _run(problem, w0, problem.optimizer.init(w0), alpha, problem.T - 1)
    w, _, loss, term, last = _greedy_term(problem, w, state, alpha, _val_gradient_at(problem, alpha), problem.T)
    return _finish(problem, w, alpha, term, 1, loss, last)


def fo(problem: Bilevel, w0, alpha) -> Hypergradient:
    """First order: grad_alpha L_val(w_T) only, the dependence of w_T on alpha ignored."""
    problem = indexed(problem)
    w, _, loss = _run(problem, w0, problem.optimizer.init(w0), alpha, problem.T)
    return _finish(problem, w, alpha, None, 0, loss)


def ift(problem: Bilevel, w0, alpha, *, terms: int = 5, neumann_lr: float | None = None) -> Hypergradient:
    """IFT at w_T (Lorraine et al. 2020): grad_alpha L_val - v H^-1 d(grad_w L_train)/dalpha, with
    H^-1 ~ eta sum_{j=0..K} (I - eta H)^j (K = ``terms``; eta = ``neumann_lr``). The default step,
    decided here alone: ``neumann_lr`` None or 0 (a step of 0 would drop the implicit term) is the
    inner optimizer's learning rate."""
    check_int("ift: terms", terms, 0)
    if neumann_lr is not None:
        check_real("ift: neumann_lr", neumann_lr, 0.0)
    problem = indexed(problem)
    eta = neumann_lr or _inner_lr(problem)
    w, _, loss = _run(problem, w0, problem.optimizer.init(w0), alpha, problem.T)
    at_w_T = _val_grads(problem, w, alpha)
    v = at_w_T[0]
    with torch.enable_grad():
        wl = _leaves(w)
        g = _grad(problem.train_loss(wl, alpha, problem.T), wl, create_graph=True)
        p = cur = v
        for _ in range(terms):
            hv = _grad(g, wl, grad_outputs=cur, retain_graph=True)
            cur = _add(cur, hv, -eta)
            p = _add(p, cur)
        mixed = _grad(g, alpha, grad_outputs=tuple(eta * pi for pi in p))
    return _finish(problem, w, alpha, tuple(-m for m in mixed), terms + 1, loss, at_w_T)


def full(problem: Bilevel, w0, alpha) -> Hypergradient:
    """Exact hypergradient: reverse mode through all T steps, optimizer state included."""
    return truncated(problem, w0, alpha, k=problem.T)


def truncated(problem: Bilevel, w0, alpha, *, k: int = 1) -> Hypergradient:
    """Truncated back-propagation (Shaban et al. 2019): reverse mode through the last k steps only."""
    check_int("truncated: k", k, 1)
    if k > problem.T:
        raise ValueError(f"truncated: k must be in [1, T={problem.T}], got {k}")
    problem = indexed(problem)
    w, state, _ = _run(problem, w0, problem.optimizer.init(w0), alpha, problem.T - k)
    with torch.enable_grad():
        for t in range(problem.T - k + 1, problem.T + 1):
            w, state, loss = _step(problem, w, state, alpha, graph=True, t=t)
    at_w_T = _val_grads(problem, w, alpha, leaves=False)
    return _finish(problem, tuple(x.detach() for x in w), alpha, None, k, loss, at_w_T)


def _inner_lr(problem: Bilevel) -> float:
    lr = problem.optimizer.lr
    if lr is None or callable(lr):
        raise ValueError("ift: pass neumann_lr (the inner optimizer has no fixed learning rate)")
    return float(lr)


METHODS: dict[str, Callable[..., Hypergradient]] = {
    "greedy": greedy,
    "t1t2": t1t2,
    "ift": ift,
    "fo": fo,
    "full": full,
    "truncated": truncated,
}
