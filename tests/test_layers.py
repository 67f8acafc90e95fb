"""The shape of the code: a light core, and the layers of docs/ARCHITECTURE.md."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_metagreedy_loads_no_harness_packages():
    heavy = ("wandb", "torchvision", "tqdm", "matplotlib", "yaml")
    code = f"import metagreedy, sys; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_distribution_needs_only_the_core_and_installs_no_tasks_package():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)
    needs = {d.split(">")[0].split("=")[0].strip() for d in project["project"]["dependencies"]}
    assert needs == {"torch", "numpy", "higher"}
    packages = project["tool"]["setuptools"]["packages"]
    assert all(p == "metagreedy" or p.startswith("metagreedy.") for p in packages)
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, names in os.walk(os.path.join(ROOT, "metagreedy"))
             if "__init__.py" in names}
    assert set(packages) == found  # every subpackage is installed


# ---- the layers (docs/ARCHITECTURE.md): core <- harness <- tasks/ <- train.py, bench/ ----------------

import ast  # noqa: E402
import glob  # noqa: E402

CORE, HARNESS, TASKS, ENTRY = range(4)
LAYER_NAMES = ("core", "harness", "tasks", "entry point")


def layer(module: str) -> int:
    if module.startswith("metagreedy.harness") or module == "metagreedy.evaluate":
        return HARNESS  # metagreedy.evaluate: the harness's `python -m` entry, re-exporting metagreedy.harness.reuse
    if module.split(".")[0] == "metagreedy":
        return CORE
    if module.split(".")[0] == "tasks":
        return TASKS
    return ENTRY


def modules() -> dict:
    """Every module of the project, by dotted name: ``{name: path}``."""
    out = {"train": os.path.join(ROOT, "train.py")}
    for top in ("metagreedy", "tasks", "bench"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                    out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
    return out


def imports(name: str, path: str, known: dict) -> list[tuple[str, int, bool]]:
    """``(module imported, line, at module level)`` for each import of the project's own modules."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level if / try still run at import time
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((target, node.lineno, id(node) in top_level))
    return out


def graph() -> dict:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, edges in graph().items():
        for target, line, module_level in edges:
            if layer(target) <= layer(name):
                continue
            if name == "metagreedy" and not module_level and layer(target) == HARNESS:
                continue  # metagreedy.load_run reaches the harness on use: the core never loads it
            upward.append(f"{name}:{line} ({LAYER_NAMES[layer(name)]}) imports {target} "
                          f"({LAYER_NAMES[layer(target)]})")
    assert not upward, "\n".join(upward)


def test_nothing_in_the_library_imports_the_experiments():
    assert not [(name, target) for name, edges in graph().items() if name.startswith("metagreedy")
                for target, _, _ in edges if target.split(".")[0] == "tasks"]


def cycles(edges: dict) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_edits_the_import_path():
    """Every module imports its own by package (``python -m bench.x`` from the checkout), never by
    putting a folder on ``sys.path``."""
    edits = []
    for path in [*modules().values(), *glob.glob(os.path.join(ROOT, "tests", "*.py"))]:
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                edits.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert edits == []


def test_no_import_circles():
    edges = {name: {t for t, _, _ in targets} for name, targets in graph().items()}
    assert cycles(edges) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_outside_the_tests_is_longer_than_80_lines():
    long = []
    for name, path in modules().items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        long += [f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, ", ".join(long)


def test_the_old_module_paths_import_the_moved_modules():
    import importlib

    for name in ("config", "rundir", "runlog", "checkpoint", "signals", "faults", "distributed", "files"):
        old, new = importlib.import_module(f"metagreedy.{name}"), importlib.import_module(f"metagreedy.harness.{name}")
        assert old is new and new.__spec__.name == f"metagreedy.harness.{name}"
    import metagreedy
    from metagreedy.evaluate import load_run, main  # noqa: F401  (python -m metagreedy.evaluate)
    assert metagreedy.config.UsageError is importlib.import_module("metagreedy.harness.config").UsageError


def test_the_harness_finds_the_experiments_it_is_handed(monkeypatch):
    import tasks
    from metagreedy.harness import registry

    assert registry.experiments() is tasks  # the checkout's, by default
    handed = object()
    monkeypatch.setattr(registry, "_handed_in", handed)
    assert registry.experiments() is handed


def test_load_run_finds_the_experiments_of_the_working_directory_from_a_script_elsewhere(tmp_path):
    """A script outside the checkout, run from it: ``tasks`` is not on its import path, and the
    harness imports the working directory's."""
    import subprocess
    import sys
    script = tmp_path / "score.py"
    script.write_text("from metagreedy.harness import registry\n"
                      "t = registry.experiments()\n"
                      "print(t.__name__, t.load('toy').__name__, t.__file__)\n")
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["tasks", "tasks.toy"] and out.stdout.split()[2].startswith(ROOT)
    away = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert away.returncode == 1 and "UsageError: no experiments to rebuild the run with" in away.stderr
