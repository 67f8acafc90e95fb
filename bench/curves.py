"""The best periodic evaluation of a run against its last, from the evaluation rows that a campaign
cell keeps in ``curve.jsonl``: for the report's *best evaluation against the last* tables and the
*which evaluation is reported* row of *Why our levels differ from the paper's*."""
from __future__ import annotations

from .common import fmt, mean_ci
from .tables import line


def evaluations(rows: list[dict], pick: str, report: str) -> list[tuple[int, float, float]]:
    """(outer step, the value of ``pick``, the value of ``report``) of every row that carries both."""
    return [(r["step"], float(r[pick]), float(r[report])) for r in rows if pick in r and report in r]


def best_and_last(rows: list[dict], pick: str, report: str) -> dict | None:
    """The last evaluation's ``report`` value and, at the evaluation with the highest ``pick`` value
    (the earliest of equals), its ``report`` value and outer step; None without evaluations."""
    evals = evaluations(rows, pick, report)
    if not evals:
        return None
    best = max(evals, key=lambda e: e[1])  # max keeps the first of equal values
    return {"last": evals[-1][2], "last_step": evals[-1][0], "best": best[2], "best_step": best[0],
            "count": len(evals)}


def step_runs(steps: list[int], every: list[int]) -> str:
    """``steps`` (a subset of the evaluation steps ``every``) as runs of consecutive evaluations:
    ``19-59, 99``."""
    runs, start, previous = [], None, None
    for s in every:
        if s in steps:
            start = s if start is None else start
            previous = s
        elif start is not None:
            runs.append(f"{start}-{previous}" if previous != start else str(start))
            start = None
    if start is not None:
        runs.append(f"{start}-{previous}" if previous != start else str(start))
    return ", ".join(runs)


def crossing(rows: list[dict], key: str, level: float) -> str | None:
    """For a run whose last evaluation of ``key`` is below ``level`` (a fraction) and whose best is at
    or above it: at which outer steps it was at or above, and where it ended; None otherwise."""
    evals = [(r["step"], float(r[key])) for r in rows if key in r]
    if not evals or evals[-1][1] >= level or max(v for _, v in evals) < level:
        return None
    above = [s for s, v in evals if v >= level]
    steps = step_runs(above, [s for s, _ in evals])
    where = f"outer step {steps}" if len(above) == 1 else f"outer steps {steps}"
    after = min(s for s, _ in evals if s > above[-1])
    return (f"at or above it at the evaluations of {where}, below at every one from step {after} on, "
            f"ending at {100 * evals[-1][1]:.2f}% (step {evals[-1][0]})")


def best_vs_last_table(groups: list[dict]) -> str:
    """``groups``: dicts of ``setting``, ``method`` and ``runs`` (seed -> :func:`best_and_last`) -> one
    Markdown row each: the mean ± 95% CI over seeds of the last and of the best evaluation, the outer
    step of each seed's best, and the mean of best minus last."""
    lines = [line(["setting", "method", "seeds", "last evaluation", "best evaluation", "best at outer step (per seed)",
                   "best - last (points)"]), line(["---"] * 7)]
    for g in groups:
        runs = g["runs"]
        seeds = sorted(runs)
        last, best = [runs[s]["last"] for s in seeds], [runs[s]["best"] for s in seeds]
        gain = mean_ci([b - a for a, b in zip(last, best)])
        lines.append(line([g["setting"], g["method"], ", ".join(map(str, seeds)), fmt(*mean_ci(last)),
                           fmt(*mean_ci(best)), ", ".join(str(runs[s]["best_step"]) for s in seeds),
                           f"{100 * gain[0]:+.2f}"]))
    return "\n".join(lines)
