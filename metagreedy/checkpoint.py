"""Checkpoints written atomically: a crash (even SIGKILL) while writing leaves the previous one intact."""
from __future__ import annotations

import os
import random
import signal

import numpy as np
import torch

from . import faults

LATEST = "checkpoint.pt"


class CheckpointError(Exception):
    pass


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: str, step: int, payload: dict) -> str:
    """Write ``payload`` to ``run_dir/checkpoint.pt`` through a temporary file, fsync and rename."""
    path = os.path.join(run_dir, LATEST)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            if faults.hit("kill_in_checkpoint", step):  # the tests' crash in mid-write
                fh.truncate(fh.tell() // 2)
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise CheckpointError(f"could not write checkpoint in {run_dir}: {e.strerror or e}; "
                              "the previous checkpoint is untouched") from None
    return path


def load(run_dir: str) -> dict:
    path = os.path.join(run_dir, LATEST)
    if not os.path.isfile(path):
        raise CheckpointError(f"--resume: no checkpoint in '{run_dir}' (expected {LATEST})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"--resume: checkpoint '{path}' cannot be read ({type(e).__name__})") from None
