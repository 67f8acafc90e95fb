"""*Why our levels differ from the paper's*: each candidate cause, run as one moved setting in plan
``level_causes`` (configs/campaign/level_causes.yaml; cells under DIR/level_causes/...), set against
the cell of the primary plan that has the same settings, seed and method; and which evaluation is
reported (the best periodic evaluation against the last), from the primary plans' curves.

A cause is read from each cell's ``config.yaml`` (the keys below), or from its flags where the file
does not name the key; a stored config without the key ran at our reading, the key's default.
"""
from __future__ import annotations

import os
import shlex

from harness import files
from harness.campaign.plan import load_plan

from . import curves, paper
from .common import mean_ci
from .tables import line, paper_value

# (letter, the cause, its config key, its flag, our reading, the other reading, the experiments it applies to)
CAUSES = (
    ("a", "start of the adapted layers", "init", "--init", "fixed", "fresh", ("omniglot",)),
    ("b", "summed or mean losses", "loss_reduction", "--loss-reduction", "mean", "sum",
     ("omniglot", "hyper_cleaning")),
    ("c", "batch statistics at evaluation", "eval_queries", "--eval-queries", "transductive", "inductive",
     ("omniglot",)),
    ("d", "the meta-validation split", "val_split", "--val-split", "classes", "alphabets", ("omniglot",)),
    ("e", "which evaluation is reported", None, None, "last", "best", ("omniglot", "hyper_cleaning")),
    ("f", "the noise model", "noise_model", "--noise-model", "other", "any", ("hyper_cleaning",)),
)
KEYS = {c[2]: c for c in CAUSES if c[2]}
# settings that say where and how a run was executed, not what it computes
IGNORED = {"run_dir", "device", "data_root", "facts", "run_id", "wandb", "wandb_project", "wandb_group", "progress",
           "loop", "memory_format", "checkpoint_every", "tf32"}
# the primary plan's cells that each cause is set against, and the paper's column for them
BASELINES = {
    "omniglot": dict(plan="table3_mb1", setting={"ways": 5}, title="Omniglot 5-way", metric="meta_val_acc",
                     paper=paper.TABLE3, column=paper.TABLE3_WAYS.index(5)),
    "hyper_cleaning": dict(plan="table2", setting={"protocol": "paper", "dataset": "mnist", "noise": 0.3},
                           title="hyper-cleaning MNIST 0.3", metric="val_acc", paper=paper.TABLE2,
                           column=paper.TABLE2_SETTINGS.index(("mnist", 0.3))),
}
PLAN = "level_causes"


def read_run(out: str, cell) -> dict | None:
    """A cell's config (``{}`` without one), summary and evaluation rows; None when it has no
    directory; ``damaged`` set when a file cannot be read."""
    d = os.path.join(out, cell.path)
    if not os.path.isdir(d):
        return None
    try:
        config = files.read_yaml(os.path.join(d, "config.yaml"), "config") or {}
        summary = files.read_summary(d) or {}
        rows = files.metrics_rows(d) if summary.get("status") == "finished" else []
    except files.FileDamaged:
        return {"cell": cell, "config": {}, "summary": {}, "rows": [], "damaged": True}
    return {"cell": cell, "config": config if isinstance(config, dict) else {}, "summary": summary, "rows": rows}


def reading(run: dict, key: str) -> object:
    """The value of a cause's setting in a run: its config's, else its flags', else our reading."""
    if key in run["config"]:
        return run["config"][key]
    args = list(run["cell"].args)
    flag = KEYS[key][3]
    return args[args.index(flag) + 1] if flag in args[:-1] else KEYS[key][4]


def runs_of(out: str, plan: str, setting: dict | None = None) -> list[dict]:
    """The runs of a plan's cells under DIR (those of ``setting`` only, when given)."""
    path = os.path.join(out, plan, "plan.yaml")
    if not os.path.isfile(path):
        return []
    cells = [c for c in load_plan(path).cells if setting is None or setting.items() <= dict(c.setting).items()]
    return [r for r in (read_run(out, c) for c in cells) if r is not None]


def finished(run: dict) -> bool:
    return run["summary"].get("status") == "finished" and not run.get("damaged")


def ended(run: dict) -> bool:
    """Finished, or stopped as diverged: either is a result."""
    return run["summary"].get("status") in ("finished", "diverged") and not run.get("damaged")


def moved(run: dict, base: dict) -> list[str] | None:
    """The causes' settings on which ``run`` differs from ``base``; None when they differ in any
    other setting that both configs name (the seed included)."""
    a, b = run["config"], base["config"]
    if not a or not b or any(a[k] != b[k] for k in set(a) & set(b) - IGNORED - set(KEYS)):
        return None
    return [k for k in KEYS if reading(run, k) != reading(base, k)]


