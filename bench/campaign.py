"""A resumable experiment campaign: the cells of a plan run as train.py processes in short windows,
on any machine, and their results accumulate in the repository under results/.

    python bench/campaign.py run --plan configs/campaign/table3.yaml --budget-s 840 --parallel 4 --device cuda
    python bench/campaign.py status                   # every cell: done / at step k of n / ...; the size of results/
    python bench/campaign.py report                   # the campaign sections of docs/RESULTS.md

A plan (configs/campaign/*.yaml) lists groups of cells in priority order; a cell is one train.py run
(a setting of the experiment, a labelled method, a seed) in its own directory
``DIR/<plan>/<setting>/<method>/seed<S>``. ``run`` resumes the cells that hold a checkpoint, then
starts the next ones, N at a time, and stops them all (SIGTERM: train.py writes a checkpoint and
exits) early enough to end within its budget. A finished cell keeps only small files in DIR (its
summary, config, a thinned metrics curve and this campaign's record); its full metrics and final
checkpoint move to the keep directory (``runs/campaign`` beside DIR, ignored by git).
"""
from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here, before the slow imports

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from common import ROOT  # noqa: E402

TRAIN = os.path.join(ROOT, "train.py")
DEFAULT_OUT = os.path.join(ROOT, "results")
SMALL = ("cell.json", "summary.json", "config.yaml", "curve.jsonl")  # what a finished cell keeps in DIR
CURVE_POINTS = 25  # a finished cell's curve: every evaluation row, the last row, and about this many others
EVAL_KEYS = ("meta_val_acc", "val_acc", "test_acc")
MARGIN_S = 3.0  # after the last process has exited: moving files and writing records
POLL_S = 0.2
clock = time.monotonic  # one clock for the budget (the tests warp it)


class PlanError(Exception):
    """A plan that cannot be run: reported as one line, exit status 2."""


# ---- plans --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Cell:
    plan: str
    setting: tuple  # ((key, value), ...) in the plan's order
    method: str  # the plan's label, e.g. "greedy 0.99"
    seed: int
    args: tuple  # train.py flags of a new run (without --run-dir and the machine's flags)
    path: str  # relative to DIR, e.g. "table3/5way/greedy-0.99/seed0"
    min_start_s: float  # do not start it with less budget than this left


@dataclasses.dataclass
class Plan:
    name: str
    text: str  # the plan file, copied beside its cells so that status and report need only DIR
    cells: list
    methods: list  # labels in order of first appearance: the report's rows
    gammas: list  # labels the report's "gamma chosen on validation" row picks among


def slug(label: str) -> str:
    """A method label as a directory name: ``IFT(2)`` -> ``ift2``, ``w/o HPO`` -> ``wo-hpo``."""
    return re.sub(r"[^a-z0-9.+-]+", "-", re.sub(r"[()/,']", "", label.lower())).strip("-")


def split_flags(flags) -> list[str]:
    return shlex.split(flags) if isinstance(flags, str) else [str(f) for f in flags]


