"""The campaign in this checkout: ``python -m bench.campaign run|status|report``.

The plans, runner and status are :mod:`harness.campaign`; the report (the campaign sections of
docs/RESULTS.md, beside the paper's numbers) is the experiments', in :mod:`bench.campaign_report`.

    python -m bench.campaign run --plan configs/campaign/table3_mb1.yaml --budget-s 840 --parallel 4 --device cuda
    python -m bench.campaign status                   # every cell: done / at step k of n / ...; the size of results/
    python -m bench.campaign report                   # the campaign sections of docs/RESULTS.md
"""
import time

STARTED = time.monotonic()  # the budget counts from here, before the slow imports

import signal  # noqa: E402
import sys  # noqa: E402

SIGNALS = (signal.SIGINT, signal.SIGTERM)
if __name__ == "__main__":  # a stop during the imports below (torch takes a second or more) is noted
    early = []
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: early.append(signum))

if not __package__:  # python bench/campaign.py, the form before bench became a package: one line, exit 2
    print("error: run the campaign from the checkout as a module: python -m bench.campaign", *sys.argv[1:],
          file=sys.stderr)
    sys.exit(2)

from harness import campaign  # noqa: E402
from harness.signals import ignore_from_now  # noqa: E402

from .campaign_report import report  # noqa: E402
from .common import ROOT  # noqa: E402


def main(argv=None, started: float | None = None) -> int:
    return campaign.main(argv, started, root=ROOT, report=report, prog="python -m bench.campaign")


if __name__ == "__main__":
    if early:
        ignore_from_now()
        print("interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(130)
    for sig in SIGNALS:  # from here Ctrl-C and SIGTERM alike are a KeyboardInterrupt: one line, exit 130
        signal.signal(sig, signal.default_int_handler)
    try:
        status = main(started=STARTED)
    except KeyboardInterrupt:  # while the command line is read, before the command handles Ctrl-C itself
        print("interrupted; nothing was written", file=sys.stderr)
        status = 130
    ignore_from_now()  # a signal in the interpreter's shutdown changes neither the files nor the status
    sys.exit(status)
