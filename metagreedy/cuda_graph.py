"""A function of tensors captured once in a CUDA graph, then replayed.

An outer step of the Omniglot experiment launches thousands of small kernels (T inner steps, one
VJP each, for a vmapped meta-batch of a small network): on a GPU the launches, not the arithmetic,
bound its speed. :class:`Replay` runs ``fn`` a few times eagerly (cuDNN and the allocator settle),
captures one call in a CUDA graph, and from then on copies new inputs into the captured input
buffers and replays the graph: the same kernels on the same addresses, launched at once.

What ``fn`` may do: read its tensor inputs and any tensors that keep their storage between calls
(hyperparameters updated in place by an optimizer are read afresh at each replay); no host syncs
(``.item()``, ``float(tensor)``; the estimators' final-loss check is deferred inside the capture,
and the caller checks the losses with :func:`metagreedy.estimators.finite` after each call); the
inputs' shapes, dtypes and devices must be those of the first call. The outputs are the graph's
own tensors: the next call overwrites them, so copy what must outlive it.
"""
from __future__ import annotations

from typing import Callable

import torch

from .estimators import deferred_finite_checks


class Replay:
    def __init__(self, fn: Callable, warmup: int = 3):
        self.fn, self.warmup = fn, warmup
        self.graph, self.inputs, self.out = None, None, None

    def __call__(self, *inputs: torch.Tensor):
        if self.graph is None:
            self._capture(inputs)
        else:
            signature = [(x.shape, x.dtype, x.device) for x in inputs]
            if signature != [(x.shape, x.dtype, x.device) for x in self.inputs]:
                raise ValueError("Replay: the inputs' shapes, dtypes or devices differ from those captured")
            for buffer, x in zip(self.inputs, inputs):
                buffer.copy_(x)
        self.graph.replay()
        return self.out

    def _capture(self, inputs) -> None:
        if not all(x.is_cuda for x in inputs):
            raise ValueError("Replay: CUDA graphs need inputs on a CUDA device")
        self.inputs = tuple(x.clone() for x in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with deferred_finite_checks(), torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with deferred_finite_checks(), torch.cuda.graph(graph):
            self.out = self.fn(*self.inputs)
        self.graph = graph
