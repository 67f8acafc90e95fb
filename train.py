"""Meta-training and hyperparameter optimization with greedy hypergradients.

    python train.py --ways 5 --shots 1                       # few-shot Omniglot, warp layers 2/4/6
    python train.py --task hyper_cleaning --dataset mnist --noise 0.3
    python train.py --task toy --method greedy --gamma 0.9
    python train.py --config configs/omniglot_5way.yaml --seed 3
    python train.py --resume runs/omniglot-5way1shot-greedy-seed0-20261127-101500
    torchrun --nproc_per_node 2 train.py ...                  # meta-batch split across processes

``run`` reads top to bottom: set up (settings -> task -> run directory and log), the outer loop
(outer step, evaluate, checkpoint), then finish (final evaluation and summary). What a run carries
from one outer step to the next is one :class:`RunState`, which converts to and from a checkpoint.
Every setting is declared once, with its default and help: those of every task in
harness/config.py, each task's own in its module (``python train.py --help``); what
train.py asks of a task is written down in tasks/__init__.py.
"""
from __future__ import annotations

import math
import os
import sys
import time

EXIT = {"finished": 0, "interrupted": 130, "diverged": 1}


def run(argv=None, stop=None, hooks=None) -> int:
    """One run, from the command line ``argv``; ``stop``: the stop-signal handler (installed here when
    None); ``hooks``: fault hooks for the tests (default: what METAGREEDY_FAULT asks for, read once)."""
    from harness import faults
    from harness.distributed import World
    from harness.signals import Interrupted, Stop

    own_stop = stop is None  # the script installs its own before its imports, and keeps it to the end
    stop = stop or Stop().install()  # SIGINT / SIGTERM: see harness/signals.py
    world = World()
    stop.abort = not world.active
    state = None
    try:
        hooks = faults.from_environment() if hooks is None else hooks
        state = set_up(argv, stop, world, hooks)
        if state is None:
            return 0
        status, final = train(state, stop)
        return EXIT[finish(state, status, final)]
    except Interrupted:
        print("interrupted before the first outer step" + (f"; {state.path} can be resumed" if state and
                                                           state.run_dir else "; nothing was written"), file=sys.stderr)
        return 130
    finally:
        if own_stop:
            stop.uninstall()
        if state is not None:
            state.close()
        world.close()


# ---- the run's state ------------------------------------------------------------------------------------