def measured(out: str, base: dict) -> tuple[dict, dict]:
    """Rows keyed by (task, the moved settings, their values, method): seed -> (ours, the other
    reading, a note: how a diverged cell ended); and per (task, setting key) the cells started but
    not ended yet."""
    pairs, pending, commands, found = {}, {}, {}, []
    for run in runs_of(out, PLAN):
        task = run["config"].get("task")
        keys = [k for k in KEYS if reading(run, k) != KEYS[k][4]]
        if task not in BASELINES or not keys:
            continue
        if not ended(run):
            for k in keys:
                pending[(task, k)] = pending.get((task, k), 0) + 1
            continue
        match = next((b for b in base[task] if finished(b) and moved(run, b)), None)
        found.append((run, task, moved(run, match) if match else keys, match))
    # a seed whose baseline has not run joins the row of its method's other seeds (ours: none)
    labels = {(task, run["cell"].method): match["cell"].method for run, task, _, match in found if match}
    for run, task, keys, match in found:
        metric = BASELINES[task]["metric"]
        label = labels.get((task, run["cell"].method), f"{run['cell'].method} (no baseline cell with its settings)")
        key = (task, tuple(keys), tuple(str(reading(run, k)) for k in keys), label)
        ours = float(match["summary"][metric]) if match and metric in match["summary"] else None
        commands.setdefault(key, command(run["cell"].args))
        if finished(run) and metric in run["summary"]:
            pairs.setdefault(key, {})[run["cell"].seed] = (ours, float(run["summary"][metric]), "")
        elif not finished(run):
            note = f"seed {run['cell'].seed} diverged at outer step {run['summary'].get('steps_done')}"
            pairs.setdefault(key, {})[run["cell"].seed] = (ours, None, note)
    return pairs, pending, commands


def command(args) -> str:
    """A cell's train.py command, its seed left as SEED."""
    args = list(args)
    if "--seed" in args[:-1]:
        args[args.index("--seed") + 1] = "SEED"
    return "python train.py " + " ".join(shlex.quote(a) for a in args)


def command_lines(commands: dict, pairs: dict) -> list[str]:
    """Per measured row of the table, the command its cells ran, in the table's order."""
    out = []
    for letter, what, *_ in CAUSES:
        for key, text in commands.items():
            if key in pairs and cause_of(key[1])[0] == letter:
                seeds = ", ".join(map(str, sorted(pairs[key])))
                out.append(f"- ({letter}) {BASELINES[key[0]]['title']}, {key[3]} (SEED = {seeds}): `{text}`")
    return out


def evaluation_rows(base: dict) -> dict:
    """Cause (e): per paper method of each baseline, seed -> (last, best) periodic evaluation."""
    pairs = {}
    for task, spec in BASELINES.items():
        for run in base[task]:
            label = run["cell"].method
            if label not in spec["paper"] or not finished(run):
                continue
            found = curves.best_and_last(run["rows"], spec["metric"], spec["metric"])
            if found:
                key = (task, ("evaluation",), ("best",), label)
                pairs.setdefault(key, {})[run["cell"].seed] = (found["last"], found["best"], "")
    return pairs


def change(seeds: dict) -> str:
    """The mean of the other reading minus ours over the paired seeds, in points, ± the 95% CI."""
    diffs = [b - a for a, b, _ in seeds.values() if a is not None and b is not None]
    if not diffs:
        return "no baseline" if all(a is None for a, _, _ in seeds.values()) else "–"
    mean, ci, n = mean_ci(diffs)
    return f"{100 * mean:+.2f}" + (f" ± {100 * ci:.2f}" if n > 1 else "")


def mean_text(values) -> str:
    values = [v for v in values if v is not None]
    return f"{100 * mean_ci(values)[0]:.2f}" if values else "–"


def cause_of(keys: tuple) -> tuple:
    return KEYS[keys[0]] if keys and keys[0] in KEYS else CAUSES[4]


