"""The campaign in this checkout: ``python -m bench.campaign run|status|report``.

The plans, runner and status are :mod:`harness.campaign`; the report (the campaign sections of
docs/RESULTS.md, beside the paper's numbers) is the experiments', in :mod:`bench.campaign_report`.

    python -m bench.campaign run --plan configs/campaign/table3_mb1.yaml --budget-s 840 --parallel 4 --device cuda
    python -m bench.campaign status                   # every cell: done / at step k of n / ...; the size of results/
    python -m bench.campaign report                   # the campaign sections of docs/RESULTS.md
"""
import time

STARTED = time.monotonic()  # the budget counts from here, before the slow imports

import sys  # noqa: E402

if not __package__:  # python bench/campaign.py, the form before bench became a package: one line, exit 2
    print("error: run the campaign from the checkout as a module: python -m bench.campaign", *sys.argv[1:],
          file=sys.stderr)
    sys.exit(2)

from harness import campaign  # noqa: E402

from .campaign_report import report  # noqa: E402
from .common import ROOT  # noqa: E402


def main(argv=None, started: float | None = None) -> int:
    return campaign.main(argv, started, root=ROOT, report=report, prog="python -m bench.campaign")


if __name__ == "__main__":
    sys.exit(main(started=STARTED))
