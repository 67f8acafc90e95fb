"""Noisy-label splits for data hyper-cleaning on MNIST / Fashion-MNIST (torchvision)."""
from __future__ import annotations

import os
import socket
from typing import NamedTuple

import torch
from torch import Tensor

from ..rng import keyed_generator
from .common import DataError, torchvision

DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
SPLIT_SIZES = {"train": 60000, "test": 10000}  # both datasets; checked when the files are read
NOISE_MODELS = ("other", "any")  # what a corrupted label becomes: see corrupt()


def load_split(name: str, root: str, train: bool) -> tuple[Tensor, Tensor]:
    """``(images float [N, 1, 28, 28] in [0, 1], labels long [N])`` through torchvision, downloading
    when the files are missing and the network allows."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}")
    cls = getattr(torchvision().datasets, DATASETS[name])
    folder = os.path.join(root, DATASETS[name], "raw")
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    present = all(os.path.exists(os.path.join(folder, f)) for f in files)
    try:
        if not present:
            raise FileNotFoundError(folder)
        ds = cls(root, train=train, download=False)
    except FileNotFoundError:  # not there: try to download
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            ds = cls(root, train=train, download=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"{DATASETS[name]} is not under '{root}' and could not be downloaded ({type(e).__name__}); "
                            f"run `python -c \"import torchvision; torchvision.datasets.{DATASETS[name]}('{root}', "
                            f"download=True)\"` on a machine with internet, or copy the raw files to {folder}") from None
        finally:
            socket.setdefaulttimeout(old)
    except Exception as e:  # noqa: BLE001 - a truncated idx file fails in many ways
        raise DataError(f"cannot read {DATASETS[name]} under '{folder}' ({type(e).__name__}): the files are truncated "
                        "or corrupt; delete them and download again") from None
    expected = SPLIT_SIZES["train" if train else "test"]
    if ds.data.shape != (expected, 28, 28) or ds.targets.shape != (expected,):
        raise DataError(f"{DATASETS[name]} under '{folder}' has {tuple(ds.data.shape)} images, expected "
                        f"({expected}, 28, 28): the files are truncated or corrupt; download them again")
    return ds.data.unsqueeze(1).float().div_(255), ds.targets.long()


def corrupt(labels: Tensor, p: float, classes: int, gen: torch.Generator,
            model: str = "other") -> tuple[Tensor, Tensor]:
    """``(noisy labels, corrupted mask)``: each label is corrupted with probability ``p`` and then
    replaced by a class drawn uniformly from

    - ``other``: the *other* ``classes - 1`` classes, so a corrupted example always carries a wrong
      label and the realised noise rate is ``p`` in expectation;
    - ``any``: all ``classes`` classes, the true one included ("a random class", the method paper's
      words), so the realised noise rate is ``p (classes - 1) / classes`` in expectation.

    The mask marks the labels that are wrong, the examples a perfect cleaner would drop: under
    ``any`` a label redrawn as itself is clean (the oracle keeps it, detection need not flag it)."""
    if model not in NOISE_MODELS:
        raise ValueError(f"model must be one of {NOISE_MODELS}, got {model!r}")
    redrawn = torch.rand(labels.shape, generator=gen) < p
    if model == "other":
        offset = torch.randint(1, classes, labels.shape, generator=gen)
        return torch.where(redrawn, (labels + offset) % classes, labels), redrawn
    noisy = torch.where(redrawn, torch.randint(0, classes, labels.shape, generator=gen), labels)
    return noisy, noisy != labels


class CleaningData(NamedTuple):
    x_train: Tensor
    y_train: Tensor  # noisy labels
    y_clean: Tensor  # the true labels of the training examples
    corrupted: Tensor  # bool mask
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor


def make_cleaning_data(name: str, root: str, *, noise: float, seed: int, n_train: int = 1000,
                       protocol: str = "paper", n_val: int = 10000, noise_model: str = "other") -> CleaningData:
    """``n_train`` training examples drawn at random with noisy labels (:func:`corrupt`'s
    ``noise_model``). Protocol ``paper``: the whole test split is the (clean) validation set and the
    test set. ``heldout``: ``n_val`` clean validation examples from the training split, disjoint from
    the training examples; test split untouched."""
    x, y = load_split(name, root, train=True)
    x_test, y_test = load_split(name, root, train=False)
    gen = keyed_generator(seed, 0xC1EA)
    perm = torch.randperm(len(y), generator=gen)
    train_idx = perm[:n_train]
    noisy, mask = corrupt(y[train_idx], noise, 10, gen, noise_model)
    if protocol == "paper":
        x_val, y_val = x_test, y_test
    elif protocol == "heldout":
        val_idx = perm[n_train:n_train + n_val]
        x_val, y_val = x[val_idx], y[val_idx]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose paper or heldout")
    return CleaningData(x[train_idx], noisy, y[train_idx], mask, x_val, y_val, x_test, y_test)