def shown(path: str) -> str:
    """A path relative to the repository when it is inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def load_plan(path: str) -> Plan:
    """Read and expand a plan. Groups in order; within a group seed-major, then the settings (the
    product of the ``settings`` lists, in the order written), then the methods, so that a partial
    campaign compares every method on the same seeds."""
    import yaml
    try:
        with open(path) as fh:
            text = fh.read()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        raise PlanError(f"plan '{path}' cannot be read: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise PlanError(f"plan '{path}' is nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise PlanError(f"plan '{path}' needs a list of groups")
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "plan":  # the copy in DIR/<name>/plan.yaml
        stem = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = str(data.get("name") or stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise PlanError(f"plan '{path}': its name {name!r} must be a plain directory name (letters, digits, _ . -)")
    try:
        return _expand(path, data, name, text)
    except (TypeError, ValueError, AttributeError, IndexError) as e:  # a value of the wrong kind somewhere
        raise PlanError(f"plan '{path}' is malformed ({type(e).__name__}: {str(e)[:120]})") from None


def _expand(path: str, data: dict, name: str, text: str) -> Plan:
    methods = {str(k): split_flags(v) for k, v in (data.get("methods") or {}).items()}
    cells, order, seen = [], [], {}
    for i, group in enumerate(data["groups"]):
        where = f"plan '{path}', group {i + 1}"
        train = group.get("train", data.get("train", ""))
        template = group.get("path", data.get("path"))
        min_start = float(group.get("min_start_s", data.get("min_start_s", 30)))
        settings = {str(k): v if isinstance(v, list) else [v] for k, v in (group.get("settings") or {}).items()}
        unknown = [m for m in group.get("methods", []) if str(m) not in methods]
        if unknown or not group.get("methods") or not group.get("seeds"):
            raise PlanError(f"{where}: needs methods (from the plan's methods) and seeds"
                            + (f"; unknown method {unknown[0]!r}" if unknown else ""))
        for seed in group["seeds"]:
            for values in itertools.product(*settings.values()):
                setting = dict(zip(settings, values))
                try:
                    flags = split_flags(train.format(**setting) if isinstance(train, str)
                                        else [str(f).format(**setting) for f in train])
                    sub = template.format(**setting) if template else \
                        "-".join(f"{k}{v}" for k, v in setting.items()) or "default"
                except KeyError as e:
                    raise PlanError(f"{where}: {{{e.args[0]}}} is not a setting of the group") from None
                if any(part in ("", ".", "..") for part in sub.split("/")) or sub.startswith("/"):
                    raise PlanError(f"{where}: the cell directory {sub!r} must stay inside the plan's")
                for label in map(str, group["methods"]):
                    rel = "/".join([name, sub, slug(label), f"seed{seed}"])
                    if rel in seen:
                        raise PlanError(f"{where}: two cells share the directory {rel}")
                    seen[rel] = True
                    cells.append(Cell(name, tuple(setting.items()), label, int(seed),
                                      tuple(flags + ["--seed", str(seed)] + methods[label]), rel, min_start))
                    if label not in order:
                        order.append(label)
    gammas = [str(g) for g in data.get("gammas", [])]
    if any(g not in order for g in gammas):
        raise PlanError(f"plan '{path}': gammas must be labels of its cells")
    return Plan(name, text, cells, order, gammas)


@functools.lru_cache(maxsize=None)
def resolved(args: tuple):
    """The train.py config of a cell's flags (task, outer steps, ...), as train.py would resolve it."""
    import tasks
    from metagreedy import config
    cwd = os.getcwd()
    os.chdir(ROOT)  # the plans' paths (configs/...) are relative to the repository, as in train.py's runs
    try:
        cfg = config.resolve(list(args), tasks.defaults)
        config.validate(cfg)
        return cfg
    except config.UsageError as e:
        raise PlanError(f"train.py {' '.join(args)}: {e}") from None
    finally:
        os.chdir(cwd)


def plans_in(out: str, given: list[str] | None) -> list[Plan]:
    """The plans named on the command line, or else every plan that has run into DIR."""
    if given:
        return [load_plan(p) for p in given]
    found = sorted(os.path.join(out, d, "plan.yaml") for d in os.listdir(out)) if os.path.isdir(out) else []
    return [load_plan(p) for p in found if os.path.isfile(p)]


# ---- what is in a cell's directory ----------------------------------------------------------------------

def read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def write_json(path: str, data) -> None:
    from metagreedy.rundir import write_text
    write_text(path, json.dumps(data, indent=1) + "\n")


def checkpoint_of(cell_dir: str):
    if not os.path.isfile(os.path.join(cell_dir, "checkpoint.pt")):
        return None
    from metagreedy import checkpoint
    try:
        return checkpoint.load(cell_dir)
    except checkpoint.CheckpointError:
        return None


