"""Omniglot meta-training throughput on a GPU: the candidates for faster outer steps, measured.

One outer step of the 5-way 1-shot experiment (10 queries per class, T = 5, the batched path) is
timed as train.py runs it (``Task.hypergradient``: the meta-batch to the device, the vmapped
hypergradient, the host syncs), in 5-way tasks per second, for:

- precision: float32 with TF32 off (the default) / on, and float64;
- meta-batch 16 against 64 in one computation (what running four seeds as one vmapped
  computation could at best give);
- the whole meta-batch hypergradient captured once in a CUDA graph and replayed (static shapes;
  the episodes are copied into the graph's input buffers), checked against the eager result;
- several processes side by side on one GPU (how the campaign runs its cells), eager and graphed.

    python bench/throughput.py --device cuda             # writes docs/PERFORMANCE.md's throughput section
    python bench/throughput.py --device cpu --seconds 2 --no-write   # a rehearsal (no graphs on a CPU)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metagreedy import config, estimators  # noqa: E402


def make_task(meta_batch, method, device, dtype):
    import tasks
    from metagreedy.data import get_tasksets
    tasksets = get_tasksets("synthetic", 5, 1, 10, synthetic_classes=(100, 20))
    cfg = config.resolve(["--task", "omniglot", "--meta-batch", str(meta_batch), "--loop", "batched",
                          *method.split()], tasks.defaults)
    return tasks.load("omniglot").Task(cfg, device, dtype, tasksets=tasksets)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def no_host_sync():
    """The estimators' one host sync, the final losses' finiteness check, left out while a graph is
    captured (a capture cannot wait for the GPU); the graphed step checks the losses after replay."""
    finite = estimators._finite
    estimators._finite = lambda name, loss: loss
    try:
        yield
    finally:
        estimators._finite = finite


class Graphed:
    """``Task.batched_estimate_on`` captured once in a CUDA graph; ``step`` copies a meta-batch's
    episodes into the graph's input buffers, replays it and returns the hypergradient (sum over
    the tasks, as ``Task.hypergradient``) and the losses."""

    def __init__(self, task, step=0):
        self.task, mb = task, task.cfg.meta_batch
        self.inputs = task.stack([task.train_tasks[step * mb + j] for j in range(mb)])
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with no_host_sync(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up outside the capture (cuDNN's choices, the allocator)
                task.batched_estimate_on(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with no_host_sync(), torch.cuda.graph(self.graph):
            self.out = task.batched_estimate_on(*self.inputs)

    def step(self, step):
        mb = self.task.cfg.meta_batch
        for buf, new in zip(self.inputs, self.task.stack([self.task.train_tasks[step * mb + j] for j in range(mb)])):
            buf.copy_(new)
        self.graph.replay()
        res, acc, n = self.out
        losses = estimators._finite("train_loss", res.train_loss), estimators._finite("val_loss", res.val_loss)
        return {k: g * n for k, g in res.grad.items()}, losses, acc.mean().item()


def measure(mode, meta_batch, method, device, dtype, tf32, seconds):
    """Tasks per second over ``seconds`` of outer steps (after two untimed ones)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    task = make_task(meta_batch, method, device, dtype)
    members = list(range(meta_batch))
    run = Graphed(task).step if mode == "graph" else lambda s: task.hypergradient(s, members)
    run(0), run(1)
    sync(device)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        run(2 + steps)
        steps += 1
    sync(device)
    return meta_batch * steps / (time.perf_counter() - t0)


def graph_agreement(method, device, meta_batch):
    """Largest relative difference, over the warp layers, between the graphed and the eager
    hypergradient of the same meta-batches (float32, TF32 off)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    task = make_task(meta_batch, method, device, torch.float32)
    graphed, worst = Graphed(task), 0.0
    for step in (0, 5):
        eager, _, _ = task.hypergradient(step, list(range(meta_batch)))
        got, _, _ = graphed.step(step)
        worst = max(worst, max(((got[k] - eager[k]).norm() / eager[k].norm()).item() for k in eager))
    return worst


def side_by_side(n, mode, meta_batch, method, device, seconds):
    """Aggregate tasks/s of ``n`` processes, each timing ``mode``, started together."""
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode, f"--method={method}", "--device", str(device),
                               "--meta-batch", str(meta_batch), "--seconds", str(seconds)], stdout=subprocess.PIPE,
                              text=True) for _ in range(n)]
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["tasks_per_s"] for p in procs]
    return sum(rates), rates


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    p.add_argument("--method", default="--method greedy --gamma 0.9")
    p.add_argument("--parallel", type=int, nargs="+", default=[4], help="processes side by side")
    p.add_argument("--meta-batch", type=int, default=16, help="the experiment's; four times it is also measured")
    p.add_argument("--worker", choices=("eager", "graph"), help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.worker:
        print(json.dumps({"tasks_per_s": measure(args.worker, args.meta_batch, args.method, device, torch.float32, False,
                                                 args.seconds)}), flush=True)
        return
    graphs = device.type == "cuda"
    rows = []

    def row(label, fn):
        try:
            value = fn()
        except Exception as e:  # a candidate that fails is reported, and the others still measured
            value = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        rows.append((label, value))
        print(label, value, flush=True)

    mb, big = args.meta_batch, 4 * args.meta_batch
    single = [(f"eager, float32, TF32 off, meta-batch {mb}", "eager", mb, torch.float32, False),
              (f"eager, float32, TF32 on, meta-batch {mb}", "eager", mb, torch.float32, True),
              (f"eager, float64, meta-batch {mb}", "eager", mb, torch.float64, False),
              (f"eager, float32, TF32 off, meta-batch {big}", "eager", big, torch.float32, False)]
    if graphs:
        single += [(f"CUDA graph, float32, TF32 off, meta-batch {mb}", "graph", mb, torch.float32, False),
                   (f"CUDA graph, float32, TF32 off, meta-batch {big}", "graph", big, torch.float32, False)]
    for label, mode, n, dtype, tf32 in single:
        row(label + ": tasks/s", lambda: round(measure(mode, n, args.method, device, dtype, tf32, args.seconds), 1))
    if graphs:
        row(f"CUDA graph against eager, meta-batch {mb}: largest relative difference",
            lambda: f"{graph_agreement(args.method, device, mb):.1e}")
    for n in args.parallel:
        for mode in ("eager", "graph") if graphs else ("eager",):
            row(f"{n} processes side by side, {mode}, meta-batch {mb}: tasks/s together (each)",
                lambda: (lambda total, each: f"{total:.1f} ({', '.join(f'{r:.1f}' for r in each)})")(
                    *side_by_side(n, mode, mb, args.method, device, args.seconds)))
    if not args.no_write:
        from common import replace_section
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
        lines = [f"Device: {name}; torch {torch.__version__}; `python bench/throughput.py --device {args.device} "
                 f"--seconds {args.seconds:g} --meta-batch {args.meta_batch} --parallel {' '.join(map(str, args.parallel))}`; method "
                 f"`{args.method}`, 5-way 1-shot, 10 queries per class, T = 5, batched path; an outer step as "
                 "train.py runs it (episodes to the device, hypergradient, host syncs).", "",
                 "| candidate | measured |", "| --- | --- |", *(f"| {label} | {value} |" for label, value in rows)]
        replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), f"throughput_{device.type}", "\n".join(lines),
                        title="# Performance")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
