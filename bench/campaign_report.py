"""The campaign's report: the Table 3 and Table 2 sections of docs/RESULTS.md, and the generated part
of *Why our levels differ from the paper's*, from the cells in DIR (``python -m bench.campaign report``)."""
from __future__ import annotations

import dataclasses
import os

from harness import files
from harness.campaign.plan import Plan, plans_in, resolved, shown, state

from . import curves, level_causes, paper
from .common import metrics, plot_curves, replace_section
from .tables import difference_table, paper_table, paper_value, ranking_table, table

OWN_SECTION = (level_causes.PLAN,)  # plans reported in a section of their own, not as tables


def report(args) -> int:
    doc_dir = os.path.dirname(os.path.abspath(args.doc))
    views = {task: [] for task in LAYOUTS}
    for plan in sorted(plans_in(args.out, args.plan), key=_plan_order):
        if plan.name in OWN_SECTION:
            continue
        by_task = {}
        for cell in plan.cells:
            by_task.setdefault(resolved(cell.args, args.root).task, []).append(cell)
        for task, cells in by_task.items():
            if task in views:
                views[task].append(view(plan, cells, LAYOUTS[task], args))
    for task, layout in LAYOUTS.items():
        replace_section(args.doc, layout["section"], experiment_text(views[task], layout, args.out, doc_dir))
    replace_section(args.doc, "level_causes", level_causes.section(args.out))
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
# lists the tables (summary key, caption, whether it is the paper's measure); ``curve_keys(part)``
# the periodic evaluation that picks the best and the one reported, in the ``best_vs_last`` plans;
# ``gap``: two summary keys whose difference per cell is summed up under the tables.
LAYOUTS = {
    "omniglot": dict(
        plan="table3_mb1", readings=("table3_mb1", "table3"), section="campaign_table3",
        title="## Campaign: few-shot Omniglot, 1-shot (table 3)",
        intro="The primary reading is plan `table3_mb1` (one task per outer step); plan `table3` (16 tasks per "
              "outer step) is the other reading of the paper's unstated meta-batch; `ift_neumann` studies IFT's "
              "Neumann step and `full_outer_lr` Full's outer step. Why: *The paper's unstated choices* below.",
        part=lambda cfg: None, column=lambda cfg: (cfg.ways,), label=lambda key: f"{key[0]}-way",
        paper="TABLE3", paper_columns=lambda paper: [(w,) for w in paper.TABLE3_WAYS], metrics=_table3_metrics,
        paper_caption="The paper's Table 3 (meta-validation accuracy, %, as printed; its *Ours (gamma=0.9)* is our "
                      "greedy 0.9). Every plan below is read against these rows; the primary plan's tables set ours "
                      "beside them:",
        choose_by="meta_val_acc", gamma_label="greedy, gamma chosen on meta-validation",
        best_vs_last=("table3_mb1",), curve_keys=lambda part: ("meta_val_acc", "meta_val_acc"),
        gap=("meta_val_acc", "meta_test_acc", "Meta-test minus meta-validation", "meta-test")),
    "hyper_cleaning": dict(
        plan="table2", readings=("table2",), section="campaign_table2",
        title="## Campaign: data hyper-cleaning (table 2)",
        intro="The primary reading is plan `table2` (the network trains online, `--inner-start continue`); "
              "`cleaning_inner_start` compares it with a fresh start every outer step. Why: *The paper's unstated "
              "choices* below.",
        part=lambda cfg: cfg.protocol, column=lambda cfg: (cfg.dataset, cfg.noise),
        label=lambda key: f"{key[0]} {key[1]}", paper="TABLE2",
        paper_columns=lambda paper: list(paper.TABLE2_SETTINGS), metrics=_table2_metrics,
        paper_caption="The paper's Table 2 (validation accuracy, %, of its protocol, where the validation set is "
                      "the test split; as printed; its *Ours (gamma=0.9)* is our greedy 0.9). The tables of the "
                      "paper's protocol below are read against these rows:",
        choose_by="val_acc", gamma_label="greedy, gamma chosen on validation",
        best_vs_last=("table2", "cleaning_inner_start"),
        curve_keys=lambda part: ("val_acc", "val_acc" if part == "paper" else "test_acc"), gap=None),
}


@dataclasses.dataclass
class View:
    """One plan's cells of one experiment, as the report reads them."""
    plan: Plan
    cells: list
    layout: dict
    out: str
    configs: dict
    states: dict
    column_of: dict
    columns: list
    labels: list
    rows: list

    def done(self, c) -> bool:
        return self.states[c]["state"] == "done"

    def finished(self, cells) -> int:
        return sum(1 for c in cells if self.states[c]["state"] in ("done", "diverged"))


