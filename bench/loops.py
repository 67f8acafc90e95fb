"""Peak memory of a researcher's own inner loop as T grows, with greedy attached (metagreedy.stream and
its higher and learn2learn integrations) and differentiated in full, on a model with 994,760 adapted
parameters (an MLP 784-1250-10) whose 784 input scales are the hyperparameters.

The full loop keeps every step's graph (higher also keeps every step's fast weights, a learn2learn
clone its whole graph); with the stream attached each step's graph is cut once its term is taken.
Each (loop, variant, T) runs in a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (freed tensors go
back to the system, so RSS tracks live memory); reported: the peak RSS while the loop ran (sampled)
and that peak minus the RSS just before it (what the loop adds), in MiB.

    python -m bench.loops                              # writes the memory_loops section of PERFORMANCE.md
    python -m bench.loops --loops plain --steps 5 100 --no-write
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from .common import ROOT, child_env, guarded, python_module

LOOPS = ("plain", "higher", "learn2learn")
VARIANTS = ("greedy", "full")
D, H, K, N = 784, 1250, 10, 64  # inputs, hidden units, classes, examples per batch
LR, MOMENTUM = 0.1, 0.9


def data():
    import torch
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(N, D, generator=gen), torch.randint(K, (N,), generator=gen),
            torch.randn(N, D, generator=gen), torch.randint(K, (N,), generator=gen))


def model():
    """The adapted MLP (its two layers) and the hyperparameters: a log scale per input feature."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, K)), nn.Parameter(torch.zeros(D))


def plain(T: int, variant: str):
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    import metagreedy as mg
    net, scale = model()
    x, y, xv, yv = data()
    loss = lambda w, a, x, y: F.cross_entropy(functional_call(net, w, (x * a.exp(),)), y)  # noqa: E731
    w = {n: p.detach().requires_grad_() for n, p in net.named_parameters()}
    buf = {n: torch.zeros_like(p) for n, p in w.items()}
    hg = mg.stream(scale, lambda w: loss(w, scale, xv, yv), gamma=0.9) if variant == "greedy" else None
    for _ in range(T):
        g = torch.autograd.grad(loss(w, scale, x, y), list(w.values()), create_graph=True)
        buf = {n: MOMENTUM * buf[n] + gn for n, gn in zip(w, g)}
        w = {n: w[n] - LR * buf[n] for n in w}
        if hg is not None:
            w, buf = hg.step(w, buf)
    hg.backward() if hg is not None else loss(w, scale, xv, yv).backward()
    return scale.grad


def higher_loop(T: int, variant: str):
    import higher
    import torch
    import torch.nn.functional as F
    from torch import nn

    from metagreedy.integrations.higher import attach
    net, scale = model()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale, self.net = scale, net

        def forward(self, x):
            return self.net(x * self.scale.exp())

    x, y, xv, yv = data()
    whole = Scaled()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    with higher.innerloop_ctx(whole, opt, copy_initial_weights=False) as (fmodel, diffopt):
        hg = attach(fmodel, diffopt, {"scale": scale}, lambda: F.cross_entropy(fmodel(xv), yv)) \
            if variant == "greedy" else None
        for _ in range(T):
            diffopt.step(F.cross_entropy(fmodel(x), y))
            if hg is not None:
                hg.step()
        hg.backward() if hg is not None else F.cross_entropy(fmodel(xv), yv).backward()
    return scale.grad


def learn2learn_loop(T: int, variant: str):
    import learn2learn as l2l
    import torch.nn.functional as F

    from metagreedy.integrations.learn2learn import attach
    net, scale = model()
    x, y, xv, yv = data()
    learner = l2l.algorithms.MAML(net, lr=LR).clone()
    hg = attach(learner, scale, lambda: F.cross_entropy(learner(xv * scale.exp()), yv)) if variant == "greedy" else None
    for _ in range(T):
        learner.adapt(F.cross_entropy(learner(x * scale.exp()), y))
        if hg is not None:
            hg.step()
    hg.backward() if hg is not None else F.cross_entropy(learner(xv * scale.exp()), yv).backward()
    return scale.grad


