"""A built-in synthetic alphabet: procedurally drawn character classes for offline runs and tests.

Each class is a few random strokes (quadratic Bezier curves); each of its drawings perturbs the
control points, applies a small random affine warp and varies the pen width, the way different
people draw the same character. Everything is a function of (seed, class index): deterministic."""
from __future__ import annotations


import torch

from ..rng import keyed_generator

DRAWINGS = 20
F32 = torch.float32  # fixed, so the alphabet does not depend on torch's default dtype


def _draw_class(gen: torch.Generator, size: int, drawings: int) -> torch.Tensor:
    strokes = int(torch.randint(1, 5, (), generator=gen))
    control = 0.15 + 0.7 * torch.rand(strokes, 3, 2, generator=gen, dtype=F32)  # the class: its strokes
    jitter = 0.035 * torch.randn(drawings, strokes, 3, 2, generator=gen, dtype=F32)
    pts = control + jitter  # [D, S, 3, 2]
    s = torch.linspace(0, 1, 24, dtype=F32)[:, None]
    curve = ((1 - s) ** 2 * pts[:, :, None, 0] + 2 * s * (1 - s) * pts[:, :, None, 1]
             + s**2 * pts[:, :, None, 2]).reshape(drawings, -1, 2)  # [D, S*24, 2]
    angle = 0.15 * torch.randn(drawings, generator=gen, dtype=F32)
    scale = 1 + 0.06 * torch.randn(drawings, generator=gen, dtype=F32)
    shift = 0.04 * torch.randn(drawings, 2, generator=gen, dtype=F32)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    curve = (curve - 0.5) @ (rot * scale[:, None, None]).transpose(1, 2) + 0.5 + shift[:, None, :]
    axis = (torch.arange(size, dtype=F32) + 0.5) / size
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)[:, [1, 0]]  # (x, y)
    dist = torch.cdist(grid.expand(drawings, -1, -1), curve).min(-1).values  # [D, size*size]
    width = 0.035 + 0.015 * torch.rand(drawings, 1, generator=gen, dtype=F32)
    ink = ((width - dist) / (1.0 / size) + 0.5).clamp(0, 1)
    return (255 * ink).round().to(torch.uint8).reshape(drawings, size, size)


def synthetic_alphabet(classes: int = 1623, seed: int = 0, size: int = 28) -> torch.Tensor:
    """uint8 [classes, 20, size, size], ink = 255, like :func:`load_omniglot`'s images."""
    return torch.stack([_draw_class(keyed_generator(seed, c), size, DRAWINGS) for c in range(classes)])