def state(cell: Cell, out: str) -> dict:
    """``state``: done | diverged | failed | running (holds a checkpoint) | new, with ``step`` and
    ``steps`` (outer steps done and planned), ``devices`` and ``seconds`` (of training, from the
    checkpoint's segments when train.py writes them, else its elapsed time) and ``wall`` (seconds of
    the campaign's processes), ``tail`` (the end of the log of a failed cell)."""
    d = os.path.join(out, cell.path)
    record = read_json(os.path.join(d, "cell.json")) or {}
    summary = read_json(os.path.join(d, "summary.json")) or {}
    attempts = record.get("attempts", [])
    info = {"state": "new", "step": 0, "steps": None, "summary": summary, "record": record,
            "wall": sum(a.get("seconds", 0.0) for a in attempts), "tail": record.get("tail", [])}
    ckpt = checkpoint_of(d)
    if ckpt is not None:
        info.update(step=ckpt["step"], steps=ckpt["config"]["outer_steps"], state="running")
    elif os.path.isfile(os.path.join(d, "checkpoint.pt")):
        info.update(step="?", steps="? (its checkpoint cannot be read)", state="running")
    if summary.get("status") in ("finished", "diverged"):
        info.update(state="done" if summary["status"] == "finished" else "diverged", step=summary.get("steps_done"))
    elif record.get("outcome") == "failed":
        info["state"] = "failed"
    segments = segments_of(ckpt, record, summary)
    info["devices"] = list(dict.fromkeys(str(s.get("device")) for s in segments))
    info["seconds"] = sum(s.get("seconds", 0.0) for s in segments)
    return info


def segments_of(ckpt, record: dict, summary: dict) -> list[dict]:
    """Which devices advanced a run, for how many seconds of training: the checkpoint's segments when
    train.py writes them (kept in the record once the checkpoint leaves DIR); else one segment of its
    elapsed training time on the devices of the campaign's attempts."""
    if (ckpt or {}).get("segments") or record.get("segments"):
        return (ckpt or {}).get("segments") or record["segments"]
    seconds = ckpt.get("elapsed") if ckpt is not None else summary.get("wall_time")
    if seconds is None:
        return []
    devices = list(dict.fromkeys(a["device"] for a in record.get("attempts", [])))
    return [{"device": ", ".join(devices) or (ckpt or {}).get("config", {}).get("device") or "?", "seconds": seconds}]


def thin(lines: list[str], steps: int) -> list[str]:
    """The curve a finished cell keeps: every evaluation row, the last, and every k-th row."""
    k = max(1, math.ceil(steps / CURVE_POINTS))
    keep = []
    for i, text in enumerate(lines):
        row = json.loads(text)
        if any(key in row for key in EVAL_KEYS) or row["step"] % k == 0 or i == len(lines) - 1:
            keep.append(text if text.endswith("\n") else text + "\n")
    return keep


def move_aside(src: str, dest_dir: str) -> None:
    """Move a file or folder into ``dest_dir`` under its own name, never over an existing one."""
    os.makedirs(dest_dir, exist_ok=True)
    base = os.path.basename(src)
    dest = os.path.join(dest_dir, base)
    n = 1
    while os.path.lexists(dest):
        dest = os.path.join(dest_dir, f"{base}.{n}")
        n += 1
    shutil.move(src, dest)


def finalize(cell: Cell, out: str, keep: str) -> None:
    """A finished or diverged cell: write its curve and move everything but the small files out of DIR."""
    d = os.path.join(out, cell.path)
    record = read_json(os.path.join(d, "cell.json")) or {"cell": cell_fields(cell), "attempts": []}
    record["segments"] = segments_of(checkpoint_of(d), record, read_json(os.path.join(d, "summary.json")) or {})
    metrics_path = os.path.join(d, "metrics.jsonl")
    if os.path.exists(metrics_path):
        with open(metrics_path) as fh:
            lines = [line for line in fh if line.strip()]
        steps = (read_json(os.path.join(d, "summary.json")) or {}).get("steps_done") or len(lines)
        with open(os.path.join(d, "curve.jsonl"), "w") as fh:
            fh.writelines(thin(lines, steps))
    record["outcome"] = (read_json(os.path.join(d, "summary.json")) or {}).get("status")
    write_json(os.path.join(d, "cell.json"), record)
    for name in sorted(os.listdir(d)):
        if name not in SMALL:
            move_aside(os.path.join(d, name), os.path.join(keep, cell.path))


