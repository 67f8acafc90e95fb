"""Where a run's numbers go: ``metrics.jsonl`` and ``summary.json`` in the run directory, always;
Weights & Biases when it is available. W&B is imported lazily, never prompts for a login, and a W&B
failure is reported once and never stops training."""
from __future__ import annotations

import json
import math
import os
import socket
import sys
from typing import Any
from urllib.parse import urlparse

from .rundir import WriteError, open_append, write_json

PROBE_SECONDS = 5.0  # how long to wait for the W&B server before logging offline instead


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


def _server_unreachable(timeout: float = PROBE_SECONDS) -> str:
    """Why the W&B server cannot be reached ('' when it answers): a TCP connection to its host,
    so that a machine without network falls back to offline in seconds, not after minutes."""
    try:
        url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
        host, port = url.hostname or "api.wandb.ai", url.port or (443 if url.scheme != "http" else 80)
    except ValueError:  # a garbled WANDB_BASE_URL (a port that is not a number)
        return "WANDB_BASE_URL is not a URL"
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return ""
    except (OSError, UnicodeError) as e:
        return f"{host}:{port} {type(e).__name__}"


def _clean(value: Any) -> Any:
    """JSON-safe: floats that are not finite become strings ('nan', 'inf')."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class RunLog:
    def __init__(self, run_dir: str, config: dict, *, mode: str = "auto", project: str = "metagreedy",
                 group: str = "", name: str = "", tags=(), enabled: bool = True, resume_id: str = "",
                 run_id: str = ""):
        self.run_dir = run_dir
        self.identity = {"run_id": run_id} if run_id else {}  # in every row: a row of another run is told apart
        self.enabled = enabled  # only rank 0 logs
        self.mode = _wandb_mode(mode)
        self.wandb = None
        self.wandb_id = resume_id
        if not enabled:
            return
        self._metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self._metrics = open_append(self._metrics_path)
        if self.mode == "online":
            why = _server_unreachable()
            if why:
                warn(f"W&B server unreachable ({why}): logging offline instead (upload later with wandb sync)")
                self.mode = "offline"
        if self.mode != "disabled":
            self._start_wandb(config, project, group, name, tags)

    def _start_wandb(self, config, project, group, name, tags):
        try:
            import wandb
        except ImportError:
            warn("wandb is not installed; logging to metrics.jsonl only (pip install wandb)")
            return
        try:
            settings = wandb.Settings(silent=True, console="off", init_timeout=15)
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
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}, **self.identity}
        try:
            self._metrics.write(json.dumps(row) + "\n")
            self._metrics.flush()
        except OSError as e:
            raise WriteError(f"could not write {self._metrics_path}: {e.strerror or e}") from None
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
        try:
            self._metrics.close()
        except OSError:
            pass  # a failed write was reported when it happened
        if self.wandb is not None:
            try:
                self.wandb.finish()
                import wandb
                wandb.teardown()  # wait for W&B's service process to write the run's file and exit
            except Exception as e:  # noqa: BLE001
                self._wandb_failed(e)
            if self.mode == "offline":
                print(f"W&B ran offline; upload with: wandb sync {os.path.join(self.run_dir, 'wandb')}/offline-run-*",
                      file=sys.stderr)
