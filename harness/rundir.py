"""A run directory belongs to one run: a new run refuses a directory that holds one, a lock refuses
a second live process, and every file in it is written so that a crash leaves the previous version.

The lock is ``fcntl.flock`` on ``.lock`` inside the directory: the kernel releases it when the
process ends, however it ends, so a crashed run never blocks its own ``--resume``.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import time

from . import files
from .settings import UsageError, brief, path_text

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "summary.json", "config.yaml")
LOCK = ".lock"


class WriteError(Exception):
    """A file of the run could not be written (disk full, permissions): a fault, exit status 1."""


def holds_run(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in RUN_FILES)


def check_usable(path: str, new: bool) -> None:
    """Refuse, before anything is built, a run directory that cannot be this run's."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"run directory {path_text(path)} is a file, not a directory")
    if new and holds_run(path):
        raise UsageError(f"run directory {path_text(path)} already holds a run: continue it with --resume "
                         f"{path_text(path)}, or give another --run-dir")
    if not new and not os.path.isdir(path):
        raise UsageError(f"--resume: {path_text(path)} is not a run directory")


class RunDir:
    """The directory of the run this process owns, locked for as long as it lives."""

    def __init__(self, path: str, new: bool):
        self.path, self._fd = path, None
        check_usable(path, new)
        self._fd = take_lock(path, f"run directory {path_text(path)}")
        check_usable(path, new)  # again, now that no other process can be starting a run in it

    @classmethod
    def fresh(cls, base: str) -> "RunDir":
        """A new directory ``<base>-<time>`` (``-2``, ``-3``, ... when runs started in the same second
        took that name): made with mkdir, which only one process can win."""
        stem = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 1000):
            path = stem if n == 1 else f"{stem}-{n}"
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                os.mkdir(path)
            except FileExistsError:
                continue
            except OSError as e:
                raise UsageError(f"cannot make run directory {path_text(path)}: {e.strerror or e}") from None
            return cls(path, new=True)
        raise UsageError(f"cannot make a run directory named {path_text(stem)}: a thousand exist")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None


def take_lock(path: str, what: str) -> int:
    """Lock the directory ``path`` (made if needed) for this process: ``fcntl.flock`` on ``.lock`` in
    it, which the kernel releases when the process ends, however it ends, so a lock whose holder is
    gone blocks nothing. Returns the lock's descriptor (closing it releases the lock); UsageError
    ("... is in use by another process (pid N)") when a live process holds it."""
    import fcntl
    try:
        os.makedirs(path, exist_ok=True)
        # O_NOFOLLOW: a link planted in the directory must not lead the lock to somebody else's file
        fd = os.open(os.path.join(path, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except (OSError, RecursionError) as e:
        raise UsageError(f"cannot use {what}: {getattr(e, 'strerror', None) or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise UsageError(f"cannot lock {what}: {e.strerror or e}") from None
        raise UsageError(f"{what} is in use by another process" + (f" (pid {owner})" if owner.isdigit() else "")) \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def write_atomic(path: str, write, binary: bool = False, what: str = "", unique: bool = False) -> None:
    """``write(fh)`` into a temporary file beside ``path``, fsync and rename: a reader sees the old or
    the new file, never half of one; on failure the temporary file is removed and WriteError says
    why. ``unique``: a temporary file of its own for each writer (files that several processes may
    write at once, such as a shared cache); a run's files have one writer, the lock's holder."""
    tmp = path + ".tmp"
    if os.path.islink(path):  # planted: never replaced, never followed
        raise WriteError(f"could not write {what or path_text(path)}: it is a symbolic link; refusing to write "
                         "over it (remove the link)")
    try:
        if unique:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=".tmp")
        else:
            if os.path.lexists(tmp):  # left by a crash, or planted: removed, never written through
                os.remove(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise WriteError(f"could not write {what or path_text(path)}: {e.strerror or e}") from None


def link_in(root: str, path: str) -> str:
    """The first part of ``path`` below the directory ``root`` that is a symbolic link ('' when none):
    a directory that is a link leads writes, and the results read back, to another place."""
    rel = os.path.relpath(path, root)
    if rel == os.curdir:
        return ""
    if rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return path
    current = root
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return current
    return ""


def open_append(path: str):
    """A text file opened for appending, never through a link planted in its place."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        return os.fdopen(fd, "a")
    except OSError as e:
        raise WriteError(f"could not open {path_text(path)}: {e.strerror or e}") from None


def write_text(path: str, text: str) -> None:
    write_atomic(path, lambda fh: fh.write(text))


def write_json(path: str, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, default=str))


def write_yaml(path: str, data: dict) -> None:
    import yaml
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def metrics_to_keep(path: str, steps: int, run_id: str) -> list[bytes]:
    """The lines of ``metrics.jsonl`` a resume keeps: the rows of outer steps 0..steps-1 (what the
    checkpoint covers), all of them, each of this run (``run_id``; '' for a run stored before runs had
    ids). Rows logged after the checkpoint (they will be logged again) and a torn last line of a
    process killed while appending are dropped. Anything else is not guessed at: a damaged row, a row
    of another run, or fewer rows than the checkpoint covers raise UsageError, and nothing is written."""
    found = files.read_rows(path, torn_ok=True)
    rows, lines = (found[0], found[1]) if found is not None else ([], [])
    kept = []
    for number, (row, raw) in enumerate(zip(rows, lines), start=1):
        if row["step"] >= steps:
            break
        if row["step"] != len(kept):
            raise UsageError(f"{path_text(path)}, line {number}, holds outer step {row['step']} where step "
                             f"{len(kept)} was expected; repair the file before resuming")
        if row.get("run_id", "") != run_id:
            raise UsageError(f"{path_text(path)}, line {number}, is a row of another run (run_id "
                             f"{brief(row.get('run_id', 'none'))}, the checkpoint's is {brief(run_id or 'none')}); "
                             "refusing to mix two runs' metrics")
        kept.append(raw)
    if len(kept) < steps:
        raise UsageError(f"{path_text(path)} holds the rows of {len(kept)} outer steps, but the checkpoint covers "
                         f"{steps}: the file was cut or replaced, and resuming would lose rows; restore it, or start "
                         "a new run")
    return kept


def repair_metrics(path: str, steps: int, run_id: str = "") -> int:
    """Rewrite ``metrics.jsonl`` to :func:`metrics_to_keep`; returns the rows kept."""
    kept = metrics_to_keep(path, steps, run_id)
    if kept or os.path.lexists(path):
        write_text(path, "".join(raw.decode() + "\n" for raw in kept))
    return len(kept)
