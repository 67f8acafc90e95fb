"""A built-in synthetic alphabet: procedurally drawn character classes for offline runs and tests.

Each class is a few random strokes (quadratic Bezier curves); each of its drawings perturbs the
control points, applies a small random affine warp and varies the pen width, the way different
people draw the same character. Everything is a function of (seed, class index): deterministic.
The full alphabet takes seconds to draw, so it is cached in memory and on disk (``cache.py``)."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..rng import keyed_generator
from .cache import cached
from .common import DRAWINGS, IMAGE_SIZE

F32 = torch.float32  # fixed, so the alphabet does not depend on torch's default dtype
GENERATOR_VERSION = 1  # part of the cache key: bump it whenever any drawing changes
CHUNK = 8  # classes per distance computation: large enough to amortise each op, small enough for the CPU cache
POINTS = 24  # points per stroke


def _strokes(gen: torch.Generator, drawings: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One class: its strokes as ``POINTS`` points each, warped per drawing (``[D, S*POINTS, 2]``, (x, y)
    in [0, 1]), and the pen width of each drawing (``[D, 1]``). Every random draw of the class is made
    here, in a fixed order."""
    strokes = int(torch.randint(1, 5, (), generator=gen))
    control = 0.15 + 0.7 * torch.rand(strokes, 3, 2, generator=gen, dtype=F32)  # the class: its strokes
    jitter = 0.035 * torch.randn(drawings, strokes, 3, 2, generator=gen, dtype=F32)
    pts = control + jitter  # [D, S, 3, 2]
    s = torch.linspace(0, 1, POINTS, dtype=F32)[:, None]
    curve = ((1 - s) ** 2 * pts[:, :, None, 0] + 2 * s * (1 - s) * pts[:, :, None, 1]
             + s**2 * pts[:, :, None, 2]).reshape(drawings, -1, 2)  # [D, S*POINTS, 2]
    angle = 0.15 * torch.randn(drawings, generator=gen, dtype=F32)
    scale = 1 + 0.06 * torch.randn(drawings, generator=gen, dtype=F32)
    shift = 0.04 * torch.randn(drawings, 2, generator=gen, dtype=F32)
    rot = torch.stack([torch.stack([angle.cos(), -angle.sin()], -1), torch.stack([angle.sin(), angle.cos()], -1)], -2)
    curve = (curve - 0.5) @ (rot * scale[:, None, None]).transpose(1, 2) + 0.5 + shift[:, None, :]
    width = 0.035 + 0.015 * torch.rand(drawings, 1, generator=gen, dtype=F32)
    return curve, width


def _pixel_rows(size: int, rows: int) -> torch.Tensor:
    """The pixel centres as the left operand of torch.cdist's matrix-product form
    ``[-2 x, |x|^2, 1]``, repeated ``rows`` times: ``[rows, size*size, 4]``."""
    axis = (torch.arange(size, dtype=F32) + 0.5) / size
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)[:, [1, 0]]  # (x, y)
    grid = grid.expand(rows, -1, -1).contiguous()
    return torch.cat([grid.mul(-2), grid.pow(2).sum(-1, keepdim=True), torch.ones(rows, size * size, 1, dtype=F32)], -1)


def _ink(curves: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, size, size]`` drawings of ``curves`` ``[N, points, 2]`` with pen ``widths`` ``[N, 1]``.

    The squared distances are torch.cdist's own matrix product (the operands are built as its
    ``_euclidean_dist`` builds them), so they are the same bits as the cdist this alphabet was
    first drawn with; the minimum is taken before the clamp and square root, which are monotone,
    so only one value per pixel goes through them."""
    right = torch.cat([curves, torch.ones(*curves.shape[:2], 1, dtype=F32), curves.pow(2).sum(-1, keepdim=True)], -1)
    squared = _pixel_rows(size, len(curves)).matmul(right.mT)  # [N, size*size, points]
    dist = squared.min(-1).values.clamp_min_(0).sqrt_()
    ink = ((widths - dist) / (1.0 / size) + 0.5).clamp(0, 1)
    return (255 * ink).round().to(torch.uint8).reshape(-1, size, size)


@contextmanager
def _one_thread():
    """Each op here is milliseconds of work: handing it to a second thread costs more than it
    saves, by far on a busy machine (1623 classes, 2 cores under load: 60 s with 2 threads, 5 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _draw(classes: int, seed: int, size: int) -> torch.Tensor:
    """The alphabet, drawn ``CHUNK`` classes at a time among classes with the same number of strokes
    (so every batch has one shape and each drawing is exactly what drawing it alone gives)."""
    images = torch.empty(classes, DRAWINGS, size, size, dtype=torch.uint8)
    with _one_thread():
        drawn = [_strokes(keyed_generator(seed, c), DRAWINGS) for c in range(classes)]
        by_points: dict[int, list[int]] = {}
        for c, (curve, _) in enumerate(drawn):
            by_points.setdefault(curve.shape[1], []).append(c)
        for members in by_points.values():
            for start in range(0, len(members), CHUNK):
                chunk = members[start:start + CHUNK]
                curves = torch.cat([drawn[c][0] for c in chunk])
                widths = torch.cat([drawn[c][1] for c in chunk])
                images[chunk] = _ink(curves, widths, size).view(len(chunk), DRAWINGS, size, size)
    return images


def synthetic_alphabet(classes: int = 1623, seed: int = 0, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 [classes, 20, size, size], ink = 255, like :func:`load_omniglot`'s images. Class ``c``
    depends on ``(seed, c, size)`` only. The result is the caller's own tensor (not the cached one)."""
    key = {"version": GENERATOR_VERSION, "classes": classes, "seed": seed, "size": size}
    images, _ = cached("synthetic", key, lambda: (_draw(classes, seed, size), {}),
                       shape=(classes, DRAWINGS, size, size))
    return images
