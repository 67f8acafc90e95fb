"""Task samplers, the synthetic alphabet, Omniglot and MNIST loaders, label corruption."""
import os

import pytest
import torch

from metagreedy.data import DataError, FewShotTasks, get_tasksets, synthetic_alphabet
from metagreedy.data.cleaning import corrupt
from metagreedy.data.fewshot import split_classes
from metagreedy.rng import keyed_generator

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
HAVE_OMNIGLOT = os.path.isdir(os.path.join(SHARED, "omniglot-py", "images_background"))
HAVE_MNIST = os.path.isdir(os.path.join(SHARED, "MNIST", "raw"))


@pytest.fixture(scope="module")
def images():
    return synthetic_alphabet(60)


def test_synthetic_alphabet_is_deterministic_and_class_structured(images):
    assert images.shape == (60, 20, 28, 28) and images.dtype == torch.uint8
    assert torch.equal(images[:5], synthetic_alphabet(5))
    assert not torch.equal(synthetic_alphabet(5, seed=1), images[:5])
    x = images.float() / 255
    assert (x.flatten(2).sum(-1) > 5).all(), "every drawing has ink"
    centroids = x.mean(1)  # drawings of a class are closer to their own class mean than to others'
    d = torch.cdist(x.flatten(2).transpose(0, 1).reshape(-1, 784), centroids.flatten(1))
    nearest = d.argmin(1).view(20, 60)
    assert (nearest == torch.arange(60)).double().mean() > 0.7  # chance: 1/60


def test_task_is_a_function_of_seed_and_index(images):
    a = FewShotTasks(images, ways=5, shots=2, queries=3, seed=7)
    b = FewShotTasks(images, ways=5, shots=2, queries=3, seed=7)
    for i in (0, 3, 1000):
        for x, y in zip(a[i], b[i]):
            assert torch.equal(x, y)
    assert not torch.equal(a[0].support_x, a[1].support_x)
    assert not torch.equal(a[0].support_x, FewShotTasks(images, 5, 2, 3, seed=8)[0].support_x)
    # sample() walks the sequence; drawing order does not change task i
    assert torch.equal(a.sample().query_x, b[0].query_x) and torch.equal(a.sample().query_x, b[1].query_x)


def test_episode_shapes_labels_and_disjoint_support_query(images):
    tasks = FewShotTasks(images, ways=4, shots=3, queries=5, seed=0)
    ep = tasks[2]
    assert ep.support_x.shape == (12, 1, 28, 28) and ep.query_x.shape == (20, 1, 28, 28)
    assert torch.equal(ep.support_y.bincount(), torch.full((4,), 3))
    assert torch.equal(ep.query_y.bincount(), torch.full((4,), 5))
    assert 0 <= ep.support_x.min() and ep.support_x.max() <= 1
    for s in ep.support_x:  # no drawing is both support and query
        assert not any(torch.equal(s, q) for q in ep.query_x)
    # same class label -> same underlying class: support and query of label c come from one class
    proto = torch.stack([ep.support_x[ep.support_y == c].mean(0) for c in range(4)]).flatten(1)
    pred = torch.cdist(ep.query_x.flatten(1), proto).argmin(1)
    assert (pred == ep.query_y).double().mean() > 0.5


def test_finite_endless_indexing_and_iteration(images):
    finite = FewShotTasks(images, 3, 1, 1, num_tasks=4)
    assert len(finite) == 4 and len(list(finite)) == 4
    assert torch.equal(finite[-1].support_x, finite[3].support_x)
    with pytest.raises(IndexError):
        finite[4]
    endless = FewShotTasks(images, 3, 1, 1)
    with pytest.raises(TypeError):
        len(endless)
    it = iter(endless)
    assert all(next(it) is not None for _ in range(10))


def test_sampler_rejects_impossible_tasks(images):
    with pytest.raises(ValueError, match="need 61 classes"):
        FewShotTasks(images, ways=61, shots=1, queries=1)
    with pytest.raises(ValueError, match="drawings"):
        FewShotTasks(images, ways=2, shots=10, queries=11)
    with pytest.raises(ValueError, match="positive"):
        FewShotTasks(images, ways=0, shots=1, queries=1)


def test_rotations_add_rotated_classes(images):
    tasks = FewShotTasks(images[:2], ways=8, shots=1, queries=1, rotations=True, seed=0)
    assert tasks.n_classes == 8
    ep = tasks[0]
    xs = ep.support_x[:, 0]
    # all 8 classes are the 2 base classes under 4 rotations: rotating back brings each to a base class
    assert len({tuple(x.flatten().round(decimals=3).tolist()) for x in xs}) == 8


def test_splits_are_disjoint_and_stable():
    train, val = split_classes(964, 0.2)
    assert len(val) == 193 and len(train) == 771
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(val, split_classes(964, 0.2)[1])


def test_synthetic_tasksets_split_like_omniglot():
    train, val, test = get_tasksets("synthetic", 5, 1, 2, synthetic_classes=(50, 20))
    assert train.n_classes == 40 and val.n_classes == 10 and test.n_classes == 20
    assert not set(train.base.tolist()) & set(val.base.tolist())


def test_corruption_rate_determinism_and_always_wrong():
    labels = torch.randint(10, (20000,), generator=keyed_generator(1))
    noisy, mask = corrupt(labels, 0.3, 10, keyed_generator(2))
    rate = mask.double().mean().item()
    assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / 20000) ** 0.5
    assert (noisy[mask] != labels[mask]).all() and torch.equal(noisy[~mask], labels[~mask])
    noisy2, mask2 = corrupt(labels, 0.3, 10, keyed_generator(2))
    assert torch.equal(noisy, noisy2) and torch.equal(mask, mask2)
    # the wrong labels are spread over the other classes
    counts = ((noisy[mask] - labels[mask]) % 10).bincount(minlength=10)
    assert counts[0] == 0 and (counts[1:] > 0.8 * mask.sum() / 9).all()


def test_missing_omniglot_says_what_to_do(tmp_path):
    from metagreedy.data.omniglot import load_omniglot
    with pytest.raises(DataError, match="download=True"):
        load_omniglot(str(tmp_path))


def test_corrupt_omniglot_file_is_named(tmp_path):
    from metagreedy.data.omniglot import load_omniglot
    for part in ("background", "evaluation"):
        char = tmp_path / "omniglot-py" / f"images_{part}" / "Alpha" / "character01"
        char.mkdir(parents=True)
        for d in range(20):
            (char / f"0001_{d + 1:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_omniglot(str(tmp_path))


@pytest.mark.skipif(not HAVE_OMNIGLOT, reason="real Omniglot not found at ../shared/data/omniglot-py")
def test_real_omniglot_loads_sorted():
    from metagreedy.data.omniglot import load_omniglot
    images, names = load_omniglot(SHARED, background=False)
    assert images.shape == (659, 20, 28, 28)
    assert names == sorted(names) and names[0].startswith("Angelic/")
    assert images.float().mean() < 60  # mostly background (0), ink = 255


@pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not found at ../shared/data/MNIST")
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_mnist_loads(name):
    from metagreedy.data.cleaning import load_split
    x, y = load_split(name, SHARED, train=False)
    assert x.shape == (10000, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(y.bincount(), torch.bincount(y, minlength=10))


def test_truncated_mnist_is_detected(tmp_path):
    from metagreedy.data.cleaning import load_split
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError):
        load_split("mnist", str(tmp_path), train=False)
