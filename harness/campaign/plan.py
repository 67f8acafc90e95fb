"""The campaign's plans and cells, read-only: the plan language (configs/campaign/*.yaml) expanded
into cells, and the state of each cell as its directory under DIR shows it. The runner
(:mod:`.runner`) and the report (bench/campaign_report.py) both build on this module.

Paths in a plan (``--config configs/...``) are relative to the checkout it runs in, as train.py's
are: the working directory, unless a ``root`` is given.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import shlex

from .. import files
from ..rundir import LOCK, link_in
from ..settings import one_line

EVAL_KEYS = ("meta_val_acc", "val_acc", "test_acc")
MAX_CELLS = 10_000  # a plan's grid; the largest real one has a few hundred cells
MAX_PLAN_BYTES = 1 << 20
MAX_NAME_BYTES = 255  # a file name's limit on every common file system
PLAN_KEYS = ("name", "train", "path", "min_start_s", "methods", "gammas", "groups")
GROUP_KEYS = ("train", "path", "min_start_s", "settings", "methods", "seeds")


class PlanError(Exception):
    """A plan that cannot be run: reported as one line, exit status 2."""


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


def shown(path: str, root: str | None = None) -> str:
    """A path relative to the checkout ``root`` (default: the working directory) when it is inside it."""
    path, root = os.path.abspath(path), os.path.abspath(root or os.getcwd())
    return os.path.relpath(path, root) if path.startswith(root + os.sep) else path


def load_plan(path: str) -> Plan:
    """Read and expand a plan. Groups in order; within a group seed-major, then the settings (the
    product of the ``settings`` lists, in the order written), then the methods, so that a partial
    campaign compares every method on the same seeds."""
    try:
        text = files.read_text(path, MAX_PLAN_BYTES, "plan")
        if text is None:
            raise PlanError(f"plan '{path}' does not exist")
        data = files.parse_yaml(text, path, "plan")
    except files.FileDamaged as e:
        raise PlanError(str(e)) from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise PlanError(f"plan '{path}' needs a list of groups")
    check_plan(path, data)
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


def _unknown(keys, known, where: str) -> None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise PlanError(f"{where}: unknown key {str(unknown[0])[:60]!r} (a plan knows {', '.join(known)})")


def seconds(value, what: str, zero: bool = False) -> float:
    """A number of seconds: finite and positive (or zero where ``zero``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise PlanError(f"{what} must be a finite {'non-negative' if zero else 'positive'} number of seconds, "
                        f"got {str(value)[:60]!r}")
    return number


def check_plan(path: str, data: dict) -> None:
    """What can be refused before a plan is expanded: unknown keys (a misspelt key would be ignored),
    times that are not finite, and a grid larger than MAX_CELLS (expanding it would take the budget)."""
    _unknown(data, PLAN_KEYS, f"plan '{path}'")
    if "min_start_s" in data:
        seconds(data["min_start_s"], f"plan '{path}': min_start_s", zero=True)
    if not isinstance(data.get("methods") or {}, dict):
        raise PlanError(f"plan '{path}': methods must map a label to train.py flags")
    total = 0
    for i, group in enumerate(data["groups"]):
        where = f"plan '{path}', group {i + 1}"
        if not isinstance(group, dict):
            raise PlanError(f"{where} is malformed (not a mapping of {', '.join(GROUP_KEYS)})")
        _unknown(group, GROUP_KEYS, where)
        if "min_start_s" in group:
            seconds(group["min_start_s"], f"{where}: min_start_s", zero=True)
        size = 1
        for key in ("seeds", "methods"):
            if not isinstance(group.get(key), list) or not group[key]:
                raise PlanError(f"{where}: needs methods (from the plan's methods) and seeds (lists)")
            size *= len(group[key])
        if any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63 for s in group["seeds"]):
            raise PlanError(f"{where} is malformed (a seed that is not an integer in [0, 2^63))")
        settings = group.get("settings") or {}
        if not isinstance(settings, dict):
            raise PlanError(f"{where} is malformed (settings must map a name to a value or a list)")
        for values in settings.values():
            size *= len(values) if isinstance(values, list) else 1
        total += size
        if total > MAX_CELLS:
            raise PlanError(f"plan '{path}' has more than {MAX_CELLS:,} cells (group {i + 1} alone has {size:,}); "
                            "split it into smaller plans")