class RunState:
    """A run between two outer steps: its settings, task, outer optimizer, where it writes, and the
    counters a checkpoint holds (``done`` outer steps, ``bad_steps`` in a row, ``elapsed`` seconds,
    the device ``segments``, the ``pending`` row of a step whose evaluation was cut short)."""

    def __init__(self, cfg, task, task_module, device, facts, world, hooks, path, resumed=None):
        from harness import checkpoint
        self.cfg, self.task, self.task_module, self.device, self.facts, self.world, self.hooks = \
            cfg, task, task_module, device, facts, world, hooks
        self.path, self.run_dir, self.log = path, None, None
        self.outer_opt = make_outer_optimizer(cfg, list(task.hparams.values()))
        self.done, self.bad_steps, self.elapsed, self.segments, self.pending = 0, 0, 0.0, [], None
        self.resumed = resumed or {}
        if resumed is not None:
            self.restore(resumed)
        self.start = self.saved = self.done
        self.segment = {"device": facts["device_name"], "start": self.done, "end": self.done, "seconds": 0.0}
        self.last_vjps = self.resumed.get("vjps_per_step")
        self.run_id = self.resumed.get("run_id", "") if resumed is not None else checkpoint.new_run_id()
        self.identity = {"run_id": self.run_id} if self.run_id else {}  # a run stored before runs had ids goes on

    def restore(self, resumed) -> None:
        """alpha, the outer optimizer, the RNG, the task's own state and the counters from a
        checkpoint; a part that does not fit is a damaged checkpoint (nothing of the run has been
        touched yet)."""
        from harness import checkpoint
        from harness.settings import brief, path_text
        checkpoint.restore_task(self.task, resumed, f"--resume: the checkpoint in {path_text(self.path)}")
        try:
            self.outer_opt.load_state_dict(resumed["outer_opt"])
            checkpoint.set_rng_state(resumed["rng"])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
            raise checkpoint.CheckpointError(f"--resume: the checkpoint in {path_text(self.path)} is damaged "
                                             f"({type(e).__name__}: {brief(str(e), 120)})") from None
        self.done, self.bad_steps, self.elapsed = resumed["step"], resumed["bad_steps"], resumed["elapsed"]
        self.segments, self.pending = resumed["segments"], resumed.get("pending_row")

    def to_checkpoint(self, pending_row=None) -> dict:
        """The checkpoint of the ``done`` outer steps (``pending_row``: that step's row, its evaluation
        not yet run, when a stop came during it)."""
        from harness import checkpoint
        cfg, task = self.cfg, self.task
        return {"step": self.done, "task": cfg.task, "config": cfg.to_dict(), "facts": self.facts,
                "hparams": {k: v.detach().cpu() for k, v in task.hparams.items()},
                "outer_opt": self.outer_opt.state_dict(), "rng": checkpoint.rng_state(),
                "bad_steps": self.bad_steps, "elapsed": self.elapsed, "segments": self.segments + [dict(self.segment)],
                "vjps_per_step": self.last_vjps,
                "wandb_id": self.log.wandb_id if self.log else self.resumed.get("wandb_id", ""),
                "task_state": task.state(), "pending_row": pending_row, **self.identity}

    def save(self, pending_row=None) -> None:
        from harness import checkpoint
        self.segment.update(end=self.done, seconds=self.elapsed - self.resumed.get("elapsed", 0.0))
        if self.world.main:
            checkpoint.save(self.path, self.done, self.to_checkpoint(pending_row), self.hooks)
        self.saved = self.done

    def close(self) -> None:
        if self.log is not None:  # an error ended the run: close its files and W&B
            self.log.close()
            self.log = None
        if self.run_dir is not None:
            self.run_dir.close()


# ---- set up: settings, task, run directory, log ---------------------------------------------------------

def set_up(argv, stop, world, hooks):
    """The run's state, ready for its first outer step; None when a resumed run has nothing to do.
    Settings: defaults < task defaults < --config file < flags; a resumed run keeps its own."""
    import torch

    import tasks
    from harness import config
    cfg, path, resumed = settings(argv)
    if cfg is None:
        return None
    config.validate(cfg)
    task_module = tasks.load(cfg.task)
    task_module.check(cfg)
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    config.apply_numerics(cfg)
    torch.manual_seed(cfg.seed)
    with stop.abortable():  # data, model, hyperparameters: bad data fails here, before anything is written
        task = task_module.Task(cfg, device, getattr(torch, cfg.dtype))
    facts = {**task.info(), "device_name": device_name(device), "packages": package_versions(),
             "world_size": world.size}
    state = RunState(cfg, task, task_module, device, facts, world, hooks, path, resumed)
    try:
        if world.main:
            open_directory(state)
        open_log(state)
    except BaseException:
        state.close()  # the lock is released, whatever ended the start
        raise
    return state


def settings(argv):
    """``(cfg, run directory or None, resumed checkpoint or None)``; ``(None, ...)`` when the run to
    resume has finished already."""
    from harness import checkpoint, config, rundir
    invocation = config.parse(argv)
    if not invocation.resume:
        cfg = config.resolve_settings(invocation)
        if cfg.run_dir:  # the default one is made when the run starts writing
            rundir.check_usable(cfg.run_dir, new=True)
        return cfg, cfg.run_dir, None
    path = invocation.resume
    rundir.check_usable(path, new=False)
    resumed = checkpoint.load(path)
    checkpoint.check_belongs(path, resumed)  # not another run's checkpoint, config or summary
    rundir.metrics_to_keep(os.path.join(path, "metrics.jsonl"),  # nor metrics cut or of another run
                           resumed["step"] - (resumed.get("pending_row") is not None), resumed.get("run_id", ""))
    cfg = config.for_resume(config.pin(resumed["config"], resumed.get("facts", {})), invocation)
    check_resume(cfg, resumed, invocation)
    if finished_already(path, resumed, cfg):
        print(f"{path} has finished its {cfg.outer_steps} outer steps; nothing to do (raise --outer-steps "
              "to train on)", file=sys.stderr)
        return None, path, resumed
    return cfg, path, resumed


