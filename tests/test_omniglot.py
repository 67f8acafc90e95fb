"""The Omniglot experiment's model and inner loop: the higher path equals mg.hypergradient, the
learned initialisation gets the exact (MAML-style) gradient, and learn2learn task sets plug in; the
settings of the paper's open questions (a fresh start per task, summed losses, inductive evaluation)."""
import pytest
import torch
import torch.nn.functional as F

import metagreedy as mg
from harness import config
from metagreedy import nn as mgnn
from metagreedy.data import from_learn2learn, get_tasksets
from metagreedy.models import WarpConvNet

import tasks

OPTIONS = {"greedy": {"gamma": 0.9}, "ift": {"terms": 2}, "truncated": {"k": 2}, "full": {}, "t1t2": {}, "fo": {}}


def make_task(tasksets, **overrides):
    args = ["--task", "omniglot", "--ways", "3", "--shots", "1", "--queries", "2", "--inner-steps", "3"]
    for key, value in overrides.items():
        args.append(f"--{key.replace('_', '-')}={value}")
    cfg = config.resolve(args)
    return tasks.load("omniglot").Task(cfg, torch.device("cpu"), torch.float64, tasksets=tasksets)


@pytest.fixture(scope="module")
def small_tasksets():
    return get_tasksets("synthetic", 3, 1, 2, synthetic_classes=(20, 10))


def test_warp_layers_are_2_4_6(small_tasksets):
    task = make_task(small_tasksets)
    assert sorted(task.hparams) == ["warp2.0.weight", "warp4.0.weight", "warp6.0.weight"]
    assert sorted(task.w0) == ["head.bias", "head.weight", "task1.0.weight", "task3.0.weight", "task5.0.weight"]
    convs = [m for m in task.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6 and all(c.out_channels == 32 for c in convs)


@pytest.mark.parametrize("method", ["greedy", "full", "t1t2", "ift", "fo", "truncated"])
@pytest.mark.parametrize("init", ["fixed", "learned", "fresh"])
def test_higher_estimates_equal_functional_ones_in_float64(small_tasksets, method, init):
    """The inner loop through higher's functional model and differentiable SGD gives the same
    hypergradient as torch.func.functional_call with metagreedy's SGD, to 1e-10."""
    episode = small_tasksets[0][4]
    a, _ = make_task(small_tasksets, loop="higher", init=init, method=method,
                     **OPTIONS[method]).adapt_and_estimate(episode, index=4)
    b, _ = make_task(small_tasksets, loop="func", init=init, method=method,
                     **OPTIONS[method]).adapt_and_estimate(episode, index=4)
    assert a.grad.keys() == b.grad.keys()
    for name in a.grad:
        torch.testing.assert_close(a.grad[name], b.grad[name], rtol=1e-10, atol=1e-12)


def test_full_equals_higher_innerloop_ctx_on_the_warp_net(small_tasksets):
    """Learned init + warp layers: our full hypergradient equals the textbook higher unroll's gradient
    with respect to the warp layers and the initial adapted weights."""
    task = make_task(small_tasksets, init="learned", method="full")
    episode = small_tasksets[0][0]
    res, _ = task.adapt_and_estimate(episode)
    model = WarpConvNet(3).double().to(memory_format=task.format)
    model.load_state_dict({**{n: w for n, w in task.w0.items()},
                           **{n: a.detach() for n, a in task.hparams.items() if not n.startswith("init.")}})
    xs, ys, xq, yq = [t.double().contiguous(memory_format=task.format) if t.is_floating_point() else t
                      for t in episode]
    import higher
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if n in task.w0], lr=0.1, momentum=0.9)
    with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
        for _ in range(3):
            diffopt.step(F.cross_entropy(fmodel(xs), ys))
        grads = dict(zip([n for n, _ in model.named_parameters()],
                         torch.autograd.grad(F.cross_entropy(fmodel(xq), yq), list(model.parameters()))))
    for name, value in res.grad.items():
        torch.testing.assert_close(value, grads[name.removeprefix("init.")], rtol=1e-10, atol=1e-12)


