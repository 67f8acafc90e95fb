"""Score a trained few-shot run on new episodes, at its own or another number of ways and shots.

    python -m bench.evaluate RUN_DIR --ways 20 --shots 1 --query-mode both   # meta-test accuracy ± 95% CI

The run is rebuilt from its checkpoint by :func:`harness.reuse.load_run` (``from harness.reuse
import load_run`` does the same in Python).
"""
from __future__ import annotations

import argparse
import sys

from harness.checkpoint import CheckpointError
from harness.reuse import load_run
from harness.settings import UsageError, one_line
from metagreedy.data import DataError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.evaluate",
                description="Score a trained few-shot run on new episodes of its meta-validation or meta-test split, "
                            "at its own or another number of ways and shots.")
    p.add_argument("run_dir", help="a run directory (with checkpoint.pt)")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--ways", type=int, help="classes per task (default: the run's)")
    p.add_argument("--shots", type=int, help="support examples per class (default: the run's)")
    p.add_argument("--queries", type=int, help="query examples per class (default: the run's)")
    p.add_argument("--tasks", type=int, help="tasks to average over (default: the run's --final-eval-tasks)")
    p.add_argument("--query-mode", choices=("transductive", "inductive", "both"),
                   help="transductive: the queries of a task are one batch (as in training); inductive: each query "
                        "is classified with the support images only, without the other queries' batch-norm "
                        "statistics (default: as the run evaluated, its --eval-queries)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the run's setting")
    p.add_argument("--data-root", help="where the data is on this machine (default: the run's)")
    return p


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
        for name in ("ways", "shots", "queries", "tasks"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
        run = load_run(args.run_dir, args.device, args.data_root)
        own = run.config.get("eval_queries", "transductive")
        modes = ("transductive", "inductive") if args.query_mode == "both" else (args.query_mode or own,)
        for mode in modes:
            score = run.evaluate(args.split, args.tasks, ways=args.ways, shots=args.shots, queries=args.queries,
                                 query_mode=mode)
            cfg = run.config
            ways, shots, queries = args.ways or cfg.ways, args.shots or cfg.shots, args.queries or cfg.queries
            print(f"meta-{args.split} accuracy, {ways}-way {shots}-shot, {queries} queries per class, {score.tasks} "
                  f"tasks, {mode}: {100 * score.accuracy:.2f} ± {100 * score.ci95:.2f}%")
    except (UsageError, DataError, CheckpointError, TypeError, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
