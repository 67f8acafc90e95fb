"""Meta-batches split across processes with ``torch.distributed`` (launched by ``torchrun``):
each rank takes every ``world``-th task of the meta-batch, hypergradients are summed with all-reduce."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def _count(name: str, default: str) -> int:
    """A count torchrun puts in the environment; a garbled one is refused in one line."""
    text = os.environ.get(name, default).strip()
    if not (text.isascii() and text.isdigit() and len(text) < 7):
        from .settings import UsageError, brief
        raise UsageError(f"{name}={brief(text)} is not a process count (torchrun sets it); unset it for one process")
    return int(text)


class World:
    def __init__(self):
        self.size, self.rank = max(1, _count("WORLD_SIZE", "1")), _count("RANK", "0")
        self.active = self.size > 1
        if self.active and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def members(self, meta_batch: int) -> list[int]:
        """The meta-batch positions this rank computes."""
        return list(range(self.rank, meta_batch, self.size))

    def sum(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.active:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        out, i = [], 0
        for t in tensors:
            out.append(flat[i:i + t.numel()].view_as(t))
            i += t.numel()
        return out

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
