"""The shape of the code: a light library that changes nothing else, and the layers of
docs/ARCHITECTURE.md, run-time imports included."""
import ast
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          **{"cwd": ROOT, "env": {**os.environ, "PYTHONPATH": ROOT}, **kwargs})


def test_import_metagreedy_loads_no_lab_packages():
    heavy = ("wandb", "torchvision", "matplotlib", "yaml", "harness", "tasks")
    out = _python(f"import metagreedy, sys; print([m for m in {heavy!r} if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_metagreedy_changes_no_other_module():
    """With tqdm installed, torch.hub's bar is the one torch chooses without metagreedy, whichever is
    imported first, and the import machinery (``sys.meta_path``) is left as it was."""
    tqdm = pytest.importorskip("tqdm")
    bar = "torch.hub.tqdm.__module__ + '.' + torch.hub.tqdm.__qualname__"
    torch_alone = _python(f"import torch.hub; print({bar})").stdout.strip()
    assert torch_alone == f"{tqdm.tqdm.__module__}.tqdm"  # torch.hub's own choice where tqdm is installed
    show = f"print({bar}, sys.meta_path == finders)"
    torch_first = "import sys, torch.hub; finders = list(sys.meta_path); import metagreedy; " + show
    library_first = "import sys; finders = list(sys.meta_path); import metagreedy, torch.hub; " + show
    for code in (torch_first, library_first):
        assert _python(code).stdout.split() == [torch_alone, "True"], code


def test_the_library_edits_no_other_module():
    """No ``sys.modules[...]`` or ``sys.meta_path`` edit, and no assignment to an attribute of torch,
    anywhere in the library."""
    found = []
    for path in library_files():
        with open(path) as fh:
            source = fh.read()
        found += [f"{os.path.relpath(path, ROOT)}: {word}" for word in ("sys.modules[", "sys.meta_path")
                  if word in source]
        for node in ast.walk(ast.parse(source, path)):
            targets = node.targets if isinstance(node, ast.Assign) else []
            found += [f"{os.path.relpath(path, ROOT)}:{node.lineno}: {ast.unparse(t)} =" for t in targets
                      if isinstance(t, ast.Attribute) and ast.unparse(t).startswith("torch.")]
    assert found == []


def library_files() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "metagreedy", "**", "*.py"), recursive=True))


def test_the_distribution_is_the_library_and_needs_only_its_packages():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)
    needs = {d.split(">")[0].split("=")[0].strip() for d in project["project"]["dependencies"]}
    assert needs == {"torch", "numpy", "higher"}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["metagreedy", "metagreedy.*"]
    assert not any(os.path.exists(os.path.join(ROOT, "metagreedy", name)) for name in ("harness", "evaluate.py"))


def test_the_old_module_paths_are_gone():
    """The harness moved out of the library (docs/ARCHITECTURE.md lists the moves): the checkout
    holds none of its old paths, and nothing keeps them alive."""
    old = ("metagreedy.config", "metagreedy.checkpoint", "metagreedy.harness", "metagreedy.evaluate")
    out = _python(f"import importlib.util, metagreedy; specs = [importlib.util.find_spec(n) for n in {old!r}]; "
                  f"print([s.name for s in specs if s and (s.origin or '').startswith({ROOT!r})], "
                  "hasattr(metagreedy, 'load_run'))")
    assert out.stdout.strip() == "[] False", out.stderr


# ---- the layers (docs/ARCHITECTURE.md) ---------------------------------------------------------------
#   library (metagreedy) < declarations (harness.settings) < experiments (tasks) < harness < entry points

LIBRARY, DECLARATIONS, TASKS, HARNESS, ENTRY = range(5)
LAYER_NAMES = ("library", "declarations", "experiments", "harness", "entry point")
# Run-time imports whose module is named at run time, each allowed with the package it stays in:
# tasks.load imports the task module it is asked for, among its own package's.
DYNAMIC = {"tasks": "tasks"}


def layer(module: str) -> int:
    top = module.split(".")[0]
    if top == "metagreedy":
        return LIBRARY
    if module in ("harness", "harness.settings"):  # the package imports nothing (checked below)
        return DECLARATIONS
    return {"tasks": TASKS, "harness": HARNESS}.get(top, ENTRY)


def modules() -> dict:
    """Every module of the project, by dotted name: ``{name: path}``."""
    out = {"train": os.path.join(ROOT, "train.py")}
    for top in ("metagreedy", "harness", "tasks", "bench"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].split(os.sep)
                    out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
    return out


def _named(node) -> list:
    """The modules an ``import`` statement, or an ``importlib.import_module(...)`` /
    ``__import__(...)`` call, names: ``[(name, level)]``; ``[(None, 0)]`` for a call whose name is
    not a constant (known only at run time)."""
    if isinstance(node, ast.Import):
        return [(a.name, 0) for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [((node.module or "", node.level), a.name) for a in node.names]
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                                                 "__import__") and node.args:
        name = node.args[0]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return [(None, 0)]
        package = node.args[1] if len(node.args) > 1 and ast.unparse(node.func) != "__import__" else None
        level = len(name.value) - len(name.value.lstrip(".")) if package is not None else 0
        return [(name.value.lstrip("."), level)]
    return []


