"""Each script in examples/ attaches greedy to a loop of its kind and, with ``--check``, compares it
with ``mg.hypergradient(method="greedy")`` on a tiny float64 problem: its last line is
``max |diff| = X``, X <= 1e-8."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(n for n in os.listdir(os.path.join(ROOT, "examples")) if n.startswith("greedy_") and n.endswith(".py"))


def test_there_is_an_example_for_each_kind_of_loop():
    assert EXAMPLES == ["greedy_higher.py", "greedy_learn2learn.py", "greedy_plain.py"]


@pytest.mark.parametrize("script", EXAMPLES)
def test_each_example_checks_against_hypergradient(script):
    out = subprocess.run([sys.executable, os.path.join("examples", script), "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"max \|diff\| = (\S+)", last)
    assert match and float(match.group(1)) <= 1e-8, last


def test_the_examples_use_the_library_alone():
    """What a researcher copies from examples/ needs ``pip install metagreedy`` (and the loop's own
    package), nothing of the lab."""
    import ast
    lab = {"harness", "tasks", "bench", "train"}
    for name in os.listdir(os.path.join(ROOT, "examples")):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "examples", name)) as fh:
                tree = ast.parse(fh.read())
            imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not imported & lab, (name, imported & lab)