def check_resume(cfg, resumed, invocation) -> None:
    from harness.settings import UsageError
    if cfg.outer_steps < resumed["step"]:
        raise UsageError(f"--outer-steps {cfg.outer_steps} is below the {resumed['step']} outer steps this run has "
                         "done; a run cannot be shortened (start a new one)")
    given = invocation.explicit.get("run_dir")
    if given and os.path.realpath(given) != os.path.realpath(invocation.resume):
        raise UsageError("--run-dir and --resume name different directories; a resumed run stays in its own")


def finished_already(path, resumed, cfg) -> bool:
    """A finished run resumed with no more steps to take: its files are left as they are."""
    from harness import files
    summary = files.read_summary(path) or {}
    return (summary.get("status") == "finished" and summary.get("steps_done") == resumed["step"] == cfg.outer_steps
            and resumed.get("pending_row") is None)


def open_directory(state) -> None:
    """The run directory, this run's alone and locked while it lives: a new run's first checkpoint
    (first, so that a directory with any file of this run in it can be resumed) or a resumed run's
    metrics cut back to its checkpoint, then config.yaml."""
    from harness import rundir
    cfg = state.cfg
    state.run_dir = rundir.RunDir(state.path, new=not state.resumed) if state.path else \
        rundir.RunDir.fresh(os.path.join("runs", state.task_module.run_name(cfg)))
    state.path = state.run_dir.path
    state.cfg = cfg = cfg.replace(run_dir=state.path)
    if not state.resumed:
        state.save()
    else:
        rundir.repair_metrics(state.run_dir.file("metrics.jsonl"), state.start - (state.pending is not None),
                              state.run_id)
    rundir.write_yaml(state.run_dir.file("config.yaml"), {**cfg.to_dict(), "facts": state.facts, **state.identity})
    print(format_config(cfg, state.facts), file=sys.stderr)


def open_log(state) -> None:
    from harness.runlog import RunLog, warn
    cfg = state.cfg
    if state.task.notice():
        warn(state.task.notice())
    state.log = RunLog(state.path, {**cfg.to_dict(), "facts": state.facts}, mode=cfg.wandb,
                       project=cfg.wandb_project, group=cfg.wandb_group or state.task_module.run_group(cfg),
                       name=os.path.basename(os.path.normpath(state.path)), tags=[cfg.task, cfg.method],
                       enabled=state.world.main, resume_id=state.resumed.get("wandb_id", ""), run_id=state.run_id)


# ---- the outer loop ---------------------------------------------------------------------------------------

def train(state, stop):
    """The outer steps from ``state.done`` on: ``(status, final metrics)``. A stop request ends the
    run with a checkpoint of the steps done ("interrupted")."""
    import metagreedy as mg
    from harness.runlog import warn
    from harness.signals import Interrupted
    cfg, task = state.cfg, state.task
    status, final, last_eval = "finished", {}, {}
    state.started = time.perf_counter()
    bar = progress_bar(cfg, state.start, state.world.main)
    try:
        if state.pending is not None:  # resumed from a stop during an evaluation: finish that row first
            with stop.abortable():
                state.pending.update(task.evaluate(state.done - 1))
            state.log.log(state.pending, state.done - 1)
            last_eval, state.pending = state.pending, None
        for step in range(state.start, cfg.outer_steps):
            row, stopping = outer_step(state, step, stop)
            metrics = evaluate_if_due(state, row, step, stop)
            last_eval = last_eval if metrics is None else metrics
            state.log.log(row, step)
            bar_update(bar, row, last_eval, task.progress)
            if state.bad_steps >= cfg.max_bad_steps:
                warn(f"stopping: {state.bad_steps} non-finite hypergradients in a row; the last good checkpoint "
                     f"(outer step {state.saved}) in {state.path} is intact (lower --outer-lr or --inner-lr, or "
                     "compare with --method full)")
                return "diverged", final
            if stopping or (state.done % cfg.checkpoint_every == 0 and state.done < cfg.outer_steps):
                state.save()
            if stopping:
                raise Interrupted(stop.signum)
        if state.saved != state.done:
            state.save()
        with stop.abortable():
            state.hooks.moment("final", state.done)
            try:
                final = task.final() if state.world.main else {}
            except mg.NonFiniteLoss as e:
                status = "diverged"
                warn(f"the final evaluation failed: {e}; the checkpoint of outer step {state.done} is kept")
    except Interrupted:
        status = "interrupted"
        warn(f"{stop.name() or 'stop'} at outer step {state.done}: writing a checkpoint and summary")
        if state.saved != state.done or state.pending is not None:
            state.save(state.pending)
    finally:
        if bar is not None:
            bar.close()
    return status, final


