"""Checkpoints that cannot run code, written so that a crash (even SIGKILL) leaves the previous one.

A checkpoint holds tensors, numbers, strings, lists and dicts only, RNG states included (as
tensors), and is read with ``torch.load(weights_only=True)``: checkpoints are shared (W&B artifacts,
results folders) and loading one must never execute what it holds. A file that needs more is
refused.
"""
from __future__ import annotations

import io
import os
import random

import numpy as np
import torch

from . import config, faults, files
from .rundir import WriteError, write_atomic
from .settings import brief, path_text

LATEST = "checkpoint.pt"
MAX_BYTES = 1 << 34  # far beyond any run's (alpha and a few layers: megabytes)
FORMAT = 2  # bumped when the layout changes; older checkpoints are refused with a clear message
REQUIRED = {"format": int, "step": int, "task": str, "config": dict, "hparams": dict, "outer_opt": dict,
            "rng": dict, "bad_steps": int, "elapsed": float, "segments": list, "task_state": dict}


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not one of ours: bad input, exit status 2."""


def rng_state() -> dict:
    """The global RNG states as tensors and numbers (nothing that needs unpickling to read)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                        "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: str, step: int, payload: dict, hooks: faults.Hooks = faults.NONE) -> str:
    """Write ``payload`` to ``run_dir/checkpoint.pt`` atomically (:func:`rundir.write_atomic`);
    ``hooks``: the tests' faults (:mod:`harness.faults`)."""
    path = os.path.join(run_dir, LATEST)

    def write(fh):
        try:
            torch.save({"format": FORMAT, **payload}, fh)
        except RuntimeError as e:  # torch's writer reports a full disk as a RuntimeError
            raise OSError(f"torch.save failed ({brief(str(e), 120)})") from None
        hooks.mid_checkpoint(fh, step)

    try:
        write_atomic(path, write, binary=True, what=f"the checkpoint in {path_text(run_dir)}")
    except WriteError as e:
        raise WriteError(f"{e}; the previous checkpoint is untouched") from None
    return path


def load(run_dir: str) -> dict:
    """The checkpoint of a run directory, read without unpickling anything but plain data."""
    path = os.path.join(run_dir, LATEST)
    data = files.read_bytes(path, MAX_BYTES, "checkpoint")  # a link or not a regular file: FileDamaged
    if data is None:
        raise CheckpointError(f"no checkpoint in {path_text(run_dir)} (expected {LATEST})")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        unsafe = "GLOBAL" in str(e)  # a class or function: what unpickling would have run
        raise CheckpointError(
            f"checkpoint {path_text(path)} " + ("holds objects other than tensors, numbers, strings, lists and dicts; "
                                            "refusing to load it (loading it could run code)" if unsafe else
                                            f"cannot be read ({type(e).__name__}): truncated or not a checkpoint")
        ) from None
    problem = _problem(payload)
    if problem:
        raise CheckpointError(f"checkpoint {path_text(path)} {problem}")
    payload["config"] = config.upgrade(payload["config"])
    return payload


def _problem(payload) -> str:
    if not isinstance(payload, dict) or "format" not in payload:
        return "is not a metagreedy checkpoint"
    if payload.get("format") != FORMAT:
        return (f"has format {brief(payload.get('format'))}, this version reads format {FORMAT} "
                "(written by another version of metagreedy)")
    for key, kind in REQUIRED.items():
        if not isinstance(payload.get(key), kind):
            return f"is incomplete or damaged ('{key}' is missing or not a {kind.__name__})"
    if payload["config"].get("task") != payload["task"]:
        return "is damaged (its task and its config disagree)"
    problem = config.stored_problem(payload["config"])
    if problem:
        return f"is damaged: its config {problem}"
    if not isinstance(payload.get("pending_row"), (dict, type(None))) or not isinstance(payload.get("facts", {}), dict):
        return "is damaged (a pending row or facts that are not mappings)"
    if payload["step"] < 0 or not all(isinstance(v, torch.Tensor) for v in payload["hparams"].values()):
        return "is damaged (bad step or hyperparameters)"
    if "run_id" in payload and files.run_id_problem(payload["run_id"]):
        return files.run_id_problem(payload["run_id"])
    return ""


def new_run_id() -> str:
    """The identity of a run, written at its first step into its checkpoint, config.yaml, every
    metrics row and summary.json: files of another run are told apart from the run's own."""
    import uuid
    return uuid.uuid4().hex


def check_belongs(run_dir: str, payload: dict) -> None:
    """Refuse a checkpoint that is not its directory's run: its run id must be the one in the
    directory's config.yaml and summary.json, and its settings those of config.yaml (a run stored
    before runs had ids has none anywhere). A damaged file is refused too (files.FileDamaged)."""
    run_id, path = payload.get("run_id", ""), os.path.join(run_dir, LATEST)
    settings, summary = files.read_settings(run_dir), files.read_summary(run_dir)
    for name, data in (("config.yaml", settings), ("summary.json", summary)):
        if data is not None and data.get("run_id", "") != run_id:
            raise CheckpointError(f"checkpoint {path_text(path)} is of another run than the directory's {name} "
                                  f"(run_id {brief(run_id or 'none')}, {name} has {brief(data.get('run_id', 'none'))})"
                                  "; refusing it (copied from another run?)")
    if settings is not None:
        def fixed(stored, facts):
            values = config.pin(config.upgrade(stored), facts)
            by_name = config.table().by_name
            return {k: v for k, v in values.items() if k in by_name and not by_name[k].resumable}
        if fixed(settings, settings.get("facts") or {}) != fixed(payload["config"], payload.get("facts", {})):
            raise CheckpointError(f"checkpoint {path_text(path)} holds settings other than the directory's "
                                  "config.yaml; refusing it (copied from another run?)")


def _shape_problem(stored, current, at: str = "") -> str:
    """Where a stored tensor's shape differs from the task's own at the same place ('' when none)."""
    if isinstance(stored, torch.Tensor) and isinstance(current, torch.Tensor):
        return "" if stored.shape == current.shape else f"{at or 'a value'} has shape {tuple(stored.shape)}, " \
                                                       f"not {tuple(current.shape)}"
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in stored.keys() & current.keys():
            problem = _shape_problem(stored[key], current[key], f"{at}.{key}" if at else str(key))
            if problem:
                return problem
    return ""


def restore_task(task, payload: dict, where: str) -> None:
    """A task built from a checkpoint's settings, given the checkpoint's hyperparameters and state;
    shared by --resume and reuse (load_run). Names or shapes that do not fit are a damaged
    checkpoint, never broadcast into the model; nothing is changed then."""
    stored = payload["hparams"]
    if sorted(stored) != sorted(task.hparams):
        raise CheckpointError(f"{where} holds hyperparameters that do not match its task's (names)")
    problem = _shape_problem(stored, task.hparams) or _shape_problem(payload["task_state"], task.state())
    if problem:
        raise CheckpointError(f"{where} does not fit its task: {problem}")
    try:
        with torch.no_grad():
            for name, value in stored.items():
                task.hparams[name].copy_(value)
        task.load_state(payload["task_state"])
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{where} is damaged ({type(e).__name__}: {brief(str(e), 120)})") from None
