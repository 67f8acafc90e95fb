"""``python -m metagreedy.evaluate RUN_DIR [--ways N --shots K ...]``: score a trained few-shot run
(the code is :mod:`metagreedy.harness.reuse`, re-exported here)."""
import sys

from .harness.reuse import Run, Score, load_run, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
