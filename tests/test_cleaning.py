"""Hyper-cleaning in miniature: greedy hypergradients find planted noisy labels."""
import pytest
import torch
import torch.nn.functional as F

import metagreedy as mg
from metagreedy.data.cleaning import corrupt
from metagreedy.rng import keyed_generator


def test_greedy_outer_steps_down_weight_corrupted_examples():
    gen = keyed_generator(0)
    k, d, n = 4, 5, 200
    centres = 3 * torch.randn(k, d, generator=gen)
    y = torch.randint(k, (n,), generator=gen)
    x = centres[y] + torch.randn(n, d, generator=gen)
    yv = torch.randint(k, (400,), generator=gen)
    xv = centres[yv] + torch.randn(400, d, generator=gen)
    noisy, corrupted = corrupt(y, 0.3, k, gen)

    def train_loss(w, a):
        return (torch.sigmoid(a["alpha"]) * F.cross_entropy(x @ w["W"] + w["b"], noisy, reduction="none")).mean()

    def val_loss(w, a):
        return F.cross_entropy(xv @ w["W"] + w["b"], yv)

    w0 = {"W": torch.zeros(d, k), "b": torch.zeros(k)}
    alpha = torch.zeros(n, requires_grad=True)
    outer = torch.optim.Adam([alpha], lr=0.1)
    for _ in range(15):
        res = mg.hypergradient(train_loss, val_loss, w0, {"alpha": alpha}, steps=20, lr=0.5, momentum=0.9,
                               method="greedy", gamma=0.9)
        alpha.grad = res.grad["alpha"]
        outer.step()
    weights = torch.sigmoid(alpha.detach())
    assert weights[corrupted].mean() < weights[~corrupted].mean() - 0.1
    flagged = weights < 0.5
    assert (flagged & corrupted).sum() > 0.6 * corrupted.sum()  # recall
    assert (flagged & corrupted).sum() > 0.6 * flagged.sum()  # precision


def hyper_cleaning_task(monkeypatch, **flags):
    """The hyper-cleaning task on random 28x28 images (no dataset needed), in float64."""
    import tasks
    from harness import config
    from metagreedy.data.cleaning import CleaningData
    hc = tasks.load("hyper_cleaning")
    gen = keyed_generator(3)
    x, xv = torch.rand(20, 1, 28, 28, generator=gen), torch.rand(30, 1, 28, 28, generator=gen)
    y, yv = torch.randint(10, (20,), generator=gen), torch.randint(10, (30,), generator=gen)
    data = CleaningData(x, y, y, torch.zeros(20, dtype=torch.bool), xv, yv, xv, yv)
    monkeypatch.setattr(hc, "make_cleaning_data", lambda *a, **k: data)
    args = ["--task", "hyper_cleaning", "--n-train", "20", "--inner-steps", "4"]
    for key, value in flags.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return hc.Task(config.resolve(args), torch.device("cpu"), torch.float64)


def test_step_val_batch_of_the_whole_validation_set_is_plain_greedy(monkeypatch):
    plain, every, some = (hyper_cleaning_task(monkeypatch, **f).hypergradient(0, [0])[0]["alpha"]
                          for f in ({}, {"step_val_batch": 30}, {"step_val_batch": 5}))
    torch.testing.assert_close(every, plain, rtol=1e-10, atol=1e-13)
    assert (some - plain).norm() > 1e-3 * plain.norm()
    again = hyper_cleaning_task(monkeypatch, step_val_batch=5).hypergradient(0, [0])[0]["alpha"]
    assert torch.equal(again, some)  # the mini-batches are a function of (seed, outer step, t)


@pytest.mark.parametrize("flags,limit", [(["--val-batch", "30"], 30), (["--protocol", "heldout", "--n-val", "40"], 40),
                                         ([], 10000)])
def test_step_val_batch_larger_than_the_validation_set_is_refused_before_any_data(flags, limit):
    import tasks
    from harness import config
    from harness.config import UsageError
    cfg = config.resolve(["--task", "hyper_cleaning", *flags, "--step-val-batch", str(limit + 1)])
    with pytest.raises(UsageError, match=f"at most the {limit} validation examples"):
        tasks.load("hyper_cleaning").check(cfg)
    tasks.load("hyper_cleaning").check(config.resolve(["--task", "hyper_cleaning", *flags, "--step-val-batch",
                                                       str(limit)]))


