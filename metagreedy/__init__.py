"""metagreedy: greedy hypergradients for gradient-based hyperparameter optimization and meta-learning."""
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

__version__ = "0.1.0"


def load_run(path: str, device=None, data_root=None):
    """A trained run rebuilt from its directory: ``.config``, ``.hparams``, ``.task``, ``.predict(...)``,
    ``.evaluate(...)`` (see :mod:`metagreedy.evaluate`; imported here on use, as it needs the tasks)."""
    from .evaluate import load_run as load
    return load(path, device=device, data_root=data_root)


__all__ = ["hypergradient", "inner_loop", "Hypergradient", "METHODS", "Bilevel", "Estimate", "Optimizer", "sgd", "adam",
           "make_optimizer", "method_options", "NonFiniteLoss", "load_run"]
