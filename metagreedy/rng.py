"""Random numbers from explicit keys: no global RNG anywhere in the library."""
from __future__ import annotations

import torch


def keyed_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from integer keys (seed, step, index, ...): the same keys give the same
    numbers on every machine."""
    h = 0
    for k in keys:
        h = (h * 1_000_003 + int(k) + 0x9E3779B9) % (2**63 - 1)
    return torch.Generator().manual_seed(h)
