"""A resumable experiment campaign: the cells of a plan run as train.py processes in short windows,
on any machine, and their results accumulate in the repository under results/.

    python -m bench.campaign run --plan configs/campaign/table3.yaml --budget-s 840 --parallel 4 --device cuda
    python -m bench.campaign status                   # every cell: done / at step k of n / ...; the size of results/
    python -m bench.campaign report                   # the campaign sections of docs/RESULTS.md
    python -m bench.campaign sweep --plan configs/campaign/table3.yaml --to sweep.yaml   # the plan as a W&B sweep

A plan (configs/campaign/*.yaml) lists groups of cells in priority order; a cell is one train.py run
(a setting of the experiment, a labelled method, a seed) in its own directory
``DIR/<plan>/<setting>/<method>/seed<S>``. ``run`` resumes the cells that hold a checkpoint, then
starts the next ones, N at a time, and stops them all (SIGTERM: train.py writes a checkpoint and
exits) early enough to end within its budget. A finished cell keeps only small files in DIR (its
summary, config, a thinned metrics curve and this campaign's record); its full metrics and final
checkpoint move to the keep directory (``runs/campaign`` beside DIR, ignored by git).
"""
from __future__ import annotations

import argparse
import os
import sys

from ..rundir import WriteError, fault_text
from ..settings import UsageError, one_line
from . import runner, sweep
from .plan import PlanError, seconds


# ---- command line -------------------------------------------------------------------------------------

def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the next cells of a plan within a budget of seconds")
    r.add_argument("--plan", required=True)
    r.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for the whole command")
    r.add_argument("--parallel", type=int, default=1, help="cells side by side on the device")
    r.add_argument("--threads", type=int, default=0,
                   help="torch threads of each cell (default: OMP_NUM_THREADS when set, else the cores divided by "
                        "--parallel)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--data-root", default=None, help="passed to every train.py (default: train.py's)")
    r.add_argument("--grace-s", type=float, default=None,
                   help="seconds between the stop signal and SIGKILL (default: 5%% of the budget, 5 to 30)")
    r.add_argument("--min-start-s", type=float, default=None,
                   help="start no cell with less budget left (default: the plan's min_start_s)")
    r.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    s = sub.add_parser("status", help="every cell's state, the totals and the size of DIR")
    s.add_argument("--plan", action="append")
    s.add_argument("--brief", action="store_true", help="leave out cells not started")
    s.add_argument("--since", default=None, help="also total, per device, the wall time of the attempts started "
                   "at this ISO date or time (UTC) or later")
    t = sub.add_parser("report", help="rewrite the campaign sections of the results page")
    t.add_argument("--plan", action="append")
    t.add_argument("--doc", default=None, help="the results page (default: docs/RESULTS.md of the checkout)")
    w = sub.add_parser("sweep", help="write the plan as a W&B grid sweep over its cells (wandb sweep FILE)")
    w.add_argument("--plan", required=True)
    w.add_argument("--to", default=None, help="the sweep file to write (default: standard output)")
    c = sub.add_parser("cell", help="run one cell of a plan with train.py (what the W&B agent runs); flags after "
                       "it go to train.py")
    c.add_argument("--plan", required=True)
    c.add_argument("--cell", type=int, required=True, help="the cell's index in the plan's order")
    for q in (r, s, t):
        q.add_argument("--out", default=None, help="the results directory, committed to git (default: results/ of "
                       "the checkout)")
        q.add_argument("--keep", default=None, help="where finished cells' full metrics and checkpoints go "
                                                    "(default: runs/campaign beside --out)")
    return p


def main(argv=None, started: float | None = None, root: str | None = None, report=None,
         prog: str | None = None) -> int:
    """The command line. ``started``: when the budget began (the process's start, for the command
    line); ``root``: the checkout (train.py, configs/, results/; default: the working directory);
    ``report(args)``: what ``report`` runs (the experiments' report, bench/campaign_report.py);
    ``prog``: the command's name in its usage line."""
    started = runner.clock() if started is None else started
    command_line = parser(prog)
    args, extra = command_line.parse_known_args(argv)
    if extra and args.command != "cell":  # only cell passes flags on (to train.py)
        command_line.error(f"unrecognized arguments: {' '.join(extra)}")
    args.root = os.path.abspath(root or os.getcwd())
    args.out = os.path.abspath(getattr(args, "out", None) or os.path.join(args.root, "results"))
    args.keep = os.path.abspath(getattr(args, "keep", None) or os.path.join(os.path.dirname(args.out), "runs",
                                                                             "campaign"))
    if getattr(args, "doc", None) is None:
        args.doc = os.path.join(args.root, "docs", "RESULTS.md")
    from ..checkpoint import CheckpointError
    try:
        if args.command == "run":
            seconds(args.budget_s, "--budget-s")
            for name, value in (("--grace-s", args.grace_s), ("--min-start-s", args.min_start_s)):
                if value is not None:
                    seconds(value, name, zero=name == "--min-start-s")
            if not 1 <= args.parallel <= 1024:
                raise PlanError(f"--parallel must be in [1, 1024], got {args.parallel}")
            if args.device == "cuda":
                import torch
                if not torch.cuda.is_available():
                    raise PlanError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
            return runner.run(args, started)
        if args.command == "status":
            return runner.status(args)
        if args.command == "sweep":
            return sweep.write_sweep(args)
        if args.command == "cell":
            return sweep.run_cell(args, extra)
        if report is None:
            raise UsageError("no report to write: run the report from the checkout (python -m bench.campaign report)")
        return report(args)
    except (PlanError, UsageError, CheckpointError) as e:  # bad input: a plan, a flag, a damaged file, a lock
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (WriteError, OSError) as e:  # the pages or the results directory cannot be written
        print(f"error: {fault_text(e)}; every file already written is whole (each is written at once or not at "
              "all)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every file already written is whole (each is written at once or not at all)",
              file=sys.stderr)
        return 130