def view(plan: Plan, cells: list, layout: dict, args) -> View:
    configs = {c: resolved(c.args, args.root) for c in cells}
    column_of = {c: layout["column"](configs[c]) for c in cells}
    firsts = {}  # text values keep the order in which the plan names them; numbers sort
    for c in cells:
        for v in column_of[c]:
            firsts.setdefault(v, len(firsts))
    columns = sorted(set(column_of.values()),
                     key=lambda key: [v if isinstance(v, (int, float)) else firsts[v] for v in key])
    return View(plan, cells, layout, args.out, configs, {c: state(c, args.out) for c in cells}, column_of, columns,
                [layout["label"](k) for k in columns], [m for m in plan.methods if any(c.method == m for c in cells)])


def experiment_text(views: list, layout: dict, out: str, doc_dir: str) -> str:
    """An experiment's section: the paper's rows once, then each plan's tables (or its one line)."""
    if not views:
        body = [f"No plan with cells of this experiment has run into `{shown(out)}` yet: "
                f"`python -m bench.campaign run --plan configs/campaign/{layout['plan']}.yaml "
                "--budget-s S` runs the next cells (README, *Campaign*)."]
        return "\n\n".join([layout["title"], layout["intro"], *body])
    paper_rows = getattr(paper, layout["paper"])
    compared = [v for v in views if "synthetic" not in datasets(v)]
    head = [layout["title"], layout["intro"]]
    if compared:  # the paper's numbers are on Omniglot / MNIST: not beside numbers on the built-in alphabet
        columns = [layout["label"](k) for k in layout["paper_columns"](paper)]
        head += [layout["paper_caption"], paper_table(columns, paper_rows)]
    return "\n\n".join(head + [plan_text(v, doc_dir, paper_rows if v in compared else None) for v in views])


def datasets(v: View) -> list[str]:
    """The data of the cells that have started: their summaries', else their configs' when named."""
    found = set()
    for c in v.cells:
        s = v.states[c]
        if s["state"] == "new":
            continue
        named = s["summary"].get("dataset") or v.configs[c].get("dataset")
        if named not in (None, "auto"):
            found.add(str(named))
    named = {v.configs[c].get("dataset") for c in v.cells} - {None, "auto"}
    return sorted(found | ({"synthetic"} & named))


def plan_text(v: View, doc_dir: str, paper_rows: dict | None) -> str:
    """One plan's tables of one experiment; a single line while none of its cells has finished."""
    name, hours = v.plan.name, sum(v.states[c]["seconds"] for c in v.cells) / 3600
    devices = ", ".join(dict.fromkeys(d for c in v.cells for d in v.states[c]["devices"])) or "no device yet"
    command = f"`python -m bench.campaign run --plan configs/campaign/{name}.yaml --budget-s S`"
    if not v.finished(v.cells):
        notes = progress(v, v.cells)
        return (f"**Plan `{name}`**: no finished cell yet, 0 of {len(v.cells)}"
                + (f"; {'; '.join(notes)}" if notes else "") + f"; {hours:.2f} h of training so far on {devices} "
                f"({command}; cells under `{shown(os.path.join(v.out, name))}`).")
    text = [f"### Plan `{name}`", "",
            f"{command} (cells under `{shown(os.path.join(v.out, name))}`; the first runs `python train.py "
            f"{' '.join(v.cells[0].args)}`). {v.finished(v.cells)} of {len(v.cells)} cells finished; {hours:.2f} h of "
            f"training so far on {devices}. Ours: mean ± 95% CI (Student's t) over the finished seeds (number of "
            "seeds); `seed s: step k/n` for a seed still training; `not run` where no seed has started."]
    data = datasets(v)
    text[-1] += f" Data of the cells that have started: {', '.join(data) or 'none yet'}."
    if "synthetic" in data:
        text[-1] += " These cells ran on the built-in synthetic alphabet, so the paper's numbers are not shown."
    if v.plan.gammas:
        text[-1] += (f" The gamma row takes, per column, the one of {' / '.join(g.split()[-1] for g in v.plan.gammas)} "
                     "with the highest mean validation accuracy over its finished seeds, as the paper does, and "
                     "says how many seeds each had (in that order).")
    parts = {}
    for c in v.cells:
        parts.setdefault(v.layout["part"](v.configs[c]), []).append(c)
    for part, part_cells in parts.items():
        text += part_text(v, part, part_cells, doc_dir, paper_rows)
    return "\n".join(text)