def outer_step(state, step, stop):
    """Outer step ``step``: the hypergradient summed over the processes, then alpha's step (or a
    skipped step, if it is not finite). ``(the step's row, whether any process asked to stop)``."""
    import torch

    import metagreedy as mg
    from harness.runlog import warn
    cfg, task, world = state.cfg, state.task, state.world
    t0 = time.perf_counter()
    with stop.abortable():  # a stop here drops this step: the checkpoint is of `done` steps
        state.hooks.step_start(step)
        grads, metrics, count = hypergradient(task, step, world.members(cfg.meta_batch)
                                              if "meta_batch" in cfg else [0], mg.NonFiniteLoss, warn)
    grads = state.hooks.gradients(grads, step)
    # from here to the end of the step, a stop request waits for the step to complete. Sum over
    # ranks: the hypergradients, the task count, the metrics (weighted by each rank's count) and
    # the stop requests, so that every rank takes the same decisions and rank 0 logs the whole
    # meta-batch's means.
    names, device = list(task.hparams), state.device
    keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
    stats = [float(count), *(metrics[k] * count for k in keys), float(stop.requested)]
    total = world.sum([grads[n].to(device) for n in names] + [torch.tensor(stats, dtype=torch.float64, device=device)])
    grads = {n: g / total[-1][0] for n, g in zip(names, total[:-1])}
    if world.active:
        metrics.update({k: float(v / total[-1][0]) for k, v in zip(keys, total[-1][1:-1])})
    norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
    finite = math.isfinite(norm) and all(math.isfinite(metrics.get(k, 0.0)) for k in ("val_loss", "train_loss"))
    take_step(state, grads, finite, step)
    task.commit()
    state.done = step + 1
    seconds = time.perf_counter() - t0
    state.elapsed += seconds
    state.last_vjps = metrics.get("vjps", state.last_vjps)
    row = {**metrics, "hypergrad_norm": norm, "step_time": seconds, "skipped": int(not finite)}
    return row, (stop.requested if not world.active else total[-1][-1].item() > 0)


def take_step(state, grads, finite, step) -> None:
    """alpha's outer step, or, for a non-finite hypergradient or loss, a skipped one (counted)."""
    from harness.runlog import warn
    if finite:
        for name, p in state.task.hparams.items():
            p.grad = grads[name].to(p.dtype)
        state.outer_opt.step()
        state.outer_opt.zero_grad(set_to_none=True)
        state.bad_steps = 0
    else:
        state.bad_steps += 1
        warn(f"step {step}: non-finite hypergradient or loss; outer step skipped "
             f"({state.bad_steps}/{state.cfg.max_bad_steps} in a row)")


def evaluate_if_due(state, row, step, stop):
    """The periodic evaluation after outer step ``step``, added to its ``row`` (every --eval-every
    steps and after the last one); None when none is due. A stop during it leaves the row pending."""
    cfg = state.cfg
    every = cfg.eval_every if "eval_every" in cfg else None
    if not (state.world.main and (state.done == cfg.outer_steps or (every and state.done % every == 0))):
        return None
    state.pending = row
    with stop.abortable():
        state.hooks.moment("evaluate", step)
        metrics = state.task.evaluate(step)
    row.update(metrics)
    state.pending = None
    return metrics


