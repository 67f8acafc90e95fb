"""The campaign's report: the Table 3 and Table 2 sections of docs/RESULTS.md from the cells in DIR
(``python -m bench.campaign report``)."""
from __future__ import annotations

import os

from harness.campaign.plan import Plan, plans_in, resolved, shown, state

from . import paper
from .common import plot_curves, replace_section
from .tables import table


def report(args) -> int:
    doc_dir = os.path.dirname(os.path.abspath(args.doc))
    parts = {task: [] for task in LAYOUTS}
    for plan in sorted(plans_in(args.out, args.plan), key=_plan_order):
        by_task = {}
        for cell in plan.cells:
            by_task.setdefault(resolved(cell.args, args.root).task, []).append(cell)
        for task, cells in by_task.items():
            if task in parts:
                parts[task].append(experiment_text(plan, cells, LAYOUTS[task], args.out, doc_dir))
    for task, layout in LAYOUTS.items():
        body = parts[task] or [f"No plan with cells of this experiment has run into `{shown(args.out)}` yet: "
                               f"`python -m bench.campaign run --plan configs/campaign/{layout['plan']}.yaml "
                               "--budget-s S` runs the next cells (README, *Campaign*)."]
        replace_section(args.doc, layout["section"], "\n\n".join([layout["title"], layout["intro"], *body]))
    print(f"wrote the campaign sections of {args.doc}")
    return 0


def _table3_metrics(part):
    return [("meta_val_acc", "Meta-validation accuracy (20% of the background classes; the paper's measure):", True),
            ("meta_test_acc", "Meta-test accuracy (the evaluation alphabets; the paper does not report it):", False)]


def _table2_metrics(protocol):
    main = (("val_acc", "Validation accuracy on the test split, which is also the validation set (the paper's "
             "protocol):", True) if protocol == "paper" else
            ("test_acc", "Accuracy on the untouched test split; validation on 10,000 clean training examples "
             "(held-out protocol):", False))
    return [main, ("detect_f1", "Detection F1 of `sigmoid(alpha) < 0.5` against the corrupted examples:", False)]


def _plan_order(plan: Plan):
    """The primary plan of each experiment first, then its other readings, then the studies."""
    ranks = [name for layout in LAYOUTS.values() for name in layout["readings"]]
    return (ranks.index(plan.name) if plan.name in ranks else len(ranks), plan.name)


# How the report lays out an experiment's cells: a part per value of ``part`` (of the cell's
# resolved config), a column per value of ``column``, a row per method label; ``metrics(part)``
# lists the tables (summary key, caption, whether the paper's numbers go beside it).
LAYOUTS = {
    "omniglot": dict(
        plan="table3_mb1", readings=("table3_mb1", "table3"), section="campaign_table3",
        title="## Campaign: few-shot Omniglot, 1-shot (table 3)",
        intro="The primary reading is plan `table3_mb1` (one task per outer step); plan `table3` (16 tasks per "
              "outer step) is the other reading of the paper's unstated meta-batch; `ift_neumann` studies IFT's "
              "Neumann step and `full_outer_lr` Full's outer step. Why: *The paper's unstated choices* below.",
        part=lambda cfg: None, column=lambda cfg: (cfg.ways,), label=lambda key: f"{key[0]}-way",
        paper="TABLE3", paper_columns=lambda paper: [(w,) for w in paper.TABLE3_WAYS], metrics=_table3_metrics,
        choose_by="meta_val_acc", gamma_label="greedy, gamma chosen on meta-validation"),
    "hyper_cleaning": dict(
        plan="table2", readings=("table2",), section="campaign_table2",
        title="## Campaign: data hyper-cleaning (table 2)",
        intro="The primary reading is plan `table2` (the network trains online, `--inner-start continue`); "
              "`cleaning_inner_start` compares it with a fresh start every outer step. Why: *The paper's unstated "
              "choices* below.",
        part=lambda cfg: cfg.protocol, column=lambda cfg: (cfg.dataset, cfg.noise),
        label=lambda key: f"{key[0]} {key[1]}", paper="TABLE2",
        paper_columns=lambda paper: list(paper.TABLE2_SETTINGS), metrics=_table2_metrics,
        choose_by="val_acc", gamma_label="greedy, gamma chosen on validation"),
}


