"""Markdown tables over seeds for the campaign's report: a cell (mean ± 95% CI over the finished
seeds, plus notes on the others), the row that chooses gamma on validation as the paper does, and
the paper's own rows."""
from __future__ import annotations

from .common import fmt, mean_ci
from .paper import NAMES


def line(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def seeds_cell(values, notes=(), scale: float = 100.0) -> str:
    """``fmt`` over the finished seeds' ``values``, then ``notes`` on the unfinished ones (``seed 3:
    step 700/2000``); ``not run`` when there is neither."""
    head = fmt(*mean_ci(values), scale=scale) if values or not notes else ""
    return "; ".join(filter(None, [head, *notes]))


def choose_gamma(candidates: dict) -> str | None:
    """The label among ``candidates`` (label -> validation values over finished seeds) with the
    highest mean; labels without values take no part; the first in order wins a tie."""
    means = {label: mean_ci(values)[0] for label, values in candidates.items() if values}
    return max(means, key=means.get) if means else None


def table(columns: list[str], values: dict, *, notes: dict | None = None, gammas: dict | None = None,
          gamma_label: str = "", paper: dict | None = None, scale: float = 100.0) -> str:
    """One Markdown table: a row per label of ``values`` (label -> one list of finished seeds'
    values per column), with ``notes`` (label -> one list of notes per column) on unfinished seeds;
    with ``gammas`` (label -> one list of validation values per column) a bold row that shows, per
    column, the candidate with the highest mean validation value, tagged with its gamma and how many
    seeds each candidate had (``[0.99; seeds 5/5/3]``, candidates in ``gammas``' order); with
    ``paper`` (label -> one text per column) the paper's rows in italics."""
    def cell(label, i):
        return seeds_cell(values[label][i], (notes or {}).get(label, [()] * len(columns))[i], scale)

    lines = [line(["method", *columns]), line(["---"] * (len(columns) + 1))]
    for label in values:
        lines.append(line([label, *(cell(label, i) for i in range(len(columns)))]))
    if gammas:
        chosen = []
        for i in range(len(columns)):
            candidates = {label: per_column[i] for label, per_column in gammas.items()}
            best = choose_gamma(candidates)
            counts = "/".join(str(len(v)) for v in candidates.values())
            chosen.append(f"{cell(best, i)} [{best.split()[-1]}; seeds {counts}]" if best else "not run")
        lines.append(line([f"**{gamma_label}**", *chosen]))
    for label, texts in (paper or {}).items():
        lines.append(line([f"*paper: {NAMES.get(label, label)}*", *texts]))
    return "\n".join(lines)
