"""Task samplers, the synthetic alphabet, Omniglot and MNIST loaders, their cache, label corruption."""
import json
import os
import pickle

import pytest
import torch

from metagreedy.data import DataError, FewShotTasks, cache, get_tasksets, synthetic, synthetic_alphabet
from metagreedy.data import omniglot as omniglot_module
from metagreedy.data.cleaning import corrupt
from metagreedy.data import fewshot
from metagreedy.data.fewshot import split_classes
from metagreedy.rng import keyed_generator

from paths import REAL_DATA as SHARED

HAVE_OMNIGLOT = os.path.isdir(os.path.join(SHARED, "omniglot-py", "images_background"))
MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


@pytest.fixture(scope="module")
def images():
    return synthetic_alphabet(60)


def same_episode(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


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
        assert same_episode(a[i], b[i])
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
    for i in range(10):  # iteration walks tasks 0, 1, 2, ... of the seed, as indexing gives them
        assert same_episode(next(it), endless[i])
    assert all(same_episode(a, finite[i]) for i, a in enumerate(finite))


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
    drawings = images[:2].float() / 255  # [2, 20, 28, 28]
    found = set()
    for x in ep.support_x[:, 0]:  # rotating each back by some quarter turn gives a drawing of a base class
        matches = {(base, r) for r in range(4) for base in range(2)
                   if any(torch.equal(torch.rot90(x, -r, dims=(-2, -1)), d) for d in drawings[base])}
        assert len(matches) == 1, matches
        found |= matches
    assert found == {(base, r) for base in range(2) for r in range(4)}, "8 classes: 2 drawings x 4 rotations"


def test_splits_are_disjoint_and_stable():
    train, val = split_classes(964, 0.2)
    assert len(val) == 193 and len(train) == 771
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(964))
    assert torch.equal(val, split_classes(964, 0.2)[1])


def test_synthetic_tasksets_split_like_omniglot():
    train, val, test = get_tasksets("synthetic", 5, 1, 2, synthetic_classes=(50, 20))
    assert train.n_classes == 40 and val.n_classes == 10 and test.n_classes == 20
    assert not set(train.base.tolist()) & set(val.base.tolist())
    alphabet = synthetic_alphabet(70)  # background: its first 50 classes; evaluation: the last 20
    assert torch.equal(train.images, alphabet[:50]) and torch.equal(test.images, alphabet[50:])


def test_alphabets_group_the_classes_as_omniglots_background_alphabets():
    assert fewshot.grouped(964).bincount().tolist() == list(fewshot.BACKGROUND_ALPHABETS)
    for n in (20, 40, 100, 2000):  # scaled: consecutive classes, no empty alphabet, at most 30
        groups = fewshot.grouped(n)
        assert len(groups) == n and (groups.diff() >= 0).all() and (groups.bincount() > 0).all()
        assert groups.max() + 1 <= min(n, 30) and (n < 100 or groups.max() + 1 == 30)
    assert fewshot.alphabets_of(["B/c1", "B/c2", "A/c1", "C/c9", "C/c3"]).tolist() == [0, 0, 1, 2, 2]


@pytest.mark.skipif(not HAVE_OMNIGLOT, reason="real Omniglot not found (METAGREEDY_TEST_DATA or ./data)")
def test_real_background_alphabets_are_read_from_the_folders_and_are_the_known_sizes(monkeypatch):
    """The loader's names (sorted 'Alphabet/character', listed here without decoding a drawing) give
    the alphabet of each class; they are the sizes split_sizes knows before any image is read."""
    folder = os.path.join(SHARED, "omniglot-py", "images_background")
    names = sorted(f"{a}/{c}" for a in os.listdir(folder) for c in os.listdir(os.path.join(folder, a)))
    monkeypatch.setattr(fewshot, "load_omniglot", lambda root, background: (None, names))
    groups = fewshot.background_alphabets("omniglot", SHARED)
    assert groups.bincount().tolist() == list(fewshot.BACKGROUND_ALPHABETS)
    assert torch.equal(groups, fewshot.grouped(964))