def imports(name: str, path: str, known: dict) -> list[tuple[str, int, str]]:
    """``(module imported, line, when)`` for each import of the project's own modules, ``when``
    being ``module`` (at import time), ``call`` (inside a function) or ``dynamic`` (a module named at
    run time: an edge to every module of the package :data:`DYNAMIC` allows, or ``?`` when it
    allows none)."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level if / try still run at import time
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}

    def absolute(base: str, level: int) -> str:
        parts = package.split(".")
        return ".".join(parts[: len(parts) - level + 1] + ([base] if base else [])) if level else base

    out = []
    for node in ast.walk(tree):
        when = "module" if id(node) in top_level else "call"
        for item in _named(node):
            if item == (None, 0):
                allowed = DYNAMIC.get(name)
                targets = [m for m in known if allowed and m.startswith(allowed + ".")] or ["?"]
                out += [(t, node.lineno, "dynamic") for t in targets if t != name]
                continue
            if isinstance(item[0], tuple):  # from base import attribute
                base = absolute(*item[0])
                target = f"{base}.{item[1]}" if f"{base}.{item[1]}" in known else base
            else:
                target = absolute(*item)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.append((target, node.lineno, when))
    return out


def graph() -> dict:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer_graph() -> dict:
    """The graph between layers: ``{(from, to): {"module" | "call" | "run time", ...}}``."""
    out = {}
    for name, edges in graph().items():
        for target, _, when in edges:
            if target != "?":
                out.setdefault((LAYER_NAMES[layer(name)], LAYER_NAMES[layer(target)]), set()).add(
                    "run time" if when == "dynamic" else when)
    return out


def test_the_architecture_note_draws_the_graph_this_test_reads():
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as fh:
        rows = [line.strip().strip("|").split("|") for line in fh if line.startswith("| ")]
    head = next(i for i, row in enumerate(rows) if row[0].strip().startswith("from"))
    columns = [c.strip().replace("entry points", "entry point") for c in rows[head][1:]]
    drawn = {}
    for row in rows[head + 1: head + 1 + len(LAYER_NAMES)]:
        source = row[0].strip().replace("entry points", "entry point")
        for target, cell in zip(columns, row[1:]):
            if cell.strip():
                drawn[(source, target)] = {w.strip() for w in cell.split(",")}
    assert drawn == layer_graph()


def test_no_module_imports_a_layer_above_its_own_at_any_time():
    """Imports at module level, inside functions and through importlib alike: nothing reaches up."""
    upward = [f"{name}:{line} ({LAYER_NAMES[layer(name)]}) imports {target} ({LAYER_NAMES[layer(target)]}, {when})"
              for name, edges in graph().items() for target, line, when in edges
              if target != "?" and layer(target) > layer(name)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_a_module_named_at_run_time_unless_allowed():
    unknown = [f"{name}:{line}" for name, edges in graph().items() for target, line, _ in edges if target == "?"]
    assert not unknown, "importlib with a name known only at run time: " + ", ".join(unknown)


def test_the_layering_test_sees_run_time_imports(tmp_path):
    known = {"metagreedy": "", "metagreedy.api": "", "harness": "", "harness.config": "", "tasks": "",
             "tasks.toy": ""}
    source = tmp_path / "api.py"
    source.write_text("import importlib\n\ndef f(name):\n    importlib.import_module('harness.config')\n"
                      "    __import__('tasks')\n    importlib.import_module(name)\n")
    edges = imports("metagreedy.api", str(source), known)
    assert [(t, when) for t, _, when in edges] == [("harness.config", "call"), ("tasks", "call"), ("?", "dynamic")]
    assert [t for t, _, _ in imports("tasks", str(source), known) if t.startswith("tasks.")] == ["tasks.toy"]


def test_the_harness_package_imports_nothing():
    """The experiments import ``harness.settings`` (below them), which runs ``harness/__init__.py``:
    were it to import the rest of the harness, the experiments would import what is above them."""
    with open(os.path.join(ROOT, "harness", "__init__.py")) as fh:
        assert not [n for n in ast.walk(ast.parse(fh.read())) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_nothing_in_the_library_imports_the_lab():
    assert not [(name, target) for name, edges in graph().items() if layer(name) == LIBRARY
                for target, _, _ in edges if layer(target) != LIBRARY]


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


def test_the_harness_reads_the_checkout_s_experiments_and_a_registry_only_when_passed():
    import tasks
    from harness import config

    assert config.table() is config.table(tasks)
    made_up = type("Registry", (), {"NAMES": ("toy",), "load": staticmethod(tasks.load)})
    with config.using(made_up) as registry:
        assert registry is made_up and config.table().tasks == ("toy",)
    assert config.table() is config.table(tasks)


def test_a_script_elsewhere_imports_the_checkout_s_experiments_never_the_working_directory_s(tmp_path):
    """The harness imports ``tasks`` as any module: from the import path (here the checkout, on
    PYTHONPATH), never from the working directory, whose ``tasks/`` is not run."""
    planted = tmp_path / "tasks"
    planted.mkdir()
    (planted / "__init__.py").write_text("raise SystemExit('the working directory\\'s tasks/ ran')\n")
    script = tmp_path / "elsewhere" / "score.py"
    script.parent.mkdir()
    script.write_text("from harness import config\nt = config.table()\nimport tasks\nprint(tasks.__file__, t.tasks[0])\n")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [os.path.join(ROOT, "tasks", "__init__.py"), "omniglot"]
    bare = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert bare.returncode == 1 and "No module named 'harness'" in bare.stderr  # plain Python: no lookup