def _expand(path: str, data: dict, name: str, text: str) -> Plan:
    methods = {str(k): split_flags(v) for k, v in (data.get("methods") or {}).items()}
    cells, order, seen = [], [], {}
    for i, group in enumerate(data["groups"]):
        where = f"plan '{path}', group {i + 1}"
        train = group.get("train", data.get("train", ""))
        template = group.get("path", data.get("path"))
        min_start = seconds(group.get("min_start_s", data.get("min_start_s", 30)), f"{where}: min_start_s", zero=True)
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
                for label in map(str, group["methods"]):
                    rel = cell_path(where, [name, *sub.split("/"), slug(label), f"seed{seed}"], label, seen)
                    cells.append(Cell(name, tuple(setting.items()), label, int(seed),
                                      tuple(flags + ["--seed", str(seed)] + methods[label]), rel, min_start))
                    if label not in order:
                        order.append(label)
    gammas = [str(g) for g in data.get("gammas", [])]
    if any(g not in order for g in gammas):
        raise PlanError(f"plan '{path}': gammas must be labels of its cells")
    return Plan(name, text, cells, order, gammas)


def cell_path(where: str, parts: list[str], label: str, seen: dict) -> str:
    """A cell's directory relative to DIR from its parts as path names (the plan's name, the parts
    of the setting's path, the method label's slug, the seed), each checked once it is a name: none
    may be empty, '.' or '..' (the directory would leave its setting's, or be another's), hold a NUL
    or be longer than a file name can be. ``seen`` maps the directories of the cells so far to
    "cell" and those above them to "above": two cells in one directory, or one inside another's
    (whose files a finished cell moves aside), are refused."""
    for i, part in enumerate(parts):
        if part in ("", ".", "..") or "\0" in part or len(part.encode(errors="replace")) > MAX_NAME_BYTES:
            what = (f"the method label {label[:60]!r} becomes the directory name" if i == len(parts) - 2 else
                    f"the cell directory {'/'.join(parts[1:-2])[:120]!r} has the part")
            raise PlanError(f"{where}: {what} {part[:60]!r}, not a name of its own (empty, '.', '..', with a NUL "
                            f"or over {MAX_NAME_BYTES} bytes); a cell's directory must stay inside the plan's, a "
                            "directory of its own")
    if parts[1] == "plan.yaml":
        raise PlanError(f"{where}: the cell directory {'/'.join(parts[1:-2])!r} would be the plan's copy, plan.yaml")
    rel = "/".join(parts)
    above = ["/".join(parts[:n]) for n in range(2, len(parts))]
    if rel in seen or any(seen.get(d) == "cell" for d in above):
        raise PlanError(f"{where}: two cells share the directory {rel}" if seen.get(rel) == "cell" else
                        f"{where}: the cell directory {rel} lies inside another cell's, or another inside it")
    seen.update({rel: "cell", **{d: "above" for d in above}})
    return rel


@functools.lru_cache(maxsize=None)
def resolved(args: tuple, root: str | None = None):
    """The train.py config of a cell's flags (task, outer steps, ...), as train.py would resolve it
    in the checkout ``root`` (default: the working directory): the plans' paths (configs/...) are
    relative to it, as in train.py's runs."""
    from .. import config
    try:
        cfg = config.resolve(list(args), root)
        config.validate(cfg)
        return cfg
    except config.UsageError as e:
        raise PlanError(f"train.py {' '.join(args)}: {e}") from None


def plans_in(out: str, given: list[str] | None) -> list[Plan]:
    """The plans named on the command line, or else every plan that has run into DIR."""
    if given:
        return [load_plan(p) for p in given]
    found = sorted(os.path.join(out, d, "plan.yaml") for d in os.listdir(out)) if os.path.isdir(out) else []
    return [load_plan(p) for p in found if os.path.isfile(p)]


