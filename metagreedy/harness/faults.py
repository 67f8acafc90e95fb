"""Fault injection for the reliability tests: ``METAGREEDY_FAULT="nan@3,kill@5"`` makes outer step 3
produce a NaN hypergradient and kills the process (SIGKILL) at step 5. Kinds: ``nan`` (from that
step on with ``nan+``), ``kill``, ``interrupt`` (SIGINT, as Ctrl-C, at the start of the step),
``kill_in_checkpoint`` (SIGKILL halfway through writing the checkpoint of that step), and
``sigterm:MOMENT`` / ``sigint:MOMENT`` (that signal while the run is at MOMENT of that step:
``hypergradient``, ``evaluate``, ``final`` (the final evaluation; its step is the last one) or
``checkpoint`` (while writing the checkpoint of that step)). Unset, nothing happens."""
from __future__ import annotations

import os
import signal


KINDS = ("nan", "kill", "interrupt", "kill_in_checkpoint") + tuple(
    f"{name}:{moment}" for name in ("sigterm", "sigint") for moment in ("hypergradient", "evaluate", "final",
                                                                          "checkpoint"))


def _spec() -> list[tuple[str, int, bool]]:
    out = []
    for item in filter(None, os.environ.get("METAGREEDY_FAULT", "").split(",")):
        kind, _, at = item.strip().partition("@")
        onward = kind.endswith("+")
        kind = kind[:-1] if onward else kind
        if kind not in KINDS or not (at.strip().isascii() and at.strip().isdigit()):
            from .config import UsageError, brief
            raise UsageError(f"METAGREEDY_FAULT: {brief(item)} is not KIND@STEP (KIND one of {', '.join(KINDS)}); "
                             "unset it for a normal run")
        out.append((kind, int(at), onward))
    return out


def check() -> None:
    """Refuse a malformed METAGREEDY_FAULT before a run starts, not at the step that reads it."""
    _spec()


def hit(kind: str, step: int) -> bool:
    return any(k == kind and (step == at or (onward and step >= at)) for k, at, onward in _spec())


def maybe_signal(step: int) -> None:
    if hit("kill", step):
        os.kill(os.getpid(), signal.SIGKILL)
    if hit("interrupt", step):
        os.kill(os.getpid(), signal.SIGINT)


def signal_at(moment: str, step: int) -> None:
    for name in ("sigterm", "sigint"):
        if hit(f"{name}:{moment}", step):
            os.kill(os.getpid(), getattr(signal, name.upper()))
