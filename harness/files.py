"""Every file of the project is read here, and checked against what it must hold before anything
uses it: checkpoints (:mod:`harness.checkpoint`), ``config.yaml``, ``summary.json``,
``metrics.jsonl``, and the campaign's ``cell.json``, ``curve.jsonl`` and plans.

A file that is absent reads as ``None``. A file that is there but cannot be what it claims (a link,
not a regular file, unreadable, too large, not UTF-8, not JSON or YAML, duplicate YAML keys, a value
of the wrong type) raises :class:`FileDamaged`, which names the file and the problem: it is never
taken as absent. The files are written by :func:`harness.rundir.write_atomic`.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat

from .config import MAX_YAML_NODES, _count_nodes, _unique_key_loader, setting, stored_problem
from .settings import UsageError, brief, path_text

MAX_JSON_BYTES = 1 << 20  # summary.json, cell.json: a few hundred bytes
MAX_LINES_BYTES = 1 << 30  # metrics.jsonl of the longest run is a few MB
NONFINITE = ("nan", "inf", "-inf")  # how runlog writes a float that is not finite
MAX_RUN_ID = 64


class FileDamaged(UsageError):
    """A file of the project that is there but does not hold what it must: bad input, exit status 2."""


def _damaged(path: str, problem: str, what: str = "") -> FileDamaged:
    return FileDamaged(f"{what or os.path.basename(path)} {path_text(path)} {problem}")


def regular(path: str, what: str = "") -> os.stat_result | None:
    """The ``lstat`` of a regular file (None when there is none); FileDamaged for a link or a file of
    another kind (a directory, a FIFO, whose open would wait for a writer)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or type(e).__name__})", what) from None
    if stat.S_ISLNK(info.st_mode):
        raise _damaged(path, "is a symbolic link; refusing to read through it", what)
    if not stat.S_ISREG(info.st_mode):
        raise _damaged(path, "is not a regular file", what)
    return info


def read_bytes(path: str, limit: int, what: str = "") -> bytes | None:
    """The bytes of a regular file (None when there is none), never through a link."""
    info = regular(path, what)
    if info is None:
        return None
    if info.st_size > limit:
        raise _damaged(path, f"is {info.st_size} bytes, more than such a file can hold ({limit})", what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as e:
        raise _damaged(path, f"cannot be read ({e.strerror or type(e).__name__})", what) from None


def read_text(path: str, limit: int, what: str = "") -> str | None:
    data = read_bytes(path, limit, what)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "is not UTF-8 text", what) from None