def experiment_text(plan: Plan, cells: list, layout: dict, out: str, doc_dir: str) -> str:
    """One plan's tables of one experiment, with a learning-curve figure per part."""
    configs = {c: resolved(c.args) for c in cells}
    states = {c: state(c, out) for c in cells}
    column_of = {c: layout["column"](configs[c]) for c in cells}
    firsts = {}  # text values keep the order in which the plan names them; numbers sort
    for c in cells:
        for v in column_of[c]:
            firsts.setdefault(v, len(firsts))
    columns = sorted(set(column_of.values()),
                     key=lambda key: [v if isinstance(v, (int, float)) else firsts[v] for v in key])
    labels = [layout["label"](k) for k in columns]
    rows = [m for m in plan.methods if any(c.method == m for c in cells)]
    paper_columns = layout["paper_columns"](paper)
    paper_rows = {label: [texts[paper_columns.index(k)] if k in paper_columns else "–" for k in columns]
                  for label, texts in getattr(paper, layout["paper"]).items()}

    def grid(part_cells, key):
        """method -> per column: the finished seeds' values of ``key``, and notes on the other seeds."""
        values = {m: [[] for _ in columns] for m in rows}
        notes = {m: [[] for _ in columns] for m in rows}
        for c in sorted(part_cells, key=lambda c: c.seed):
            i, s = columns.index(column_of[c]), states[c]
            if s["state"] == "done" and key in s["summary"]:
                values[c.method][i].append(float(s["summary"][key]))  # a number: checked when read
            elif s["state"] == "running":
                notes[c.method][i].append(f"seed {c.seed}: step {s['step']}/{s['steps']}")
            elif s["state"] in ("diverged", "failed", "damaged"):
                notes[c.method][i].append(f"seed {c.seed}: {s['state']}")
        return values, notes

    finished = sum(1 for c in cells if states[c]["state"] in ("done", "diverged"))
    devices = list(dict.fromkeys(d for c in cells for d in states[c]["devices"]))
    hours = sum(states[c]["seconds"] for c in cells) / 3600
    text = [f"### Plan `{plan.name}`", "",
            f"`python -m bench.campaign run --plan configs/campaign/{plan.name}.yaml --budget-s S` (cells under "
            f"`{shown(os.path.join(out, plan.name))}`; the first runs `python train.py {' '.join(cells[0].args)}`). "
            f"{finished} of {len(cells)} cells finished; {hours:.2f} h of training so far on "
            f"{', '.join(devices) or 'no device yet'}. Ours: mean ± 95% CI (Student's t) over the finished seeds "
            "(number of seeds); `seed s: step k/n` for a seed still training; `not run` where no seed has started."]
    datasets = sorted({str(states[c]["summary"].get("dataset")) for c in cells if states[c]["state"] == "done"}
                      | {configs[c].get("dataset") for c in cells if configs[c].get("dataset") not in (None, "auto")})
    synthetic = "synthetic" in datasets
    text[-1] += f" Data: {', '.join(datasets) or 'not known yet'}."
    if synthetic:  # the paper's numbers are on Omniglot: not beside numbers on the built-in alphabet
        text[-1] += " These cells ran on the built-in synthetic alphabet, so the paper's numbers are not shown."
        paper_rows = None
    if plan.gammas:
        text[-1] += (f" The gamma row takes, per column, the one of {' / '.join(g.split()[-1] for g in plan.gammas)} "
                     "with the highest mean validation accuracy over its finished seeds, as the paper does, and "
                     "says how many seeds each had (in that order).")
    parts = {}
    for c in cells:
        parts.setdefault(layout["part"](configs[c]), []).append(c)
    for part, part_cells in parts.items():
        if part is not None:
            text += ["", f"#### Protocol `{part}`"]
        chosen_on = grid(part_cells, layout["choose_by"])[0]
        gammas = {m: chosen_on[m] for m in plan.gammas if m in rows}
        metrics = layout["metrics"](part)
        for key, caption, with_paper in metrics:
            values, notes = grid(part_cells, key)
            scale = 1.0 if key == "detect_f1" else 100.0
            text += ["", caption, "", table(labels, values, notes=notes, scale=scale,
                                            gammas=gammas if scale == 100.0 else None,
                                            gamma_label=layout["gamma_label"],
                                            paper=paper_rows if with_paper and paper_rows else None)]
        name = f"campaign_{plan.name}{f'_{part}' if part else ''}.png"
        panels = {layout["label"](k): {m: [os.path.join(out, c.path) for c in part_cells if c.method == m
                                           and column_of[c] == k and states[c]["state"] == "done"] for m in rows}
                  for k in columns}
        if plot_curves(panels, metrics[0][0], os.path.join(doc_dir, name), metrics[0][0]):
            text += ["", f"![learning curves of the finished seeds]({name})"]
    return "\n".join(text)
