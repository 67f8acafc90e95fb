"""Few-shot task samplers: N-way K-shot episodes with Q queries per class.

The interface is learn2learn's (``sample()``, indexing, iteration, endless with ``num_tasks=-1``),
with one difference that matters for reproducible research: task ``i`` is a function of
``(seed, i)`` alone, never of a global RNG or of the order tasks were drawn in."""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..rng import keyed_generator
from .common import DRAWINGS, IMAGE_SIZE  # noqa: F401  (re-exported: the tasks read them here)
from .omniglot import load_omniglot
from .synthetic import synthetic_alphabet


class Episode(NamedTuple):
    support_x: Tensor  # [ways * shots, 1, H, W], float in [0, 1], ink = 1
    support_y: Tensor  # [ways * shots], labels 0..ways-1
    query_x: Tensor  # [ways * queries, 1, H, W]
    query_y: Tensor  # [ways * queries]


class FewShotTasks:
    """N-way K-shot tasks over ``images`` (uint8 [classes, drawings, H, W]).

    ``classes`` restricts sampling to a subset of class indices (a split); ``rotations`` adds each
    class rotated by 90, 180 and 270 degrees as three new classes."""

    def __init__(self, images: Tensor, ways: int, shots: int, queries: int, *, seed: int = 0,
                 num_tasks: int = -1, classes: Optional[Tensor] = None, rotations: bool = False, name: str = ""):
        self.images = images
        self.base = torch.arange(images.shape[0]) if classes is None else torch.as_tensor(classes)
        self.rotations = rotations
        self.n_classes = len(self.base) * (4 if rotations else 1)
        drawings = images.shape[1]
        for label, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if ways > self.n_classes:
            raise ValueError(f"{ways}-way tasks need {ways} classes, but the {name or 'given'} split has "
                             f"{self.n_classes}")
        if shots + queries > drawings:
            raise ValueError(f"shots + queries = {shots + queries} is more than the {drawings} drawings a class has")
        if num_tasks != -1 and num_tasks < 1:
            raise ValueError(f"num_tasks must be -1 (endless) or positive, got {num_tasks}")
        self.ways, self.shots, self.queries = ways, shots, queries
        self.seed, self.num_tasks, self.name = seed, num_tasks, name
        self._cursor = 0

    def __len__(self) -> int:
        if self.num_tasks == -1:
            raise TypeError("an endless task set (num_tasks=-1) has no length")
        return self.num_tasks

    def __getitem__(self, index: int) -> Episode:
        if self.num_tasks != -1:
            if index < 0:
                index += self.num_tasks
            if not 0 <= index < self.num_tasks:
                raise IndexError(f"task {index} of {self.num_tasks}")
        elif index < 0:
            raise IndexError("negative index into an endless task set")
        gen = keyed_generator(self.seed, index)
        chosen = torch.randperm(self.n_classes, generator=gen)[: self.ways]
        per_class = self.shots + self.queries
        drawings = torch.stack([torch.randperm(self.images.shape[1], generator=gen)[:per_class]
                                for _ in range(self.ways)])
        k = 4 if self.rotations else 1
        base = self.base[chosen // k]
        x = self.images[base[:, None], drawings]  # [ways, shots + queries, H, W]
        if self.rotations:
            x = torch.stack([torch.rot90(xc, int(r), dims=(-2, -1)) for xc, r in zip(x, chosen % k)])
        x = x.float().div_(255).unsqueeze(2)  # [ways, n, 1, H, W]
        y = torch.arange(self.ways)[:, None].expand(-1, per_class)
        s, q = self.shots, self.queries
        return Episode(x[:, :s].reshape(-1, *x.shape[2:]), y[:, :s].reshape(-1),
                       x[:, s:].reshape(-1, *x.shape[2:]), y[:, s:].reshape(-1))

    def sample(self) -> Episode:
        """The next task of this sampler's sequence (tasks 0, 1, 2, ... of its seed)."""
        task = self[self._cursor]
        self._cursor += 1
        return task

    def __iter__(self):
        index = 0
        while self.num_tasks == -1 or index < self.num_tasks:
            yield self[index]
            index += 1


OMNIGLOT_CLASSES = (964, 659)  # characters of the background and evaluation alphabets (the synthetic one's too)
# characters of each of Omniglot's 30 background alphabets, in the loader's order (sorted by path)
BACKGROUND_ALPHABETS = (20, 29, 26, 41, 40, 24, 46, 14, 26, 34, 33, 22, 26, 43, 24, 48, 22, 16, 52, 47, 40, 26, 40,
                        41, 33, 14, 42, 23, 17, 55)
VAL_SPLITS = ("classes", "alphabets")  # how meta-validation is held out of the background classes


def _held_out(n: int, val_fraction: float) -> int:
    return max(1, round(val_fraction * n))


def split_classes(n: int, val_fraction: float, split_seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train, validation) class indices: a fixed random ``val_fraction`` of the classes held out."""
    perm = torch.randperm(n, generator=keyed_generator(split_seed, n))
    n_val = _held_out(n, val_fraction)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def grouped(n: int, sizes: tuple = BACKGROUND_ALPHABETS) -> Tensor:
    """The alphabet of each of ``n`` classes grouped as Omniglot's background alphabets, scaled to
    ``n``: consecutive classes, alphabet k ending at class round(n * (the first k alphabets' share of
    the characters)). At n = 964 these are the background alphabets themselves; fewer than 30 classes
    make fewer alphabets (the empty ones are dropped). The synthetic alphabet's grouping."""
    total, ends, cumulative = sum(sizes), [], 0
    for size in sizes:
        cumulative += size
        ends.append((cumulative * n + total // 2) // total)  # integers: no float round-off
    alphabet = torch.searchsorted(torch.tensor(ends), torch.arange(n), right=True)
    return torch.unique(alphabet, return_inverse=True)[1]


def alphabets_of(names: list[str]) -> Tensor:
    """The alphabet index of each class from its ``Alphabet/character`` name, alphabets numbered in
    order of first appearance."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(name.split("/")[0], len(index)) for name in names], dtype=torch.long)


def split_alphabets(alphabets: Tensor, val_fraction: float, split_seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train, validation) class indices with whole alphabets held out (``alphabets``: the alphabet of
    each class), so that no validation class shares an alphabet with a training one. The alphabets
    are taken in a fixed random order (a generator keyed by the split seed and the sizes), as many as
    bring the held-out classes closest to ``val_fraction`` of them: at least one, never all."""
    alphabets = torch.as_tensor(alphabets, dtype=torch.long)
    n, groups = len(alphabets), int(alphabets.max()) + 1 if len(alphabets) else 0
    sizes = torch.bincount(alphabets, minlength=groups)
    if int((sizes > 0).sum()) < 2:
        raise ValueError("holding out whole alphabets needs classes of at least two alphabets")
    order = torch.randperm(groups, generator=keyed_generator(split_seed, n, groups, 0xA1FA))
    order = order[sizes[order] > 0]
    counts = sizes[order].cumsum(0)[:-1]  # held out by the first 1, 2, ... alphabets, all but the last
    k = int((counts - _held_out(n, val_fraction)).abs().argmin()) + 1  # the first of equals: fewer alphabets
    held = torch.isin(alphabets, order[:k])
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def split_background(n: int, val_fraction: float, val_split: str = "classes", alphabets: Optional[Tensor] = None):
    """(train, validation) classes of ``n`` background classes: ``classes`` holds out a fixed random
    ``val_fraction`` of them (the paper's 20%, drawn by class, so validation characters share
    alphabets with training ones); ``alphabets`` holds out whole alphabets (``alphabets``: the
    alphabet of each class), about ``val_fraction`` of the classes."""
    if val_split == "classes":
        return split_classes(n, val_fraction)
    if val_split != "alphabets":
        raise ValueError(f"val_split must be one of {VAL_SPLITS}, got {val_split!r}")
    if alphabets is None or len(alphabets) != n:
        raise ValueError(f"val_split='alphabets' needs the alphabet of each of the {n} background classes "
                         f"(alphabets=), got {'none' if alphabets is None else len(alphabets)}")
    return split_alphabets(alphabets, val_fraction)


def split_sizes(val_fraction: float, rotations: bool = False, classes: tuple[int, int] = OMNIGLOT_CLASSES,
                val_split: str = "classes") -> dict:
    """Classes of each split of :func:`get_tasksets`, known before any image is read (for
    ``alphabets``, Omniglot's background alphabets, as :func:`grouped` gives them)."""
    k = 4 if rotations else 1
    alphabets = grouped(classes[0]) if val_split == "alphabets" else None
    n_val = len(split_background(classes[0], val_fraction, val_split, alphabets)[1])
    return {"meta-train": (classes[0] - n_val) * k, "meta-validation": n_val * k, "meta-test": classes[1] * k}


def load_alphabets(name: str, root: str = "./data", synthetic_classes: tuple[int, int] = OMNIGLOT_CLASSES):
    """``(background, evaluation)`` uint8 images [classes, 20, 28, 28] of ``"omniglot"`` (read from
    ``root``) or ``"synthetic"`` (the built-in alphabet, with ``synthetic_classes`` classes)."""
    if name == "omniglot":
        return load_omniglot(root, background=True)[0], load_omniglot(root, background=False)[0]
    if name == "synthetic":
        both = synthetic_alphabet(sum(synthetic_classes))
        return both[: synthetic_classes[0]], both[synthetic_classes[0]:]
    raise ValueError(f"unknown task set {name!r}; choose 'omniglot' or 'synthetic'")


def background_alphabets(name: str, root: str = "./data", classes: int = OMNIGLOT_CLASSES[0]) -> Tensor:
    """The alphabet of each background class: read from Omniglot's folders under ``root``
    (``Alphabet/character``), or for the ``classes`` classes of the synthetic alphabet the fixed
    grouping of :func:`grouped` (Omniglot's alphabet sizes)."""
    if name == "omniglot":
        return alphabets_of(load_omniglot(root, background=True)[1])
    if name == "synthetic":
        return grouped(classes)
    raise ValueError(f"unknown task set {name!r}; choose 'omniglot' or 'synthetic'")


def make_tasksets(background: Tensor, evaluation: Tensor, ways: int, shots: int, queries: int, *, seed: int = 0,
                  eval_seed: int = 12345, val_fraction: float = 0.2, rotations: bool = False,
                  num_tasks: int = -1, eval_tasks: int = -1, val_split: str = "classes",
                  alphabets: Optional[Tensor] = None):
    """``(train, validation, test)`` task sets over loaded alphabets (see :func:`get_tasksets`);
    ``alphabets``: the alphabet of each background class, which ``val_split="alphabets"`` needs."""
    train_classes, val_classes = split_background(background.shape[0], val_fraction, val_split, alphabets)
    common = dict(ways=ways, shots=shots, queries=queries, rotations=rotations)
    return (FewShotTasks(background, seed=seed, num_tasks=num_tasks, classes=train_classes, name="meta-train",
                         **common),
            FewShotTasks(background, seed=eval_seed, num_tasks=eval_tasks, classes=val_classes,
                         name="meta-validation", **common),
            FewShotTasks(evaluation, seed=eval_seed + 1, num_tasks=eval_tasks, name="meta-test", **common))


def get_tasksets(name: str, ways: int, shots: int, queries: int, *, root: str = "./data", seed: int = 0,
                 eval_seed: int = 12345, val_fraction: float = 0.2, rotations: bool = False,
                 num_tasks: int = -1, eval_tasks: int = -1, synthetic_classes: tuple[int, int] = OMNIGLOT_CLASSES,
                 val_split: str = "classes"):
    """``(train, validation, test)`` task sets, as learn2learn's ``get_tasksets`` returns them.

    ``name`` is ``"omniglot"`` (background alphabets -> meta-train and meta-validation, evaluation
    alphabets -> meta-test) or ``"synthetic"`` (the built-in alphabet, split the same way).
    ``val_split``: ``"classes"`` holds out ``val_fraction`` of the background classes at random (the
    paper's), ``"alphabets"`` whole background alphabets (about ``val_fraction`` of the classes), so
    that no validation character shares an alphabet with a training one.
    Validation and test tasks use ``eval_seed``, so every run is scored on the same tasks."""
    background, evaluation = load_alphabets(name, root, synthetic_classes)
    alphabets = background_alphabets(name, root, background.shape[0]) if val_split == "alphabets" else None
    return make_tasksets(background, evaluation, ways, shots, queries, seed=seed, eval_seed=eval_seed,
                         val_fraction=val_fraction, rotations=rotations, num_tasks=num_tasks, eval_tasks=eval_tasks,
                         val_split=val_split, alphabets=alphabets)


class Learn2LearnTasks:
    """A learn2learn ``TaskDataset`` seen as episodes: each of its tasks ``(X, y)`` is split per class
    into the first ``shots`` examples (support) and the rest (query), labels remapped to 0..ways-1."""

    def __init__(self, taskset, shots: int):
        self.taskset, self.shots = taskset, shots

    def _episode(self, task) -> Episode:
        x, y = task[0], torch.as_tensor(task[1])
        if x.dim() == 3:
            x = x.unsqueeze(1)
        support, query = [], []
        for label, cls in enumerate(torch.unique(y, sorted=True)):
            idx = (y == cls).nonzero().flatten()
            support += [(i, label) for i in idx[: self.shots].tolist()]
            query += [(i, label) for i in idx[self.shots:].tolist()]
        si, sy = zip(*support)
        qi, qy = zip(*query)
        return Episode(x[list(si)].float(), torch.tensor(sy), x[list(qi)].float(), torch.tensor(qy))

    def __getitem__(self, index: int) -> Episode:
        return self._episode(self.taskset[index])

    def sample(self) -> Episode:
        return self._episode(self.taskset.sample())


def from_learn2learn(taskset, shots: int) -> Learn2LearnTasks:
    """Use a learn2learn ``TaskDataset`` wherever metagreedy takes a task sampler."""
    return Learn2LearnTasks(taskset, shots)
