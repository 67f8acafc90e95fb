"""The 2-D toy problem of the method paper (section 5.2, figure 2).

L_train(w, alpha) = 0.5 (w - alpha)^T G (w - alpha), G = diag(1, 1/2);
L_val(w) = ||w||^2 + 10 ||sin w||^2; w_0 = (2, 2) every outer step, alpha_0 = (1, 1).
Inner and outer plain SGD with lr 0.1. The exact hypergradient is closed form:
dw_T/dalpha = I - (I - lr G)^T, so every estimate's cosine to it is logged at every step.
"""
from __future__ import annotations

import torch

import metagreedy as mg
from harness.settings import fits_in_memory

from .common import TaskBase, element_bytes, graph, inner_arguments, method_arguments

DESCRIPTION = "the 2-D toy problem of figure 2 (closed-form exact hypergradient, its cosine logged)."
DEFAULTS = dict(
    inner_steps=10,  # the paper's figure shows T = 5 and 10 (its text says 5 and 20)
    momentum=0.0,  # plain SGD inside, as in the paper's toy
    outer_steps=1000,
    outer_lr=0.1,
    outer_optimizer="sgd",
    checkpoint_every=500,
    dtype="float64",  # tiny: float64 keeps the cosines free of round-off
)
SETTINGS = []  # the common settings are all it has

G = (1.0, 0.5)


def train_loss(w, alpha):
    g = torch.tensor(G, dtype=w["w"].dtype)
    return 0.5 * ((w["w"] - alpha["alpha"]) ** 2 * g).sum()


def val_loss(w, alpha):
    return (w["w"] ** 2).sum() + 10 * (torch.sin(w["w"]) ** 2).sum()


def exact_hypergradient(alpha: torch.Tensor, T: int, lr: float, w0: torch.Tensor) -> torch.Tensor:
    g = torch.tensor(G, dtype=alpha.dtype)
    decay = (1 - lr * g) ** T
    w_T = alpha + decay * (w0 - alpha)
    return (2 * w_T + 20 * torch.sin(w_T) * torch.cos(w_T)) * (1 - decay)


def check(cfg) -> None:
    fits_in_memory(memory(cfg))


def memory(cfg) -> dict:
    """A lower bound of the bytes of the graph of the inner steps a hypergradient keeps (--method full:
    all of them): each holds w_t, its momentum and its gradient, two numbers each."""
    return graph(cfg, 3 * 2 * element_bytes(cfg))


def run_name(cfg) -> str:
    return f"toy-{cfg.method}-seed{cfg.seed}"


def run_group(cfg) -> str:
    return f"toy/T{cfg.inner_steps}/{cfg.method}"


class Task(TaskBase):
    progress = ("cosine",)

    def __init__(self, cfg, device, dtype):
        self.cfg, self.dtype = cfg, dtype
        self.w0 = {"w": torch.tensor([2.0, 2.0], dtype=dtype)}
        self.hparams = {"alpha": torch.tensor([1.0, 1.0], dtype=dtype, requires_grad=True)}

    def info(self) -> dict:
        return {"dataset": "toy"}

    def _estimate(self, method):
        return mg.hypergradient(train_loss, val_loss, self.w0, self.hparams, **inner_arguments(self.cfg),
                                **method_arguments(self.cfg, method))

    def hypergradient(self, step, members):
        res = self._estimate(self.cfg.method)
        if self.cfg.momentum == 0.0 and self.cfg.inner_optimizer == "sgd":
            exact = exact_hypergradient(self.hparams["alpha"].detach(), self.cfg.inner_steps, self.cfg.inner_lr,
                                        self.w0["w"])
        else:
            exact = self._estimate("full").grad["alpha"]
        cosine = cosine_or_nan(res.grad["alpha"], exact)
        metrics = {"val_loss": res.val_loss, "train_loss": res.train_loss, "cosine": cosine, "vjps": res.vjps,
                   "exact_norm": exact.norm().item(),
                   "alpha_0": self.hparams["alpha"][0].item(), "alpha_1": self.hparams["alpha"][1].item()}
        return res.grad, metrics, 1

    def final(self):
        res = self._estimate("fo")
        return {"val_loss": res.val_loss, "alpha": self.hparams["alpha"].detach().tolist()}


def cosine_or_nan(a: torch.Tensor, b: torch.Tensor, tiny: float = 1e-12) -> float:
    """Cosine similarity, NaN where either vector is (numerically) zero and the angle means nothing."""
    na, nb = a.norm().item(), b.norm().item()
    return float("nan") if na < tiny or nb < tiny else (a @ b).item() / (na * nb)
