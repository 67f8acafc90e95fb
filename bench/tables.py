"""Markdown tables over seeds for the campaign's report: a cell (mean ± 95% CI over the finished
seeds, plus notes on the others), the row that chooses gamma on validation as the paper does, the
paper's own rows (once per experiment), and ours set against them: the difference of the means and
the order of the methods."""
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
          gamma_label: str = "", scale: float = 100.0) -> str:
    """One Markdown table: a row per label of ``values`` (label -> one list of finished seeds'
    values per column), with ``notes`` (label -> one list of notes per column) on unfinished seeds;
    with ``gammas`` (label -> one list of validation values per column) a bold row that shows, per
    column, the candidate with the highest mean validation value, tagged with its gamma and how many
    seeds each candidate had (``[0.99; seeds 5/5/3]``, candidates in ``gammas``' order)."""
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
    return "\n".join(lines)


def paper_value(text: str) -> float:
    """The paper's mean, as a fraction, from its printed ``87.31 ± 1.79``."""
    return float(text.split("±")[0]) / 100


def paper_table(columns: list[str], paper: dict) -> str:
    """The paper's rows (label -> one printed text per column), in italics."""
    lines = [line(["method", *columns]), line(["---"] * (len(columns) + 1))]
    for label, texts in paper.items():
        lines.append(line([f"*paper: {NAMES.get(label, label)}*", *texts]))
    return "\n".join(lines)


def difference_table(columns: list[str], values: dict, paper: dict) -> str:
    """Per method of the paper with finished seeds of ours (``values``: label -> finished seeds'
    values per column; ``paper``: label -> printed text per column, None where it has none): our
    mean minus the paper's, in points, and how many seeds ours has."""
    lines = [line(["method", *columns]), line(["---"] * (len(columns) + 1))]
    for label, texts in paper.items():
        if label not in values:
            continue
        cells = []
        for ours, text in zip(values[label], texts):
            if not ours or text is None:
                cells.append("–" if text is None else "not run")
                continue
            mean, _, n = mean_ci(ours)
            cells.append(f"{100 * (mean - paper_value(text)):+.2f} ({n} seed{'s' if n > 1 else ''})")
        lines.append(line([label, *cells]))
    return "\n".join(lines)


def order(means: dict) -> str:
    """Labels by decreasing mean: ``greedy 0.9 > FO > T1-T2``."""
    return " > ".join(sorted(means, key=lambda label: -means[label]))


def ranking_table(columns: list[str], values: dict, paper: dict) -> str:
    """Per column, the paper's methods that have a finished seed of ours, ordered by our mean and by
    the paper's printed mean, and whether the two orders are the same."""
    rows = {"ours": [], "the paper": [], "same order": []}
    for i in range(len(columns)):
        ours = {label: mean_ci(values[label][i])[0] for label in paper if label in values and values[label][i]
                and paper[label][i] is not None}
        theirs = {label: paper_value(paper[label][i]) for label in ours}
        rows["ours"].append(order(ours) if ours else "not run")
        rows["the paper"].append(order(theirs) if ours else "–")
        same = order(ours) == order(theirs)
        rows["same order"].append(("yes" if same else "no") if len(ours) > 1 else "–")
    lines = [line(["", *columns]), line(["---"] * (len(columns) + 1))]
    return "\n".join(lines + [line([name, *cells]) for name, cells in rows.items()])
