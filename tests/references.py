"""Independent references for every registered estimator, from explicit Jacobians.

Nothing here comes from metagreedy. A problem is seen on flat vectors: w (P), alpha (H) and the
optimizer state s (S), with the inner step written out again, ``w_t, s_t = Phi(w_{t-1}, s_{t-1},
alpha)`` (torch.optim.SGD's momentum, torch.optim.Adam's update). Every Jacobian of Phi (dPhi/dw,
dPhi/ds, dPhi/dalpha for both outputs) is materialised with torch.autograd.functional.jacobian and
each method's formula is applied by matrix products, so a reference shares no code path with the
estimator it checks. A ``train_loss(w, alpha, t)`` that takes the step index (a mini-batch per step)
is called with t = 1 .. T along the trajectory, and with t = T for the Hessian at w_T (IFT).

``REFERENCES[method](ref, T, **options)`` is the (H,) vector the estimator ``method`` must return.
"""
from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch.autograd.functional import jacobian


def _leaves(tree):
    return list(tree.values()) if isinstance(tree, dict) else list(tree)


def _flat(ts):
    return torch.cat([t.detach().reshape(-1) for t in ts])


def _unflat(vec, like, structure):
    out, i = [], 0
    for t in like:
        out.append(vec[i:i + t.numel()].reshape(t.shape))
        i += t.numel()
    return dict(zip(structure, out)) if isinstance(structure, dict) else type(structure)(out)


class Jacobians(NamedTuple):
    """Of one step (w', s') = Phi(w, s, alpha): ``ww`` = dw'/dw, ``ws`` = dw'/ds, ``wa`` = dw'/dalpha
    (= B_t), and the same for the new state s'."""
    ww: torch.Tensor
    ws: torch.Tensor
    wa: torch.Tensor
    sw: torch.Tensor
    ss: torch.Tensor
    sa: torch.Tensor


class Reference:
    """``problem = (train_loss, val_loss, params, hparams)`` with structured params and hparams, as
    metagreedy.hypergradient takes it, under ``optimizer`` "sgd" (with ``momentum``) or "adam".
    ``lr`` is a float or, for a learned learning rate, a function of the structured hparams that
    gives one rate, or a tuple of one rate per tensor of params."""

    def __init__(self, problem, optimizer="sgd", lr=0.1, momentum=0.0, betas=(0.9, 0.999), eps=1e-8):
        self.problem = problem
        self.train_loss, self.val_loss, params, hparams = problem
        self.params, self.hparams = params, hparams
        self.w0, self.a0 = _flat(_leaves(params)), _flat(_leaves(hparams))
        self.optimizer, self.lr, self.momentum, self.betas, self.eps = optimizer, lr, momentum, betas, eps
        self.P = self.w0.numel()
        self.stochastic = len(inspect.signature(self.train_loss).parameters) == 3  # (w, alpha, t)
        self._trajectory = [(self.w0, self.state0())]  # grown on demand; shared by the methods checked
        self._jacobians, self._at_w_T = {}, {}

    # ---- the losses and the inner step on flat vectors ----

    def _w(self, w):
        return _unflat(w, _leaves(self.params), self.params)

    def _a(self, a):
        return _unflat(a, _leaves(self.hparams), self.hparams)

    def train(self, w, a, t: int):
        w, a = self._w(w), self._a(a)
        return self.train_loss(w, a, t) if self.stochastic else self.train_loss(w, a)

    def val(self, w, a):
        return self.val_loss(self._w(w), self._a(a))

    def grad_train(self, w, a, t: int):
        """grad_w train_loss(w, a, t), differentiable in w and a."""
        with torch.enable_grad():
            w = w if w.requires_grad else w.clone().requires_grad_()
            return torch.autograd.grad(self.train(w, a, t), w, create_graph=True)[0]

    def state0(self):
        return torch.zeros(self.P if self.optimizer == "sgd" else 2 * self.P, dtype=self.w0.dtype)

    def phi(self, w, s, a, t: int):
        """Step t (1-based: Adam's bias correction) from (w_{t-1}, s_{t-1}): (w_t, s_t)."""
        g = self.grad_train(w, a, t)
        lr = self.lr(self._a(a)) if callable(self.lr) else self.lr
        if isinstance(lr, tuple):  # a rate per tensor: spread over its coordinates
            lr = torch.cat([r * torch.ones(p.numel()) for r, p in zip(lr, _leaves(self.params))])
        if self.optimizer == "sgd":
            v = self.momentum * s + g
            return w - lr * v, v
        b1, b2 = self.betas
        m = b1 * s[:self.P] + (1 - b1) * g
        v = b2 * s[self.P:] + (1 - b2) * g * g
        denom = torch.sqrt(v) / (1 - b2**t) ** 0.5 + self.eps
        return w - lr / (1 - b1**t) * m / denom, torch.cat([m, v])

    # ---- the trajectory and its Jacobians, at alpha ----

    def trajectory(self, T: int):
        """[(w_0, s_0), ..., (w_T, s_T)] at alpha, detached."""
        while len(self._trajectory) <= T:
            w, s = self.phi(*self._trajectory[-1], self.a0, len(self._trajectory))
            self._trajectory.append((w.detach(), s.detach()))
        return self._trajectory[:T + 1]

    def jacobians(self, t: int) -> Jacobians:
        """Of step t, at (w_{t-1}, s_{t-1}, alpha)."""
        if t not in self._jacobians:
            w, s = self.trajectory(t)[t - 1]
            (ww, ws, wa), (sw, ss, sa) = jacobian(lambda w_, s_, a_: self.phi(w_, s_, a_, t), (w, s, self.a0))
            self._jacobians[t] = Jacobians(ww, ws, wa, sw, ss, sa)
        return self._jacobians[t]

    def inner_derivatives(self, T: int):
        """At w_T: the Hessian d(grad_w L_train)/dw (P x P) and d(grad_w L_train)/dalpha (P x H), of
        the last step's loss (t = T)."""
        if T not in self._at_w_T:
            w_T = self.w_T(T)
            self._at_w_T[T] = (jacobian(lambda w: self.grad_train(w, self.a0, T), w_T),
                               jacobian(lambda a: self.grad_train(w_T, a, T), self.a0))
        return self._at_w_T[T]

    def val_grads(self, w):
        """(grad_w val_loss(w, alpha), grad_alpha val_loss(w, alpha))."""
        return jacobian(self.val, (w, self.a0))

    def w_T(self, T: int):
        return self.trajectory(T)[-1][0]

    def val_at(self, a, T: int) -> float:
        """val_loss(w_T(a), a), forward only: for finite differences."""
        w, s = self.w0, self.state0()
        for t in range(1, T + 1):
            w, s = (x.detach() for x in self.phi(w, s, a, t))
        return float(self.val(w, a))


