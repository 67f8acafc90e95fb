"""Greedy, T1-T2 and FO streamed from the researcher's own loop (metagreedy.stream and the higher
and learn2learn integrations), against ``mg.hypergradient`` on the registry's agreement problems."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metagreedy as mg
from metagreedy.estimators import takes_step
from metagreedy.integrations import higher as mgh
from metagreedy.integrations import learn2learn as mgl
from problems import PROBLEMS, flat

higher = pytest.importorskip("higher")
l2l = pytest.importorskip("learn2learn")

STEPS = [1, 5, 20]
METHODS = [("greedy", {"gamma": 0.9}), ("t1t2", {}), ("fo", {})]
LR, MOMENTUM = 0.1, 0.9


def make(name: str, seed: int):
    """The registry's problem ``name``; the mini-batch one with a batch for each of T = 20 steps."""
    gen = torch.Generator().manual_seed(seed)
    return PROBLEMS[name](gen, steps=max(STEPS)) if name == "minibatch" else PROBLEMS[name](gen)


def tmap(f, *trees):
    """f over the leaves of tensors, lists/tuples or dicts of the same structure."""
    first = trees[0]
    if isinstance(first, dict):
        return {k: f(*(t[k] for t in trees)) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(f(*xs) for xs in zip(*trees))
    return f(*trees)


def leaves_of(tree):
    return list(tree.values()) if isinstance(tree, dict) else list(tree) if isinstance(tree, (list, tuple)) else [tree]


def at_step(loss):
    """``loss(w, alpha, t)`` whether the problem's train loss takes the step or not."""
    return loss if takes_step(loss) else (lambda w, a, t: loss(w, a))


def reference(problem, T, method, options, momentum=MOMENTUM, **kwargs):
    tl, vl, params, hparams = problem
    return mg.hypergradient(tl, vl, params, hparams, steps=T, lr=LR, momentum=momentum, method=method,
                            **options, **kwargs)


def assert_agrees(got, want):
    torch.testing.assert_close(flat(got), flat(want), rtol=1e-10, atol=1e-10)


# ---- a plain PyTorch loop: momentum SGD written by hand ----------------------------------------------

def plain_loop(problem, T, method, options):
    train_loss, val_loss, params, hparams = problem
    train_loss = at_step(train_loss)
    hg = mg.stream(hparams, lambda w: val_loss(w, hparams), method=method, **options)  # + 1 line
    w = hg.start(params)  # + 1 line (w_0 as leaves)
    buf = tmap(torch.zeros_like, w)
    for t in range(1, T + 1):
        g = torch.autograd.grad(train_loss(w, hparams, t), leaves_of(w), create_graph=True)
        g = type(w)(zip(w, g)) if isinstance(w, dict) else (type(w)(g) if isinstance(w, (list, tuple)) else g[0])
        buf = tmap(lambda b, gi: MOMENTUM * b + gi, buf, g)
        w = tmap(lambda wi, b: wi - LR * b, w, buf)
        w, buf = hg.step(w, buf)  # + 1 line
    return hg


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_a_plain_loop_streams_what_hypergradient_computes(name, method, options, T):
    problem = make(name, 1)
    hg = plain_loop(problem, T, method, options)
    want = reference(problem, T, method, options)
    assert_agrees(hg.grad(), want.grad)
    assert hg.vjps == want.vjps and hg.steps == T
    assert hg.val_loss == pytest.approx(want.val_loss, rel=1e-12)


# ---- higher.innerloop_ctx ------------------------------------------------------------------------------

class AsModule(nn.Module):
    """A functional problem as an ``nn.Module``: w and alpha as its parameters (``w.<key>``,
    ``alpha.<key>`` flattened to ``w_<key>``), ``forward("train", t)`` / ``forward("val")`` the losses."""

    def __init__(self, problem, adapted=True, hyper=True):
        super().__init__()
        self.train_loss, self.val_loss, params, hparams = problem
        self.train_loss = at_step(self.train_loss)
        self.structure = {}
        for prefix, tree, keep in (("w", params, adapted), ("alpha", hparams, hyper)):
            keys = list(tree) if isinstance(tree, dict) else list(range(len(tree)))
            self.structure[prefix] = (type(tree), keys)
            for k in keys:
                if keep:
                    self.register_parameter(f"{prefix}_{k}", nn.Parameter(tree[k].detach().clone()))

    def tree(self, prefix, values=None):
        kind, keys = self.structure[prefix]
        values = values or {k: getattr(self, f"{prefix}_{k}") for k in keys}
        return {k: values[k] for k in keys} if kind is dict else kind(values[k] for k in keys)

    def forward(self, which, t=None, alpha=None):
        w, alpha = self.tree("w"), alpha if alpha is not None else self.tree("alpha")
        return self.train_loss(w, alpha, t) if which == "train" else self.val_loss(w, alpha)


def higher_loop(problem, T, method, options, opt_cls, copy_initial_weights, **settings):
    model = AsModule(problem)
    warp = {n: p for n, p in model.named_parameters() if n.startswith("alpha_")}
    inner_opt = opt_cls([p for n, p in model.named_parameters() if n.startswith("w_")], **settings)
    with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=copy_initial_weights) as (fmodel, diffopt):
        hg = mgh.attach(fmodel, diffopt, warp, lambda: fmodel("val"), method=method, **options)  # + 1 line
        for t in range(1, T + 1):
            diffopt.step(fmodel("train", t))
            hg.step()  # + 1 line
        hg.backward()  # + 1 line
    return hg, warp


