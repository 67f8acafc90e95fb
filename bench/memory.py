"""Peak memory of one hypergradient as T grows: on a model with about a million parameters
(``--net mlp``, the default: RESULTS.md), or on bench/perf.py's hyper-cleaning and Omniglot networks
for every method (``--net hyper-cleaning omniglot``: PERFORMANCE.md).

Each (method, T) runs in a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to
the system, so RSS tracks live memory). Reported: the process's peak RSS, and the peak minus the RSS
just before the hypergradient (what the method itself adds). On a GPU (``--device cuda``) it reports
``torch.cuda.max_memory_allocated`` instead.

    python -m bench.memory                    # writes the memory section of docs/RESULTS.md
    python -m bench.memory --net hyper-cleaning omniglot --steps 5 10 20 50 100   # PERFORMANCE.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .common import ROOT, child_env, guarded, python_module


def problem(net: str, device: str):
    """(train_loss, val_loss, params, hparams) of ``net``."""
    import torch
    import torch.nn.functional as F
    if net != "mlp":
        from perf import problems
        for name, _, w, alpha, train_loss, val_loss, *_ in problems(torch.device(device)):
            if name.lower().startswith(net):
                return train_loss, val_loss, w, alpha
        raise ValueError(f"unknown net {net!r}")
    torch.manual_seed(0)
    d, h, k, n = 784, 1250, 10, 256  # 784*1250 + 1250 + 1250*10 + 10 = 994,760 parameters
    dev = torch.device(device)
    x, y = torch.randn(n, d, device=dev), torch.randint(k, (n,), device=dev)
    xv, yv = torch.randn(n, d, device=dev), torch.randint(k, (n,), device=dev)
    params = {"W1": 0.03 * torch.randn(d, h, device=dev), "b1": torch.zeros(h, device=dev),
              "W2": 0.03 * torch.randn(h, k, device=dev), "b2": torch.zeros(k, device=dev)}
    hparams = {"weights": torch.zeros(n, device=dev, requires_grad=True)}

    def net(w, inp):
        return torch.relu(inp @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]

    def train_loss(w, a):
        return (torch.sigmoid(a["weights"]) * F.cross_entropy(net(w, x), y, reduction="none")).mean()

    def val_loss(w, a):
        return F.cross_entropy(net(w, xv), yv)

    return train_loss, val_loss, params, hparams


def child(net_name: str, method: str, T: int, device: str) -> dict:
    import resource

    import torch

    import metagreedy as mg
    from .perf import METHODS

    train_loss, val_loss, params, hparams = problem(net_name, device)

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    options = METHODS[method]
    mg.hypergradient(train_loss, val_loss, params, hparams, steps=1, lr=0.1, momentum=0.9, method="fo")  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss()
    t0 = time.perf_counter()
    mg.hypergradient(train_loss, val_loss, params, hparams, steps=T, lr=0.1, momentum=0.9, **options)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"net": net_name, "method": method, "T": T, "seconds": seconds, "rss_before": before,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device == "cuda":
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def main():
    from .perf import METHODS
    p = argparse.ArgumentParser()
    p.add_argument("--net", nargs="+", default=["mlp"], choices=["mlp", "hyper-cleaning", "omniglot"])
    p.add_argument("--methods", nargs="+", default=None, help=f"default: greedy and full on the mlp, else {list(METHODS)}")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 120])
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=3, metavar=("NET", "METHOD", "T"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.device)))
        return
    env = child_env(MALLOC_MMAP_THRESHOLD_="65536")
    results = []
    for net in args.net:
        for method in args.methods or (["greedy", "full"] if net == "mlp" else list(METHODS)):
            for T in args.steps:
                if METHODS[method].get("k", 0) > T:
                    continue
                out = subprocess.run([*python_module("bench.memory"), "--child", net, method, str(T), "--device",
                                      args.device], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(f"{net} {method:12s} T={T:4d} peak RSS {r['peak_rss'] / 2**20:8.1f} MiB  "
                      f"added {(r['peak_rss'] - r['rss_before']) / 2**20:8.1f} MiB  {r['seconds']:.2f}s", flush=True)
    if not args.no_write:
        if any(r["net"] == "mlp" for r in results):
            write([r for r in results if r["net"] == "mlp"], args)
        if any(r["net"] != "mlp" for r in results):
            write_nets([r for r in results if r["net"] != "mlp"], args)


def write(results, args):
    from .common import replace_section
    mib = 2**20
    lines = ["## Memory as T grows", "",
             f"`python -m bench.memory` (device: {args.device}; an MLP 784-1250-10 with 994,760 parameters, "
             "256 per-example weights as hyperparameters, momentum SGD; a fresh process per row with "
             "`MALLOC_MMAP_THRESHOLD_=65536`). *Peak RSS* is the whole process (torch itself included); "
             "*added* is the peak minus the RSS just before the hypergradient call.", "",
             "| method | T | peak RSS (MiB) | added (MiB) | peak vs T=%d | seconds |" % args.steps[0],
             "| --- | --- | --- | --- | --- | --- |"]
    first = {}
    for r in results:
        first.setdefault(r["method"], r["peak_rss"])
        lines.append(f"| {r['method']} | {r['T']} | {r['peak_rss'] / mib:.1f} | {(r['peak_rss'] - r['rss_before']) / mib:.1f}"
                     f" | {100 * (r['peak_rss'] / first[r['method']] - 1):+.1f}% | {r['seconds']:.2f} |")
    replace_section(os.path.join(ROOT, "docs", "RESULTS.md"), "memory", "\n".join(lines))


def _peak(r, device):
    return r["cuda_peak"] if device == "cuda" else r["peak_rss"]


def write_nets(results, args):
    """PERFORMANCE.md: per network, a row per method, a column per T."""
    from .common import replace_section
    mib, steps = 2**20, sorted({r["T"] for r in results})
    what = ("`torch.cuda.max_memory_allocated`" if args.device == "cuda" else
            "peak RSS of a fresh process per cell (`MALLOC_MMAP_THRESHOLD_=65536`), the memory the call adds "
            "(peak minus the RSS just before it) and, in brackets, the whole process's peak against T = %d" % steps[0])
    lines = [f"`python -m bench.memory --net {' '.join(dict.fromkeys(r['net'] for r in results))} --steps "
             f"{' '.join(map(str, steps))} --device {args.device}`: {what}; MiB.", ""]
    for net in dict.fromkeys(r["net"] for r in results):
        lines += [f"### {net} net", "", "| method | " + " | ".join(f"T={T}" for T in steps) + " |",
                  "| --- |" + " --- |" * len(steps)]
        rows = [r for r in results if r["net"] == net]
        for method in dict.fromkeys(r["method"] for r in rows):
            by_t = {r["T"]: r for r in rows if r["method"] == method}
            base = _peak(by_t[min(by_t)], args.device)
            cells = []
            for T in steps:
                if T not in by_t:
                    cells.append("-")
                    continue
                r = by_t[T]
                added = (r["cuda_peak"] if args.device == "cuda" else r["peak_rss"] - r["rss_before"]) / mib
                cells.append(f"{added:.1f} ({100 * (_peak(r, args.device) / base - 1):+.1f}%)")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), f"memory_{args.device}", "\n".join(lines).rstrip(),
                    title="# Performance")


if __name__ == "__main__":
    sys.exit(guarded(main))
