"""Tiny bilevel problems for the tests, each as (train_loss, val_loss, params, hparams); the
references they are checked against are in references.py."""
import torch
import torch.nn.functional as F

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


def minibatch_logreg(gen, n=24, batch=5, d=3, k=3, steps=16):
    """weighted_logreg on mini-batches: step t trains on its own ``batch`` examples, indexed by t
    (1-based, drawn once here, as a loader drawn once per hypergradient), with a learned log weight
    decay; the inner loss differs at every step. t = 0 or t > ``steps`` is an error."""
    X, Xv = torch.randn(n, d, generator=gen), torch.randn(8, d, generator=gen)
    y, yv = torch.randint(k, (n,), generator=gen), torch.randint(k, (8,), generator=gen)
    batches = [None] + [torch.randperm(n, generator=gen)[:batch] for _ in range(steps)]

    def train_loss(w, a, t):
        idx = batches[t]
        ce = F.cross_entropy(X[idx] @ w["W"] + w["b"], y[idx], reduction="none")
        return (torch.sigmoid(a["weights"][idx]) * ce).mean() + torch.exp(a["decay"]) * (w["W"] ** 2).sum()

    def val_loss(w, a):
        return F.cross_entropy(Xv @ w["W"] + w["b"], yv)

    params = {"W": 0.1 * torch.randn(d, k, generator=gen), "b": torch.zeros(k)}
    hparams = {"weights": torch.randn(n, generator=gen).requires_grad_(), "decay": torch.tensor(-3.0, requires_grad=True)}
    return train_loss, val_loss, params, hparams


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


def learned_lr(gen):
    """The quadratic with the inner learning rate as a second hyperparameter (hparams[1], a scalar)."""
    train_loss, val_loss, params, hparams = quadratic(gen)
    lr = torch.tensor(0.05, requires_grad=True)
    return (lambda w, a: train_loss(w, a[:1]), lambda w, a: val_loss(w, a[:1]) + a[1] ** 2, params,
            [hparams[0], lr])


def layer_lrs(gen):
    """The mlp with a log learning rate per tensor of params (hparams[2], two values) besides its warp
    layer and weight decay: lr = (exp(a[2][0]), exp(a[2][1]))."""
    train_loss, val_loss, params, hparams = mlp(gen)
    log_lr = torch.tensor([-2.0, -3.0], requires_grad=True)
    return (lambda w, a: train_loss(w, a[:2]), lambda w, a: val_loss(w, a[:2]) + 0.1 * (a[2] ** 2).sum(), params,
            [*hparams, log_lr])


PROBLEMS = {"quadratic": quadratic, "weighted_logreg": weighted_logreg, "mlp": mlp, "minibatch": minibatch_logreg}


def flat(tree):
    """A tensor, list/tuple or dict of tensors as one vector (hypergradients, to compare with references)."""
    leaves = tree.values() if isinstance(tree, dict) else (tree if isinstance(tree, (list, tuple)) else [tree])
    return torch.cat([t.reshape(-1) for t in leaves])
