"""Cost of every estimator against its peers, side by side in one process.

For the hyper-cleaning network (1000 examples, 1000 validation examples) and the Omniglot warp
network (one 5-way 1-shot task, 15 queries per class; channels-last on a CPU, as the Omniglot task
runs it): the median wall time of one hypergradient as T
grows, for each method, for the exact hypergradient through ``higher.innerloop_ctx`` and through
``torchopt``'s differentiable momentum SGD (when installed; both checked against our ``full``), and
the floor: T plain inner steps with no hypergradient. Then the Omniglot meta-training throughput
(tasks per second at meta-batch 16) of the per-task ``higher`` loop against the batched path.

    python -m bench.perf                 # writes docs/PERFORMANCE.md's tables
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from .common import ROOT, guarded

import metagreedy as mg  # noqa: E402
from metagreedy import nn as mgnn  # noqa: E402
from metagreedy.integrations.higher import innerloop_full  # noqa: E402
from metagreedy.models import CleaningConvNet, WarpConvNet  # noqa: E402

METHODS = {"greedy": {"method": "greedy", "gamma": 0.9}, "greedy final": {"method": "greedy", "gamma": 0.9,
           "variant": "final"}, "t1t2": {"method": "t1t2"}, "ift(5)": {"method": "ift", "terms": 5},
           "truncated(5)": {"method": "truncated", "k": 5}, "full": {"method": "full"}}

PATHS = {"per-task higher loop": ["--loop", "higher"],  # channels-last on a CPU, the task's default there
         "per-task higher loop, NCHW": ["--loop", "higher", "--memory-format", "contiguous"],
         "batched (vmap)": ["--loop", "batched"]}
THROUGHPUT = {"greedy": ["--method", "greedy"], "greedy, step val batch 5": ["--method", "greedy", "--step-val-batch", "5"],
              "full": ["--method", "full"], "fo": ["--method", "fo"]}


def problems(device):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    clean = CleaningConvNet().to(device)
    x, y = torch.rand(1000, 1, 28, 28, generator=gen).to(device), torch.randint(10, (1000,), generator=gen).to(device)
    xv, yv = torch.rand(1000, 1, 28, 28, generator=gen).to(device), torch.randint(10, (1000,), generator=gen).to(device)
    w = {n: p.detach().clone() for n, p in clean.named_parameters()}
    alpha = {"alpha": torch.zeros(1000, device=device, requires_grad=True)}

    def step_val(w, a, t):  # 100 of the 1000 validation examples, fresh at each step
        idx = torch.randperm(1000, generator=torch.Generator().manual_seed(t))[:100].to(device)
        return F.cross_entropy(mgnn.call(clean, w, {}, xv[idx]), yv[idx])
    yield ("hyper-cleaning net", clean, w, alpha,
           lambda w, a: (torch.sigmoid(a["alpha"]) * F.cross_entropy(mgnn.call(clean, w, {}, x), y, reduction="none")).mean(),
           lambda w, a: F.cross_entropy(mgnn.call(clean, w, {}, xv), yv), None, ("greedy, step val batch 100", step_val))
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format  # as tasks/omniglot.py's default
    warp = WarpConvNet(5).to(device, memory_format=fmt)
    w, alpha = mgnn.split(warp, WarpConvNet.WARP)
    xs, ys = torch.rand(5, 1, 28, 28, generator=gen).to(device, memory_format=fmt), torch.arange(5, device=device)
    xq = torch.rand(75, 1, 28, 28, generator=gen).to(device, memory_format=fmt)
    yq = torch.arange(5, device=device).repeat(15)
    train_loss, val_loss = mgnn.losses(mgnn.module_forward(warp), F.cross_entropy, (xs, ys), (xq, yq))

    def step_query(w, a, t):  # one query of each class, a different one at each step (queries are interleaved)
        sl = slice(5 * ((t - 1) % 15), 5 * ((t - 1) % 15) + 5)
        return F.cross_entropy(mgnn.call(warp, w, a, xq[sl]), yq[sl])
    yield ("Omniglot warp net", warp, w, alpha, train_loss, val_loss, ((xs, ys), (xq, yq)),
           ("greedy, step val batch 5", step_query))


def timed(fn, repeats, device):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def torchopt_full(model, w, alpha, batches, T):
    """The exact hypergradient through torchopt's functional differentiable momentum SGD."""
    import torchopt
    (xs, ys), (xq, yq) = batches
    names = list(w)
    opt = torchopt.sgd(lr=0.1, momentum=0.9)
    params = tuple(w[n].clone().requires_grad_() for n in names)
    state = opt.init(params)
    for _ in range(T):
        loss = F.cross_entropy(mgnn.call(model, dict(zip(names, params)), alpha, xs), ys)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        updates, state = opt.update(grads, state, inplace=False)
        params = torchopt.apply_updates(params, updates, inplace=False)
    val = F.cross_entropy(mgnn.call(model, dict(zip(names, params)), alpha, xq), yq)
    return dict(zip(alpha, torch.autograd.grad(val, list(alpha.values()))))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    try:
        import torchopt  # noqa: F401
        have_torchopt = True
    except ImportError:
        have_torchopt = False
    tables = []
    for name, model, w, alpha, train_loss, val_loss, batches, (step_label, step_val) in problems(device):
        rows = {}
        for T in args.steps:
            def run(**kw):
                return mg.hypergradient(train_loss, val_loss, w, alpha, steps=T, lr=0.1, momentum=0.9, **kw)
            floor, _ = timed(lambda: run(method="fo"), args.repeats, device)  # T steps + one val gradient
            rows.setdefault("floor (T inner steps)", {})[T] = (floor, None)
            ref = None
            for label, kw in [*METHODS.items(), (step_label, {**METHODS["greedy"], "step_val_loss": step_val})]:
                if kw.get("k", 0) > T:
                    continue
                seconds, res = timed(lambda: run(**kw), args.repeats, device)
                rows.setdefault(label, {})[T] = (seconds, None)
                if label == "full":
                    ref = res.grad
            if batches is not None:
                adapted = list(w)
                model.load_state_dict({**w, **{k: v.detach() for k, v in alpha.items()}})
                seconds, got = timed(lambda: innerloop_full(model, adapted, *batches, F.cross_entropy, steps=T, lr=0.1,
                                                            momentum=0.9), args.repeats, device)
                rows.setdefault("higher.innerloop_ctx (exact)", {})[T] = (seconds, agreement(got, ref))
                if have_torchopt:
                    seconds, got = timed(lambda: torchopt_full(model, w, alpha, batches, T), args.repeats, device)
                    rows.setdefault("torchopt (exact)", {})[T] = (seconds, agreement(got, ref))
            print(name, T, {k: round(v[T][0], 4) for k, v in rows.items() if T in v}, flush=True)
        tables.append(format_table(name, rows, args.steps))
    throughput = omniglot_throughput(device, args.repeats)
    if not args.no_write:
        write(tables, throughput, args, have_torchopt)