def test_learn2learn_taskset_drives_the_loop():
    l2l = pytest.importorskip("learn2learn", reason="learn2learn not installed (scripts/install_learn2learn.sh)")
    from metagreedy.data import synthetic_alphabet
    images = synthetic_alphabet(12)
    x = images.reshape(-1, 1, 28, 28).float() / 255
    y = torch.arange(12).repeat_interleave(20)
    dataset = l2l.data.MetaDataset(torch.utils.data.TensorDataset(x, y))
    transforms = [l2l.data.transforms.NWays(dataset, 3), l2l.data.transforms.KShots(dataset, 3),
                  l2l.data.transforms.LoadData(dataset), l2l.data.transforms.RemapLabels(dataset)]
    taskset = l2l.data.TaskDataset(dataset, task_transforms=transforms, num_tasks=20)
    wrapped = from_learn2learn(taskset, shots=1)
    episode = wrapped[0]
    assert episode.support_x.shape == (3, 1, 28, 28) and episode.query_x.shape == (6, 1, 28, 28)
    assert sorted(episode.support_y.tolist()) == [0, 1, 2]
    task = make_task((wrapped, wrapped, wrapped), meta_batch=2, eval_tasks=4)
    grads, metrics, count = task.hypergradient(0, [0, 1])
    assert count == 2 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    assert 0 <= task.evaluate(0)["meta_val_acc"] <= 1


@pytest.mark.parametrize("method", ["greedy", "full", "t1t2", "ift", "fo", "truncated"])
@pytest.mark.parametrize("init,reduction", [("fixed", "mean"), ("learned", "mean"), ("fresh", "mean"),
                                            ("fixed", "sum"), ("fresh", "sum")])
def test_batched_meta_batch_equals_the_higher_loop(small_tasksets, method, init, reduction):
    """vmap over the meta-batch gives the mean of the per-task (higher-driven) hypergradients, with
    every start of the adapted layers and both loss reductions."""
    reference = make_task(small_tasksets, loop="higher", init=init, method=method, meta_batch=3,
                          loss_reduction=reduction, memory_format="contiguous", **OPTIONS[method])  # as batched
    batched = make_task(small_tasksets, loop="batched", init=init, method=method, meta_batch=3,
                        loss_reduction=reduction, **OPTIONS[method])
    g_ref, m_ref, n_ref = reference.hypergradient(1, [0, 1, 2])
    g_bat, m_bat, n_bat = batched.hypergradient(1, [0, 1, 2])
    assert n_ref == n_bat == 3
    scale = 6 if reduction == "sum" else 1  # a sum over the 6 queries scales the hypergradient, and its round-off
    for name in g_ref:
        torch.testing.assert_close(g_bat[name], g_ref[name], rtol=1e-10, atol=1e-12 * scale)
    for key in ("val_loss", "train_loss", "train_query_acc"):
        assert m_bat[key] == pytest.approx(m_ref[key], rel=1e-10)


# ---- a query mini-batch per inner step (--step-val-batch) ---------------------------------------------

def test_step_queries_are_class_balanced_and_cycle(small_tasksets):
    task = make_task(small_tasksets, step_val_batch=3, queries=4)  # 1 query of each of 3 classes per step
    yq = torch.tensor([2, 0, 1, 1, 0, 2, 0, 2, 1, 1, 2, 0])  # any order, 4 of each class
    seen = []
    for t in range(1, 5):
        idx = task.step_queries(yq, t)
        assert sorted(yq[idx].tolist()) == [0, 1, 2]
        seen += idx.tolist()
    assert sorted(seen) == list(range(12))  # four steps use every query once
    assert torch.equal(task.step_queries(yq, 5), task.step_queries(yq, 1))
    stacked = torch.stack([yq, yq.flip(0)])
    assert torch.equal(task.step_queries(stacked, 2)[1], task.step_queries(yq.flip(0), 2))


