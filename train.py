"""Meta-training and hyperparameter optimization with greedy hypergradients.

    python train.py --ways 5 --shots 1                       # few-shot Omniglot, warp layers 2/4/6
    python train.py --task hyper_cleaning --dataset mnist --noise 0.3
    python train.py --task toy --method greedy --gamma 0.9
    python train.py --config configs/omniglot_5way.yaml --seed 3
    torchrun --nproc_per_node 2 train.py ...                  # meta-batch split across processes

Reads top to bottom: config -> task -> outer optimizer -> outer loop (hypergradient, step, log,
evaluate, checkpoint) -> final evaluation. Every setting and its default is in metagreedy/config.py.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time

import torch


def run(argv=None) -> int:
    import tasks
    from metagreedy import checkpoint, config, faults
    from metagreedy.distributed import World
    from metagreedy.runlog import RunLog, warn

    # ---- config: defaults < task defaults < --config file < flags; a resumed run keeps its own ----
    cfg = config.resolve(argv, tasks.defaults)
    resumed = None
    if cfg.resume:
        resumed = checkpoint.load(cfg.resume)
        cfg = resumed_config(cfg, resumed, argv)
    config.validate(cfg)
    torch.manual_seed(cfg.seed)
    world = World()
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    dtype = getattr(torch, cfg.dtype)

    # ---- task: data, model, hyperparameters (bad data fails here, before anything is written) ----
    task = tasks.load(cfg.task).Task(cfg, device, dtype)
    resolved = {**config.to_dict(cfg), **task.info(), "packages": package_versions(), "world_size": world.size}
    outer_opt = make_outer_optimizer(cfg, list(task.hparams.values()))
    start, bad_steps, elapsed = 0, 0, 0.0
    if resumed is not None:
        with torch.no_grad():
            for name, value in resumed["hparams"].items():
                task.hparams[name].copy_(value)
        outer_opt.load_state_dict(resumed["outer_opt"])
        checkpoint.set_rng_state(resumed["rng"])
        start, bad_steps, elapsed = resumed["step"], resumed["bad_steps"], resumed["elapsed"]
        if resumed.get("task_state") is not None:
            task.load_state(resumed["task_state"])

    # ---- run directory and logs ----
    run_dir = cfg.resume or cfg.run_dir or default_run_dir(cfg)
    if world.main:
        os.makedirs(run_dir, exist_ok=True)
        if resumed is not None:
            truncate_metrics(run_dir, start)
        print(format_config(resolved), file=sys.stderr)
        config_path = os.path.join(run_dir, "config.yaml")
        write_yaml(config_path, resolved)
    if resolved.get("dataset") == "synthetic":
        warn("no Omniglot data found: running on the built-in synthetic alphabet (dataset: synthetic); "
             f"put omniglot-py/ under {cfg.data_root} or run online to use the real data")
    log = RunLog(run_dir, resolved, mode=cfg.wandb, project=cfg.wandb_project, group=run_group(cfg),
                 name=os.path.basename(os.path.normpath(run_dir)), tags=[cfg.task, cfg.method],
                 enabled=world.main, resume_id=(resumed or {}).get("wandb_id", ""))

    def save(step):
        if world.main:
            checkpoint.save(run_dir, step, {"step": step, "task": cfg.task, "config": resolved,
                                      "hparams": {k: v.detach().cpu() for k, v in task.hparams.items()},
                                      "outer_opt": outer_opt.state_dict(), "rng": checkpoint.rng_state(),
                                      "bad_steps": bad_steps, "elapsed": elapsed, "wandb_id": log.wandb_id,
                                      "task_state": task.state() if hasattr(task, "state") else None})

    # ---- the outer loop ----
    status, step, started = "finished", start, time.perf_counter()
    # Ctrl-C and SIGTERM both end in a checkpoint and a summary. SIGINT is set explicitly: a process
    # started in the background inherits it ignored, and Python then installs no handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_interrupt)
    bar = progress_bar(cfg, start, world.main)
    last_eval, last_vjps = {}, None
    try:
        for step in range(start, cfg.outer_steps):
            t0 = time.perf_counter()
            faults.maybe_signal(step)
            grads, metrics, count = task.hypergradient(step, world.members(cfg.meta_batch))
            if faults.hit("nan", step):
                grads = {n: g * float("nan") for n, g in grads.items()}
            # sum over ranks: the hypergradients, the task count and the losses (so every rank takes
            # the same decision to step or to skip)
            names = list(task.hparams)
            losses = [metrics.get(k, 0.0) * count for k in ("val_loss", "train_loss")]
            total = world.sum([grads[n].to(device) for n in names]
                              + [torch.tensor([float(count), *losses], dtype=torch.float64, device=device)])
            grads = {n: g / total[-1][0] for n, g in zip(names, total[:-1])}
            norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
            finite = math.isfinite(norm) and bool(torch.isfinite(total[-1]).all())
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
            seconds = time.perf_counter() - t0
            elapsed += seconds
            last_vjps = metrics.get("vjps", last_vjps)
            row = {**metrics, "hypergrad_norm": norm, "step_time": seconds, "skipped": int(not finite)}
            if world.main and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.outer_steps):
                last_eval = task.evaluate(step)
                row.update(last_eval)
            log.log(row, step)
            bar_update(bar, row, last_eval)
            if bad_steps >= cfg.max_bad_steps:
                status = "diverged"
                warn(f"stopping: {bad_steps} non-finite hypergradients in a row; the last good checkpoint in "
                     f"{run_dir} is intact (lower --outer-lr or --inner-lr, or try --method full to compare)")
                break
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.outer_steps:
                save(step + 1)
        else:
            step = cfg.outer_steps
    except KeyboardInterrupt:
        status = "interrupted"
        warn(f"interrupted at outer step {step}: writing a checkpoint and summary")
    finally:
        if bar is not None:
            bar.close()

    # ---- final checkpoint, evaluation and summary ----
    if status != "diverged":
        save(step)
    summary = {"status": status, "steps_done": step, "task": cfg.task, "method": cfg.method,
               "dataset": resolved.get("dataset"), "wall_time": elapsed}
    if status == "finished" and world.main:
        summary.update(task.final())
    summary["vjps_per_step"] = last_vjps
    summary["total_time"] = time.perf_counter() - started  # this process, evaluations included
    log.summary(summary)
    if world.main and status != "diverged":
        log.artifact(os.path.join(run_dir, checkpoint.LATEST), f"checkpoint-{cfg.task}-{cfg.method}")
    log.close()
    if resolved.get("dataset") == "synthetic":
        warn("this run used the built-in synthetic alphabet, not Omniglot (dataset: synthetic)")
    if world.main:
        print(f"run directory: {run_dir}", file=sys.stderr)
    world.close()
    return {"finished": 0, "interrupted": 130, "diverged": 1}[status]


# ---- helpers, in the order the loop above uses them ---------------------------------------------

def resumed_config(cfg, resumed, argv):
    """A resumed run keeps its stored config; only these flags may change on resume."""
    from metagreedy import config
    stored = dict(resumed["config"])
    args = config.parser().parse_args(sys.argv[1:] if argv is None else argv)
    explicit = {k: v for k, v in vars(args).items() if v is not None and k != "config"}  # flags the user typed
    if "task" in explicit and explicit["task"] != resumed["task"]:
        raise config.UsageError(f"--resume: '{cfg.resume}' holds a checkpoint of task '{resumed['task']}', "
                                f"not '{explicit['task']}'")
    keep = {k: stored[k] for k in config.FIELDS if k in stored}
    for name in ("outer_steps", "progress", "wandb", "device"):
        if name in explicit:
            keep[name] = explicit[name]
    keep["resume"] = cfg.resume
    return config.Config(**keep)


def make_outer_optimizer(cfg, hparams):
    if cfg.outer_optimizer == "adam":
        return torch.optim.Adam(hparams, lr=cfg.outer_lr)
    return torch.optim.SGD(hparams, lr=cfg.outer_lr)


def default_run_dir(cfg) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    extra = f"-{cfg.ways}way{cfg.shots}shot" if cfg.task == "omniglot" else ""
    return os.path.join("runs", f"{cfg.task}{extra}-{cfg.method}-seed{cfg.seed}-{stamp}")


def run_group(cfg) -> str:
    if cfg.wandb_group:
        return cfg.wandb_group
    if cfg.task == "omniglot":
        return f"omniglot/{cfg.ways}way-{cfg.shots}shot/{cfg.method}"
    if cfg.task == "hyper_cleaning":
        return f"hyper_cleaning/{cfg.dataset}-{cfg.noise}/{cfg.method}"
    return f"toy/T{cfg.inner_steps}/{cfg.method}"


def truncate_metrics(run_dir: str, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from: they will be logged again."""
    import json
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as fh:
        rows = [line for line in fh if line.strip() and json.loads(line)["step"] < step]
    with open(path, "w") as fh:
        fh.writelines(rows)


def package_versions() -> dict:
    from importlib import metadata
    out = {}
    for name in ("torch", "torchvision", "higher", "wandb", "learn2learn", "metagreedy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_config(resolved: dict) -> str:
    return "config:\n" + "\n".join(f"  {k}: {v}" for k, v in resolved.items())


def write_yaml(path: str, data: dict) -> None:
    import yaml
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    os.replace(tmp, path)


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def progress_bar(cfg, start, main):
    if not (cfg.progress and main):
        return None
    from tqdm import tqdm
    return tqdm(total=cfg.outer_steps, initial=start, desc=f"{cfg.task}/{cfg.method}", dynamic_ncols=True)


def bar_update(bar, row, last_eval):
    if bar is None:
        return
    shown = {"loss": row.get("val_loss", float("nan"))}
    for key in ("meta_val_acc", "val_acc", "cosine"):
        if key in row or key in last_eval:
            shown[key] = row.get(key, last_eval.get(key))
    bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
    bar.update(1)


def main(argv=None) -> int:
    from metagreedy.checkpoint import CheckpointError
    from metagreedy.config import UsageError
    from metagreedy.data import DataError
    try:
        return run(argv)
    except (UsageError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
