"""How far float32 hypergradients are from float64 ones, on the Omniglot warp network.

For T inner steps (default 5, 20, 50) and each method, the relative difference
||g32 - g64|| / ||g64|| between the hypergradient computed in float32 and in float64 on the same
device, over several 5-way 1-shot tasks (10 queries per class, the experiment's protocol); on a GPU
also with TF32 convolutions and matmuls switched on (cuDNN's default for convolutions) and off. The
float64 reference is checked against the CPU's float64 result. Tasks come from the built-in synthetic
alphabet unless --data-root points at Omniglot.

    python -m bench.precision --device cuda             # writes docs/PERFORMANCE.md's precision section
    python -m bench.precision --device cpu --steps 5 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
import torch.nn.functional as F

from .common import ROOT, guarded

import metagreedy as mg  # noqa: E402
from metagreedy import nn as mgnn  # noqa: E402
from metagreedy.models import WarpConvNet  # noqa: E402

METHODS = {"greedy": {"method": "greedy", "gamma": 0.9}, "full": {"method": "full"}, "t1t2": {"method": "t1t2"}}


def episodes(data_root, n):
    from metagreedy.data import FewShotTasks, synthetic_alphabet
    if data_root:
        from metagreedy.data.omniglot import load_omniglot
        images, source = load_omniglot(data_root, background=True)[0], "Omniglot background alphabets"
    else:
        images, source = synthetic_alphabet(60), "the built-in synthetic alphabet (60 classes)"
    tasks = FewShotTasks(images, ways=5, shots=1, queries=10, seed=0)
    return [tasks[i] for i in range(n)], source


def hypergradient(episode, T, options, device, dtype):
    torch.manual_seed(0)
    model = WarpConvNet(5).to(device=device, dtype=dtype)
    w, alpha = mgnn.split(model, WarpConvNet.WARP)
    xs, ys, xq, yq = (t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in episode)
    train_loss, val_loss = mgnn.losses(mgnn.module_forward(model), F.cross_entropy, (xs, ys), (xq, yq))
    res = mg.hypergradient(train_loss, val_loss, w, alpha, steps=T, lr=0.1, momentum=0.9, **options)
    return torch.cat([g.flatten() for g in res.grad.values()]).double().cpu()


def relative(a, b) -> float:
    return float((a - b).norm() / b.norm())


def set_tf32(on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def measure(device, steps, n_tasks, data_root):
    eps, source = episodes(data_root, n_tasks)
    rows = []
    for T in steps:
        for label, options in METHODS.items():
            ref_cpu = [hypergradient(e, T, options, torch.device("cpu"), torch.float64) for e in eps]
            ref = ref_cpu if device.type == "cpu" else \
                [hypergradient(e, T, options, device, torch.float64) for e in eps]
            row = {"T": T, "method": label, "float64 vs CPU": max(relative(a, b) for a, b in zip(ref, ref_cpu))}
            modes = [("float32", None)] if device.type == "cpu" else [("float32, TF32 off", False),
                                                                       ("float32, TF32 on", True)]
            for name, tf32 in modes:
                if tf32 is not None:
                    set_tf32(tf32)
                low = [hypergradient(e, T, options, device, torch.float32) for e in eps]
                errs = [relative(g, r) for g, r in zip(low, ref)]
                # what an outer step uses: the mean over a meta-batch of these tasks
                row[name] = (statistics.median(errs), max(errs), relative(sum(low) / len(low), sum(ref) / len(ref)))
            rows.append(row)
            print(row, flush=True)
    if device.type == "cuda":
        set_tf32(False)
        torch.backends.cudnn.allow_tf32 = True  # back to torch's defaults
    return rows, source


def write(rows, source, args, device):
    from .common import replace_section
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    modes = [k for k in rows[0] if k not in ("T", "method", "float64 vs CPU")]
    lines = [f"Device: {name}; torch {torch.__version__}; `python -m bench.precision --device {args.device} "
             f"--steps {' '.join(map(str, args.steps))} --tasks {args.tasks}"
             f"{' --data-root ' + args.data_root if args.data_root else ''}`; {args.tasks} tasks from {source}. "
             "Relative difference ||g - g64|| / ||g64|| of the hypergradient (all warp layers) from the float64 "
             "one on the same device: median over the tasks (largest) / of the mean over the tasks (what an outer "
             "step with these tasks as its meta-batch uses). The float64 column is the largest relative difference "
             "between float64 on this device and on the CPU.", "",
             "| T | method | " + " | ".join(modes) + " | float64 vs CPU |", "| --- | --- |" + " --- |" * (len(modes) + 1)]
    for r in rows:
        cells = [f"{r[m][0]:.1e} ({r[m][1]:.1e}) / {r[m][2]:.1e}" for m in modes]
        lines.append(f"| {r['T']} | {r['method']} | " + " | ".join(cells) + f" | {r['float64 vs CPU']:.1e} |")
    replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), f"precision_{args.device}", "\n".join(lines),
                    title="# Performance")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 20, 50])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--data-root", default="", help="Omniglot in torchvision's layout (default: synthetic)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    rows, source = measure(device, args.steps, args.tasks, args.data_root)
    if not args.no_write:
        write(rows, source, args, device)


if __name__ == "__main__":
    sys.exit(guarded(main))
