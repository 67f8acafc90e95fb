"""metagreedy: greedy hypergradients for gradient-based hyperparameter optimization and meta-learning."""
from .api import hypergradient, inner_loop, make_optimizer, method_options
from .estimators import METHODS, Bilevel, Hypergradient, NonFiniteLoss
from .optim import Optimizer, adam, sgd
from .stream import Stream, stream

__version__ = "0.1.0"


__all__ = ["hypergradient", "inner_loop", "Hypergradient", "METHODS", "Bilevel", "Optimizer", "sgd", "adam",
           "make_optimizer", "method_options", "NonFiniteLoss", "stream", "Stream"]
