"""The long-horizon experiment (docs/RESULTS.md, "Long horizons"): per-layer learning rates and weight
decay of an MLP on MNIST mini-batches through T in {10, 100, 1000} inner steps (tasks/long_horizon.py).

    python -m bench.long_horizon runs --data-root ./data      # train.py: T x method x seed, and the fixed lrs
    python -m bench.long_horizon cosines --data-root ./data   # each estimator against Full at the starting alpha
    python -m bench.long_horizon memory --data-root ./data    # peak memory and seconds per hypergradient vs T
    python -m bench.long_horizon report                       # the RESULTS.md section and docs/long_horizon_lrs.png

Each step writes its raw numbers to results/long_horizon/*.json (kept as they come, so an
interrupted step resumes where it stopped); ``report`` reads only those files. Every train.py run
and every memory cell is a fresh process with MALLOC_MMAP_THRESHOLD_=65536 (freed memory goes back
to the system, so the peak RSS tracks live memory); a run's CPU time and peak RSS come from wait4, a
memory cell's peak from the kernel's VmHWM, reset just before the hypergradient.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time

from .common import ROOT, child_env, fmt, guarded, mean_ci, metrics, python_module, replace_section, summary

from harness.rundir import write_atomic

OUT = os.path.join(ROOT, "results", "long_horizon")
RUNS = os.path.join(ROOT, "runs", "long_horizon")
PICTURE = os.path.join(ROOT, "docs", "long_horizon_lrs.png")
ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "WANDB_MODE": "disabled"}
FIXED_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)  # --outer-steps 0: the constant learning rates a user would try
LAYERS = ("fc1", "fc2", "fc3")
MIB = 2**20
CAP = 2 * 2**30  # the memory cap for Full's wall: what one hypergradient may add


def methods(T: int) -> dict:
    """label -> train.py flags of the tuned runs at T inner steps."""
    k = max(2, T // 10)
    return {"greedy 0.9": ["--method", "greedy", "--gamma", "0.9"],
            "greedy 0.99": ["--method", "greedy", "--gamma", "0.99"],
            "greedy 0.999": ["--method", "greedy", "--gamma", "0.999"],
            "T1-T2": ["--method", "t1t2"],
            f"truncated({k})": ["--method", "truncated", "--k", str(k)],
            "Full": ["--method", "full"]}


def fixed(T: int) -> dict:
    return {f"fixed lr {lr:g}": ["--method", "fo", "--outer-steps", "0", "--inner-lr", f"{lr:g}"] for lr in FIXED_LRS}


def load(name: str) -> dict:
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh)


def save(name: str, data: dict) -> None:
    os.makedirs(OUT, exist_ok=True)
    write_atomic(os.path.join(OUT, name), lambda fh: json.dump(data, fh, indent=1, sort_keys=True))


def spawn(argv: list[str], log: str):
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, *argv], env=child_env(**ENV), cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def run_parallel(jobs: list, parallel: int, done) -> None:
    """``jobs`` = [(key, argv)], ``parallel`` at a time; ``done(key, status, cpu_s, wall_s, peak_rss)``
    as each ends (os.wait4: that process's own CPU time and peak RSS)."""
    os.makedirs(RUNS, exist_ok=True)
    pending, running = list(jobs), {}
    while pending or running:
        while pending and len(running) < parallel:
            key, argv = pending.pop(0)
            running[spawn(argv, os.path.join(RUNS, key.replace("/", "_").replace(" ", "_") + ".log")).pid] = \
                (key, time.time())
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        key, started = running.pop(pid)
        done(key, os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, time.time() - started,
             usage.ru_maxrss * 1024)


# ---- runs ------------------------------------------------------------------------------------------------

def runs(args) -> None:
    record = load("runs.json")
    jobs = []
    for T in args.steps:
        for seed in args.seeds:
            for label, flags in {**methods(T), **fixed(T)}.items():
                key = f"T{T}/{label}/seed{seed}"
                if key in record and record[key]["status"] == 0:
                    continue
                run_dir = os.path.join("runs", "long_horizon", key.replace(" ", "_"))
                if os.path.exists(os.path.join(ROOT, run_dir)):
                    import shutil
                    shutil.rmtree(os.path.join(ROOT, run_dir))
                flags = ["--task", "long_horizon", "--inner-steps", str(T), "--seed", str(seed), *flags,
                         "--wandb", "disabled", "--no-progress"]
                jobs.append((key, ["train.py", *flags, "--data-root", args.data_root, "--run-dir", run_dir], flags,
                             run_dir))
    by_key = {key: (flags, run_dir) for key, _, flags, run_dir in jobs}

    def done(key, status, cpu, wall, peak):
        flags, run_dir = by_key[key]
        s = summary(os.path.join(ROOT, run_dir)) or {}
        curve = [[r["step"], *(r[f"lr_{n}"] for n in LAYERS), r["weight_decay"], r["val_loss"]]
                 for r in metrics(os.path.join(ROOT, run_dir)) if "lr_fc1" in r and "val_loss" in r]
        record = load("runs.json")  # as it is now: another invocation may have added runs meanwhile
        record[key] = {"command": "python train.py " + " ".join(flags) + " --data-root ./data", "status": status,
                       "cpu_s": cpu, "wall_s": wall, "peak_rss": peak, "curve": curve,
                       "summary": {k: v for k, v in s.items() if isinstance(v, (int, float, str))}}
        save("runs.json", record)
        print(f"{key}: exit {status}, {cpu:.0f} CPU s, peak {peak / MIB:.0f} MiB, val {s.get('val_acc')}",
              flush=True)

    run_parallel([(key, argv) for key, argv, _, _ in jobs], args.parallel, done)


# ---- cosines with Full and memory: one task built in this process or a child ---------------------------

def build_task(T: int, seed: int, data_root: str):
    import torch

    import tasks
    from harness import config
    cfg = config.resolve(["--task", "long_horizon", "--inner-steps", str(T), "--seed", str(seed), "--data-root",
                          data_root])
    torch.manual_seed(seed)
    return tasks.load("long_horizon").Task(cfg, torch.device("cpu"), torch.float32)


def estimate(task, method: str, options: dict):
    import metagreedy as mg
    from tasks.long_horizon import BATCH_KEY
    return mg.hypergradient(task.train_loss(task.batches(0, BATCH_KEY)), task.val_loss, task.w0, task.hparams,
                            method=method, **task._kwargs(), **options)


def estimators(T: int) -> dict:
    k = max(2, T // 10)
    return {"greedy 0.9": ("greedy", {"gamma": 0.9}), "greedy 0.99": ("greedy", {"gamma": 0.99}),
            "greedy 0.999": ("greedy", {"gamma": 0.999}), "T1-T2": ("t1t2", {}),
            f"truncated({k})": ("truncated", {"k": k}), "Full": ("full", {})}


def cosines(args) -> None:
    import torch
    torch.set_num_threads(1)
    record = load("cosines.json")
    for T in args.steps:
        for seed in args.seeds:
            key = f"T{T}/seed{seed}"
            if key in record:
                continue
            task, row = build_task(T, seed, args.data_root), {}
            for label, (method, options) in estimators(T).items():
                t0 = time.process_time()
                res = estimate(task, method, options)
                row[label] = {"grad": torch.cat([g.reshape(-1) for g in res.grad.values()]).tolist(),
                              "cpu_s": time.process_time() - t0}
            full = torch.tensor(row["Full"]["grad"])
            for label, r in row.items():
                g = torch.tensor(r["grad"])
                r["cosine"] = float(g @ full / (g.norm() * full.norm()))
            record[key] = row
            save("cosines.json", record)
            print(key, {label: round(r["cosine"], 3) for label, r in row.items()}, flush=True)


def child(args) -> None:
    """One memory cell: (peak RSS, RSS before the call, seconds) of one hypergradient. The kernel's
    peak (VmHWM) is reset after the data is loaded and a T=1 estimate has warmed up, so the peak is
    the hypergradient's own."""
    import torch
    torch.set_num_threads(1)
    task = build_task(args.T, 0, args.data_root)

    def status(field):
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(field + ":"))
    method, options = estimators(args.T)[args.label]
    import metagreedy as mg
    mg.hypergradient(task.train_loss(task.batches(0, 0)), task.val_loss, task.w0, task.hparams, method=method,
                     **{**task._kwargs(), "steps": 1}, **({} if method == "truncated" else options))  # warm up
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS
    before, t0, c0 = status("VmRSS"), time.perf_counter(), time.process_time()
    estimate(task, method, options)
    print(json.dumps({"peak_rss": status("VmHWM"), "rss_before": before, "seconds": time.perf_counter() - t0,
                      "cpu_s": time.process_time() - c0}))


def memory(args) -> None:
    record = load("memory.json")
    for T in args.steps:
        for label in ("greedy 0.9", "T1-T2", f"truncated({max(2, T // 10)})", "Full"):
            key = f"T{T}/{label}"
            if key in record or (label == "Full" and T > args.full_max):
                continue
            out = subprocess.run([*python_module("bench.long_horizon"), "child", "--T", str(T), "--label", label,
                                  "--data-root", args.data_root], capture_output=True, text=True, cwd=ROOT,
                                 env=child_env(**ENV))
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            record[key] = json.loads(out.stdout.strip().splitlines()[-1])
            save("memory.json", record)
            r = record[key]
            print(f"{key}: added {(r['peak_rss'] - r['rss_before']) / MIB:.1f} MiB, {r['seconds']:.2f} s", flush=True)


# ---- the report -------------------------------------------------------------------------------------------

def cell(values, scale=100.0, digits=2):
    m, ci, n = mean_ci(values)
    if n == 0:
        return "-"
    return f"{scale * m:.{digits}f}" + ("" if n == 1 else f" ± {scale * ci:.{digits}f}") + f" ({n})"


def _group(ok: dict, T: int, label: str) -> list:
    return [r for k, r in ok.items() if k.startswith(f"T{T}/{label}/")]


def _named(T: int, row: str) -> str:
    """The label of ``row`` at T (truncated(k) with its k)."""
    return next((m for m in methods(T) if m.split("(")[0] == row), row)


def report(args) -> None:
    runs_, cos, mem = load("runs.json"), load("cosines.json"), load("memory.json")
    steps = sorted({int(k.split("/")[0][1:]) for k in runs_})
    ok = {k: r for k, r in runs_.items() if r["status"] == 0 and "val_acc" in r["summary"]}
    lines = _intro(ok) + _accuracy_tables(ok, steps) + _hyperparameter_table(ok, steps)
    if draw(ok, steps):
        lines += [f"![learned learning rates](long_horizon_lrs.png)", "",
                  "Top: the learned learning rate of each layer at the end (geometric mean over seeds; the dotted line is the "
                  "start, 0.05). Bottom: fc1's learning rate over the outer steps (geometric mean over seeds); in the "
                  "runs reported here the rows of outer steps 9 and 19, which carry an evaluation, logged the value "
                  "after their step (the flat segment at step 9; the task now logs evaluations without them).", ""]
    if cos:
        lines += _cosine_tables(cos)
    if mem:
        lines += _memory_tables(mem)
    lines += _process_peaks(ok)
    replace_section(os.path.join(ROOT, "docs", "RESULTS.md"), "long_horizon", "\n".join(lines))
    print("\n".join(lines))


def _intro(ok: dict) -> list:
    lines = ["## Long horizons", "",
             "`tasks/long_horizon.py`: an MLP 784-64-64-10 (55,050 parameters) on MNIST, 10,000 training "
             "examples as the mini-batch pool (batch 64, a new batch at every inner step, indexed by t), 1,000 "
             "held-out training examples as the outer (validation) loss, the 10,000 test images for test accuracy. "
             "alpha = a log learning rate per layer and a log weight decay, starting at lr 0.05 and wd 1e-4; "
             "momentum SGD 0.9 inside, from the same w_0 at every outer step; 20 outer Adam steps (lr 0.1); "
             "float32, one thread. Accuracy: T steps with the final alpha on a fixed set of batches, mean ± 95% CI "
             "over seeds (n). *fixed lr* rows: `--outer-steps 0`, no tuning; the *hand-tuned* row takes, at each T, "
             "the constant learning rate with the best mean validation accuracy among " +
             ", ".join(f"{lr:g}" for lr in FIXED_LRS) + ". Commands: `python -m bench.long_horizon runs "
             "--data-root ./data` (each run's own command is in `results/long_horizon/runs.json`), then `python -m "
             "bench.long_horizon report`. " + f"{len(ok)} runs, {sum(r['cpu_s'] for r in ok.values()) / 60:.0f} CPU "
             "minutes in all (each run's own CPU seconds and command are in `results/long_horizon/runs.json`).", ""]
    return lines


def _accuracy_tables(ok: dict, steps: list) -> list:
    group = functools.partial(_group, ok)
    labels = [label.split("(")[0] for label in methods(10)]  # truncated's k differs with T
    lines = []
    for metric, title in (("val_acc", "Validation accuracy (%)"), ("test_acc", "Test accuracy (%)")):
        lines += [f"### {title}", "", "| method | " + " | ".join(f"T={T}" for T in steps) + " |",
                  "| --- |" + " --- |" * len(steps)]
        best = {}
        for T in steps:
            scores = {label: mean_ci([r["summary"]["val_acc"] for r in group(T, label)])[0] for label in fixed(T)
                      if group(T, label)}
            if scores:
                best[T] = max(scores, key=scores.get)
        rows = labels + ["hand-tuned"] + [f"fixed lr {lr:g}" for lr in FIXED_LRS]
        for label in rows:
            cells = []
            for T in steps:
                name = best.get(T) if label == "hand-tuned" else _named(T, label)
                values = [r["summary"][metric] for r in group(T, name)] if name else []
                cells.append(cell(values) + (f" [{name[9:]}]" if label == "hand-tuned" and name else ""))
            lines.append(f"| {label + ('(T/10)' if label == 'truncated' else '')} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _hyperparameter_table(ok: dict, steps: list) -> list:
    group = functools.partial(_group, ok)
    lines = []
    lines += ["### Learned hyperparameters (mean over seeds)", "",
              "| T | method | lr fc1 | lr fc2 | lr fc3 | weight decay | CPU s per run |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for T in steps:
        for label in methods(T):
            g = group(T, label)
            if not g:
                continue
            mean = {k: sum(r["summary"][k] for r in g) / len(g) for k in (*[f"lr_{n}" for n in LAYERS], "weight_decay")}
            cpu = sum(r["cpu_s"] for r in g) / len(g)
            lines.append(f"| {T} | {label} | " + " | ".join(f"{mean[f'lr_{n}']:.3g}" for n in LAYERS)
                         + f" | {mean['weight_decay']:.2g} | {cpu:.0f} |")
    lines.append("")
    return lines


def _cosine_tables(cos: dict) -> list:
    lines = []
    cos_steps = sorted({int(k.split("/")[0][1:]) for k in cos})
    names = list(estimators(10))  # truncated's k differs with T: matched by the name before "("
    lines += ["### Cosine with Full's hypergradient at the starting alpha", "",
              "`python -m bench.long_horizon cosines --data-root ./data`: at alpha_0 (lr 0.05 each layer, wd "
              "1e-4), the batches of outer step 0, one thread, float32; mean ± 95% CI over seeds (n); in "
              "brackets the CPU seconds of one estimate (mean). The vector is (d/d log lr per layer, d/d log wd). "
              "(FO is left out: the outer loss does not depend on alpha directly, so its estimate is zero.)",
              "", "| estimator | " + " | ".join(f"T={T}" for T in cos_steps) + " |", "| --- |" + " --- |" * len(cos_steps)]
    for name in names:
        cells = []
        for T in cos_steps:
            rows = [row for k, row in cos.items() if k.startswith(f"T{T}/")]
            match = [r[m] for r in rows for m in r if m.split("(")[0] == name.split("(")[0]]
            cells.append(cell([m["cosine"] for m in match], scale=1.0, digits=3)
                         + (f" [{sum(m['cpu_s'] for m in match) / len(match):.2f} s]" if match else ""))
        lines.append(f"| {name.split('(')[0] + ('(T/10)' if name.startswith('truncated') else '')} | "
                     + " | ".join(cells) + " |")
    lines += ["", "The direction each estimator moves the learning rates at alpha_0: the layers (of 3 per seed) whose "
              "d/d log lr has Full's sign, and how many of them ask for a smaller learning rate (a positive "
              "derivative of the validation loss), out of all seeds' layers.", "",
              "| estimator | " + " | ".join(f"T={T}: Full's sign / asks smaller" for T in cos_steps) + " |",
              "| --- |" + " --- |" * len(cos_steps)]
    for name in names:
        cells = []
        for T in cos_steps:
            rows = [row for k, row in cos.items() if k.startswith(f"T{T}/")]
            pairs = [(r[m]["grad"][:len(LAYERS)], r["Full"]["grad"][:len(LAYERS)]) for r in rows for m in r
                     if m.split("(")[0] == name.split("(")[0]]
            same = sum((a > 0) == (b > 0) for g, f in pairs for a, b in zip(g, f))
            smaller = sum(a > 0 for g, _ in pairs for a in g)
            total = len(LAYERS) * len(pairs)
            cells.append(f"{same}/{total} / {smaller}/{total}")
        lines.append(f"| {name.split('(')[0] + ('(T/10)' if name.startswith('truncated') else '')} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _memory_tables(mem: dict) -> list:
    lines = []
    mem_steps = sorted({int(k.split("/")[0][1:]) for k in mem})
    lines += ["### Memory and time per hypergradient against T", "",
              "`python -m bench.long_horizon memory --data-root ./data`: one hypergradient of the task above in a "
              "fresh process per cell (`MALLOC_MMAP_THRESHOLD_=65536`, one thread; the kernel's peak RSS reset after "
              "the data is loaded and a one-step estimate has run): the memory the call adds (its peak RSS minus "
              "the RSS just before it), MiB, and its CPU seconds.", "",
              "| method | " + " | ".join(f"T={T}" for T in mem_steps) + " |", "| --- |" + " --- |" * len(mem_steps)]
    for name in ("greedy 0.9", "T1-T2", "truncated", "Full"):
        cells = []
        for T in mem_steps:
            r = next((v for k, v in mem.items() if k.startswith(f"T{T}/") and k.split("/")[1].split("(")[0] == name),
                     None)
            cells.append("-" if r is None else f"{(r['peak_rss'] - r['rss_before']) / MIB:.1f} MiB, {r['cpu_s']:.2f} s")
        lines.append(f"| {name + ('(T/10)' if name == 'truncated' else '')} | " + " | ".join(cells) + " |")
    lines.append("")
    over = sorted(int(k.split("/")[0][1:]) for k, r in mem.items() if k.endswith("/Full")
                  and r["peak_rss"] - r["rss_before"] > CAP)
    flat = [r["peak_rss"] - r["rss_before"] for k, r in mem.items() if k.split("/")[1] == "greedy 0.9"]
    if over and flat:
        lines += [f"**Full's memory wall.** With a cap of {CAP / MIB:.0f} MiB on the memory one hypergradient may "
                  f"add, Full first exceeds it at T = {over[0]} (the table above), while greedy adds at most "
                  f"{max(flat) / MIB:.1f} MiB at any T measured.", ""]
    return lines


def _process_peaks(ok: dict) -> list:
    group = functools.partial(_group, ok)
    lines = []
    peaks = {(label, T): [r["peak_rss"] for r in group(T, label)] for label in ("greedy 0.9", "Full") for T in (100, 1000)}
    if all(peaks.values()):
        cells = [f"{label}: {max(peaks[label, 100]) / MIB:.0f} MiB at `--inner-steps 100`, "
                 f"{max(peaks[label, 1000]) / MIB:.0f} MiB at `--inner-steps 1000` "
                 f"({100 * (max(peaks[label, 1000]) / max(peaks[label, 100]) - 1):+.1f}%)" for label in ("greedy 0.9", "Full")]
        lines += ["### train.py's peak memory: T = 1000 against T = 100", "",
                  "Peak RSS of the whole `train.py --task long_horizon --method ...` process (wait4, "
                  "`MALLOC_MMAP_THRESHOLD_=65536`; MNIST loaded, evaluation included), the largest over the 3 seeds: "
                  + "; ".join(cells) + ". The process's peak is set by loading MNIST (about 1.2 GiB, once, before "
                  "training), which greedy's hypergradient never exceeds; the table above gives what the "
                  "hypergradient itself adds.", ""]
    return lines


def draw(ok: dict, steps: list) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(steps), figsize=(5 * len(steps), 7.5), squeeze=False)
    drawn = False
    for col, T in enumerate(steps):
        labels = [label for label in methods(T) if any(k.startswith(f"T{T}/{label}/") for k in ok)]
        ax = axes[0][col]
        for j, layer in enumerate(LAYERS):
            values = []
            for label in labels:
                g = [r["summary"][f"lr_{layer}"] for k, r in ok.items() if k.startswith(f"T{T}/{label}/")]
                values.append(math.exp(sum(math.log(v) for v in g) / len(g)))
            ax.bar([i + 0.27 * (j - 1) for i in range(len(labels))], values, width=0.27, label=layer)
            drawn = drawn or bool(values)
        ax.axhline(0.05, ls=":", color="k")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"T = {T}: learned learning rate per layer")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        for label in labels:
            curves = [r["curve"] for k, r in ok.items() if k.startswith(f"T{T}/{label}/") and r["curve"]]
            if curves:
                n = min(len(c) for c in curves)
                ax.plot([c[0] for c in curves[0][:n]],
                        [math.exp(sum(math.log(c[i][1]) for c in curves) / len(curves)) for i in range(n)], label=label)
        ax.set_yscale("log")
        ax.set_xlabel("outer step")
        ax.set_ylabel("lr fc1")
        ax.legend(fontsize=7)
    if drawn:
        fig.tight_layout()
        fig.savefig(PICTURE, dpi=100)
    plt.close(fig)
    return drawn


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("runs", "cosines", "memory", "report", "child"):
        q = sub.add_parser(name)
        q.add_argument("--data-root", default="./data")
        q.add_argument("--steps", type=int, nargs="+", default=[10, 100, 1000] if name != "memory" else
                       [10, 100, 1000, 3000])
        q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        q.add_argument("--parallel", type=int, default=2)
        q.add_argument("--full-max", type=int, default=3000, help="memory: the largest T Full is run at")
        q.add_argument("--T", type=int)
        q.add_argument("--label")
    args = p.parse_args()
    {"runs": runs, "cosines": cosines, "memory": memory, "report": report, "child": child}[args.command](args)


if __name__ == "__main__":
    sys.exit(guarded(main))
