"""A run directory belongs to one run: a new run refuses a directory that holds one, a lock refuses
a second live process, and every file in it is written so that a crash leaves the previous version.

The lock is ``fcntl.flock`` on ``.lock`` inside the directory: the kernel releases it when the
process ends, however it ends, so a crashed run never blocks its own ``--resume``.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time

from . import files
from .settings import UsageError, brief, one_line, path_text

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "summary.json", "config.yaml")
LOCK = ".lock"


class WriteError(Exception):
    """A file of the run could not be written (disk full, permissions): a fault, exit status 1."""


def fault_text(e: OSError | WriteError, limit: int = 1000) -> str:
    """A write that failed, in one line: a WriteError names its file; an OSError names its own when
    it has one."""
    if isinstance(e, WriteError) or not e.filename:
        return one_line(e if isinstance(e, WriteError) else (e.strerror or e), limit)
    return one_line(f"{e.strerror or e}: {path_text(str(e.filename))}", limit)


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

    def __init__(self, path: str, new: bool, made: list | tuple = ()):
        self.path, self._fd = path, None
        check_usable(path, new)
        # what this run makes (``made``: the directories its caller made for it), removed again if
        # the run ends before it writes a file of its own (close)
        self._made = missing_dirs(path) + list(made), not os.path.lexists(os.path.join(path, LOCK))
        self._fd = take_lock(path, f"run directory {path_text(path)}")
        try:
            check_usable(path, new)  # again, now that no other process can be starting a run in it
        except UsageError:
            self.close()
            raise

    @classmethod
    def fresh(cls, base: str) -> "RunDir":
        """A new directory ``<base>-<time>`` (``-2``, ``-3``, ... when runs started in the same second
        took that name): made with mkdir, which only one process can win."""
        stem = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 1000):
            path = stem if n == 1 else f"{stem}-{n}"
            made = missing_dirs(path)
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                os.mkdir(path)
            except FileExistsError:
                continue
            except OSError as e:
                raise UsageError(f"cannot make run directory {path_text(path)}: {e.strerror or e}") from None
            try:
                return cls(path, new=True, made=made)
            except BaseException:
                remove_made([], made)  # the lock's failure leaves no empty run directory behind
                raise
        raise UsageError(f"cannot make a run directory named {path_text(stem)}: a thousand exist")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def close(self) -> None:
        """Release the lock. A run that ends before its first file (a full disk at its first
        checkpoint) leaves no half-made directory: the lock file and the directories it made go."""
        if self._fd is None:
            return
        dirs, made_lock = self._made
        empty = not holds_run(self.path)
        if empty and made_lock:
            remove_made([os.path.join(self.path, LOCK)], [])
        os.close(self._fd)  # releases the lock
        self._fd = None
        if empty:
            remove_made([], dirs)


def take_lock(path: str, what: str) -> int:
    """Lock the directory ``path`` (made if needed) for this process: ``fcntl.flock`` on ``.lock`` in
    it (opened by :func:`open_lock`), which the kernel releases when the process ends, however it
    ends, so a lock whose holder is gone blocks nothing. Returns the lock's descriptor (closing it
    releases the lock); UsageError ("... is in use by another process (pid N)") when a live process
    holds it. Every failure (open, flock, truncate, write) is one line that names the file, and
    leaves nothing this call made behind: neither the lock file nor the directories."""
    import fcntl
    made_dirs, lock = missing_dirs(path), os.path.join(path, LOCK)
    fd, made = None, False
    try:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise lock_error(e, f"cannot use {what}: {e.strerror or e}") from None
        except RecursionError:
            raise UsageError(f"cannot use {what}: the path is nested too deeply") from None
        fd, made = open_lock(lock, what)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UsageError(f"cannot lock {what} ({path_text(lock)}): {e.strerror or e}") from None
            made, owner = False, lock_owner(fd)  # the file is the holder's, whoever made it
            raise UsageError(f"{what} is in use by another process" + (f" (pid {owner})" if owner else "")) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError as e:
            raise lock_error(e, f"cannot lock {what}: could not write its lock {path_text(lock)}: "
                                f"{e.strerror or e}") from None
        return fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        remove_made([lock] if made else [], made_dirs)
        raise


def open_lock(lock: str, what: str, write: bool = True) -> tuple[int, bool]:
    """The lock file ``lock`` of ``what``, opened as every lock is: without blocking (the open of a
    FIFO planted there would wait for a writer for ever), never through a link, and kept only when
    it is a regular file. Returns ``(descriptor, whether this call made the file)``; with ``write``
    False nothing is made (FileNotFoundError when there is no file). UsageError names the file when
    it cannot be a lock, WriteError when the disk cannot hold it."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    made = False
    try:
        kind = stat.S_IFMT(os.lstat(lock).st_mode)
    except OSError:
        kind = stat.S_IFREG  # absent (made below), or the open says why it cannot be
    if kind != stat.S_IFREG:  # refused before it is opened (a device is not even opened)
        raise _not_a_lock(lock, what)
    try:
        try:
            fd = os.open(lock, flags | (os.O_CREAT | os.O_EXCL if write else 0), 0o644)
            made = write
        except FileExistsError:
            fd = os.open(lock, flags)
    except FileNotFoundError:
        if not write:
            raise
        raise UsageError(f"cannot use {what}: its lock {path_text(lock)} was removed while it was opened") from None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link put there since it was looked at
            raise _not_a_lock(lock, what) from None
        raise lock_error(e, f"cannot use {what}: its lock {path_text(lock)} cannot be opened ({e.strerror or e})") \
            from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # put there since it was looked at
        os.close(fd)
        raise _not_a_lock(lock, what)
    return fd, made


def _not_a_lock(lock: str, what: str) -> UsageError:
    kind = "a symbolic link" if os.path.islink(lock) else "not a regular file (a FIFO, socket, device or directory " \
        "put there)"
    return UsageError(f"cannot use {what}: its lock {path_text(lock)} is {kind}; remove it")


def lock_error(e: OSError, message: str) -> Exception:
    """A lock that cannot be taken: a full disk or an I/O error is a fault (WriteError, exit status
    1); anything else (permissions, a file of another kind) is bad input (UsageError, exit status 2)."""
    return (WriteError if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO) else UsageError)(message)


def lock_owner(fd: int) -> str:
    """The process id a lock's holder wrote in it ('' when it cannot be read as one)."""
    try:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return owner if owner.isdigit() else ""


def missing_dirs(path: str) -> list[str]:
    """The directories of ``path`` that do not exist yet, the deepest first."""
    out, path = [], os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def remove_made(made_files: list[str], made_dirs: list[str]) -> None:
    """Remove what a start that failed made: its files, then its directories while they are empty."""
    for name in made_files:
        try:
            os.remove(name)
        except OSError:
            pass
    for d in made_dirs:
        try:
            os.rmdir(d)
        except OSError:
            return


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