def agreement(got, ref):
    return max(((got[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref)


def format_table(name, rows, steps):
    floor = rows["floor (T inner steps)"]
    lines = [f"### {name}", "", "Median seconds per hypergradient (ratio to the floor at the same T); for the peers, "
             "the largest relative difference from our `full` in brackets.", "",
             "| method | " + " | ".join(f"T={T}" for T in steps) + " |", "| --- |" + " --- |" * len(steps)]
    for label, by_t in rows.items():
        cells = []
        for T in steps:
            if T not in by_t:
                cells.append("-")
                continue
            seconds, diff = by_t[T]
            cell = f"{seconds:.3f} ({seconds / floor[T][0]:.1f}x)"
            cells.append(cell + (f" [{diff:.0e}]" if diff is not None else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def omniglot_throughput(device, repeats, meta_batch=16):
    """Tasks per second for one meta-batch: the per-task higher loop vs the batched (vmap) path."""
    import tasks
    from harness import config
    from metagreedy.data import get_tasksets
    tasksets = get_tasksets("synthetic", 5, 1, 15, synthetic_classes=(100, 20))
    out = {}
    for label, flags in PATHS.items():
        for method, options in THROUGHPUT.items():
            cfg = config.resolve(["--task", "omniglot", "--queries", "15", "--meta-batch", str(meta_batch), *options,
                                  *flags])
            task = tasks.load("omniglot").Task(cfg, device, torch.float32, tasksets=tasksets)
            seconds, _ = timed(lambda: task.hypergradient(0, list(range(meta_batch))), repeats, device)
            out[(label, method)] = meta_batch / seconds
            print(label, method, f"{meta_batch / seconds:.2f} tasks/s", flush=True)
            if method == "greedy" and label == "per-task higher loop" and device.type == "cpu":
                out["kernel_share"] = kernel_share(lambda: task.hypergradient(0, list(range(meta_batch))))
    return out


KERNELS = ("convolution", "batch_norm", "max_pool", "threshold_backward", "clamp_min", "relu", "addmm", "mm",
           "_log_softmax", "nll_loss")


def kernel_share(fn) -> float:
    """The share of ``fn``'s wall time (under torch.profiler, CPU) spent inside the network's compute
    kernels: convolutions, batch norm, pooling, activations, the head and the loss, forward and
    backward. Batching tasks can at best remove the rest, so 1 / share bounds its speed-up (the
    profiler's own overhead only lowers the share, which loosens the bound)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    busy = sum(e.self_cpu_time_total for e in prof.key_averages()
               if e.key.startswith("aten::") and any(k in e.key for k in KERNELS))
    return busy / 1e6 / wall


def write(tables, throughput, args, have_torchopt):
    from .common import replace_section
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    lines = [f"Device: {device}; torch {torch.__version__}; `python -m bench.perf --device {args.device} "
             f"--repeats {args.repeats}` (median of {args.repeats}). The floor is `method=\"fo\"`: T inner steps and one validation "
             f"gradient. torchopt: {'installed' if have_torchopt else 'not installed, its row is missing'}.", "",
             *sum(([t, ""] for t in tables), []),
             "### Omniglot meta-training throughput (5-way 1-shot, 15 queries, meta-batch 16, T = 5)", "",
             "Tasks per second:", "",
             "| path | " + " | ".join(THROUGHPUT) + " |", "| --- |" + " --- |" * len(THROUGHPUT)]
    for label in PATHS:
        lines.append(f"| {label} | " + " | ".join(f"{throughput[(label, m)]:.2f}" for m in THROUGHPUT) + " |")
    if "kernel_share" in throughput:
        share = throughput["kernel_share"]
        lines += ["", f"Per-task loop, greedy: {100 * share:.0f}% of its wall time is spent inside the network's "
                  f"compute kernels (convolution, batch norm, pooling, activation, head, loss; `kernel_share` in "
                  f"bench/perf.py), so running the tasks as one batch could at best make it {1 / share:.2f}x faster "
                  f"on this device."]
    replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), f"perf_{args.device}", "\n".join(lines),
                    title="# Performance")


if __name__ == "__main__":
    sys.exit(guarded(main))
