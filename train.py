"""Meta-training and hyperparameter optimization with greedy hypergradients.

    python train.py --ways 5 --shots 1                       # few-shot Omniglot, warp layers 2/4/6
    python train.py --task hyper_cleaning --dataset mnist --noise 0.3
    python train.py --task toy --method greedy --gamma 0.9
    python train.py --config configs/omniglot_5way.yaml --seed 3
    python train.py --resume runs/omniglot-5way1shot-greedy-seed0-20261127-101500
    torchrun --nproc_per_node 2 train.py ...                  # meta-batch split across processes

Reads top to bottom: settings -> task -> run directory -> outer loop (hypergradient, outer step,
log, evaluate, checkpoint) -> final evaluation and summary. Every setting is declared once, with its
default and help, in metagreedy/harness/config.py (``python train.py --help``); what train.py asks of a
task is written down in tasks/__init__.py.
"""
from __future__ import annotations

import math
import os
import sys
import time


def run(argv=None, stop=None) -> int:
    import torch

    import metagreedy as mg
    import tasks
    from metagreedy.harness import checkpoint, config, faults, rundir
    from metagreedy.harness.distributed import World
    from metagreedy.harness.runlog import RunLog, warn
    from metagreedy.harness.signals import Interrupted, Stop
    from metagreedy.harness import registry

    registry.use(tasks)  # the experiments this script trains, for the harness that knows none by name

    own_stop = stop is None  # the script installs its own before its imports, and keeps it to the end
    stop = stop or Stop().install()  # SIGINT / SIGTERM: see metagreedy/harness/signals.py
    world = World()
    stop.abort = not world.active
    run_dir = log = None
    try:
        faults.check()
        # ---- settings: defaults < task defaults < --config file < flags; a resumed run keeps its own ----
        invocation = config.parse(argv, tasks.all_defaults(), tasks.descriptions())
        resumed = None
        if invocation.resume:
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
                return 0
        else:
            cfg = config.resolve_settings(invocation, tasks.defaults)
            path = cfg.run_dir  # the default one is made when the run starts writing (below)
            if path:
                rundir.check_usable(path, new=True)
        config.validate(cfg)
        task_module = tasks.load(cfg.task)
        task_module.check(cfg)
        device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        dtype = getattr(torch, cfg.dtype)
        config.apply_numerics(cfg)
        torch.manual_seed(cfg.seed)

        # ---- task: data, model, hyperparameters (bad data fails here, before anything is written) ----
        with stop.abortable():
            task = task_module.Task(cfg, device, dtype)
        facts = {**task.info(), "device_name": device_name(device), "packages": package_versions(),
                 "world_size": world.size}
        outer_opt = make_outer_optimizer(cfg, list(task.hparams.values()))
        start, bad_steps, elapsed, segments, pending = 0, 0, 0.0, [], None
        if resumed is not None:
            restore(task, outer_opt, resumed, path)
            start, bad_steps, elapsed = resumed["step"], resumed["bad_steps"], resumed["elapsed"]
            segments, pending = resumed["segments"], resumed.get("pending_row")

        segment = {"device": facts["device_name"], "start": start, "end": start, "seconds": 0.0}
        last_vjps, log = (resumed or {}).get("vjps_per_step"), None
        run_id = resumed.get("run_id", "") if resumed is not None else checkpoint.new_run_id()
        identity = {"run_id": run_id} if run_id else {}  # a run stored before runs had ids goes on without

        def save(done, pending_row=None):
            """Checkpoint after ``done`` outer steps (``pending_row``: that step's row, its evaluation
            not yet run, when a stop came during it)."""
            segment.update(end=done, seconds=elapsed - (resumed or {}).get("elapsed", 0.0))
            if world.main:
                checkpoint.save(path, done, {
                    "step": done, "task": cfg.task, "config": cfg.to_dict(), "facts": facts,
                    "hparams": {k: v.detach().cpu() for k, v in task.hparams.items()},
                    "outer_opt": outer_opt.state_dict(), "rng": checkpoint.rng_state(), "bad_steps": bad_steps,
                    "elapsed": elapsed, "segments": segments + [dict(segment)], "vjps_per_step": last_vjps,
                    "wandb_id": log.wandb_id if log else (resumed or {}).get("wandb_id", ""),
                    "task_state": task.state(), "pending_row": pending_row, **identity})

        # ---- the run directory: this run's alone, locked while it lives ----
        if world.main:
            run_dir = rundir.RunDir(path, new=resumed is None) if path else \
                rundir.RunDir.fresh(os.path.join("runs", task_module.run_name(cfg)))
            path = run_dir.path
            cfg = cfg.replace(run_dir=path)
            if resumed is None:
                save(0)  # first, so that a directory with any file of this run in it can be resumed
            else:
                rundir.repair_metrics(run_dir.file("metrics.jsonl"), start - (pending is not None), run_id)
            rundir.write_yaml(run_dir.file("config.yaml"), {**cfg.to_dict(), "facts": facts, **identity})
            print(format_config(cfg, facts), file=sys.stderr)
        if task.notice():
            warn(task.notice())
        log = RunLog(path, {**cfg.to_dict(), "facts": facts}, mode=cfg.wandb, project=cfg.wandb_project,
                     group=cfg.wandb_group or task_module.run_group(cfg), name=os.path.basename(os.path.normpath(path)),
                     tags=[cfg.task, cfg.method], enabled=world.main,
                     resume_id=(resumed or {}).get("wandb_id", ""), run_id=run_id)

        # ---- the outer loop ----
        status, done, saved, started = "finished", start, start, time.perf_counter()
        bar = progress_bar(cfg, start, world.main)
        eval_every = cfg.eval_every if "eval_every" in cfg else None
        last_eval, final = {}, {}
        names = list(task.hparams)
        try:
            if pending is not None:  # resumed from a stop during an evaluation: finish that row first
                with stop.abortable():
                    pending.update(task.evaluate(done - 1))
                log.log(pending, done - 1)
                last_eval, pending = pending, None
            for step in range(start, cfg.outer_steps):
                t0 = time.perf_counter()
                with stop.abortable():  # a stop here drops this step: the checkpoint is of `done` steps
                    faults.maybe_signal(step)
                    faults.signal_at("hypergradient", step)
                    grads, metrics, count = hypergradient(task, step, world.members(cfg.meta_batch)
                                                          if "meta_batch" in cfg else [0], mg.NonFiniteLoss, warn)
                if faults.hit("nan", step):
                    grads = {n: g * float("nan") for n, g in grads.items()}
                # from here to the end of the step, a stop request waits for the step to complete.
                # Sum over ranks: the hypergradients, the task count, the metrics (weighted by each
                # rank's count) and the stop requests, so that every rank takes the same decisions
                # and rank 0 logs the whole meta-batch's means.
                keys = sorted(k for k, v in metrics.items() if isinstance(v, float))
                stats = [float(count), *(metrics[k] * count for k in keys), float(stop.requested)]
                total = world.sum([grads[n].to(device) for n in names]
                                  + [torch.tensor(stats, dtype=torch.float64, device=device)])
                grads = {n: g / total[-1][0] for n, g in zip(names, total[:-1])}
                if world.active:
                    metrics.update({k: float(v / total[-1][0]) for k, v in zip(keys, total[-1][1:-1])})
                norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
                finite = math.isfinite(norm) and all(math.isfinite(metrics.get(k, 0.0))
                                                     for k in ("val_loss", "train_loss"))
                if finite:
                    for name, p in task.hparams.items():
                        p.grad = grads[name].to(p.dtype)
                    outer_opt.step()
                    outer_opt.zero_grad(set_to_none=True)
                    bad_steps = 0
                else:
                    bad_steps += 1
                    warn(f"step {step}: non-finite hypergradient or loss; outer step skipped "
                         f"({bad_steps}/{cfg.max_bad_steps} in a row)")
                task.commit()
                done = step + 1
                seconds = time.perf_counter() - t0
                elapsed += seconds
                last_vjps = metrics.get("vjps", last_vjps)
                row = {**metrics, "hypergrad_norm": norm, "step_time": seconds, "skipped": int(not finite)}
                if world.main and (done == cfg.outer_steps or (eval_every and done % eval_every == 0)):
                    pending = row
                    with stop.abortable():
                        faults.signal_at("evaluate", step)
                        last_eval = task.evaluate(step)
                    row.update(last_eval)
                    pending = None
                log.log(row, step)
                bar_update(bar, row, last_eval, task.progress)
                if bad_steps >= cfg.max_bad_steps:
                    status = "diverged"
                    warn(f"stopping: {bad_steps} non-finite hypergradients in a row; the last good checkpoint "
                         f"(outer step {saved}) in {path} is intact (lower --outer-lr or --inner-lr, or compare "
                         "with --method full)")
                    break
                stopping = stop.requested if not world.active else total[-1][-1].item() > 0
                if stopping or (done % cfg.checkpoint_every == 0 and done < cfg.outer_steps):
                    save(done)
                    saved = done
                if stopping:
                    raise Interrupted(stop.signum)
            if status == "finished":
                if saved != done:
                    save(done)
                    saved = done
                with stop.abortable():
                    faults.signal_at("final", done)
                    try:
                        final = task.final() if world.main else {}
                    except mg.NonFiniteLoss as e:
                        status = "diverged"
                        warn(f"the final evaluation failed: {e}; the checkpoint of outer step {done} is kept")
        except Interrupted:
            status = "interrupted"
            warn(f"{stop.name() or 'stop'} at outer step {done}: writing a checkpoint and summary")
            if saved != done or pending is not None:
                save(done, pending)
        finally:
            if bar is not None:
                bar.close()

        # ---- summary ----
        summary = {"status": status, "steps_done": done, "outer_steps": cfg.outer_steps, "task": cfg.task,
                   "method": cfg.method, "dataset": facts.get("dataset"), "wall_time": elapsed, **final,
                   "vjps_per_step": last_vjps, "total_time": time.perf_counter() - started, **identity}
        log.summary(summary)
        if world.main and status != "diverged":
            log.artifact(run_dir.file(checkpoint.LATEST), f"checkpoint-{cfg.task}-{cfg.method}")
        log.close()
        log = None
        if task.notice():
            warn(task.notice())
        if world.main:
            print(f"run directory: {path}", file=sys.stderr)
        return {"finished": 0, "interrupted": 130, "diverged": 1}[status]
    except Interrupted:
        print("interrupted before the first outer step" + (f"; {path} can be resumed" if run_dir else
                                                           "; nothing was written"), file=sys.stderr)
        return 130
    finally:
        if own_stop:
            stop.uninstall()
        if log is not None:  # an error ended the run: close its files and W&B
            log.close()
        if run_dir is not None:
            run_dir.close()
        world.close()