def table(pairs: dict, pending: dict) -> str:
    """A row per measured (cause, experiment, method); one per cause and experiment not measured yet."""
    head = ["cause", "experiment", "ours -> the other reading", "method", "seeds", "ours", "the other reading",
            "change (points)", "the paper"]
    lines = [line(head), line(["---"] * len(head))]
    for letter, what, key, _, ours, other, tasks in CAUSES:
        for task in tasks:
            spec = BASELINES[task]
            rows = {k: v for k, v in pairs.items() if k[0] == task and cause_of(k[1])[0] == letter}
            for (_, keys, values, label), seeds in rows.items():
                moved_text = ("last -> best periodic evaluation" if keys == ("evaluation",) else
                              "; ".join(f"{k}: {KEYS[k][4]} -> {v}" for k, v in zip(keys, values)))
                text = spec["paper"].get(label, [None] * 4)[spec["column"]]
                notes = "; ".join(n for _, _, n in seeds.values() if n)
                value = mean_text(b for _, b, _ in seeds.values())
                value = notes if value == "–" and notes else value + (f"; {notes}" if notes else "")
                seed_text = ", ".join(map(str, sorted(seeds)))
                based = sorted(k for k, (a, _, _) in seeds.items() if a is not None)
                if len(based) < len(seeds):
                    seed_text += f" (ours: {', '.join(map(str, based)) or 'none'})"
                lines.append(line([f"({letter}) {what}", spec["title"], moved_text, label,
                                   seed_text, mean_text(a for a, _, _ in seeds.values()),
                                   value, change(seeds), text or "–"]))
            if not rows:
                n = pending.get((task, key), 0)
                lines.append(line([f"({letter}) {what}", spec["title"], f"{ours} -> {other}",
                                   "not measured yet" + (f" ({n} cells started, none finished)" if n else ""),
                                   "", "", "", "", ""]))
    return "\n".join(lines)


def closest(pairs: dict, base: dict) -> list[str]:
    """Per experiment and method of the paper: ours as reported, and the measured reading nearest the
    paper's mean."""
    out = []
    for task, spec in BASELINES.items():
        for label, texts in spec["paper"].items():
            reported = [float(r["summary"][spec["metric"]]) for r in base[task]
                        if r["cell"].method == label and finished(r) and spec["metric"] in r["summary"]]
            if not reported:
                continue
            target = paper_value(texts[spec["column"]])
            mean, _, n = mean_ci(reported)
            text = (f"- {spec['title']}, {label} (the paper: {texts[spec['column']]}): ours as reported "
                    f"{100 * mean:.2f} ({n} seed{'s' if n > 1 else ''}, {100 * (mean - target):+.2f} points)")
            options = [(mean_ci(others)[0], keys, values, len(others))
                       for (t, keys, values, lab), seeds in pairs.items() if t == task and lab == label
                       for others in [[b for _, b, _ in seeds.values() if b is not None]] if others]
            options = [o for o in options if abs(o[0] - target) < abs(mean - target)]
            if options:
                v, keys, values, k = min(options, key=lambda o: abs(o[0] - target))
                name = ("the best periodic evaluation" if keys == ("evaluation",) else
                        "; ".join(f"{key} {value}" for key, value in zip(keys, values)))
                text += (f"; closest to the paper's: {name}, {100 * v:.2f} ({k} seed{'s' if k > 1 else ''}, "
                         f"{100 * (v - target):+.2f} points)")
            else:
                out.append(text + "; no measured reading comes closer.")
                continue
            out.append(text + ".")
    return out


def section(out: str) -> str:
    """The generated part of *Why our levels differ from the paper's*."""
    base = {task: runs_of(out, spec["plan"], spec["setting"]) for task, spec in BASELINES.items()}
    pairs, pending, commands = measured(out, base)
    runs = command_lines(commands, pairs)
    pairs.update(evaluation_rows(base))
    intro = ("Each cause, one setting moved at a time from our reading to the other (plan `level_causes`), against "
             "the cell of the primary plan with the same settings, seed and method (`table3_mb1` 5-way; `table2`, "
             "the paper's protocol, MNIST 0.3): the final meta-validation accuracy (Omniglot) or validation "
             "accuracy (hyper-cleaning), %, mean over the seeds each has run (a seed whose baseline cell has not "
             "run yet counts for the other reading alone: *seeds* says so); *change* is the mean over the seeds "
             "both have of the other reading minus ours (± the 95% CI from two seeds on). Row (e) compares, in the same "
             "primary cells, the best periodic evaluation with the last (see each plan's *best evaluation "
             "against the last*). Generated by `python -m bench.campaign report` from `results/`.")
    lines = closest(pairs, base)
    tail = ("Closest to the paper's numbers (each reading moves one setting; how the causes combine is not "
            "measured):\n\n" + "\n".join(lines)) if lines else "No primary cell of these settings has finished yet."
    how = ("Each measured row's cells, run by `python -m bench.campaign run --plan "
           "configs/campaign/level_causes.yaml` (its baseline cell is the same command without the moved "
           "setting, in plan `table3_mb1` or `table2`; row (e) needs no run):\n\n" + "\n".join(runs)) if runs else ""
    return "\n\n".join(p for p in [intro, table(pairs, pending), how, tail] if p)
