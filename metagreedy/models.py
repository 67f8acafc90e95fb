"""Networks of the experiments."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def conv_block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    # parameter-free batch norm (batch statistics, no running state): nothing in it to adapt or
    # warp, and no state leaks from one task to the next. It removes the per-channel mean, so a conv
    # bias would get an exactly-zero gradient (round-off that Adam would blow up): no bias.
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, affine=False, track_running_stats=False),
              nn.ReLU()]
    return layers + [nn.MaxPool2d(2)] if pool else layers


class WarpConvNet(nn.Module):
    """Six 3x3 convolutions with ``channels`` channels on 28x28 inputs, then a linear head.

    Layers 2, 4 and 6 (``warp2``, ``warp4``, ``warp6``) are warp layers: hyperparameters, never
    adapted in the inner loop. Layers 1, 3, 5 (``task1``, ``task3``, ``task5``) and the ``head`` are
    adapted per task. Each warp layer is followed by a 2x2 max pool: 28 -> 14 -> 7 -> 3."""

    WARP = ("warp2.", "warp4.", "warp6.")

    def __init__(self, ways: int, channels: int = 32, in_channels: int = 1):
        super().__init__()
        c = channels
        self.task1 = nn.Sequential(*conv_block(in_channels, c, pool=False))
        self.warp2 = nn.Sequential(*conv_block(c, c, pool=True))
        self.task3 = nn.Sequential(*conv_block(c, c, pool=False))
        self.warp4 = nn.Sequential(*conv_block(c, c, pool=True))
        self.task5 = nn.Sequential(*conv_block(c, c, pool=False))
        self.warp6 = nn.Sequential(*conv_block(c, c, pool=True))
        self.head = nn.Linear(c * 3 * 3, ways)

    def forward(self, x):
        for block in (self.task1, self.warp2, self.task3, self.warp4, self.task5, self.warp6):
            x = block(x)
        return self.head(x.flatten(1))


class CleaningConvNet(nn.Module):
    """The hyper-cleaning model: three 3x3 convolutions with ``channels`` channels (stride 2) and a
    linear classifier, for 28x28 grey images."""

    def __init__(self, classes: int = 10, channels: int = 8):
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1), nn.ReLU(),  # 14x14
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),  # 7x7
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),  # 4x4
        )
        self.classifier = nn.Linear(c * 4 * 4, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def linear_init(in_features: int, out_features: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(weight, bias)`` of a fresh ``nn.Linear(in_features, out_features)`` (its default
    initialisation: both uniform in +-1/sqrt(in_features)), drawn from a generator keyed by
    (seed, out_features, in_features) instead of the global one."""
    from .rng import keyed_generator
    gen, bound = keyed_generator(seed, out_features, in_features), in_features ** -0.5
    weight = (torch.rand(out_features, in_features, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(out_features, generator=gen) * 2 - 1) * bound
    return weight, bias


def default_init(shapes: dict, gen: torch.Generator, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Fresh parameters of the given shapes (``{name: shape}``), drawn as torch's default
    initialisation of ``nn.Conv2d`` and ``nn.Linear`` draws them, but from ``gen``: a weight
    ``[out, in, ...]`` kaiming-uniform with a = sqrt(5), i.e. uniform in +-1/sqrt(fan_in), fan_in =
    in x the kernel's size; a bias ``<layer>.bias`` uniform in +-1/sqrt(fan_in) of ``<layer>.weight``.
    Drawn in the order given, in ``dtype`` (float32 by default, so a float64 run starts from the same
    numbers)."""
    out = {}
    for name, shape in shapes.items():
        weight = shapes[name.removesuffix("bias") + "weight"] if name.endswith("bias") else shape
        fan_in = math.prod(weight[1:])
        out[name] = (torch.rand(tuple(shape), generator=gen, dtype=dtype) * 2 - 1) * fan_in ** -0.5
    return out
