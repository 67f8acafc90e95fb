"""Plain classification splits of MNIST / Fashion-MNIST for mini-batch training (the long-horizon
task), and a small synthetic stand-in with the same shapes for tests and offline runs."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..rng import keyed_generator
from .cleaning import SPLIT_SIZES, load_split

CLASSES = 10
PIXELS = 28 * 28


class Splits(NamedTuple):
    x_train: Tensor  # float [N, 784] in [0, 1]: the pool the mini-batches are drawn from
    y_train: Tensor  # long [N]
    x_val: Tensor  # held-out examples of the training split, disjoint from x_train: the outer loss
    y_val: Tensor
    x_test: Tensor  # the test split
    y_test: Tensor


def synthetic_digits(n: int, seed: int, salt: int = 0) -> tuple[Tensor, Tensor]:
    """``n`` examples of 10 classes, each a fixed random 28x28 prototype plus noise, clipped to [0, 1]:
    MNIST's shapes and range, nothing to download. The prototypes depend on ``seed`` only; ``salt``
    draws another set of examples of the same classes."""
    prototypes = torch.rand(CLASSES, PIXELS, generator=keyed_generator(seed, 0xD161)) ** 3
    gen = keyed_generator(seed, salt, 0xD162)
    y = torch.randint(CLASSES, (n,), generator=gen)
    x = (prototypes[y] + 0.35 * torch.randn(n, PIXELS, generator=gen)).clamp(0, 1)
    return x, y


def make_splits(name: str, root: str, *, seed: int, n_train: int, n_val: int, n_test: int = 0) -> Splits:
    """``n_train`` training and ``n_val`` validation examples drawn at random, without overlap, from
    the training split of ``name`` (mnist, fashion_mnist or synthetic), and the test split (its first
    ``n_test`` examples when given). Images flattened to 784 values in [0, 1]."""
    if name == "synthetic":
        n_test = n_test or 2000
        (x, y), (xv, yv), (xt, yt) = (synthetic_digits(n, seed, salt) for salt, n in
                                      enumerate((n_train, n_val, n_test)))
        return Splits(x, y, xv, yv, xt, yt)
    if n_train + n_val > SPLIT_SIZES["train"]:
        raise ValueError(f"n_train + n_val = {n_train + n_val} is more than the {SPLIT_SIZES['train']} training examples")
    x, y = load_split(name, root, train=True)
    x_test, y_test = load_split(name, root, train=False)
    perm = torch.randperm(len(y), generator=keyed_generator(seed, 0xD163))
    train_idx, val_idx = perm[:n_train], perm[n_train:n_train + n_val]
    if n_test:
        x_test, y_test = x_test[:n_test], y_test[:n_test]
    flat = lambda t: t.reshape(len(t), PIXELS)  # noqa: E731
    return Splits(flat(x[train_idx]), y[train_idx], flat(x[val_idx]), y[val_idx], flat(x_test), y_test)