def hypergradient(task, step, members, non_finite, warn):
    """The task's summed hypergradient; a non-finite loss becomes a NaN hypergradient, so that
    every rank still takes part in the sum and the step is skipped by all of them."""
    try:
        return task.hypergradient(step, members)
    except non_finite as e:
        warn(f"step {step}: {e}")
        import torch
        nan = float("nan")
        return ({n: torch.full_like(a, nan) for n, a in task.hparams.items()},
                {"val_loss": nan, "train_loss": nan}, len(members))


# ---- finish: the summary --------------------------------------------------------------------------------

def finish(state, status, final) -> str:
    """summary.json (and W&B's), the final checkpoint as an artifact, the log closed; the status."""
    from harness import checkpoint
    from harness.runlog import warn
    cfg, log = state.cfg, state.log
    log.summary({"status": status, "steps_done": state.done, "outer_steps": cfg.outer_steps, "task": cfg.task,
                 "method": cfg.method, "dataset": state.facts.get("dataset"), "wall_time": state.elapsed, **final,
                 "vjps_per_step": state.last_vjps, "total_time": time.perf_counter() - state.started,
                 **state.identity})
    if state.world.main and status != "diverged":
        log.artifact(state.run_dir.file(checkpoint.LATEST), f"checkpoint-{cfg.task}-{cfg.method}")
    log.close()
    state.log = None
    if state.task.notice():
        warn(state.task.notice())
    if state.world.main:
        print(f"run directory: {state.path}", file=sys.stderr)
    return status


# ---- helpers ----------------------------------------------------------------------------------------------

def make_outer_optimizer(cfg, hparams):
    import torch
    if cfg.outer_optimizer == "adam":
        return torch.optim.Adam(hparams, lr=cfg.outer_lr)
    return torch.optim.SGD(hparams, lr=cfg.outer_lr)


def device_name(device) -> str:
    import torch
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"


def package_versions() -> dict:
    from importlib import metadata
    out = {}
    for name in ("torch", "torchvision", "higher", "wandb", "learn2learn", "metagreedy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_config(cfg, facts) -> str:
    lines = [f"  {k}: {v}" for k, v in cfg.to_dict().items()]
    return "config:\n" + "\n".join(lines) + "\nfacts:\n" + "\n".join(f"  {k}: {v}" for k, v in facts.items())


def progress_bar(cfg, start, main):
    if not (cfg.progress and main):
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.outer_steps, initial=start, desc=f"{cfg.task}/{cfg.method}", dynamic_ncols=True)


def bar_update(bar, row, last_eval, keys):
    if bar is None:
        return
    shown = {"loss": row.get("val_loss", float("nan"))}
    for key in keys:
        if key in row or key in last_eval:
            shown[key] = row.get(key, last_eval.get(key))
    bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
    bar.update(1)


def main(argv=None, stop=None, hooks=None) -> int:
    from harness.checkpoint import CheckpointError
    from harness.settings import UsageError, one_line
    from metagreedy.data import DataError
    from harness.rundir import WriteError
    try:
        return run(argv, stop, hooks)
    except (UsageError, DataError, CheckpointError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except WriteError as e:
        print(f"error: {one_line(e)}; the run's last checkpoint, if it has one, is intact: fix the cause (disk "
              "space, permissions) and --resume", file=sys.stderr)
        return 1


if __name__ == "__main__":
    # A stop request from the first instant: a plain handler notes a signal during the imports below
    # (torch takes seconds), then the run's own takes over, and stays to the end of the process.
    import signal
    early = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    from harness.signals import Stop, ignore_from_now
    stop = Stop().install()
    stop.signum = early[0] if early else None
    status = main(stop=stop)
    ignore_from_now()  # however many signals arrive, the status is the run's (130 when stopped)
    sys.exit(status)
