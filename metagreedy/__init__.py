"""metagreedy: greedy hypergradients for gradient-based hyperparameter optimization and meta-learning."""
import importlib as _importlib
import importlib.abc as _abc
import importlib.util as _util
import sys as _sys

if "torch" not in _sys.modules:  # torch.hub imports tqdm when it is installed; the library needs no tqdm
    _tqdm = _sys.modules.get("tqdm")
    _sys.modules["tqdm"] = None  # type: ignore[assignment]  (torch.hub falls back to its own bar)
    try:
        import torch  # noqa: F401
    finally:
        if _tqdm is None:
            del _sys.modules["tqdm"]
        else:
            _sys.modules["tqdm"] = _tqdm

from .api import Hypergradient, hypergradient, inner_loop, make_optimizer, method_options
from .estimators import METHODS, Bilevel, Estimate, NonFiniteLoss
from .optim import Optimizer, adam, sgd
from .stream import Stream, stream

__version__ = "0.1.0"


def load_run(path: str, device=None, data_root=None, tasks=None):
    """A trained run rebuilt from its directory: ``.config``, ``.hparams``, ``.task``, ``.predict(...)``,
    ``.evaluate(...)`` (see :mod:`metagreedy.harness.reuse`; imported here on use, as the core needs no
    harness)."""
    from .harness.reuse import load_run as load
    return load(path, device=device, data_root=data_root, tasks=tasks)


# The harness modules moved to metagreedy.harness; their old names still import them (the same modules).
_MOVED = {f"{__name__}.{name}": f"{__name__}.harness.{name}"
          for name in ("config", "rundir", "runlog", "checkpoint", "signals", "faults", "distributed", "files")}


class _MovedFinder(_abc.MetaPathFinder, _abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return _util.spec_from_loader(name, self) if name in _MOVED else None

    def create_module(self, spec):
        module = _importlib.import_module(_MOVED[spec.name])
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec  # the module keeps its own name and spec


_sys.meta_path.insert(0, _MovedFinder())  # before any finder that still knows the old files


def __getattr__(name):
    if f"{__name__}.{name}" in _MOVED:
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["hypergradient", "inner_loop", "Hypergradient", "METHODS", "Bilevel", "Estimate", "Optimizer", "sgd", "adam",
           "make_optimizer", "method_options", "NonFiniteLoss", "load_run", "stream", "Stream"]