@pytest.mark.parametrize("copy_initial_weights", [False, True])
@pytest.mark.parametrize("opt_cls, settings", [(torch.optim.SGD, {"lr": LR, "momentum": MOMENTUM}),
                                               (torch.optim.Adam, {"lr": 0.01})], ids=["sgd", "adam"])
@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_a_higher_loop_streams_what_hypergradient_computes(name, method, options, T, opt_cls, settings,
                                                           copy_initial_weights):
    problem = make(name, 2)
    hg, warp = higher_loop(problem, T, method, options, opt_cls, copy_initial_weights, **settings)
    want = reference(problem, T, method, options, optimizer=mgh.higher_optimizer(opt_cls, **settings))
    got = {n: p.grad for n, p in warp.items()}
    assert_agrees(list(got.values()), want.grad)
    assert_agrees(list(hg.grad().values()), want.grad)
    assert hg.vjps == want.vjps


def test_higher_keeps_the_latest_fast_weights_only_and_cuts_the_optimizer_state():
    problem = make("mlp", 3)
    model = AsModule(problem)
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("w_")], lr=LR, momentum=0.9)
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        fmodel.update_params([p.detach().clone().requires_grad_() for p in fmodel.fast_params])  # higher keeps 2
        hg = mgh.attach(fmodel, diffopt, {n: p for n, p in model.named_parameters() if n.startswith("alpha_")},
                        lambda: fmodel("val"))
        losses = []
        for t in range(1, 6):
            losses.append(fmodel("train", t).item())
            diffopt.step(fmodel("train", t))
            hg.step()
            assert len(fmodel._fast_params) == 1  # higher would otherwise keep t + 1 lists
            assert all(p.grad_fn is None for n, p in zip([n for n, _ in fmodel.named_parameters()], fmodel.fast_params)
                       if n.startswith("w_"))
            assert all(s["momentum_buffer"].grad_fn is None for s in diffopt.state[0].values())
    assert len(set(losses)) == 5  # the steps move the weights the model runs with


def test_higher_refuses_an_optimizer_that_adapts_a_hyperparameter_and_unknown_names():
    problem = make("mlp", 3)
    model = AsModule(problem)
    inner_opt = torch.optim.SGD(model.parameters(), lr=LR)  # the warp layer too
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        warp = {n: p for n, p in model.named_parameters() if n.startswith("alpha_")}
        with pytest.raises(ValueError, match="no parameter of the model"):
            mgh.attach(fmodel, diffopt, {"nope": warp["alpha_0"]}, lambda: fmodel("val"))
        hg = mgh.attach(fmodel, diffopt, warp, lambda: fmodel("val"))
        diffopt.step(fmodel("train", 1))
        with pytest.raises(ValueError, match="changed the hyperparameter 'alpha_0'"):
            hg.step()


# ---- learn2learn: MAML with warp layers outside the learner, GBML with a learned transform ---------------

