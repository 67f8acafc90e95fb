"""Peak memory of one hypergradient as T grows, on a model with about a million parameters.

Each (method, T) runs in a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go back to
the system, so RSS tracks live memory). Reported: the process's peak RSS, and the peak minus the RSS
just before the hypergradient (what the method itself adds). On a GPU (``--device cuda``) it reports
``torch.cuda.max_memory_allocated`` instead.

    python bench/memory.py                    # writes the memory section of docs/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(method: str, T: int, device: str) -> dict:
    import resource

    import torch
    import torch.nn.functional as F

    import metagreedy as mg

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

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    options = {"greedy": {"gamma": 0.9}, "ift": {"terms": 5}, "truncated": {"k": 5}}.get(method, {})
    mg.hypergradient(train_loss, val_loss, params, hparams, steps=1, lr=0.1, momentum=0.9, method="fo")  # warm up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss()
    t0 = time.perf_counter()
    mg.hypergradient(train_loss, val_loss, params, hparams, steps=T, lr=0.1, momentum=0.9, method=method, **options)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"method": method, "T": T, "seconds": seconds, "rss_before": before,
           "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device == "cuda":
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--methods", nargs="+", default=["greedy", "full"])
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 120])
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "T"))
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.device)))
        return
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    results = []
    for method in args.methods:
        for T in args.steps:
            out = subprocess.run([sys.executable, __file__, "--child", method, str(T), "--device", args.device],
                                 capture_output=True, text=True, env=env, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{method:8s} T={T:4d} peak RSS {r['peak_rss'] / 2**20:8.1f} MiB  "
                  f"added {(r['peak_rss'] - r['rss_before']) / 2**20:8.1f} MiB  {r['seconds']:.2f}s", flush=True)
    if not args.no_write:
        write(results, args)


def write(results, args):
    from common import replace_section
    mib = 2**20
    lines = ["## Memory as T grows", "",
             f"`python bench/memory.py` (device: {args.device}; an MLP 784-1250-10 with 994,760 parameters, "
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
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    replace_section(os.path.join(ROOT, "docs", "RESULTS.md"), "memory", "\n".join(lines))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
