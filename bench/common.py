"""Helpers for the bench scripts: child processes of the checkout, run outputs, tables, figures."""
from __future__ import annotations

import os
import sys

from harness import files
from harness.rundir import write_atomic, write_text
from metagreedy.stats import mean_ci95

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout

_said = []  # what has been said once in this process


def python_module(name: str) -> list[str]:
    """The command that runs the bench module ``name`` (``bench.memory``) as ``python -m`` does from
    the checkout; pass ``env=child_env()`` and ``cwd=ROOT`` with it."""
    return [sys.executable, "-m", name]


def child_env(**extra) -> dict:
    """The environment of a child process of the checkout: ROOT importable (``tasks``, ``bench``)."""
    return {**os.environ, "PYTHONPATH": ROOT, **extra}


def guarded(main) -> int:
    """Run a bench script's ``main`` as train.py runs: bad input (a damaged or foreign file, a bad
    flag, missing data) is one line and exit 2, a file that cannot be written one line and exit 1,
    Ctrl-C one line and exit 130."""
    from harness.campaign.plan import PlanError
    from harness.checkpoint import CheckpointError
    from harness.rundir import WriteError
    from harness.settings import UsageError, one_line
    from metagreedy.data import DataError
    try:
        return main() or 0
    except (UsageError, CheckpointError, DataError, PlanError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except WriteError as e:
        print(f"error: {one_line(e)}; every file already written is whole", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every file already written is whole", file=sys.stderr)
        return 130


def summary(run_dir: str):
    """A run's summary.json, checked (harness.files); None when it has none."""
    return files.read_summary(run_dir)


def metrics(run_dir: str) -> list[dict]:
    """The rows of ``metrics.jsonl``, or of the thinned ``curve.jsonl`` that a finished campaign cell
    keeps instead; none when the run has neither."""
    return files.metrics_rows(run_dir)


def replace_section(path: str, name: str, text: str, title: str = "# Results") -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in a Markdown file (append
    the section if it is not there yet), so each bench script owns its own part of RESULTS.md."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = files.read_text(path, files.MAX_LINES_BYTES, "page")
    old = title + "\n" if old is None else old
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    write_text(path, new)


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t confidence interval, n); the half-width is nan for n = 1."""
    values = list(values)
    return (*mean_ci95(values), len(values))


def fmt(mean: float, ci: float, n: int, scale: float = 100.0) -> str:
    if n == 0:
        return "not run"
    if n == 1:
        return f"{scale * mean:.2f} (1 seed)"
    return f"{scale * mean:.2f} ± {scale * ci:.2f} ({n})"


def plot_curves(panels: dict, key: str, path: str, ylabel: str) -> bool:
    """Learning curves in one figure, a panel per title of ``panels`` (two a row); each maps a label to
    run directories and draws one line per label (mean over its runs) with a min-max band over
    seeds. Runs without metrics are left out; nothing is written when no panel has a curve, or when
    matplotlib is not installed (said once: the pictures are optional)."""
    plt = pyplot()
    if plt is None:
        return False
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    drawn = False
    for ax, (title, groups) in zip(axes.flat, panels.items()):
        if draw_curves(ax, groups, key):
            ax.set_title(title)
            ax.set_xlabel("outer step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
            drawn = True
    if drawn:
        fig.tight_layout()
        save_figure(fig, path)
    plt.close(fig)
    return drawn


def pyplot():
    """matplotlib.pyplot (drawing to files), or None when matplotlib is not installed: the pictures
    are optional, and their absence is said once."""
    try:
        import matplotlib
    except ImportError:
        if not _said:
            _said.append(True)
            print("matplotlib is not installed: the tables are written, the pictures are left out "
                  "(pip install matplotlib)", file=sys.stderr, flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> None:
    """A figure as a PNG, written as every file is (atomically, never through a link)."""
    write_atomic(path, lambda fh: fig.savefig(fh, dpi=110, format="png"), binary=True)


def draw_curves(ax, groups: dict, key: str) -> bool:
    drawn = False
    for label, dirs in groups.items():
        curves = []
        for d in dirs:
            rows = [r for r in metrics(d) if key in r]
            if rows:
                curves.append(([r["step"] for r in rows], [float(r[key]) for r in rows]))
        if not curves:
            continue
        n = min(len(c[1]) for c in curves)
        steps = curves[0][0][:n]
        values = [c[1][:n] for c in curves]
        mean = [sum(v[i] for v in values) / len(values) for i in range(n)]
        line, = ax.plot(steps, mean, label=f"{label} ({len(values)})")
        if len(values) > 1:
            ax.fill_between(steps, [min(v[i] for v in values) for i in range(n)],
                            [max(v[i] for v in values) for i in range(n)], alpha=0.2, color=line.get_color())
        drawn = True
    return drawn