def maml_loop(problem, T, method, options):
    _, _, _, hparams = problem
    adapted = AsModule(problem, hyper=False)
    learner = l2l.algorithms.MAML(adapted, lr=LR).clone()
    hg = mgl.attach(learner, hparams, lambda: learner("val", alpha=hparams), method=method, **options)  # + 1 line
    for t in range(1, T + 1):
        learner.adapt(learner("train", t, alpha=hparams))
        hg.step()  # + 1 line
    return hg


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("method, options", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_a_learn2learn_maml_loop_streams_what_hypergradient_computes(name, method, options, T):
    problem = make(name, 4)
    hg = maml_loop(problem, T, method, options)
    want = reference(problem, T, method, options, momentum=0.0)  # MAML's step is plain SGD
    assert_agrees(hg.grad(), want.grad)
    assert hg.vjps == want.vjps


def transform_sgd(n_alpha: int) -> mg.Optimizer:
    """GBML's step with a ModuleTransform(nn.Linear) per tensor: w_i - lr (W_i g_i + b_i), the
    transform's (W_i, b_i) being alpha[n_alpha + 2i], alpha[n_alpha + 2i + 1]."""
    def update(g, state, w, alpha):
        wb = alpha[n_alpha:]
        out = tuple(wi - LR * (gi.reshape(1, -1) @ wb[2 * i].T + wb[2 * i + 1]).reshape(gi.shape)
                    for i, (wi, gi) in enumerate(zip(w, g)))
        return out, ()
    return mg.Optimizer(lambda w: (), update, LR)


@pytest.mark.parametrize("T", STEPS)
@pytest.mark.parametrize("method, options", METHODS)
def test_a_learn2learn_gbml_loop_with_a_learned_transform_streams_what_hypergradient_computes(method, options, T):
    train_loss, val_loss, params, hparams = make("mlp", 5)
    adapted = AsModule((train_loss, val_loss, params, hparams), hyper=False)
    gbml = l2l.algorithms.GBML(adapted, l2l.optim.transforms.ModuleTransform(nn.Linear), lr=LR)
    transform = list(gbml.compute_update.parameters())
    alpha = [*hparams, *transform]
    learner = gbml.clone()
    hg = mgl.attach(learner, alpha, lambda: learner("val", alpha=hparams), method=method, **options)
    for t in range(1, T + 1):
        learner.adapt(learner("train", t, alpha=hparams))
        hg.step()
    k = len(hparams)
    want = mg.hypergradient(lambda w, a: train_loss(w, type(hparams)(a[:k])),
                            lambda w, a: val_loss(w, type(hparams)(a[:k])), params, alpha, steps=T,
                            method=method, optimizer=transform_sgd(k), **options)
    assert_agrees(hg.grad(), want.grad)
    assert (flat(hg.grad()[k:]).abs().max() > 0) == (method != "fo")  # the transform is learned (not by FO)


def test_learn2learn_refuses_first_order_and_alpha_inside_the_learner():
    problem = make("mlp", 6)
    hparams = problem[3]
    first_order = l2l.algorithms.MAML(AsModule(problem, hyper=False), lr=LR, first_order=True).clone()
    with pytest.raises(ValueError, match="first_order=True"):
        mgl.attach(first_order, hparams, lambda: first_order("val", alpha=hparams))
    mgl.attach(first_order, hparams, lambda: first_order("val", alpha=hparams), method="fo")  # fo needs no graph
    inside = AsModule(problem)
    with pytest.raises(ValueError, match="among the learner's adapted parameters"):
        mgl.attach(inside, [inside.alpha_0], lambda: inside("val"))


# ---- the stream itself ------------------------------------------------------------------------------------

def test_the_stream_refuses_what_it_cannot_do():
    problem = make("quadratic", 7)
    _, val_loss, params, hparams = problem
    with pytest.raises(ValueError, match="cannot be streamed"):
        mg.stream(hparams, lambda w: val_loss(w, hparams), method="full")
    with pytest.raises(TypeError, match="takes no gamma"):
        mg.stream(hparams, lambda w: val_loss(w, hparams), method="t1t2", gamma=0.5)
    with pytest.raises(ValueError, match="gamma"):
        mg.stream(hparams, lambda w: val_loss(w, hparams), gamma=1.5)
    with pytest.raises(ValueError, match="must require grad"):
        mg.stream([h.detach() for h in hparams], lambda w: val_loss(w, hparams))
    with pytest.raises(ValueError, match="unknown method 'GREEDY'"):
        mg.stream(hparams, lambda w: val_loss(w, hparams), method="GREEDY")
    with pytest.raises(ValueError, match="same tensor twice"):
        mg.stream([hparams[0], hparams[0]], lambda w: val_loss(w, hparams))
    hg = mg.stream(hparams, lambda w: val_loss(w, hparams))
    with pytest.raises(RuntimeError, match="before any step"):
        hg.grad()
    hg = plain_loop(problem, 1, "greedy", {"gamma": 0.9})
    hg.grad()
    with pytest.raises(RuntimeError, match="already taken"):
        hg.step(params)


def test_backward_accumulates_into_grad_as_loss_backward_does():
    problem = make("weighted_logreg", 8)
    hparams = problem[3]
    first = plain_loop(problem, 3, "greedy", {"gamma": 0.9})
    first.backward(scale=0.5)
    second = plain_loop(problem, 3, "greedy", {"gamma": 0.9})
    second.backward(scale=0.5)
    torch.testing.assert_close(hparams["weights"].grad, first.grad()["weights"], rtol=1e-12, atol=1e-12)


def test_a_nonfinite_validation_loss_is_refused():
    hparams = [torch.ones(2, requires_grad=True)]
    hg = mg.stream(hparams, lambda w: (w[0] * float("nan")).sum())
    w = hg.start([torch.zeros(2)])
    hg.step([w[0] - 0.1 * hparams[0]])
    with pytest.raises(mg.NonFiniteLoss):
        hg.grad()


def test_cross_entropy_module_loop_matches_on_a_warp_network():
    """A small warp network (conv, warp conv, head) in a higher loop: the stream against
    ``mg.hypergradient`` through ``higher_forward`` on the same module (float64)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 6 * 6, 2))
    xs, ys, xq, yq = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 0, 1]), torch.randn(6, 1, 6, 6), torch.arange(6) % 2
    warp = {n: p for n, p in model.named_parameters() if n.startswith("2.")}
    w0 = {n: p.detach().clone() for n, p in model.named_parameters() if n not in warp}
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n not in warp], lr=LR, momentum=MOMENTUM)
    with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
        hg = mgh.attach(fmodel, diffopt, warp, lambda: F.cross_entropy(fmodel(xq), yq), gamma=0.9)
        for _ in range(4):
            diffopt.step(F.cross_entropy(fmodel(xs), ys))
            hg.step()
    forward = mgh.higher_forward(model)
    alpha = {n: p.detach().clone().requires_grad_() for n, p in warp.items()}
    want = mg.hypergradient(lambda w, a: F.cross_entropy(forward(w, a, xs), ys),
                            lambda w, a: F.cross_entropy(forward(w, a, xq), yq), w0, alpha, steps=4, lr=LR,
                            momentum=MOMENTUM, gamma=0.9)
    assert_agrees(hg.grad(), want.grad)


# ---- mistakes that would give a wrong hypergradient without an error ---------------------------------

def sgd_step(train_loss, w, hparams, t, create_graph=True):
    """One step of plain SGD on a dict or list w."""
    keys = list(w) if isinstance(w, dict) else range(len(w))
    g = torch.autograd.grad(train_loss(w, hparams, t), [w[k] for k in keys], create_graph=create_graph)
    new = {k: w[k] - LR * gk for k, gk in zip(keys, g)}
    return new if isinstance(w, dict) else type(w)(new[k] for k in keys)


@pytest.mark.parametrize("method", ["greedy", "t1t2"])
def test_steps_that_never_reach_alpha_are_refused_not_answered_with_the_direct_term(method):
    train_loss, val_loss, params, hparams = make("mlp", 9)
    train_loss = at_step(train_loss)
    hg = mg.stream(hparams, lambda w: val_loss(w, hparams), method=method)
    w = hg.start(params)
    with torch.no_grad():  # a step taken without autograd
        with pytest.raises(ValueError, match="carry no graph"):
            hg.step({k: x - 0.1 for k, x in w.items()} if isinstance(w, dict) else type(w)(x - 0.1 for x in w))
    for t in (1, 2):  # create_graph forgotten: the steps reach w_{t-1}, never alpha
        w = hg.step(sgd_step(train_loss, w, hparams, t, create_graph=False))
    with pytest.raises(ValueError, match="no inner step carried a graph to hparams"):
        hg.grad()
    copies = [h.detach().clone().requires_grad_() for h in hparams]  # not the tensors the loop uses
    hg = mg.stream(copies, lambda w: val_loss(w, copies), method=method)
    w = hg.start(params)
    for t in (1, 2):
        w = hg.step(sgd_step(train_loss, w, hparams, t))
    with pytest.raises(ValueError, match="no inner step carried a graph to hparams"):
        hg.grad()
    with pytest.raises(ValueError, match="no inner step carried a graph"):  # and it stays refused
        hg.backward()
    assert all(c.grad is None for c in copies)
    # learn2learn: a first-order adapt on a learner cloned to second order
    learner = l2l.algorithms.MAML(AsModule((train_loss, val_loss, params, hparams), hyper=False), lr=LR).clone()
    hg = mgl.attach(learner, hparams, lambda: learner("val", alpha=hparams), method=method)
    for t in (1, 2):
        learner.adapt(learner("train", t, alpha=hparams), first_order=True)
        hg.step()
    with pytest.raises(ValueError, match="no inner step carried a graph"):
        hg.grad()
    # learn2learn: alpha inside the learner, given as the parameters before the clone
    maml = l2l.algorithms.MAML(AsModule((train_loss, val_loss, params, hparams)), lr=LR)
    learner = maml.clone()
    before = [p for n, p in maml.module.named_parameters() if n.startswith("alpha_")]
    hg = mgl.attach(learner, before, lambda: learner("val"), method=method)
    learner.adapt(learner("train", 1))
    hg.step()
    with pytest.raises(ValueError, match="no inner step carried a graph"):
        hg.grad()


def test_a_step_whose_val_loss_raises_changes_nothing_and_can_be_taken_again():
    problem = make("mlp", 10)
    train_loss, val_loss, params, hparams = problem
    train_loss = at_step(train_loss)
    fail = {"at": None}

    def flaky(w):
        if fail.pop("at", None):
            raise KeyError("a batch went missing")
        return val_loss(w, hparams)

    hg = mg.stream(hparams, flaky)
    fail["at"] = True  # the first step's val_loss raises
    w = hg.start(params)
    with pytest.raises(KeyError):
        hg.step(sgd_step(train_loss, w, hparams, 1))
    with pytest.raises(RuntimeError, match="before any step"):
        hg.grad()
    for t in (1, 2, 3):
        nxt = sgd_step(train_loss, w, hparams, t)
        if t == 3:
            fail["at"] = True
            with pytest.raises(KeyError):
                hg.step(nxt)
            assert hg.steps == 2
        w = hg.step(nxt)  # taken again
    want = reference(problem, 3, "greedy", {"gamma": 0.9}, momentum=0.0)
    assert hg.steps == 3 and hg.vjps == want.vjps
    assert_agrees(hg.grad(), want.grad)


def test_a_higher_step_whose_val_loss_raises_leaves_the_model_as_it_was():
    problem = make("mlp", 11)
    model = AsModule(problem)
    warp = {n: p for n, p in model.named_parameters() if n.startswith("alpha_")}
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("w_")], lr=LR,
                                momentum=MOMENTUM)
    fail = {}
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        def val():
            if fail.pop("now", None):
                raise KeyError("a batch went missing")
            return fmodel("val")
        hg = mgh.attach(fmodel, diffopt, warp, val)
        for t in (1, 2, 3):
            diffopt.step(fmodel("train", t))
            fail["now"] = t == 2
            if t == 2:
                with pytest.raises(KeyError):
                    hg.step()
            hg.step()
    want = reference(problem, 3, "greedy", {"gamma": 0.9}, optimizer=mgh.higher_optimizer(
        torch.optim.SGD, lr=LR, momentum=MOMENTUM))
    assert hg.steps == 3
    assert_agrees(list(hg.grad().values()), want.grad)


def test_a_second_step_call_for_one_inner_step_and_a_second_attach_are_refused():
    problem = make("mlp", 12)
    train_loss, val_loss, params, hparams = problem
    hg = mg.stream(hparams, lambda w: val_loss(w, hparams))
    w = hg.start(params)
    with pytest.raises(RuntimeError, match="take the inner step first"):  # no step taken yet
        hg.step(w)
    w = hg.step(sgd_step(at_step(train_loss), w, hparams, 1))
    with pytest.raises(RuntimeError, match="once per inner step"):
        hg.step(w)
    model = AsModule(problem)
    warp = {n: p for n, p in model.named_parameters() if n.startswith("alpha_")}
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("w_")], lr=LR)
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        first = mgh.attach(fmodel, diffopt, warp, lambda: fmodel("val"))
        diffopt.step(fmodel("train", 1))
        first.step()
        with pytest.raises(RuntimeError, match="take the inner step first"):
            first.step()
        second = mgh.attach(fmodel, diffopt, warp, lambda: fmodel("val"))
        diffopt.step(fmodel("train", 2))
        with pytest.raises(RuntimeError, match="replaced by a later attach"):
            first.step()
        second.step()
        assert second.steps == 1
    learner = l2l.algorithms.MAML(AsModule(problem, hyper=False), lr=LR).clone()
    first = mgl.attach(learner, hparams, lambda: learner("val", alpha=hparams))
    mgl.attach(learner, hparams, lambda: learner("val", alpha=hparams))
    learner.adapt(learner("train", 1, alpha=hparams))
    with pytest.raises(RuntimeError, match="replaced by a later attach"):
        first.step()


def test_a_step_that_forgets_the_optimizer_state_is_named_under_greedy():
    train_loss, val_loss, params, hparams = make("mlp", 13)
    train_loss = at_step(train_loss)
    hg = mg.stream(hparams, lambda w: val_loss(w, hparams))
    w = hg.start(params)
    buf = [torch.zeros_like(x) for x in w]
    with pytest.raises(RuntimeError, match="pass the optimizer's state to step"):
        for t in (1, 2, 3):
            g = torch.autograd.grad(train_loss(w, hparams, t), list(w), create_graph=True)
            buf = [MOMENTUM * b + gi for b, gi in zip(buf, g)]
            w = hg.step(type(w)(wi - LR * b for wi, b in zip(w, buf)))  # the state not passed, not cut


def test_backward_is_loss_backward_once_through_non_leaf_hyperparameters_with_a_checked_scale():
    train_loss, val_loss, params, hparams = make("mlp", 14)
    train_loss = at_step(train_loss)
    raw = [h.detach().clone().requires_grad_() for h in hparams]
    alpha = type(hparams)(2 * r for r in raw)  # alpha = f(raw): the outer optimizer holds raw
    hg = mg.stream(alpha, lambda w: val_loss(w, alpha))
    w = hg.start(params)
    for t in (1, 2):
        w = hg.step(sgd_step(train_loss, w, alpha, t))
    for bad, error in ((float("nan"), ValueError), (None, TypeError), (torch.tensor(1.0), TypeError)):
        with pytest.raises(error, match="scale"):
            hg.backward(bad)
    assert all(r.grad is None for r in raw)
    hg.backward(0.5)
    for r, g in zip(raw, hg.grad()):
        torch.testing.assert_close(r.grad, 2 * 0.5 * g, rtol=1e-12, atol=1e-12)  # d alpha / d raw = 2
    with pytest.raises(RuntimeError, match="backward\\(\\) twice"):
        hg.backward()


def test_higher_refuses_hyperparameters_that_are_not_the_models_own_tensors():
    problem = make("mlp", 15)
    model = AsModule(problem)
    warp = {n: p for n, p in model.named_parameters() if n.startswith("alpha_")}
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("w_")], lr=LR)
    for copy_initial_weights in (False, True):
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=copy_initial_weights) as (fmodel, diffopt):
            copies = {n: (p.detach() + 1).requires_grad_() for n, p in warp.items()}
            with pytest.raises(ValueError, match="is not the model's parameter"):
                mgh.attach(fmodel, diffopt, copies, lambda: fmodel("val"))
            with pytest.raises(ValueError, match="does not require grad"):
                mgh.attach(fmodel, diffopt, {n: p.detach() for n, p in warp.items()}, lambda: fmodel("val"))
            mgh.attach(fmodel, diffopt, warp, lambda: fmodel("val"))  # the model's own


def test_learn2learn_refuses_a_learner_that_is_not_a_clone_and_leaves_it_untouched():
    problem = make("mlp", 16)
    hparams = problem[3]
    maml = l2l.algorithms.MAML(AsModule(problem, hyper=False), lr=LR)
    before = dict(maml.module.named_parameters())
    with pytest.raises(ValueError, match="not a clone"):
        mgl.attach(maml, hparams, lambda: maml("val", alpha=hparams))
    assert all(p is before[n] and isinstance(p, nn.Parameter) for n, p in maml.module.named_parameters())
