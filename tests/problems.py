"""Tiny bilevel problems for the tests, each as (train_loss, val_loss, params, hparams), and an
independent reference: explicit Jacobians with torch.autograd.functional, no metagreedy code."""
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

TOY_G = torch.tensor([1.0, 0.5], dtype=torch.float64)


def toy():
    """The paper's 2-D toy problem (section 5.2)."""
    def train_loss(w, a):
        return 0.5 * ((w[0] - a[0]) ** 2 * TOY_G).sum()

    def val_loss(w, a):
        return (w[0] ** 2).sum() + 10 * (torch.sin(w[0]) ** 2).sum()

    return train_loss, val_loss, [torch.tensor([2.0, 2.0])], [torch.tensor([1.0, 1.0], requires_grad=True)]


def quadratic(gen, n=4, h=3):
    """A random strongly convex quadratic inner problem with a linear coupling to alpha, and an
    outer loss that also depends on alpha directly."""
    A = torch.randn(n, n, generator=gen)
    H = A @ A.T / n + 0.5 * torch.eye(n)
    C = torch.randn(n, h, generator=gen)
    target = torch.randn(n, generator=gen)

    def train_loss(w, a):
        return 0.5 * w[0] @ H @ w[0] - w[0] @ (C @ a[0])

    def val_loss(w, a):
        return ((w[0] - target) ** 2).sum() + 0.1 * (a[0] ** 2).sum()

    return train_loss, val_loss, [torch.randn(n, generator=gen)], [torch.randn(h, generator=gen).requires_grad_()]


def weighted_logreg(gen, n=12, d=3, k=3):
    """Logistic regression with per-example weights sigmoid(alpha_i) (hyper-cleaning in miniature)."""
    X, Xv = torch.randn(n, d, generator=gen), torch.randn(8, d, generator=gen)
    y, yv = torch.randint(k, (n,), generator=gen), torch.randint(k, (8,), generator=gen)

    def train_loss(w, a):
        ce = F.cross_entropy(X @ w["W"] + w["b"], y, reduction="none")
        return (torch.sigmoid(a["weights"]) * ce).mean()

    def val_loss(w, a):
        return F.cross_entropy(Xv @ w["W"] + w["b"], yv)

    params = {"W": 0.1 * torch.randn(d, k, generator=gen), "b": torch.zeros(k)}
    return train_loss, val_loss, params, {"weights": torch.randn(n, generator=gen).requires_grad_()}


def mlp(gen, d=3, hidden=5):
    """A small MLP whose first layer is a hyperparameter (a warp layer) and whose second is adapted;
    a scalar log weight decay is a second hyperparameter."""
    X, Xv = torch.randn(10, d, generator=gen), torch.randn(6, d, generator=gen)
    y, yv = torch.randn(10, generator=gen), torch.randn(6, generator=gen)

    def out(w, a, x):
        return torch.tanh(x @ a[0]) @ w[0] + w[1]

    def train_loss(w, a):
        return ((out(w, a, X) - y) ** 2).mean() + torch.exp(a[1]) * (w[0] ** 2).sum()

    def val_loss(w, a):
        return ((out(w, a, Xv) - yv) ** 2).mean()

    params = (0.3 * torch.randn(hidden, generator=gen), torch.zeros(()))
    hparams = (torch.randn(d, hidden, generator=gen).requires_grad_(), torch.tensor(-2.0, requires_grad=True))
    return train_loss, val_loss, params, hparams


# ---- the independent reference: explicit Jacobians of a flat-vector momentum SGD -------------

def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def _unflat(vec, like):
    out, i = [], 0
    for t in like:
        out.append(vec[i:i + t.numel()].reshape(t.shape))
        i += t.numel()
    return out


class Flat:
    """A problem on flat vectors w (P,), alpha (H,) with structure restored for the losses."""

    def __init__(self, train_loss, val_loss, params, hparams):
        self.wrap_w = (lambda l: dict(zip(params, l))) if isinstance(params, dict) else (lambda l: l)
        self.wrap_a = (lambda l: dict(zip(hparams, l))) if isinstance(hparams, dict) else (lambda l: l)
        self.w_like = list(params.values()) if isinstance(params, dict) else list(params)
        self.a_like = list(hparams.values()) if isinstance(hparams, dict) else list(hparams)
        self.tl, self.vl = train_loss, val_loss
        self.w0, self.a0 = _flat(self.w_like).detach(), _flat(self.a_like).detach()

    def train(self, w, a):
        return self.tl(self.wrap_w(_unflat(w, self.w_like)), self.wrap_a(_unflat(a, self.a_like)))

    def val(self, w, a):
        return self.vl(self.wrap_w(_unflat(w, self.w_like)), self.wrap_a(_unflat(a, self.a_like)))

    def g(self, w, a):
        return torch.autograd.grad(self.train(w, a), w, create_graph=True)[0]

    def phi(self, w, v, a, lr, momentum):
        """One momentum SGD step on flat vectors, differentiable in all three inputs."""
        v = momentum * v + self.g(w, a)
        return w - lr * v, v

    def unroll(self, a, T, lr, momentum):
        w, v = self.w0.clone().requires_grad_(), torch.zeros_like(self.w0)
        traj = [w]
        for _ in range(T):
            w, v = self.phi(w, v, a, lr, momentum)
            traj.append(w)
        return traj

    def exact(self, T, lr, momentum):
        """d val_loss(w_T(alpha), alpha) / d alpha from the full Jacobian dw_T/dalpha."""
        f = lambda a: self.val(self.unroll(a, T, lr, momentum)[-1], a)  # noqa: E731
        return jacobian(f, self.a0)

    def greedy(self, T, lr, momentum, gamma, final=False, step_val=None):
        """Equation 6 with B_t = dPhi(w_{t-1}, v_{t-1}, alpha)/dalpha as an explicit P x H matrix;
        ``step_val(w, alpha, t)`` (flat) in place of the validation loss in the terms t < T."""
        a0 = self.a0
        w, v = self.w0.clone(), torch.zeros_like(self.w0)
        ws, Bs = [], []
        for _ in range(T):
            wd, vd = w.detach(), v.detach()
            Bs.append(jacobian(lambda a: self.phi(wd.requires_grad_(), vd, a, lr, momentum)[0], a0))
            with torch.enable_grad():
                w, v = self.phi(wd.requires_grad_(), vd, a0, lr, momentum)
            w, v = w.detach(), v.detach()
            ws.append(w)
        gval = lambda w_: jacobian(lambda x: self.val(x, a0), w_)  # noqa: E731
        total = jacobian(lambda a: self.val(ws[-1], a), a0)
        for t in range(T):
            u = gval(ws[-1]) if final else gval(ws[t])
            if step_val is not None and t + 1 < T:
                u = jacobian(lambda x: step_val(x, a0, t + 1), ws[t])
            total = total + gamma ** (T - 1 - t) * (u @ Bs[t])
        return total
