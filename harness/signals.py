"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before killing).

A signal never interrupts a run's bookkeeping. Inside :meth:`Stop.abortable` (a hypergradient, an
evaluation: work that only reads the run's state) it raises :class:`Interrupted` at once and the
work in progress is thrown away; anywhere else (the outer step, a checkpoint or log write) it is
noted, and the loop stops at the end of the step. A second signal while the first is handled is
only noted, so the checkpoint being written completes.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Raised in an abortable region when a stop was requested (a BaseException, so that no
    ``except Exception`` in the work it interrupts swallows it)."""


class Stop:
    def __init__(self, abort: bool = True):
        self.abort = abort  # False in multi-process runs: ranks must agree on where they stop
        self.signum = None
        self._in_region = False
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> "Stop":
        # SIGINT is set explicitly: a process started in the background inherits it ignored
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        if self._in_region:
            self._in_region = False
            raise Interrupted(signum)

    @contextmanager
    def abortable(self):
        """Work that may be thrown away: a stop request raises Interrupted here."""
        if self.requested and self.abort:
            raise Interrupted(self.signum)
        self._in_region = self.abort
        try:
            yield
        finally:
            self._in_region = False

    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def ignore_from_now() -> None:
    """The process's exit status is decided: a stop signal from here on is ignored. Python's shutdown
    (which takes a moment after torch) puts back the default handler of every signal it handles,
    so a second Ctrl-C or SIGTERM then would kill the process (status -2 or -15) though its files
    are whole; it leaves an ignored signal ignored."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