def cell_fields(cell: Cell) -> dict:
    return {"plan": cell.plan, "setting": dict(cell.setting), "method": cell.method, "seed": cell.seed,
            "train": shlex.join(cell.args)}


# ---- run ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Process:
    cell: Cell
    proc: subprocess.Popen
    started: float  # clock()
    started_at: float  # time.time(), for the record and to tell this process's summary from an older one
    from_step: int
    log_path: str
    log_offset: int
    signalled: bool = False


def device_kind(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def held(cell_dir: str) -> bool:
    """Whether a live process holds the run directory's lock file (train.py's ``.lock``, taken with
    flock or holding its process id). train.py itself refuses such a directory ("in use"); this
    check only keeps us from tidying a directory that another process is writing."""
    path = os.path.join(cell_dir, ".lock")
    if not os.path.exists(path):
        return False
    import fcntl
    try:
        with open(path, "r+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            pid = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """A cell whose campaign dies (even by SIGKILL) gets SIGTERM, so it still writes its checkpoint."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(cell: Cell, args, threads: int, device: str) -> Process:
    d = os.path.join(args.out, cell.path)
    keep_dir = os.path.join(args.keep, cell.path)
    os.makedirs(keep_dir, exist_ok=True)
    record = read_json(os.path.join(d, "cell.json")) or {}
    run_dir = shown(d)  # relative inside the repository, so that a checkpoint resumes on any machine
    ckpt = checkpoint_of(d)
    if os.path.isfile(os.path.join(d, "checkpoint.pt")):  # train.py says so if it cannot read it
        flags = ["--resume", run_dir]
    else:
        # what an attempt stopped before its first checkpoint left behind: kept, but out of train.py's way
        leftovers = [n for n in os.listdir(d) if n != "cell.json"] if os.path.isdir(d) else []
        for name in leftovers:
            move_aside(os.path.join(d, name), os.path.join(keep_dir, f"aborted-{len(record.get('attempts', []))}"))
        flags = [*cell.args, "--run-dir", run_dir]
    flags += ["--device", args.device, "--no-progress", "--wandb", "disabled"]
    if args.data_root:
        flags += ["--data-root", args.data_root]
    log_path = os.path.join(keep_dir, "train.log")
    with open(log_path, "a") as log:
        log.write(f"\n==== {utc_now()} {device}, {threads} threads: train.py {shlex.join(flags)}\n")
        offset = log.tell()
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, TRAIN, *flags], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    return Process(cell, proc, clock(), time.time(), ckpt["step"] if ckpt else 0, log_path, offset)


def utc_now(at: float | None = None) -> str:
    return datetime.datetime.fromtimestamp(time.time() if at is None else at,
                                           datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_tail(p: Process, lines: int = 20) -> list[str]:
    with open(p.log_path, errors="replace") as fh:
        fh.seek(p.log_offset)
        return fh.read().splitlines()[-lines:]


def settle(p: Process, rc: int, args, device: str) -> str:
    """Record how a process ended; returns the outcome: finished | diverged | interrupted | stopped
    | locked (another process holds the directory: nothing recorded) | failed."""
    d = os.path.join(args.out, p.cell.path)
    path = os.path.join(d, "summary.json")
    fresh = os.path.exists(path) and os.path.getmtime(path) >= p.started_at - 1
    summary = (read_json(path) or {}) if fresh else {}
    tail = log_tail(p)
    # a summary this process wrote decides; the exit status alone does not (our stop signal may
    # arrive after the summary, while the process shuts down)
    if summary.get("status") == "finished" and (rc == 0 or p.signalled):
        outcome = "finished"
    elif summary.get("status") == "diverged" and (rc == 1 or p.signalled):
        outcome = "diverged"
    elif rc == 2 and any("in use" in line for line in tail):
        print(f"skipped {p.cell.path}: {tail[-1] if tail else 'in use'}", flush=True)
        return "locked"  # another process's run: nothing of ours to record
    elif rc == 130:
        outcome = "interrupted"  # with a checkpoint of its last outer step
    elif p.signalled and rc != 2:
        outcome = "stopped"  # by our signal before it could checkpoint: its last checkpoint (if any) stands
    else:
        outcome = "failed"
    ckpt = checkpoint_of(d)
    record = read_json(os.path.join(d, "cell.json")) or {"cell": cell_fields(p.cell), "attempts": []}
    done = outcome in ("finished", "diverged")
    record["attempts"].append({
        "device": device, "started": utc_now(p.started_at), "seconds": round(clock() - p.started, 1), "rc": rc,
        "outcome": outcome, "from_step": p.from_step,
        "to_step": summary.get("steps_done") if done else (ckpt or {}).get("step", p.from_step)})
    record["outcome"] = outcome
    record["tail"] = tail if outcome == "failed" else []
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "cell.json"), record)
    if done:
        finalize(p.cell, args.out, args.keep)
    return outcome


