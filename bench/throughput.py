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

    python -m bench.throughput --device cuda             # writes docs/PERFORMANCE.md's throughput section
    python -m bench.throughput --device cpu --seconds 2 --no-write   # a rehearsal (no graphs on a CPU)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from .common import ROOT, child_env, guarded, python_module

from harness import config  # noqa: E402


def make_task(meta_batch, method, device, dtype, loop="batched"):
    import tasks
    from metagreedy.data import get_tasksets
    tasksets = get_tasksets("synthetic", 5, 1, 10, synthetic_classes=(100, 20))
    cfg = config.resolve(["--task", "omniglot", "--meta-batch", str(meta_batch), "--loop", loop,
                          *method.split()])
    return tasks.load("omniglot").Task(cfg, device, dtype, tasksets=tasksets)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(mode, meta_batch, method, device, dtype, tf32, seconds, start_at=None):
    """Tasks per second over ``seconds`` of outer steps (after two untimed ones; from the wall-clock
    time ``start_at`` when given, so that processes side by side time the same interval)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    task = make_task(meta_batch, method, device, dtype, loop="graph" if mode == "graph" else "batched")
    members = list(range(meta_batch))
    task.hypergradient(0, members), task.hypergradient(1, members)
    sync(device)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        task.hypergradient(2 + steps, members)
        steps += 1
    sync(device)
    return meta_batch * steps / (time.perf_counter() - t0)


def agreement(method, device, meta_batch, dtype):
    """Largest relative difference over the warp layers and three meta-batches: graph against
    eager, and eager against itself (the same meta-batch twice; nonzero where kernels are not
    deterministic, which round-off amplification then magnifies)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    eager, graph = (make_task(meta_batch, method, device, dtype, loop) for loop in ("batched", "graph"))
    members, worst, repeat = list(range(meta_batch)), 0.0, 0.0
    rel = lambda a, b: max(((a[k] - b[k]).norm() / b[k].norm()).item() for k in b)  # noqa: E731
    for step in range(3):
        want = eager.hypergradient(step, members)[0]
        worst = max(worst, rel(graph.hypergradient(step, members)[0], want))
        repeat = max(repeat, rel(eager.hypergradient(step, members)[0], want))
    return f"graph vs eager {worst:.1e}; eager vs eager {repeat:.1e}"


def side_by_side(n, mode, meta_batch, method, device, seconds):
    """Aggregate tasks/s of ``n`` processes, each timing ``mode`` over the same interval, with
    the CPU's threads shared among them (as bench/campaign.py runs its cells)."""
    start_at = time.time() + 30  # after every process has built its task and warmed up
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = [subprocess.Popen([*python_module("bench.throughput"), "--worker", mode, f"--method={method}", "--device",
                               str(device), "--meta-batch", str(meta_batch), "--seconds", str(seconds), "--start-at",
                               str(start_at)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env=child_env(OMP_NUM_THREADS=str(threads)))
             for _ in range(n)]
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["tasks_per_s"] for p in procs]
    return sum(rates), rates


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per measurement")
    p.add_argument("--method", default="--method greedy --gamma 0.9")
    p.add_argument("--parallel", type=int, nargs="+", default=[4], help="processes side by side")
    p.add_argument("--meta-batch", type=int, default=16, help="the experiment's; four times it is also measured")
    p.add_argument("--parts", nargs="+", default=["single", "agreement", "parallel"],
                   choices=("single", "agreement", "parallel"))
    p.add_argument("--worker", choices=("eager", "graph"), help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.worker:
        print(json.dumps({"tasks_per_s": measure(args.worker, args.meta_batch, args.method, device, torch.float32, False,
                                                 args.seconds, args.start_at)}), flush=True)
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
                   (f"CUDA graph, float32, TF32 off, meta-batch {big}", "graph", big, torch.float32, False),
                   (f"CUDA graph, float64, meta-batch {mb}", "graph", mb, torch.float64, False)]
    if "single" in args.parts:
        for label, mode, n, dtype, tf32 in single:
            row(label + ": tasks/s",
                lambda: round(measure(mode, n, args.method, device, dtype, tf32, args.seconds), 1))
    if graphs and "agreement" in args.parts:
        for dtype in (torch.float64, torch.float32):
            row(f"largest relative difference of hypergradients, {str(dtype)[6:]}, meta-batch {mb}",
                lambda: agreement(args.method, device, mb, dtype))
    for n in args.parallel if "parallel" in args.parts else ():
        for mode in ("eager", "graph") if graphs else ("eager",):
            row(f"{n} processes side by side, {mode}, meta-batch {mb}: tasks/s together (each)",
                lambda: (lambda total, each: f"{total:.1f} ({', '.join(f'{r:.1f}' for r in each)})")(
                    *side_by_side(n, mode, mb, args.method, device, args.seconds)))
    if not args.no_write:
        from .common import replace_section
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
        lines = [f"Device: {name}; torch {torch.__version__}; `python -m bench.throughput --device {args.device} "
                 f"--seconds {args.seconds:g} --meta-batch {args.meta_batch} --parallel {' '.join(map(str, args.parallel))} --parts {' '.join(args.parts)}`; method "
                 f"`{args.method}`, 5-way 1-shot, 10 queries per class, T = 5, batched path; an outer step as "
                 "train.py runs it (episodes to the device, hypergradient, host syncs).", "",
                 "| candidate | measured |", "| --- | --- |", *(f"| {label} | {value} |" for label, value in rows)]
        replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), f"throughput_{device.type}_{'_'.join(args.parts)}", "\n".join(lines),
                        title="# Performance")


if __name__ == "__main__":
    sys.exit(guarded(main))
