"""The campaign's runner: the next cells of a plan as train.py processes within a budget of seconds,
each stopped in time to write its checkpoint; and ``status``, every cell's state.

``args`` is the command line of :func:`harness.campaign.main` (``out``, ``keep``,
``root``: the checkout whose train.py runs, ...).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

from .. import files
from ..rundir import LOCK, WriteError, fault_text, link_in, open_append, open_lock, take_lock, write_text
from ..settings import UsageError, one_line
from .plan import (EVAL_KEYS, Cell, Plan, checkpoint_of, load_plan, plans_in, read_cell, read_record, resolved,
                   segments_of, shown, state)

TRAIN = "train.py"  # the entry point each cell runs, in the checkout (args.root)
SMALL = ("cell.json", "summary.json", "config.yaml", "curve.jsonl")  # what a finished cell keeps in DIR
CURVE_POINTS = 25  # a finished cell's curve: every evaluation row, the last row, and about this many others
MARGIN_S = 3.0  # after the last process has exited: moving files and writing records
POLL_S = 0.2
clock = time.monotonic  # one clock for the budget (the tests warp it)


# ---- what is in a cell's directory ----------------------------------------------------------------------


def write_json(path: str, data) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


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
    """A finished or diverged cell: write its curve and move everything but the small files out of DIR.
    A damaged file (FileDamaged, CheckpointError) stops it before anything is written."""
    d, kept = os.path.join(out, cell.path), os.path.join(keep, cell.path)
    for root, path in ((out, d), (keep, kept)):
        if link_in(root, path):
            raise files.FileDamaged(f"{shown(link_in(root, path))} is a symbolic link; refusing to move files into it")
    found = read_cell(d)
    record = found["record"] or {"cell": cell_fields(cell), "attempts": []}
    summary = found["summary"] or {}
    record["segments"] = segments_of(found["checkpoint"], record, summary)
    metrics = files.read_rows(os.path.join(d, "metrics.jsonl"))
    if metrics is not None:
        lines = [raw.decode() for raw in metrics[1]]
        write_text(os.path.join(d, "curve.jsonl"), "".join(thin(lines, summary.get("steps_done") or len(lines))))
    record["outcome"] = summary.get("status")
    write_json(os.path.join(d, "cell.json"), record)
    for name in sorted(os.listdir(d)):
        if name not in SMALL:
            move_aside(os.path.join(d, name), kept)


def tidy(cell: Cell, args) -> None:
    """:func:`finalize`, a damaged cell said in one line and left as it is."""
    from ..checkpoint import CheckpointError
    try:
        finalize(cell, args.out, args.keep)
    except (files.FileDamaged, CheckpointError) as e:
        print(f"damaged: {cell.path}: {one_line(e, 300)}", flush=True)


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
    """Whether a live process holds the run directory's lock (train.py's ``.lock``, taken with flock,
    which the kernel releases when its holder ends). train.py itself refuses such a directory ("in
    use"); this check only keeps us from tidying a directory that another process is writing. The
    lock is opened as every lock is (:func:`harness.rundir.open_lock`: never blocking, never through
    a link; UsageError when it is not a regular file). The process id written in it is not looked
    at: it may now be an unrelated process's."""
    import fcntl
    try:
        fd, _ = open_lock(os.path.join(cell_dir, LOCK), f"cell {shown(cell_dir)}", write=False)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """A cell whose campaign dies (even by SIGKILL) gets SIGTERM, so it still writes its checkpoint."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launch(cell: Cell, args, threads: int, device: str, info: dict) -> Process:
    """Start train.py on a cell whose state (``info``) was read and found sound."""
    d = os.path.join(args.out, cell.path)
    keep_dir = os.path.join(args.keep, cell.path)
    if link_in(args.keep, keep_dir):
        raise UsageError(f"{shown(link_in(args.keep, keep_dir))} is a symbolic link; refusing to write through it")
    os.makedirs(keep_dir, exist_ok=True)
    record = info["record"]
    run_dir = shown(d, args.root)  # relative inside the checkout, so that a checkpoint resumes on any machine
    if os.path.lexists(os.path.join(d, "checkpoint.pt")):  # read and found sound (state)
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
    with open_append(log_path) as log:
        log.write(f"\n==== {utc_now()} {device}, {threads} threads: train.py {shlex.join(flags)}\n")
        log.flush()
        offset = log.tell()
        env = {**os.environ, "PYTHONPATH": args.root, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
        proc = subprocess.Popen([sys.executable, os.path.join(args.root, TRAIN), *flags], cwd=args.root, env=env,
                                stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    return Process(cell, proc, clock(), time.time(), info["step"], log_path, offset)


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
    from ..checkpoint import CheckpointError
    d = os.path.join(args.out, p.cell.path)
    if link_in(args.out, d):
        print(f"damaged: {p.cell.path}: {shown(link_in(args.out, d))} is a symbolic link; nothing recorded", flush=True)
        return "damaged"
    path = os.path.join(d, "summary.json")
    fresh = os.path.exists(path) and os.path.getmtime(path) >= p.started_at - 1
    try:
        summary = (files.read_summary(d) or {}) if fresh else {}
    except files.FileDamaged:
        summary = {}  # recorded as failed; status then shows the file as damaged
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
    try:
        ckpt = checkpoint_of(d)
    except CheckpointError:
        ckpt = None
    try:
        record = read_record(d)
    except files.FileDamaged:  # kept aside, not written over
        move_aside(os.path.join(d, "cell.json"), os.path.join(args.keep, p.cell.path))
        record = None
    record = record or {"cell": cell_fields(p.cell), "attempts": []}
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
        tidy(p.cell, args)
    return outcome


def run(args, started: float) -> int:
    budget_end = started + args.budget_s
    grace = args.grace_s if args.grace_s is not None else min(30.0, max(5.0, 0.05 * args.budget_s))
    stop_at = budget_end - grace - MARGIN_S
    plan = load_plan(args.plan)
    for cell in plan.cells:
        resolved(cell.args, args.root)  # a bad flag in the plan is found now, not in a window of GPU time
    # one campaign at a time in DIR: a second is refused at once (the kernel drops a dead holder's lock)
    lock = take_lock(args.out, f"results directory {shown(args.out)}")
    try:
        return _run(args, plan, stop_at, grace)
    finally:
        os.close(lock)


def cell_threads(threads: int, parallel: int, env) -> int:
    """torch's threads in each cell: ``--threads`` when given; else the OMP_NUM_THREADS the campaign
    was started with (the README's advice on a busy CPU); else the cores divided by ``--parallel``."""
    if threads:
        return threads
    if str(env.get("OMP_NUM_THREADS", "")).isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores // parallel)


def _run(args, plan: Plan, stop_at: float, grace: float) -> int:
    plan_dir = os.path.join(args.out, plan.name)
    if link_in(args.out, plan_dir):
        raise UsageError(f"{shown(link_in(args.out, plan_dir))} is a symbolic link; refusing to write through it")
    os.makedirs(plan_dir, exist_ok=True)
    copy = os.path.join(plan_dir, "plan.yaml")
    if os.path.abspath(copy) != os.path.abspath(args.plan):
        write_text(copy, plan.text)
    device = device_kind(args.device)
    threads = cell_threads(args.threads, args.parallel, os.environ)

    states = {cell: state(cell, args.out) for cell in plan.cells}
    damaged = [c for c in plan.cells if states[c]["state"] == "damaged"]
    for cell in damaged:  # never run over, never taken for new: the user decides
        print(f"damaged: {cell.path}: {states[cell]['problem']} (left as it is; not run)", flush=True)
    for cell, s in states.items():  # finished while the last campaign was being stopped
        if s["state"] in ("done", "diverged") and os.path.exists(os.path.join(args.out, cell.path, "checkpoint.pt")):
            tidy(cell, args)
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
    running, outcomes, refused, faults = [], [], [], []

    def settled(p: Process, rc: int) -> None:
        try:
            outcome = settle(p, rc, args, device)
        except (WriteError, OSError) as e:  # a full disk: the others are stopped, their checkpoints kept
            print(f"error: {p.cell.path}: {fault_text(e, 300)}; its run's own files are intact", flush=True)
            faults.append(e)
            outcome = "failed"
        outcomes.append((p, outcome))
        print(f"{outcome}: {p.cell.path}", flush=True)

    try:
        while not stopping and not faults and clock() < stop_at:
            while queue and len(running) < args.parallel and stop_at - clock() >= (
                    queue[0].min_start_s if args.min_start_s is None else args.min_start_s):
                cell = queue.pop(0)
                try:
                    if held(os.path.join(args.out, cell.path)):
                        print(f"skipped {cell.path}: in use by another process", flush=True)
                        continue
                    running.append(launch(cell, args, threads, device, states[cell]))
                except (UsageError, WriteError) as e:  # the others run on; this cell is left as it is
                    print(f"skipped {cell.path}: {one_line(e, 300)}", flush=True)
                    refused.append(cell)
                    continue
                print(f"started {cell.path}", flush=True)
            if not running:
                break
            for p in [p for p in running if p.proc.poll() is not None]:
                running.remove(p)
                settled(p, p.proc.returncode)
            time.sleep(POLL_S)
        stop_all(running, grace, settled)  # the budget is spent (or we were told to stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return ending(plan, outcomes, len(queue), len(damaged), bool(refused), stopping)


def ending(plan: Plan, outcomes: list, left: int, damaged: int, refused: bool, stopping: list) -> int:
    """The window's last line and its exit status: 130 when a signal stopped it (a wrapper must tell
    an interrupted window from a finished one), 1 when a cell failed, 2 when a cell was damaged or
    refused, else 0."""
    counts = collections.Counter(outcome for _, outcome in outcomes)
    print(f"{plan.name}: " + (", ".join(f"{n} {o}" for o, n in counts.items()) or "nothing ran")
          + f"; {left} left to start" + (f"; {damaged} damaged, not run" if damaged else ""), flush=True)
    if stopping:
        print(f"interrupted ({signal.Signals(stopping[0]).name}): the running cells were stopped, each with its "
              "checkpoint; every file already written is whole", file=sys.stderr, flush=True)
        return 130
    return 1 if counts.get("failed") else 2 if damaged or refused or counts.get("damaged") else 0


def stop_all(running: list, grace: float, settled) -> None:
    """Every running cell checkpoints and exits (SIGTERM), or is killed ``grace`` seconds later."""
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
        settled(p, p.proc.wait())


# ---- status -------------------------------------------------------------------------------------------

def describe(s: dict) -> str:
    if s["state"] == "running":
        return f"at step {s['step']} of {s['steps']}"
    return {"new": "not started", "diverged": f"diverged at step {s['step']}"}.get(s["state"], s["state"])


def size_of(path: str) -> tuple[int, int]:
    total, count = 0, 0
    for base, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
            count += 1
    return total, count


def moment(text: str) -> datetime.datetime:
    """``--since``: an ISO date or date and time, UTC unless it names its zone."""
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r}: not an ISO date or date and time (e.g. 2026-12-03 or "
                         "2026-12-03T14:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def attempts_since(record: dict, since: datetime.datetime) -> collections.Counter:
    """Seconds of the campaign's processes per device, over a cell's attempts started at ``since``
    or later (an attempt without a readable start is left out)."""
    total = collections.Counter()
    for a in record.get("attempts", []):
        try:
            started = moment(str(a.get("started")))
        except UsageError:
            continue
        if started >= since:
            total[str(a.get("device", "?"))] += float(a.get("seconds", 0.0))
    return total


def by_device(seconds: collections.Counter) -> str:
    return ", ".join(f"{v / 3600:.2f} h on {k}" for k, v in sorted(seconds.items())) or "none"


def status(args) -> int:
    since = moment(args.since) if args.since else None
    plans = plans_in(args.out, args.plan)
    if not plans:
        print(f"no plan has run into {shown(args.out)} yet")
    recent = collections.Counter()
    for plan in plans:
        counts, seconds, wall, fresh = {}, 0.0, 0.0, collections.Counter()
        print(f"{plan.name} ({len(plan.cells)} cells)")
        for cell in plan.cells:
            s = state(cell, args.out)
            if since:
                fresh += attempts_since(s["record"], since)
            counts[s["state"]] = counts.get(s["state"], 0) + 1
            seconds += s["seconds"]
            wall += s["wall"]
            if s["state"] == "new" and args.brief:
                continue
            print(f"  {cell.path:<48} {describe(s):<24} {', '.join(s['devices']) or '-':<12} "
                  f"{s['seconds']:8.0f} s training {s['wall']:8.0f} s wall")
            for text in s["tail"][-3:] + ([s["problem"]] if s["problem"] else []):
                print(f"      | {text}")
        names = {"done": "done", "diverged": "diverged", "failed": "failed", "running": "in progress",
                 "new": "not started", "damaged": "damaged"}
        print("  total: " + ", ".join(f"{counts.get(k, 0)} {v}" for k, v in names.items())
              + f"; {seconds / 3600:.2f} h training, {wall / 3600:.2f} h wall")
        if since:
            print(f"  wall time of the attempts started since {since.isoformat()}: {by_device(fresh)}")
            recent += fresh
    if since and len(plans) > 1:
        print(f"all plans, wall time of the attempts started since {since.isoformat()}: {by_device(recent)}")
    size, count = size_of(args.out)
    print(f"{shown(args.out)}: {size / 1e6:.2f} MB in {count} files")
    return 0