def run(args, started: float) -> int:
    budget_end = started + args.budget_s
    grace = args.grace_s if args.grace_s is not None else min(30.0, max(5.0, 0.05 * args.budget_s))
    stop_at = budget_end - grace - MARGIN_S
    plan = load_plan(args.plan)
    for cell in plan.cells:
        resolved(cell.args)  # a bad flag in the plan is found now, not in a window of GPU time
    os.makedirs(os.path.join(args.out, plan.name), exist_ok=True)
    copy = os.path.join(args.out, plan.name, "plan.yaml")
    if os.path.abspath(copy) != os.path.abspath(args.plan):
        with open(copy, "w") as fh:
            fh.write(plan.text)
    device = device_kind(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or max(1, cores // args.parallel)

    states = {cell: state(cell, args.out) for cell in plan.cells}
    for cell, s in states.items():  # finished while the last campaign was being stopped
        if s["state"] in ("done", "diverged") and os.path.exists(os.path.join(args.out, cell.path, "checkpoint.pt")):
            finalize(cell, args.out, args.keep)
    # cells that hold a checkpoint first (finishing them also takes their checkpoints out of DIR), then
    # the others in the plan's order; a failed cell waits for --retry-failed
    later = ("new", "failed") if args.retry_failed else ("new",)
    queue = [c for c in plan.cells if states[c]["state"] == "running"] + \
            [c for c in plan.cells if states[c]["state"] in later]
    print(f"{plan.name}: {len(queue)} of {len(plan.cells)} cells to run; {args.parallel} at a time on {device} "
          f"({threads} threads each); budget {args.budget_s:.0f} s, stop signal "
          f"{max(0.0, stop_at - clock()):.0f} s from now", flush=True)

    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    running, outcomes = [], []
    try:
        while not stopping and clock() < stop_at:
            while queue and len(running) < args.parallel and stop_at - clock() >= (
                    queue[0].min_start_s if args.min_start_s is None else args.min_start_s):
                cell = queue.pop(0)
                if held(os.path.join(args.out, cell.path)):
                    print(f"skipped {cell.path}: in use by another process", flush=True)
                    continue
                running.append(launch(cell, args, threads, device))
                print(f"started {cell.path}", flush=True)
            if not running:
                break
            for p in [p for p in running if p.proc.poll() is not None]:
                running.remove(p)
                outcomes.append((p, settle(p, p.proc.returncode, args, device)))
                print(f"{outcomes[-1][1]}: {p.cell.path}", flush=True)
            time.sleep(POLL_S)
        # the budget is spent (or we were told to stop): every cell checkpoints and exits
        for p in running:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
            p.signalled = True
        kill_at = clock() + grace
        while any(p.proc.poll() is None for p in running) and clock() < kill_at:
            time.sleep(POLL_S)
        for p in running:
            if p.proc.poll() is None:
                print(f"no exit {grace:.0f} s after the stop signal: SIGKILL {p.cell.path} "
                      "(its last checkpoint stays valid)", flush=True)
                p.proc.kill()
            outcomes.append((p, settle(p, p.proc.wait(), args, device)))
            print(f"{outcomes[-1][1]}: {p.cell.path}", flush=True)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    counts = collections.Counter(outcome for _, outcome in outcomes)
    print(f"{plan.name}: " + (", ".join(f"{n} {o}" for o, n in counts.items()) or "nothing ran")
          + f"; {len(queue)} left to start", flush=True)
    return 1 if counts.get("failed") else 0


# ---- status -------------------------------------------------------------------------------------------

def describe(s: dict) -> str:
    if s["state"] == "running":
        return f"at step {s['step']} of {s['steps']}"
    return {"new": "not started", "diverged": f"diverged at step {s['step']}"}.get(s["state"], s["state"])


def size_of(path: str) -> tuple[int, int]:
    total, files = 0, 0
    for base, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(base, name))
            files += 1
    return total, files


def status(args) -> int:
    plans = plans_in(args.out, args.plan)
    if not plans:
        print(f"no plan has run into {shown(args.out)} yet")
    for plan in plans:
        counts, seconds, wall = {}, 0.0, 0.0
        print(f"{plan.name} ({len(plan.cells)} cells)")
        for cell in plan.cells:
            s = state(cell, args.out)
            counts[s["state"]] = counts.get(s["state"], 0) + 1
            seconds += s["seconds"]
            wall += s["wall"]
            if s["state"] == "new" and args.brief:
                continue
            print(f"  {cell.path:<48} {describe(s):<24} {', '.join(s['devices']) or '-':<12} "
                  f"{s['seconds']:8.0f} s training {s['wall']:8.0f} s wall")
            for text in s["tail"][-3:]:
                print(f"      | {text}")
        names = {"done": "done", "diverged": "diverged", "failed": "failed", "running": "in progress",
                 "new": "not started"}
        print("  total: " + ", ".join(f"{counts.get(k, 0)} {v}" for k, v in names.items())
              + f"; {seconds / 3600:.2f} h training, {wall / 3600:.2f} h wall")
    size, files = size_of(args.out)
    print(f"{shown(args.out)}: {size / 1e6:.2f} MB in {files} files")
    return 0


# ---- command line -------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the next cells of a plan within a budget of seconds")
    r.add_argument("--plan", required=True)
    r.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for the whole command")
    r.add_argument("--parallel", type=int, default=1, help="cells side by side on the device")
    r.add_argument("--threads", type=int, default=0,
                   help="torch threads of each cell (default: the cores divided by --parallel)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--data-root", default=None, help="passed to every train.py (default: train.py's)")
    r.add_argument("--grace-s", type=float, default=None,
                   help="seconds between the stop signal and SIGKILL (default: 5%% of the budget, 5 to 30)")
    r.add_argument("--min-start-s", type=float, default=None,
                   help="start no cell with less budget left (default: the plan's min_start_s)")
    r.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    s = sub.add_parser("status", help="every cell's state, the totals and the size of DIR")
    s.add_argument("--plan", action="append")
    s.add_argument("--brief", action="store_true", help="leave out cells not started")
    t = sub.add_parser("report", help="rewrite the campaign sections of the results page")
    t.add_argument("--plan", action="append")
    t.add_argument("--doc", default=os.path.join(ROOT, "docs", "RESULTS.md"))
    for q in (r, s, t):
        q.add_argument("--out", default=DEFAULT_OUT, help="the results directory (committed to git)")
        q.add_argument("--keep", default=None, help="where finished cells' full metrics and checkpoints go "
                                                    "(default: runs/campaign beside --out)")
    return p


def main(argv=None, started: float | None = None) -> int:
    """``started``: when the budget began (the process's start, for the command line)."""
    started = clock() if started is None else started
    args = parser().parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.keep = os.path.abspath(args.keep or os.path.join(os.path.dirname(args.out), "runs", "campaign"))
    try:
        if args.command == "run":
            if args.parallel < 1 or not math.isfinite(args.budget_s) or args.budget_s <= 0:
                raise PlanError("--parallel and --budget-s must be positive (and the budget finite)")
            if args.device == "cuda":
                import torch
                if not torch.cuda.is_available():
                    raise PlanError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
            return run(args, started)
        if args.command == "status":
            return status(args)
        from campaign_report import report
        return report(args)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the doc or the results directory cannot be written
        print(f"error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import campaign  # one copy of this module, also for campaign_report's imports (and its PlanError)
    sys.exit(campaign.main(started=STARTED))