def progress(v: View, cells: list) -> list[str]:
    """A note per started, unfinished cell: its step and, while it trains, its last periodic evaluation."""
    key, notes = v.layout["choose_by"], []
    for c in cells:
        s = v.states[c]
        part = v.layout["part"](v.configs[c])
        where = f"{'' if part is None else f'{part} '}{v.layout['label'](v.column_of[c])} {c.method} seed {c.seed}"
        if s["state"] in ("failed", "damaged"):
            notes.append(f"{where}: {s['state']}")
        elif s["state"] == "running":
            last = last_evaluation(os.path.join(v.out, c.path), key)
            notes.append(f"{where} at step {s['step']}/{s['steps']}" + (
                f" (last periodic evaluation {100 * last[1]:.1f}% at step {last[0]})" if last else ""))
    return notes


def last_evaluation(cell_dir: str, key: str) -> tuple[int, float] | None:
    try:
        found = files.read_rows(os.path.join(cell_dir, "metrics.jsonl"), torn_ok=True)
    except files.FileDamaged:
        return None
    evals = [(r["step"], float(r[key])) for r in (found or ([], [], False))[0] if key in r]
    return evals[-1] if evals else None


def grid(v: View, part_cells: list, key: str):
    """method -> per column: the finished seeds' values of ``key``, and notes on the other seeds."""
    values = {m: [[] for _ in v.columns] for m in v.rows}
    notes = {m: [[] for _ in v.columns] for m in v.rows}
    for c in sorted(part_cells, key=lambda c: c.seed):
        i, s = v.columns.index(v.column_of[c]), v.states[c]
        if s["state"] == "done" and key in s["summary"]:
            values[c.method][i].append(float(s["summary"][key]))  # a number: checked when read
        elif s["state"] == "running":
            notes[c.method][i].append(f"seed {c.seed}: step {s['step']}/{s['steps']}")
        elif s["state"] in ("diverged", "failed", "damaged"):
            notes[c.method][i].append(f"seed {c.seed}: {s['state']}")
    return values, notes


def part_text(v: View, part, part_cells: list, doc_dir: str, paper_rows: dict | None) -> list[str]:
    """A part's tables (one line while none of its cells has finished), beside the paper's where
    this is the primary plan, with the best evaluation against the last and a learning-curve figure."""
    heading = f"#### Protocol `{part}`" if part is not None else None
    if not v.finished(part_cells):
        notes = progress(v, part_cells)
        return ["", f"{heading or 'These cells'}: no finished cell yet, 0 of {len(part_cells)}"
                + (f"; {'; '.join(notes)}" if notes else "") + "."]
    text = ["", heading] if heading else []
    chosen_on = grid(v, part_cells, v.layout["choose_by"])[0]
    gammas = {m: chosen_on[m] for m in v.plan.gammas if m in v.rows}
    metrics_ = v.layout["metrics"](part)
    for key, caption, paper_measure in metrics_:
        values, notes = grid(v, part_cells, key)
        scale = 1.0 if key == "detect_f1" else 100.0
        text += ["", caption, "", table(v.labels, values, notes=notes, scale=scale,
                                        gammas=gammas if scale == 100.0 else None, gamma_label=v.layout["gamma_label"])]
        if paper_measure and paper_rows and v.plan.name == v.layout["plan"]:
            text += against_paper(v, values, paper_rows)
        if v.layout["gap"] and key == v.layout["gap"][1]:
            text += gap_text(v, part_cells)
    if v.plan.name in v.layout["best_vs_last"]:
        text += best_vs_last(v, part, part_cells, paper_rows)
    name = f"campaign_{v.plan.name}{f'_{part}' if part else ''}.png"
    panels = {v.layout["label"](k): {m: [os.path.join(v.out, c.path) for c in part_cells if c.method == m
                                         and v.column_of[c] == k and v.done(c)] for m in v.rows} for k in v.columns}
    if plot_curves(panels, metrics_[0][0], os.path.join(doc_dir, name), metrics_[0][0]):
        text += ["", f"![learning curves of the finished seeds]({name})"]
    return text


def paper_texts(v: View, paper_rows: dict, label: str) -> list | None:
    """The paper's printed texts for a method, one per column of ``v`` (None where it has none)."""
    found = paper_rows.get(label) or paper_rows.get(label.split(", ")[0])
    if found is None:
        return None
    columns = v.layout["paper_columns"](paper)
    return [found[columns.index(k)] if k in columns else None for k in v.columns]