def test_fresh_inner_start_restarts_every_outer_step_from_w0_and_evaluates_w_T(monkeypatch):
    fresh = hyper_cleaning_task(monkeypatch, inner_start="fresh")
    online = hyper_cleaning_task(monkeypatch)
    w0 = {k: v.clone() for k, v in fresh.w.items()}
    for task in (fresh, online):  # two outer steps without changing alpha
        for step in range(2):
            task.hypergradient(step, [0])
            task.commit()
    assert all(torch.equal(fresh.w[k], w0[k]) for k in w0)  # fresh: the next outer step starts at w_0
    assert any(not torch.equal(online.w[k], w0[k]) for k in w0)  # continue: it goes on from w_T
    # what fresh evaluates is w_T of an outer step: T steps from w_0 at the current alpha
    res = fresh._estimate(0, "fo")
    trained = fresh.trained()
    for k in w0:
        torch.testing.assert_close(trained[k], res.params[k], rtol=1e-12, atol=1e-14)
    # the second outer step of the online run starts where the first ended, so its hypergradient differs
    again = hyper_cleaning_task(monkeypatch, inner_start="fresh")
    g1 = again.hypergradient(0, [0])[0]["alpha"]
    again.commit()
    torch.testing.assert_close(again.hypergradient(1, [0])[0]["alpha"], g1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["greedy", "ift"])
def test_summed_losses_are_mean_losses_with_the_inner_step_times_the_training_set(monkeypatch, method):
    """The paper's sums: over the 20 training examples a sum takes the mean's steps with 20 times the
    learning rate, and over the 30 validation examples it scales the hypergradient by 30."""
    extra = {"method": method, "terms": 2} if method == "ift" else {}
    summed = hyper_cleaning_task(monkeypatch, loss_reduction="sum", inner_lr=0.01, **extra)
    mean = hyper_cleaning_task(monkeypatch, inner_lr=0.2, **extra)
    (g_sum, m_sum, _), (g_mean, m_mean, _) = summed.hypergradient(0, [0]), mean.hypergradient(0, [0])
    assert (g_sum["alpha"] - 30 * g_mean["alpha"]).norm() <= 1e-10 * g_sum["alpha"].norm()
    assert m_sum["val_loss"] == pytest.approx(30 * m_mean["val_loss"], rel=1e-10)
    assert m_sum["train_loss"] == pytest.approx(20 * m_mean["train_loss"], rel=1e-10)
    for key in summed.trained():  # and the network evaluated is the same
        torch.testing.assert_close(summed.trained()[key], mean.trained()[key], rtol=1e-10, atol=1e-12)


def test_a_summed_validation_mini_batch_stands_for_the_whole_sets_sum(monkeypatch):
    batch = hyper_cleaning_task(monkeypatch, loss_reduction="sum", val_batch=10, step_val_batch=5)
    mean = hyper_cleaning_task(monkeypatch, val_batch=10, step_val_batch=5, inner_lr=2.0)
    g_sum, g_mean = batch.hypergradient(0, [0])[0]["alpha"], mean.hypergradient(0, [0])[0]["alpha"]
    assert (g_sum - 30 * g_mean).norm() <= 1e-10 * g_sum.norm()  # 30 examples in the validation set


@pytest.mark.parametrize("model", ["other", "any"])
def test_the_noise_model_reaches_the_data(monkeypatch, model):
    import tasks
    from harness import config
    hc = tasks.load("hyper_cleaning")
    asked = {}

    class Asked(Exception):
        pass

    def make_cleaning_data(*args, **kwargs):
        asked.update(kwargs)
        raise Asked
    monkeypatch.setattr(hc, "make_cleaning_data", make_cleaning_data)
    with pytest.raises(Asked):
        cfg = config.resolve(["--task", "hyper_cleaning", "--noise-model", model])
        hc.Task(cfg, torch.device("cpu"), torch.float64)
    assert asked["noise_model"] == model and asked["noise"] == 0.3
