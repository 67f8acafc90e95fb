"""The language the experiments declare their settings in, below them: :class:`Setting`, the checks
a value must pass, the harness's error for bad input, and how an error message quotes a value.

The tasks (``tasks/``) import this module alone of the harness; the settings table that learns
their declarations (:mod:`harness.config`) sits above them and imports them directly.
"""
from __future__ import annotations

import math
import os
import reprlib
from dataclasses import dataclass
from typing import Any, Optional

AUTO = "auto"


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


def brief(value: Any, limit: int = 60) -> str:
    """A bounded ``repr`` for error messages: never expands a huge or deeply nested value (a path
    may be given a larger ``limit``)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlevel, short.maxdict, short.maxlist = limit, limit, 2, 4, 4
    return short.repr(value)


def path_text(path: str) -> str:
    return brief(path, 300)


def one_line(message: str, limit: int = 1000) -> str:
    """What an error prints: one line, its middle cut when it is longer than ``limit`` (a message
    may hold a value from outside, such as a very long path, several times)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2:]


# ---- checks: (predicate, what it requires) ----------------------------------------------------------

MAX_COUNT = 10**9  # no count a run can use is larger; bounding them keeps huge inputs from overflowing


def at_least(low, high=MAX_COUNT):
    return (lambda v: low <= v <= high), f"at least {low} and at most {high:,}"


def in_range(low, high, high_open=False):
    return ((lambda v: low <= v < high) if high_open else (lambda v: low <= v <= high),
            f"in [{low}, {high}{')' if high_open else ']'}")


POSITIVE = (lambda v: math.isfinite(v) and v > 0), "a positive finite number"
NON_NEGATIVE = (lambda v: math.isfinite(v) and v >= 0), "a finite number >= 0"
UNIT_OPEN = (lambda v: 0 < v < 1), "in (0, 1)"
SEED = (lambda v: 0 <= v < 2**63), "an integer in [0, 2^63)"


# ---- what the machine can hold -----------------------------------------------------------------------

def machine_memory() -> int:
    """Bytes of memory of this machine: its RAM, where every tensor of a run is made first (the data
    and the weights are moved to a GPU after). Unknown: no limit."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def size_text(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def fits_in_memory(parts: dict, memory: int | None = None) -> None:
    """Refuse, in one line and before anything is built or written, a run whose tensors cannot fit
    in the machine's memory (``memory``: :func:`machine_memory`). ``parts`` maps what sizes a
    tensor, in the words of its settings (``"--inner-steps 100 x --batch-size 64 (the index table
    of the mini-batches)"``), to a lower bound of its bytes: a run refused here could never have
    run, and the line names the largest part."""
    total, limit = sum(parts.values()), machine_memory() if memory is None else memory
    if total > limit:
        largest = max(parts, key=parts.get)
        raise UsageError(f"{largest} takes {size_text(parts[largest])} of memory, and the run at least "
                         f"{size_text(total)}: more than the {size_text(limit)} this machine has; lower it")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    tasks: Optional[tuple] = None  # the tasks it applies to: every task (None), or those that declare it
    choices: Optional[tuple | dict] = None  # a dict gives each task its own choices
    check: Optional[tuple] = None  # (predicate, what it requires)
    methods: Optional[tuple] = None  # a method option: the methods it acts on
    requires: Optional[tuple] = None  # (predicate of the run's settings, what they must be): for a value other
    #   than the default, e.g. an option of one variant of a method (checked by harness.config.validate)
    resumable: bool = False  # cannot change a run's results, so --resume may change it
    pinned: bool = False  # "auto" resolves to what the run used (its facts), and a resumed run keeps that
    metavar: Optional[str] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        return type(self.default)

    def applies(self, task: str, method: str) -> bool:
        return (self.tasks is None or task in self.tasks) and (self.methods is None or method in self.methods)

    def choices_for(self, task: str):
        return self.choices.get(task) if isinstance(self.choices, dict) else self.choices


# The one setting of the harness's own that only some tasks have: where the data is on this machine
# (a task that reads data lists it in its SETTINGS). Reuse and the campaign point it elsewhere.
DATA_ROOT = Setting("data_root", "./data", "folder of the data in torchvision's layout (downloaded there when "
                    "missing and the network allows)", resumable=True, metavar="DIR")