def parse_yaml(text: str, path: str, what: str = ""):
    """YAML as plain data: safe tags only, no duplicate keys, no alias bombs."""
    import yaml
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise _damaged(path, f"is not valid YAML: {brief(str(e).splitlines()[0] if str(e) else '', 200)}",
                       what) from None
    except RecursionError:
        raise _damaged(path, "is nested too deeply", what) from None
    if _count_nodes(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise _damaged(path, f"expands to more than {MAX_YAML_NODES} values (YAML aliases?)", what)
    return data


def read_yaml(path: str, what: str = "", limit: int = MAX_JSON_BYTES):
    text = read_text(path, limit, what)
    return None if text is None else parse_yaml(text, path, what)


def _parse_json(text, path: str, what: str, line: int = 0):
    where = f"line {line} " if line else ""
    try:
        return json.loads(text)
    except RecursionError:
        raise _damaged(path, f"{where}is nested too deeply", what) from None
    except ValueError:
        raise _damaged(path, f"{where}is damaged (not JSON)" if line else "is not JSON (truncated or edited?)",
                       what) from None


# ---- what each file must hold ------------------------------------------------------------------------------

def is_number(value) -> bool:
    """A number as the files hold one: an int or float (not a bool), or a non-finite float as runlog
    writes it ('nan', 'inf', '-inf')."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in NONFINITE


# Metrics that are fractions, whatever the task: accuracies (val_acc, meta_test_acc, ...) and the
# detection rates (detect_precision, detect_recall, detect_f1).
FRACTION = re.compile(r"(^|_)(acc|precision|recall|f1)$")
TIMES = ("wall_time", "total_time")  # a summary's seconds: the campaign adds them up


def metric_problem(key: str, value, lists: bool = False) -> str:
    """Why ``value`` cannot be the metric ``key`` of a metrics row or a summary ('' when it can): the
    one check of both. A metric is a number (:func:`is_number`; a bool is not one) or null, or with
    ``lists`` (a summary's) a list of numbers; an accuracy or a detection rate (FRACTION) is a finite
    real number in [0, 1], a summary's seconds (TIMES) a finite one >= 0. What fails is damaged,
    never reported."""
    fraction, seconds = bool(FRACTION.search(key)), key in TIMES
    if not (fraction or seconds):
        ok = value is None or is_number(value) or (lists and _number_list(value))
        return "" if ok else f"holds {key} = {brief(value)}, not a number"
    real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if fraction and not (real and 0 <= value <= 1):
        return f"holds {key} = {brief(value)}, not a fraction in [0, 1]"
    if seconds and not (real and value >= 0):
        return f"holds {key} = {brief(value)}, not a number of seconds"
    return ""


def _number_list(value) -> bool:
    return isinstance(value, list) and len(value) <= 1_000_000 and all(is_number(v) for v in value)


def run_id_problem(value) -> str:
    if not isinstance(value, str) or not (0 < len(value) <= MAX_RUN_ID) or not value.isalnum():
        return f"has a run_id {brief(value)} that no run writes"
    return ""


# A summary's text values: those train.py writes for every run (dataset: from its facts), and the
# settings of its task that are text (its final metrics may repeat them, as they may its settings
# that are true or false).
TEXT = ("status", "task", "method", "dataset", "run_id")
STATUSES = ("finished", "interrupted", "diverged")


def summary_problem(data) -> str:
    """Why a ``summary.json`` cannot be one train.py wrote ('' when it can). Its metrics are checked
    as a metrics row's are (:func:`metric_problem`), and may be lists of numbers (the toy's alpha)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if data.get("status") not in STATUSES:
        return f"has status {brief(data.get('status'))}, not one of {', '.join(STATUSES)}"
    for key in ("steps_done", "outer_steps"):
        value = data.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"has {key} = {brief(value)}, not a count of outer steps"
    if "outer_steps" in data and data.get("steps_done", 0) > data["outer_steps"]:
        return f"says {data['steps_done']} of {data['outer_steps']} outer steps were done"
    if "run_id" in data and run_id_problem(data["run_id"]):
        return run_id_problem(data["run_id"])
    for key, value in data.items():
        declared = setting(key) if key not in TEXT else None
        kind = str if key in TEXT else declared.kind if declared is not None and declared.kind in (str, bool) else None
        if kind is str and not isinstance(value, (str, type(None))):
            return f"holds {key} = {brief(value)}, not text"
        if kind is bool and not isinstance(value, bool):
            return f"holds {key} = {brief(value)}, not true or false"
        if kind is None and metric_problem(key, value, lists=True):
            return metric_problem(key, value, lists=True)
    return ""


def row_problem(row, previous: int | None) -> str:
    """Why a line of ``metrics.jsonl`` / ``curve.jsonl`` cannot be a row train.py logged."""
    if not isinstance(row, dict):
        return f"holds a JSON {type(row).__name__}, not a row"
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"has step {brief(step)}, not an outer step"
    if previous is not None and step <= previous:
        return f"has step {step} after step {previous}"
    for key, value in row.items():
        problem = run_id_problem(value) if key == "run_id" else metric_problem(key, value) if key != "step" else ""
        if problem:
            return problem
    return ""


def settings_problem(data) -> str:
    """Why a ``config.yaml`` cannot be one train.py wrote: a run's settings, its facts, its run id."""
    if not isinstance(data, dict):
        return "does not hold a mapping of settings"
    settings = {k: v for k, v in data.items() if k not in ("facts", "run_id")}
    if not isinstance(data.get("facts", {}), dict):
        return "holds facts that are not a mapping"
    if "run_id" in data and run_id_problem(data["run_id"]):
        return run_id_problem(data["run_id"])
    problem = stored_problem(settings)
    return f"is damaged: it {problem}" if problem else ""


# ---- readers ------------------------------------------------------------------------------------------------

def read_json(path: str, check=None, what: str = ""):
    """A JSON object file, checked by ``check(data) -> problem`` (or only for being an object)."""
    text = read_text(path, MAX_JSON_BYTES, what)
    if text is None:
        return None
    data = _parse_json(text, path, what)
    problem = check(data) if check else ("" if isinstance(data, dict) else
                                         f"holds a JSON {type(data).__name__}, not an object")
    if problem:
        raise _damaged(path, problem, what)
    return data


def read_summary(run_dir: str) -> dict | None:
    return read_json(os.path.join(run_dir, "summary.json"), summary_problem)


def read_settings(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "config.yaml")
    data = read_yaml(path)
    if data is None:
        return None
    problem = settings_problem(data)
    if problem:
        raise _damaged(path, problem)
    return data


def read_rows(path: str, torn_ok: bool = False, what: str = "") -> tuple[list[dict], list[bytes], bool] | None:
    """The rows of a ``metrics.jsonl`` or ``curve.jsonl`` (None when there is none), their lines,
    and whether a torn last line (the last append of a killed process; only with ``torn_ok``) was
    left out. Steps rise from row to row."""
    data = read_bytes(path, MAX_LINES_BYTES, what)
    if data is None:
        return None
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows, kept, previous = [], [], None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            raise _damaged(path, f"line {number} is empty", what)
        try:
            row = _parse_json(raw, path, what, number)
        except FileDamaged:
            if torn_ok and number == len(lines):
                return rows, kept, True
            raise
        problem = row_problem(row, previous)
        if problem:
            raise _damaged(path, f"line {number} {problem}", what)
        previous = row["step"]
        rows.append(row)
        kept.append(raw)
    return rows, kept, False


def metrics_rows(run_dir: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``, or of the thinned ``curve.jsonl`` a finished campaign
    cell keeps instead; none when it has neither."""
    for name in ("metrics.jsonl", "curve.jsonl"):
        found = read_rows(os.path.join(run_dir, name))
        if found is not None:
            return found[0]
    return []