def test_an_alphabet_split_holds_out_whole_alphabets_near_the_fraction_and_is_stable():
    groups = fewshot.grouped(964)
    train, val = fewshot.split_alphabets(groups, 0.2)
    assert sorted(train.tolist() + val.tolist()) == list(range(964))
    assert not set(groups[train].tolist()) & set(groups[val].tolist())  # no alphabet on both sides
    assert abs(len(val) - 193) <= max(fewshot.BACKGROUND_ALPHABETS) / 2 and len(val) == 201
    assert torch.equal(val, fewshot.split_alphabets(groups, 0.2)[1])
    assert not torch.equal(val, fewshot.split_alphabets(groups, 0.2, split_seed=1)[1])
    assert fewshot.split_sizes(0.2, val_split="alphabets") == {"meta-train": 763, "meta-validation": 201,
                                                               "meta-test": 659}
    assert fewshot.split_sizes(0.2) == {"meta-train": 771, "meta-validation": 193, "meta-test": 659}
    with pytest.raises(ValueError, match="at least two"):
        fewshot.split_alphabets(torch.zeros(10, dtype=torch.long), 0.2)
    with pytest.raises(ValueError, match="alphabet of each"):
        fewshot.make_tasksets(synthetic_alphabet(20), synthetic_alphabet(10), 3, 1, 2, val_split="alphabets")
    with pytest.raises(ValueError, match="val_split must be"):
        fewshot.make_tasksets(synthetic_alphabet(20), synthetic_alphabet(10), 3, 1, 2, val_split="writers")


def test_synthetic_tasksets_hold_out_alphabets_when_asked():
    train, val, test = get_tasksets("synthetic", 5, 1, 2, synthetic_classes=(100, 20), val_split="alphabets")
    groups = fewshot.grouped(100)
    assert not set(groups[train.base].tolist()) & set(groups[val.base].tolist())
    assert sorted(train.base.tolist() + val.base.tolist()) == list(range(100))
    sizes = fewshot.split_sizes(0.2, classes=(100, 20), val_split="alphabets")
    assert (train.n_classes, val.n_classes, test.n_classes) == (sizes["meta-train"], sizes["meta-validation"], 20)
    by_class = get_tasksets("synthetic", 5, 1, 2, synthetic_classes=(100, 20))[1]
    assert set(groups[by_class.base].tolist()) & set(groups[train.base].tolist())  # the default shares alphabets


@pytest.mark.parametrize("model,wrong", [("other", 1.0), ("any", 0.9)])
def test_both_noise_models_realise_their_expected_rates(model, wrong):
    """other: every corrupted label is another class (rate p); any: a class drawn from all ten, so a
    tenth of the draws give back the true label, which is then not corrupted (rate 0.9 p)."""
    n, p = 50000, 0.3
    labels = torch.randint(10, (n,), generator=keyed_generator(1))
    noisy, mask = corrupt(labels, p, 10, keyed_generator(2), model)
    expected = p * wrong
    assert abs(mask.double().mean().item() - expected) < 4 * (expected * (1 - expected) / n) ** 0.5
    assert torch.equal(mask, noisy != labels)  # the mask marks exactly the wrong labels
    again = corrupt(labels, p, 10, keyed_generator(2), model)
    assert torch.equal(again[0], noisy) and torch.equal(again[1], mask)
    counts = ((noisy[mask] - labels[mask]) % 10).bincount(minlength=10)  # wrong labels spread over the 9 others
    assert counts[0] == 0 and (counts[1:] > 0.8 * mask.sum() / 9).all()
    with pytest.raises(ValueError, match="model must be"):
        corrupt(labels, p, 10, keyed_generator(2), "some")


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


# the published class counts of the 10,000 test images
TEST_COUNTS = {"mnist": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], "fashion_mnist": [1000] * 10}


@pytest.mark.parametrize("name", sorted(MNIST_FOLDERS))
def test_real_mnist_loads(name):
    from metagreedy.data.cleaning import load_split
    if not os.path.isdir(os.path.join(SHARED, MNIST_FOLDERS[name], "raw")):
        pytest.skip(f"real {MNIST_FOLDERS[name]} not found (METAGREEDY_TEST_DATA or ./data)")
    x, y = load_split(name, SHARED, train=False)
    assert x.shape == (10000, 1, 28, 28) and x.min() == 0 and x.max() == 1
    assert y.bincount(minlength=10).tolist() == TEST_COUNTS[name]


def test_truncated_mnist_is_detected(tmp_path):
    from metagreedy.data.cleaning import load_split
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError):
        load_split("mnist", str(tmp_path), train=False)