# ---- one reference per registered method ----------------------------------------------------------

def unrolled(ref: Reference, T: int, k: int):
    """grad_alpha L_val(w_T) + grad_w L_val(w_T) dw_T/dalpha, with dw_T/dalpha the product of the
    last k steps' Jacobians (w and s included), w_{T-k} and s_{T-k} held constant."""
    traj = ref.trajectory(T)
    dw = torch.zeros(ref.P, ref.a0.numel())
    ds = torch.zeros(len(traj[0][1]), ref.a0.numel())
    for t in range(T - k + 1, T + 1):
        J = ref.jacobians(t)
        dw, ds = J.ww @ dw + J.ws @ ds + J.wa, J.sw @ dw + J.ss @ ds + J.sa
    u, direct = ref.val_grads(traj[-1][0])
    return direct + u @ dw


def full(ref, T):
    return unrolled(ref, T, T)


def truncated(ref, T, *, k):
    return unrolled(ref, T, k)


def greedy(ref, T, *, gamma=0.9, variant="eq6", step_val_loss=None):
    """Equation 6: grad_alpha L_val(w_T) + sum_t gamma^(T-t) u_t B_t, B_t = dPhi/dalpha at (w_{t-1},
    s_{t-1}) with the state held constant; u_t = grad L_val(w_t) ("eq6"), grad L_val(w_T) ("final"),
    or grad of ``step_val_loss(w, alpha, t)`` for t < T when given."""
    traj = ref.trajectory(T)
    u_T, total = ref.val_grads(traj[-1][0])
    for t in range(1, T + 1):
        w_t = traj[t][0]
        if variant == "final" or t == T:
            u = u_T
        elif step_val_loss is not None:
            u = jacobian(lambda w: step_val_loss(ref._w(w), ref._a(ref.a0), t), w_t)
        else:
            u = ref.val_grads(w_t)[0]
        total = total + gamma ** (T - t) * (u @ ref.jacobians(t).wa)
    return total


def t1t2(ref, T):
    """grad_alpha L_val(w_T) + grad_w L_val(w_T) B_T: the last term of equation 6 only."""
    u, direct = ref.val_grads(ref.w_T(T))
    return direct + u @ ref.jacobians(T).wa


def ift(ref, T, *, terms=5, neumann_lr=None):
    """grad_alpha L_val - v eta sum_{j<=K} (I - eta H)^j d(grad_w L_train)/dalpha at w_T, dense H."""
    eta = ref.lr if neumann_lr is None else neumann_lr
    H, mixed = ref.inner_derivatives(T)
    step = torch.eye(ref.P) - eta * H
    series, power = torch.zeros(ref.P, ref.P), torch.eye(ref.P)
    for _ in range(terms + 1):
        series, power = series + power, power @ step
    v, direct = ref.val_grads(ref.w_T(T))
    return direct - eta * (v @ series @ mixed)


def fo(ref, T):
    """grad_alpha L_val(w_T) only."""
    return ref.val_grads(ref.w_T(T))[1]


REFERENCES = {"full": full, "truncated": truncated, "greedy": greedy, "t1t2": t1t2, "ift": ift, "fo": fo}