# ---- helpers, in the order the loop above uses them ---------------------------------------------

def check_resume(cfg, resumed, invocation) -> None:
    from metagreedy.harness.config import UsageError
    if cfg.outer_steps < resumed["step"]:
        raise UsageError(f"--outer-steps {cfg.outer_steps} is below the {resumed['step']} outer steps this run has "
                         "done; a run cannot be shortened (start a new one)")
    given = invocation.explicit.get("run_dir")
    if given and os.path.realpath(given) != os.path.realpath(invocation.resume):
        raise UsageError("--run-dir and --resume name different directories; a resumed run stays in its own")


def finished_already(path, resumed, cfg) -> bool:
    """A finished run resumed with no more steps to take: its files are left as they are."""
    from metagreedy.harness import files
    summary = files.read_summary(path) or {}
    return (summary.get("status") == "finished" and summary.get("steps_done") == resumed["step"] == cfg.outer_steps
            and resumed.get("pending_row") is None)


def restore(task, outer_opt, resumed, path) -> None:
    """alpha, the outer optimizer, the RNG and the task's own state from a checkpoint; a part that
    does not fit is a damaged checkpoint (nothing of the run has been touched yet)."""
    from metagreedy.harness import checkpoint
    from metagreedy.harness.config import brief, path_text
    checkpoint.restore_task(task, resumed, f"--resume: the checkpoint in {path_text(path)}")
    try:
        outer_opt.load_state_dict(resumed["outer_opt"])
        checkpoint.set_rng_state(resumed["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
        raise checkpoint.CheckpointError(f"--resume: the checkpoint in {path_text(path)} is damaged "
                                         f"({type(e).__name__}: {brief(str(e), 120)})") from None


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


def main(argv=None, stop=None) -> int:
    from metagreedy.harness.checkpoint import CheckpointError
    from metagreedy.harness.config import UsageError, one_line
    from metagreedy.data import DataError
    from metagreedy.harness.rundir import WriteError
    try:
        return run(argv, stop)
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
    from metagreedy.harness.signals import Stop
    stop = Stop().install()
    stop.signum = early[0] if early else None
    sys.exit(main(stop=stop))