def against_paper(v: View, values: dict, paper_rows: dict) -> list[str]:
    """Our mean minus the paper's per method and column, and the order of the paper's methods in each."""
    mine = {label: paper_texts(v, paper_rows, label) for label in paper_rows}
    return ["", "Ours minus the paper's (points: the mean over our finished seeds minus the paper's printed mean; "
                "the number of our seeds in brackets):", "", difference_table(v.labels, values, mine),
            "", "The paper's methods ordered by mean, ours (those with a finished seed) and the paper's (the same "
                "methods), whether or not the intervals overlap:", "", ranking_table(v.labels, values, mine)]


def gap_text(v: View, part_cells: list) -> list[str]:
    """Per column, the range over finished cells of the difference of the layout's two ``gap`` keys."""
    first, second, name, lower = v.layout["gap"]
    per_column, below, total = [], 0, 0
    for k in v.columns:
        diffs = [float(s[second]) - float(s[first]) for c in part_cells if v.column_of[c] == k and v.done(c)
                 for s in [v.states[c]["summary"]] if first in s and second in s]
        if diffs:
            per_column.append(f"{v.layout['label'](k)} {100 * min(diffs):+.2f} to {100 * max(diffs):+.2f} "
                              f"({len(diffs)} cells)")
            below += sum(d < 0 for d in diffs)
            total += len(diffs)
    if not total:
        return []
    return ["", f"{name}, per finished cell (each run's final evaluations, points): {'; '.join(per_column)}. "
                f"The {lower} accuracy is the lower in {below} of {total} cells."]


def best_vs_last(v: View, part, part_cells: list, paper_rows: dict | None) -> list[str]:
    """The best periodic evaluation of each finished cell against its last, from its curve; where the
    paper's number lies between the two, at which outer steps the run was at or above it."""
    pick, shown_key = v.layout["curve_keys"](part)
    measure = next((k for k, _, p in v.layout["metrics"](part) if p), None)
    groups, crossings, counts, cis = [], [], set(), []
    for k in v.columns:
        for m in v.rows:
            runs, said = {}, []
            level = paper_texts(v, paper_rows, m) if paper_rows and measure == shown_key else None
            level = level[v.columns.index(k)] if level else None
            for c in sorted(part_cells, key=lambda c: c.seed):
                if v.column_of[c] != k or c.method != m or not v.done(c):
                    continue
                rows = metrics(os.path.join(v.out, c.path))
                found = curves.best_and_last(rows, pick, shown_key)
                if found:
                    runs[c.seed] = found
                    counts.add((found["count"], v.configs[c].get("eval_every"), v.configs[c].get("eval_tasks")))
                    cis += [float(r[pick.replace("_acc", "_ci95")]) for r in rows if pick.replace("_acc", "_ci95") in r]
                crossed = curves.crossing(rows, shown_key, paper_value(level)) if level else None
                said += [f"seed {c.seed} {crossed}"] if crossed else []
            if runs:
                groups.append({"setting": v.layout["label"](k), "method": m, "runs": runs})
            if said:
                crossings.append(f"{m} at {v.layout['label'](k)} (the paper's {100 * paper_value(level):.2f}%): "
                                 f"{'; '.join(said)}.")
    if not groups:
        return []
    return ["", best_vs_last_caption(pick, shown_key, counts, cis), "", curves.best_vs_last_table(groups)] + (
        ["", "Where the paper's number lies between a run's best and its last evaluation: " + " ".join(crossings)]
        if crossings else [])


def best_vs_last_caption(pick: str, shown_key: str, counts: set, cis: list) -> str:
    """What the best-against-last table compares, and why its best is optimistic."""
    sizes = "; ".join(f"{n} evaluations a run, every {every} outer steps" + (f", {tasks} tasks each" if tasks else "")
                      for n, every, tasks in sorted(counts, key=str))
    text = (f"Best evaluation against the last (`{shown_key}` of the periodic evaluations in each finished cell's "
            f"`curve.jsonl`: {sizes}); the tables above report each run's final evaluation (`summary.json`). ")
    if pick == shown_key:
        text += (f"The best is picked on the same evaluation that reports it, so it is optimistic: it selects "
                 f"on that evaluation's own noise")
        if cis:
            text += f" (one periodic evaluation's 95% half-width averages {100 * sum(cis) / len(cis):.1f} points)"
        return text + "."
    return text + (f"The best is picked on `{pick}` and reported on `{shown_key}`, a split the choice does not see.")