@pytest.mark.parametrize("batched", [False, True])
def test_step_val_batch_of_every_query_is_plain_greedy(small_tasksets, batched):
    plain = make_task(small_tasksets, loop="batched" if batched else "higher", meta_batch=2)
    every = make_task(small_tasksets, loop="batched" if batched else "higher", meta_batch=2, step_val_batch=6)
    some = make_task(small_tasksets, loop="batched" if batched else "higher", meta_batch=2, step_val_batch=3)
    g_plain, g_every, g_some = (t.hypergradient(0, [0, 1])[0] for t in (plain, every, some))
    for name in g_plain:
        torch.testing.assert_close(g_every[name], g_plain[name], rtol=1e-10, atol=1e-12)
    assert sum((g_some[n] - g_plain[n]).norm() for n in g_plain) > 1e-4 * sum(g.norm() for g in g_plain.values())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_step_val_batch_batched_equals_the_higher_loop(small_tasksets, reduction):
    reference = make_task(small_tasksets, loop="higher", meta_batch=3, step_val_batch=3, memory_format="contiguous",
                          loss_reduction=reduction)
    batched = make_task(small_tasksets, loop="batched", meta_batch=3, step_val_batch=3, loss_reduction=reduction)
    g_ref, g_bat = reference.hypergradient(1, [0, 1, 2])[0], batched.hypergradient(1, [0, 1, 2])[0]
    scale = 6 if reduction == "sum" else 1  # a sum over the 6 queries scales the hypergradient, and its round-off
    for name in g_ref:
        torch.testing.assert_close(g_bat[name], g_ref[name], rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("method", ["greedy", "full", "ift"])
def test_channels_last_gives_the_same_hypergradients(small_tasksets, method):
    """The memory format changes the convolution kernels, not the maths: float64 round-off only."""
    nhwc = make_task(small_tasksets, method=method, memory_format="channels_last", meta_batch=2)
    nchw = make_task(small_tasksets, method=method, memory_format="contiguous", meta_batch=2)
    assert nhwc.w0["task1.0.weight"].is_contiguous(memory_format=torch.channels_last)
    assert not nchw.w0["task3.0.weight"].is_contiguous(memory_format=torch.channels_last)
    g_a, g_b = nhwc.hypergradient(0, [0, 1])[0], nchw.hypergradient(0, [0, 1])[0]
    for name in g_b:
        assert (g_a[name] - g_b[name]).norm() <= 1e-12 * g_b[name].norm(), name


@pytest.mark.parametrize("method", ["greedy", "t1t2", "fo"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_the_higher_loop_with_the_stream_attached_equals_hypergradient_on_higher(small_tasksets, method, dtype, tol):
    """--loop higher runs greedy, T1-T2 and FO as a researcher's own innerloop_ctx loop with the public
    integration attached; it gives what mg.hypergradient gives on higher's functional model and SGD
    (the path it replaced): to 1e-10 in float64, 1e-6 (relative to the largest entry) in float32."""
    task = make_task(small_tasksets, loop="higher", method=method, **OPTIONS[method])
    task = tasks.load("omniglot").Task(task.cfg, torch.device("cpu"), dtype, tasksets=small_tasksets)
    xs, ys, xq, yq = task._episode(small_tasksets[0][3])
    arguments = {"method": method, **OPTIONS[method]}
    assert task.streamed(arguments)
    got = task.higher_loop(task.w0, (xs, ys, xq, yq), F.cross_entropy, arguments)
    train_loss, val_loss = mgnn.losses(task.forward, F.cross_entropy, (xs, ys), (xq, yq))
    want = mg.hypergradient(train_loss, val_loss, task.w0, task.hparams, steps=3, lr=0.1, momentum=0.9, method=method,
                            optimizer=task.optimizer, **OPTIONS[method])
    scale = max(g.abs().max() for g in want.grad.values())
    for name in want.grad:
        torch.testing.assert_close(got.grad[name], want.grad[name], rtol=0, atol=tol * scale)
    for name in want.params:
        torch.testing.assert_close(got.params[name], want.params[name], rtol=tol, atol=tol)
    assert got.vjps == want.vjps and abs(got.val_loss - want.val_loss) <= tol * abs(want.val_loss)


# ---- --init fresh: a fresh start of the adapted layers per task ----------------------------------------

def test_fresh_starts_are_keyed_by_seed_split_and_index_and_drawn_as_the_default_init(small_tasksets):
    task, again = make_task(small_tasksets, init="fresh"), make_task(small_tasksets, init="fresh")
    other_seed = make_task(small_tasksets, init="fresh", seed=1)
    start = task.fresh_start(3, "train", 5)
    assert list(start) == list(task.w0) and all(start[n].shape == task.w0[n].shape for n in start)
    for name, value in start.items():  # the same task starts alike in every task object; nothing else does
        assert torch.equal(value, again.fresh_start(3, "train", 5)[name])
        for different in (task.fresh_start(3, "train", 6), task.fresh_start(3, "validation", 5),
                          task.fresh_start(3, "test", 5), other_seed.fresh_start(3, "train", 5), task.w0):
            assert not torch.equal(value, different[name]), name
    assert all(torch.equal(a, b) for a, b in zip(task._start(5).values(), start.values()))  # training's start
    assert all(torch.equal(a, b) for a, b in zip(task.start_weights(3, "test", 2).values(),
                                                 task.fresh_start(3, "test", 2).values()))  # evaluation's
    with pytest.raises(ValueError, match="keyed by its index"):
        task.adapt_and_estimate(small_tasksets[0][0])
    # torch's default initialisation of the layers: uniform in +-1/sqrt(fan_in), as nn.Conv2d and nn.Linear draw it
    model = WarpConvNet(3)
    for name, value in start.items():
        layer = dict(model.named_parameters())[name]
        fan_in = dict(model.named_parameters())[name.replace("bias", "weight")][0].numel()
        assert value.abs().max() <= fan_in ** -0.5 and layer.abs().max() <= fan_in ** -0.5, name
        if value.numel() > 200:
            assert value.abs().max() > 0.95 * fan_in ** -0.5
            assert value.std().item() == pytest.approx(layer.std().item(), rel=0.15), name


def test_fresh_training_tasks_start_apart_and_evaluation_tasks_from_their_own_keys(small_tasksets, monkeypatch):
    """A training step adapts task i from its own start (step * meta_batch + member); evaluation
    adapts validation task i from the start keyed by ("validation", i)."""
    task = make_task(small_tasksets, init="fresh", meta_batch=2, eval_tasks=3, final_eval_tasks=2)
    grads = task.hypergradient(3, [1])[0]
    res, _ = task.adapt_and_estimate(task.train_tasks[7], index=7)
    for name in grads:
        torch.testing.assert_close(grads[name], res.grad[name], rtol=1e-12, atol=1e-14)
    other, _ = task.adapt_and_estimate(task.train_tasks[7], index=8)  # the same episode from another start
    assert any(not torch.allclose(res.grad[n], other.grad[n]) for n in grads)
    seen = []
    real = task.start_weights
    monkeypatch.setattr(task, "start_weights", lambda ways, split=None, index=None: seen.append((split, index)) or
                        real(ways, split, index))
    task.evaluate(0)
    assert seen == [("validation", i) for i in range(task.cfg.eval_tasks)]
    seen.clear()
    task.final()
    n = task.cfg.final_eval_tasks
    assert seen == [("validation", i) for i in range(n)] + [("test", i) for i in range(n)]


def test_predict_on_an_episode_of_yours_starts_from_the_draw_keyed_by_seed_and_ways(small_tasksets):
    from metagreedy.models import default_init
    from metagreedy.rng import keyed_generator
    omniglot = tasks.load("omniglot")
    task = make_task(small_tasksets, init="fresh")
    for ways in (3, 4):
        start = task.start_weights(ways)
        shapes = {n: (ways, *w.shape[1:]) if n.startswith("head.") else w.shape for n, w in task.w0.items()}
        want = default_init(shapes, keyed_generator(0, omniglot.FRESH, omniglot.OWN_EPISODE, ways))
        assert all(torch.equal(start[n], want[n].double()) for n in want)
    episode = small_tasksets[2][0]
    labels = task.predict(episode.support_x, episode.support_y, episode.query_x)
    w_T = task.adapt(*task._episode(episode[:2]), 3)  # from start_weights(3): the (seed, ways) draw
    with torch.no_grad():
        want = task.forward(w_T, task.warp(), task._episode(episode)[2]).argmax(1)
    assert torch.equal(labels, want)


# ---- --loss-reduction sum: the losses summed over the examples ------------------------------------------

@pytest.mark.parametrize("method,extra", [("greedy", {}), ("full", {}), ("ift", {}), ("greedy", {"step_val_batch": 3})])
@pytest.mark.parametrize("loop", ["higher", "batched"])
def test_summed_losses_are_mean_losses_with_the_inner_step_times_the_support_set(small_tasksets, method, extra, loop):
    """A sum over n support examples is n times their mean, so SGD takes the steps of the mean with
    n times the learning rate; the summed query loss scales the hypergradient by the queries (3 ways
    x 2 queries here). Every estimator sees exactly that (IFT's Neumann step follows the inner lr)."""
    n_support, n_queries = 3, 6
    common = dict(loop=loop, meta_batch=2, method=method, **OPTIONS[method], **extra)
    summed = make_task(small_tasksets, loss_reduction="sum", **common)
    mean = make_task(small_tasksets, inner_lr=0.1 * n_support, **common)
    g_sum, m_sum, _ = summed.hypergradient(1, [0, 1])
    g_mean, m_mean, _ = mean.hypergradient(1, [0, 1])
    for name in g_sum:
        assert (g_sum[name] - n_queries * g_mean[name]).norm() <= 1e-10 * g_sum[name].norm(), name
    assert m_sum["val_loss"] == pytest.approx(n_queries * m_mean["val_loss"], rel=1e-10)
    assert m_sum["train_loss"] == pytest.approx(n_support * m_mean["train_loss"], rel=1e-10)


def test_evaluation_adapts_with_the_runs_loss_reduction(small_tasksets):
    summed, mean = make_task(small_tasksets, loss_reduction="sum"), make_task(small_tasksets, inner_lr=0.3)
    xs, ys, _, _ = summed._episode(small_tasksets[1][0])
    a, b = summed.adapt(xs, ys, 3), mean.adapt(xs, ys, 3)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(a["head.weight"], make_task(small_tasksets).adapt(xs, ys, 3)["head.weight"])


# ---- --eval-queries: how evaluation scores a task's queries ---------------------------------------------

@pytest.mark.parametrize("mode", ["transductive", "inductive"])
def test_periodic_and_final_evaluation_score_the_queries_as_eval_queries_says(small_tasksets, mode, monkeypatch):
    task = make_task(small_tasksets, eval_queries=mode, eval_tasks=3, final_eval_tasks=2)
    want = []
    for i in range(3):
        episode = small_tasksets[1][i]
        labels = task.predict(episode.support_x, episode.support_y, episode.query_x, mode)
        want.append((labels == episode.query_y).double().mean().item())
    assert task.evaluate(0)["meta_val_acc"] == pytest.approx(sum(want) / 3, abs=1e-15)
    seen = []
    real = task._predict
    monkeypatch.setattr(task, "_predict", lambda *args: seen.append(args[3] or task.cfg.eval_queries) or real(*args))
    task.evaluate(0)
    task.final()
    assert seen == [mode] * (3 + 2 + 2)
    inductive = make_task(small_tasksets, eval_queries="inductive")
    episode = small_tasksets[1][0]
    assert torch.equal(inductive.predict(episode.support_x, episode.support_y, episode.query_x),
                       inductive.predict(episode.support_x, episode.support_y, episode.query_x, "inductive"))


# ---- --val-split alphabets: meta-validation held out by alphabet ------------------------------------------

@pytest.mark.parametrize("split", ["classes", "alphabets"])
def test_the_task_holds_out_whole_alphabets_for_meta_validation_when_asked(monkeypatch, split):
    from metagreedy.data import synthetic_alphabet
    from metagreedy.data.fewshot import grouped
    omniglot = tasks.load("omniglot")
    monkeypatch.setattr(omniglot, "load_alphabets", lambda name, root: (synthetic_alphabet(60), synthetic_alphabet(20)))
    cfg = config.resolve(["--task", "omniglot", "--dataset", "synthetic", "--ways", "3", "--val-split", split])
    task = omniglot.Task(cfg, torch.device("cpu"), torch.float64)
    groups = grouped(60)  # the synthetic alphabet's alphabets
    shared = set(groups[task.train_tasks.base].tolist()) & set(groups[task.val_tasks.base].tolist())
    assert bool(shared) == (split == "classes")
    assert sorted(task.train_tasks.base.tolist() + task.val_tasks.base.tolist()) == list(range(60))
    assert len(task.split("validation", ways=4).base) == len(task.val_tasks.base)  # other sizes: the same split
