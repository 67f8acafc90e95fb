"""Data for the experiments, importable on its own: few-shot task samplers over Omniglot (or a
built-in synthetic alphabet), and the noisy-label MNIST / Fashion-MNIST splits of hyper-cleaning.

    from metagreedy.data import get_tasksets
    train, validation, test = get_tasksets("omniglot", ways=5, shots=1, queries=15, root="./data")
    task = train[0]            # the same task on every machine for the same seed and index
    task.support_x, task.support_y, task.query_x, task.query_y
"""
from .common import DataError
from .fewshot import Episode, FewShotTasks, from_learn2learn, get_tasksets
from .omniglot import load_omniglot
from .synthetic import synthetic_alphabet

__all__ = ["DataError", "Episode", "FewShotTasks", "get_tasksets", "from_learn2learn", "load_omniglot",
           "synthetic_alphabet"]