def record_problem(data) -> str:
    """Why a ``cell.json`` cannot be one the campaign wrote ('' when it can)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    attempts, tail, segments = data.get("attempts", []), data.get("tail", []), data.get("segments", [])
    if not isinstance(attempts, list) or not all(isinstance(a, dict) and files.is_number(a.get("seconds", 0))
                                                 and isinstance(a.get("device", ""), str) for a in attempts):
        return "holds attempts that are not records of seconds on a device"
    if not isinstance(segments, list) or not all(isinstance(g, dict) and files.is_number(g.get("seconds", 0))
                                                 for g in segments):
        return "holds segments that are not records of seconds on a device"
    if not isinstance(tail, list) or not all(isinstance(line, str) for line in tail):
        return "holds a log tail that is not a list of lines"
    if not isinstance(data.get("outcome"), (str, type(None))) or not isinstance(data.get("cell", {}), dict):
        return "holds an outcome or a cell that is not what the campaign writes"
    return ""


def read_record(d: str) -> dict | None:
    return files.read_json(os.path.join(d, "cell.json"), record_problem, "cell record")


def checkpoint_of(cell_dir: str):
    """The cell's checkpoint (None when it has none); CheckpointError when it cannot be read."""
    if not os.path.lexists(os.path.join(cell_dir, "checkpoint.pt")):
        return None
    from .. import checkpoint
    return checkpoint.load(cell_dir)


def read_cell(d: str) -> dict:
    """Every file of a cell's directory, checked (harness.files), and that they are of one run:
    FileDamaged or CheckpointError otherwise."""
    from ..checkpoint import CheckpointError
    files.regular(os.path.join(d, LOCK), "lock")  # a FIFO there would stop train.py and the runner
    found = {"record": read_record(d), "summary": files.read_summary(d), "settings": files.read_settings(d),
             "checkpoint": checkpoint_of(d)}
    ids = {name: data.get("run_id", "") for name, data in found.items() if name != "record" and data is not None}
    for name, torn_ok in (("metrics.jsonl", True), ("curve.jsonl", False)):
        rows = files.read_rows(os.path.join(d, name), torn_ok=torn_ok)
        for row in (rows or ([], [], False))[0]:
            ids.setdefault(name, row.get("run_id", ""))
            if row.get("run_id", "") != ids[name]:
                raise files.FileDamaged(f"{name} in {shown(d)} holds rows of two runs")
    if len(set(ids.values())) > 1:
        raise CheckpointError(f"the files in {shown(d)} are of different runs (run_id: "
                              + ", ".join(f"{k} {v or 'none'}" for k, v in ids.items()) + ")")
    return found


def state(cell: Cell, out: str) -> dict:
    """``state``: done | diverged | failed | running (holds a checkpoint) | new | damaged (a file that
    cannot be what it claims, files of two runs, or a directory that is a link: ``problem`` says
    which; never run again over), with ``step`` and ``steps`` (outer steps done and planned),
    ``devices`` and ``seconds`` (of training, from the checkpoint's segments when train.py writes
    them, else its elapsed time) and ``wall`` (seconds of the campaign's processes), ``tail`` (the
    end of the log of a failed cell)."""
    from ..checkpoint import CheckpointError
    d = os.path.join(out, cell.path)
    info = {"state": "new", "step": 0, "steps": None, "summary": {}, "record": {}, "wall": 0.0, "tail": [],
            "devices": [], "seconds": 0.0, "problem": ""}
    link = link_in(out, d)
    if link:
        return {**info, "state": "damaged", "problem": f"{shown(link)} is a symbolic link"}
    try:
        found = read_cell(d)
    except (files.FileDamaged, CheckpointError) as e:
        return {**info, "state": "damaged", "problem": one_line(e, 300)}
    record, summary, ckpt = found["record"] or {}, found["summary"] or {}, found["checkpoint"]
    attempts = record.get("attempts", [])
    info.update(summary=summary, record=record, tail=record.get("tail", []),
                wall=sum(float(a.get("seconds", 0.0)) for a in attempts))
    if ckpt is not None:
        info.update(step=ckpt["step"], steps=ckpt["config"]["outer_steps"], state="running")
    if summary.get("status") in ("finished", "diverged"):
        info.update(state="done" if summary["status"] == "finished" else "diverged", step=summary.get("steps_done"))
    elif record.get("outcome") == "failed":
        info["state"] = "failed"
    segments = segments_of(ckpt, record, summary)
    info["devices"] = list(dict.fromkeys(str(s.get("device")) for s in segments))
    info["seconds"] = sum(float(s.get("seconds", 0.0)) for s in segments)
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
    devices = list(dict.fromkeys(str(a.get("device")) for a in record.get("attempts", [])))
    return [{"device": ", ".join(devices) or (ckpt or {}).get("config", {}).get("device") or "?", "seconds": seconds}]
