"""Where a run's numbers go: ``metrics.jsonl`` and ``summary.json`` in the run directory, always;
Weights & Biases when it is available. W&B is imported lazily, never prompts for a login, and a W&B
failure is reported once and never stops training."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def _wandb_mode(requested: str) -> str:
    """``auto``: online when a key is set or the user is logged in, offline otherwise."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = os.path.expanduser("~/.netrc")
    try:
        with open(netrc) as fh:
            if "api.wandb.ai" in fh.read():
                return "online"
    except OSError:
        pass
    return "offline"


def _clean(value: Any) -> Any:
    """JSON-safe: floats that are not finite become strings ('nan', 'inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class RunLog:
    def __init__(self, run_dir: str, config: dict, *, mode: str = "auto", project: str = "metagreedy",
                 group: str = "", name: str = "", tags=(), enabled: bool = True, resume_id: str = ""):
        self.run_dir = run_dir
        self.enabled = enabled  # only rank 0 logs
        self.mode = _wandb_mode(mode)
        self.wandb = None
        self.wandb_id = resume_id
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        if self.mode != "disabled":
            self._start_wandb(config, project, group, name, tags)

    def _start_wandb(self, config, project, group, name, tags):
        try:
            import wandb
        except ImportError:
            warn("wandb is not installed; logging to metrics.jsonl only (pip install wandb)")
            return
        try:
            settings = wandb.Settings(silent=True, console="off")
            self.wandb = wandb.init(project=project, group=group or None, name=name or None, tags=list(tags),
                                    config=config, dir=self.run_dir, mode=self.mode, id=self.wandb_id or None,
                                    resume="allow" if self.wandb_id else None, settings=settings)
            self.wandb_id = self.wandb.id
        except Exception as e:  # noqa: BLE001 - W&B must never stop a run
            self._wandb_failed(e)

    def _wandb_failed(self, e: Exception) -> None:
        warn(f"W&B failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
             "going on with metrics.jsonl only")
        self.wandb = None

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.wandb is not None:
            try:
                self.wandb.log(metrics, step=step)
            except Exception as e:  # noqa: BLE001
                self._wandb_failed(e)

    def summary(self, values: dict) -> None:
        if not self.enabled:
            return
        write_json(os.path.join(self.run_dir, "summary.json"), {k: _clean(v) for k, v in values.items()})
        if self.wandb is not None:
            try:
                self.wandb.summary.update(values)
            except Exception as e:  # noqa: BLE001
                self._wandb_failed(e)

    def artifact(self, path: str, name: str, kind: str = "model") -> None:
        if self.wandb is None:
            return
        try:
            import wandb
            art = wandb.Artifact(name, type=kind)
            art.add_file(path)
            self.wandb.log_artifact(art)
        except Exception as e:  # noqa: BLE001
            self._wandb_failed(e)

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as e:  # noqa: BLE001
                self._wandb_failed(e)
            if self.mode == "offline":
                print(f"W&B ran offline; upload with: wandb sync {os.path.join(self.run_dir, 'wandb')}/offline-run-*",
                      file=sys.stderr)


def write_json(path: str, data: dict) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