RUN = {"plain": plain, "higher": higher_loop, "learn2learn": learn2learn_loop}


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_during(fn):
    """``(fn(), the peak RSS while it ran)``: RSS sampled every 0.2 ms by a thread (torch's kernels
    release the GIL); unlike the process's ``ru_maxrss``, it does not remember earlier peaks."""
    import threading
    peak, done = [rss()], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = fn()
    finally:
        done.set()
        sampler.join()
    return out, max(peak[0], rss())


def child(loop: str, variant: str, steps: list[int], examples: int = N) -> list[dict]:
    """Run the loop at each T of ``steps`` in turn in this process, each with its own peak."""
    global N
    N = examples
    RUN[loop](1, variant)  # warm up: imports, allocator
    out = []
    for T in steps:
        before, t0 = rss(), time.perf_counter()
        grad, peak = peak_during(lambda: RUN[loop](T, variant))
        out.append({"loop": loop, "variant": variant, "T": T, "seconds": time.perf_counter() - t0,
                    "rss_before": before, "peak_rss": peak, "grad_norm": float(grad.norm())})
    return out


def measure(loop: str, variant: str, steps: list[int], examples: int = N) -> list[dict]:
    """``child`` in a fresh process of the checkout."""
    out = subprocess.run([*python_module("bench.loops"), "--child", loop, variant, *map(str, steps), "--examples",
                          str(examples)], capture_output=True, text=True,
                         env=child_env(MALLOC_MMAP_THRESHOLD_="65536"), cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(results: list[dict], steps: list[int]) -> None:
    from .common import replace_section
    mib = 2**20
    lines = [f"`python -m bench.loops --steps {' '.join(map(str, steps))}`: the researcher's own loop with greedy "
             "attached against the same loop differentiated in full, on an MLP 784-1250-10 (994,760 adapted "
             "parameters; 784 input scales are alpha), batches of 64; a fresh process per cell "
             "(`MALLOC_MMAP_THRESHOLD_=65536`). Each cell: what the loop adds to the resident memory (peak minus "
             f"the RSS just before it) and, in brackets, the whole process's peak against T = {steps[0]}; MiB.", "",
             "| loop | variant | " + " | ".join(f"T={T}" for T in steps) + " |",
             "| --- | --- |" + " --- |" * len(steps)]
    for loop in dict.fromkeys(r["loop"] for r in results):
        for variant in VARIANTS:
            by_t = {r["T"]: r for r in results if r["loop"] == loop and r["variant"] == variant}
            if not by_t:
                continue
            base = by_t[min(by_t)]["peak_rss"]
            cells = [f"{(r['peak_rss'] - r['rss_before']) / mib:.1f} ({100 * (r['peak_rss'] / base - 1):+.1f}%)"
                     for r in (by_t[T] for T in steps)]
            lines.append(f"| {loop} | {variant} | " + " | ".join(cells) + " |")
    replace_section(os.path.join(ROOT, "docs", "PERFORMANCE.md"), "memory_loops", "\n".join(lines),
                    title="# Performance")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", nargs="+", default=list(LOOPS), choices=LOOPS)
    p.add_argument("--steps", type=int, nargs="+", default=[5, 100])
    p.add_argument("--examples", type=int, default=N, help="examples per batch")
    p.add_argument("--child", nargs="+", metavar="LOOP VARIANT T", help="measure in this process (T: one or more)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], [int(T) for T in args.child[2:]], args.examples)))
        return
    results = []
    for loop in args.loops:
        for variant in VARIANTS:
            for T in args.steps:  # a fresh process each
                results += measure(loop, variant, [T], args.examples)
                r = results[-1]
                print(f"{loop:12s} {variant:6s} T={T:4d} peak RSS {r['peak_rss'] / 2**20:8.1f} MiB  added "
                      f"{(r['peak_rss'] - r['rss_before']) / 2**20:8.1f} MiB  {r['seconds']:.2f}s", flush=True)
    if not args.no_write:
        write(results, args.steps)


if __name__ == "__main__":
    sys.exit(guarded(main))