# ---- the synthetic alphabet: drawn in batches, exactly as one class at a time ----------------------

def draw_class_alone(gen, size, drawings):
    """The alphabet's first implementation, one class at a time through torch.cdist: the reference
    that the batched drawing must reproduce bit for bit."""
    curve, width = synthetic._strokes(gen, drawings)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)[:, [1, 0]]
    dist = torch.cdist(grid.expand(drawings, -1, -1), curve).min(-1).values
    ink = ((width - dist) / (1.0 / size) + 0.5).clamp(0, 1)
    return (255 * ink).round().to(torch.uint8).reshape(drawings, size, size)


@pytest.mark.parametrize("seed, size, chunk", [(0, 28, 3), (5, 20, synthetic.CHUNK)])
def test_batched_drawing_is_bit_identical_to_one_class_at_a_time(seed, size, chunk, monkeypatch):
    """With a chunk of 3, each stroke count has several batches, full and partial."""
    monkeypatch.setattr(synthetic, "CHUNK", chunk)
    classes = 20
    strokes = {synthetic._strokes(keyed_generator(seed, c), 20)[0].shape[1] // synthetic.POINTS for c in range(classes)}
    assert strokes == {1, 2, 3, 4}, "every stroke count, so every batch shape, is compared"
    want = torch.stack([draw_class_alone(keyed_generator(seed, c), size, 20) for c in range(classes)])
    assert torch.equal(synthetic._draw(classes, seed, size), want)


def test_drawing_leaves_the_thread_count_as_it_was():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1, which the drawing itself uses (and the suite may run with)
    try:
        synthetic._draw(3, 0, 28)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


# ---- the on-disk cache ---------------------------------------------------------------------------

@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache directory and no in-process copies; the folder is returned."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("METAGREEDY_CACHE", str(folder))
    cache.clear_memo()
    yield folder
    cache.clear_memo()


def count_calls(monkeypatch, module, name):
    """Wraps ``module.name`` so that its calls are recorded in the returned list."""
    calls, real = [], getattr(module, name)

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def draws(monkeypatch):
    """How often the synthetic alphabet is drawn (rather than read from a cache)."""
    return count_calls(monkeypatch, synthetic, "_draw")


def cache_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("METAGREEDY_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("METAGREEDY_CACHE")
    assert cache.cache_dir() == str(tmp_path / "xdg" / "metagreedy")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == str(tmp_path / "home" / ".cache" / "metagreedy")


def test_alphabet_is_drawn_once_then_read_from_memory_and_disk(fresh_cache, draws):
    first = synthetic_alphabet(9, seed=2)
    assert len(draws) == 1 and len(cache_files(fresh_cache)) == 1, "one file, no temporary left behind"
    assert torch.equal(synthetic_alphabet(9, seed=2), first) and len(draws) == 1  # from memory
    cache.clear_memo()
    assert torch.equal(synthetic_alphabet(9, seed=2), first) and len(draws) == 1  # from disk
    assert torch.equal(first, synthetic._draw(9, 2, 28))


def test_every_input_of_the_drawing_is_in_the_key(fresh_cache, draws, monkeypatch):
    synthetic_alphabet(4)
    for kwargs in ({"classes": 5}, {"classes": 4, "seed": 1}, {"classes": 4, "size": 20}):
        synthetic_alphabet(**kwargs)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    cache.clear_memo()
    synthetic_alphabet(4)
    assert len(draws) == 5 and len(cache_files(fresh_cache)) == 5


def test_callers_get_their_own_copy(fresh_cache):
    want = synthetic._draw(6, 0, 28)
    synthetic_alphabet(6).zero_()  # a caller writing in place into what it was given...
    assert torch.equal(synthetic_alphabet(6), want)  # ...changes nothing for the next (from memory)
    cache.clear_memo()
    synthetic_alphabet(6).zero_()
    assert torch.equal(synthetic_alphabet(6), want)  # nor from disk


def damage(path, how):
    data = path.read_bytes()
    header_end = data.index(b"\n", len(cache.MAGIC)) + 1
    if how == "truncated":
        path.write_bytes(data[:-100])
    elif how == "longer":
        path.write_bytes(data + b"\x00")
    elif how == "flipped byte":
        path.write_bytes(data[:-50] + bytes([data[-50] ^ 1]) + data[-49:])
    elif how == "garbage header":
        path.write_bytes(cache.MAGIC + b"{not json\n" + data[header_end:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "another shape":  # intact and checksummed, but not the expected [classes, 20, size, size]
        ident = [line for line in data.split(b"\n") if line.startswith(b"{")][0]
        cache.write(str(path), json.loads(ident)["key"], torch.zeros(3, 20, 28, 28, dtype=torch.uint8), {})


@pytest.mark.parametrize("how", ["truncated", "longer", "flipped byte", "garbage header", "empty", "another shape"])
def test_a_damaged_cache_file_is_redrawn_and_replaced(fresh_cache, draws, how):
    want = synthetic_alphabet(7)
    (path,) = fresh_cache.iterdir()
    damage(path, how)
    cache.clear_memo()
    assert torch.equal(synthetic_alphabet(7), want) and len(draws) == 2
    cache.clear_memo()
    assert torch.equal(synthetic_alphabet(7), want) and len(draws) == 2, "the rewritten file is read"


def test_a_pickle_in_the_cache_is_never_loaded(fresh_cache, draws, tmp_path):
    """Reading the cache parses a JSON header and copies bytes: a pickle planted at the path (which
    would create a file if unpickled) is treated as damage, not executed."""
    want = synthetic_alphabet(3)
    (path,) = fresh_cache.iterdir()
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Payload()))
    cache.clear_memo()
    assert torch.equal(synthetic_alphabet(3), want) and len(draws) == 2
    assert not marker.exists()


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch, draws):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("METAGREEDY_CACHE", str(blocker / "cache"))  # cannot be created, even by root
    cache.clear_memo()
    first = synthetic_alphabet(4)
    cache.clear_memo()
    assert torch.equal(synthetic_alphabet(4), first) and len(draws) == 2 and blocker.read_text() == ""
    cache.clear_memo()


# ---- Omniglot: decoded once, cached under a fingerprint of its files -------------------------------

def write_omniglot(root, characters=2, seed=0):
    """A tiny Omniglot in torchvision's layout: 105x105 one-bit PNGs, 20 drawings a character."""
    gen = torch.Generator().manual_seed(seed)
    for part in ("background", "evaluation"):
        for c in range(characters):
            folder = root / "omniglot-py" / f"images_{part}" / "Alpha" / f"character{c + 1:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for d in range(20):
                write_drawing(folder / f"{c + 1:04d}_{d + 1:02d}.png", gen)


def write_drawing(path, gen):
    from PIL import Image
    pixels = (torch.rand(105, 105, generator=gen) < 0.9).to(torch.uint8) * 255  # white paper, dark ink
    Image.fromarray(pixels.numpy(), mode="L").convert("1").save(path)


@pytest.fixture
def decodes(monkeypatch):
    """How often Omniglot is decoded from its PNGs (rather than read from a cache)."""
    return count_calls(monkeypatch, omniglot_module, "_decode")


def test_omniglot_is_decoded_once_then_read_from_the_cache(tmp_path, fresh_cache, decodes):
    write_omniglot(tmp_path)
    images, names = omniglot_module.load_omniglot(str(tmp_path))
    assert images.shape == (2, 20, 28, 28) and names == ["Alpha/character01", "Alpha/character02"]
    cache.clear_memo()
    again, names_again = omniglot_module.load_omniglot(str(tmp_path))
    assert torch.equal(again, images) and names_again == names and len(decodes) == 1
    omniglot_module.load_omniglot(str(tmp_path), background=False)
    omniglot_module.load_omniglot(str(tmp_path), size=20)
    assert len(decodes) == 3, "the other folder and another size are other entries"


@pytest.mark.parametrize("change", ["rewrite a drawing", "add a character", "rename a character"])
def test_a_changed_omniglot_folder_is_decoded_again(tmp_path, fresh_cache, decodes, change):
    write_omniglot(tmp_path)
    before, before_names = omniglot_module.load_omniglot(str(tmp_path))
    character = tmp_path / "omniglot-py" / "images_background" / "Alpha" / "character02"
    if change == "rewrite a drawing":
        write_drawing(character / "0002_05.png", torch.Generator().manual_seed(99))
    elif change == "add a character":
        write_omniglot(tmp_path, characters=3)
    else:
        character.rename(character.with_name("character09"))
    images, names = omniglot_module.load_omniglot(str(tmp_path))
    assert len(decodes) == 2
    fresh, fresh_names = omniglot_module._decode(str(tmp_path), True, 28)
    assert fresh_names != before_names or not torch.equal(fresh, before), "the change shows in the images"
    assert torch.equal(images, fresh) and names == fresh_names


def test_a_drawing_gone_missing_is_reported_not_served_from_the_cache(tmp_path, fresh_cache):
    write_omniglot(tmp_path)
    omniglot_module.load_omniglot(str(tmp_path))
    (tmp_path / "omniglot-py" / "images_background" / "Alpha" / "character01" / "0001_03.png").unlink()
    with pytest.raises(DataError, match="has 19 drawings"):
        omniglot_module.load_omniglot(str(tmp_path))


def decode_by_hand(path, size=28):
    """An independent decoding of one drawing: grey, Lanczos-resized, inverted (ink = 255)."""
    from PIL import Image
    with Image.open(path) as im:
        small = im.convert("L").resize((size, size), Image.LANCZOS)
        return 255 - torch.tensor(list(small.getdata()), dtype=torch.uint8).view(size, size)


@pytest.mark.skipif(not HAVE_OMNIGLOT, reason="real Omniglot not found (METAGREEDY_TEST_DATA or ./data)")
def test_real_omniglot_loads_sorted_and_its_cache_is_bit_identical(fresh_cache, decodes):
    images, names = omniglot_module.load_omniglot(SHARED, background=False)
    assert images.shape == (659, 20, 28, 28) and len(decodes) == 1
    assert names == sorted(names) and names[0].startswith("Angelic/")
    assert images.float().mean() < 60  # mostly background (0), ink = 255
    folder = os.path.join(SHARED, "omniglot-py", "images_evaluation")
    for c in (0, 658):
        files = sorted(os.listdir(os.path.join(folder, names[c])))
        want = torch.stack([decode_by_hand(os.path.join(folder, names[c], f)) for f in files])
        assert torch.equal(images[c], want)
    cache.clear_memo()
    cached_images, cached_names = omniglot_module.load_omniglot(SHARED, background=False)
    assert len(decodes) == 1 and torch.equal(cached_images, images) and cached_names == names


def test_preprocess_is_the_loaders_transform_bit_for_bit(tmp_path):
    """A drawing preprocessed on its own equals that drawing in an episode (no dataset needed: a
    small folder of PNGs in Omniglot's layout)."""
    from PIL import Image

    from metagreedy.data.omniglot import load_omniglot, preprocess
    gen = keyed_generator(9)
    paths = []
    for part in ("background", "evaluation"):
        char = tmp_path / "omniglot-py" / f"images_{part}" / "Alpha" / "character01"
        char.mkdir(parents=True)
        for d in range(20):
            pixels = (torch.rand(105, 105, generator=gen) > 0.3).to(torch.uint8) * 255
            path = char / f"0001_{d + 1:02d}.png"
            Image.fromarray(pixels.numpy(), mode="L").save(path)
            paths.append(path)
    images, _ = load_omniglot(str(tmp_path), background=True)
    episode = FewShotTasks(images, ways=1, shots=1, queries=19, seed=0)[0]
    by_drawing = {tuple(x.flatten().tolist()): x for x in torch.cat([episode.support_x, episode.query_x])}
    for path in paths[:20]:
        x = preprocess(str(path))
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert tuple(x.flatten().tolist()) in by_drawing  # the very tensor of an episode
    with Image.open(paths[0]) as im:
        assert torch.equal(preprocess(im), preprocess(str(paths[0])))


@pytest.mark.parametrize("missing", ["torchvision", "PIL"])
def test_reading_the_real_data_without_its_packages_names_the_extra(monkeypatch, tmp_path, missing):
    """The library needs neither torchvision nor Pillow; reading the real datasets does, and says
    which extra brings them (not a bare ImportError from inside a loader)."""
    import sys
    from metagreedy.data import omniglot
    for name in [m for m in sys.modules if m.split(".")[0] == missing] + [missing, f"{missing}.Image"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'metagreedy\[data\]'"):
        if missing == "PIL":
            omniglot.preprocess(str(tmp_path / "drawing.png"))
        else:
            omniglot._torchvision_omniglot()
