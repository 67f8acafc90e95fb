"""Fault injection for the reliability tests, as hooks the training loop calls at its moments.

The loop is handed a :class:`Hooks`; the default, :data:`NONE`, does nothing. The tests hand in
:class:`Faults`, e.g. ``Faults("nan@3,kill@5")``: outer step 3 produces a NaN hypergradient and
the process is killed (SIGKILL) at step 5. Kinds: ``nan`` (from that step on with ``nan+``),
``kill``, ``interrupt`` (SIGINT, as Ctrl-C, at the start of the step), ``kill_in_checkpoint``
(SIGKILL halfway through writing the checkpoint of that step), and ``sigterm:MOMENT`` /
``sigint:MOMENT`` (that signal while the run is at MOMENT of that step: ``hypergradient``,
``evaluate``, ``final`` (the final evaluation; its step is the last one) or ``checkpoint`` (while
writing the checkpoint of that step)). train.py, started as a process, reads the same text once
from ``METAGREEDY_FAULT`` (:func:`from_environment`)."""
from __future__ import annotations

import os
import signal

from .settings import UsageError, brief

VARIABLE = "METAGREEDY_FAULT"
KINDS = ("nan", "kill", "interrupt", "kill_in_checkpoint") + tuple(
    f"{name}:{moment}" for name in ("sigterm", "sigint") for moment in ("hypergradient", "evaluate", "final",
                                                                          "checkpoint"))


class Hooks:
    """The moments of a run where a fault can be injected; these do nothing."""

    def step_start(self, step: int) -> None:
        """Before the hypergradient of outer step ``step``."""

    def gradients(self, grads: dict, step: int) -> dict:
        """The hypergradients of ``step``, as the outer step will see them."""
        return grads

    def moment(self, moment: str, step: int) -> None:
        """At ``evaluate`` (the periodic evaluation of ``step``) or ``final`` (the final evaluation)."""

    def mid_checkpoint(self, fh, step: int) -> None:
        """Inside the write of the checkpoint of ``step``, the payload written, before the rename."""


NONE = Hooks()


class Faults(Hooks):
    """The faults a spec such as ``"nan@3,sigterm:evaluate@5"`` asks for (see the module's text)."""

    def __init__(self, spec: str, source: str = "faults"):
        self.faults = []
        for item in filter(None, spec.split(",")):
            kind, _, at = item.strip().partition("@")
            onward = kind.endswith("+")
            kind = kind[:-1] if onward else kind
            if kind not in KINDS or not (at.strip().isascii() and at.strip().isdigit()):
                raise UsageError(f"{source}: {brief(item)} is not KIND@STEP (KIND one of {', '.join(KINDS)})"
                                 + ("; unset it for a normal run" if source == VARIABLE else ""))
            self.faults.append((kind, int(at), onward))

    def hit(self, kind: str, step: int) -> bool:
        return any(k == kind and (step == at or (onward and step >= at)) for k, at, onward in self.faults)

    def _signal(self, moment: str, step: int) -> None:
        for name in ("sigterm", "sigint"):
            if self.hit(f"{name}:{moment}", step):
                os.kill(os.getpid(), getattr(signal, name.upper()))

    def step_start(self, step: int) -> None:
        if self.hit("kill", step):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hit("interrupt", step):
            os.kill(os.getpid(), signal.SIGINT)
        self._signal("hypergradient", step)

    def gradients(self, grads: dict, step: int) -> dict:
        return {n: g * float("nan") for n, g in grads.items()} if self.hit("nan", step) else grads

    def moment(self, moment: str, step: int) -> None:
        self._signal(moment, step)

    def mid_checkpoint(self, fh, step: int) -> None:
        self._signal("checkpoint", step)
        if self.hit("kill_in_checkpoint", step):  # a crash in mid-write
            fh.truncate(fh.tell() // 2)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def from_environment(environ=None) -> Hooks:
    """The faults ``METAGREEDY_FAULT`` asks for, read once when a run starts; :data:`NONE` when unset.
    A malformed value is a UsageError, before anything is written."""
    spec = (os.environ if environ is None else environ).get(VARIABLE, "")
    return Faults(spec, VARIABLE) if spec else NONE
