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
