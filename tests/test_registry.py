"""One agreement suite over the registry: a method is tested the day it is registered.

Every method in ``metagreedy.METHODS`` is checked against what it must equal: an independent
reference built from explicit Jacobians (references.py), on tiny float64 problems, under momentum-free
SGD, momentum SGD and Adam, at 1e-10; one problem (``minibatch``) gives every inner step its own
mini-batch through ``train_loss(w, alpha, t)``. A registered method without a reference fails here."""
import functools

import pytest
import torch

import metagreedy as mg
from problems import PROBLEMS, flat, layer_lrs, learned_lr, minibatch_logreg, mlp, quadratic, weighted_logreg
from references import REFERENCES, Reference

OPTIONS = {"greedy": {"gamma": 0.9}, "ift": {"terms": 3}, "truncated": {"k": 2}}
EXPECTED_VJPS = {"greedy": 5, "t1t2": 1, "ift": 4, "fo": 0, "full": 5, "truncated": 2}
OPTIMIZERS = {  # the inner optimizer, as keywords of both hypergradient and Reference
    "sgd": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0},
    "momentum": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9},
    "adam": {"optimizer": "adam", "lr": 0.05},
}
CASES = {  # method -> the option sets it is checked with at T inner steps
    "greedy": lambda T: [{"gamma": 0.9}, {"gamma": 1.0}, {"gamma": 0.5, "variant": "final"}],
    "t1t2": lambda T: [{}],
    "ift": lambda T: [{"terms": 0}, {"terms": 3}, {"terms": 2, "neumann_lr": 0.3}],
    "fo": lambda T: [{}],
    "full": lambda T: [{}],
    "truncated": lambda T: [{"k": k} for k in sorted({1, max(1, T - 1)})],
}
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
EXACT = {"rtol": 1e-12, "atol": 1e-13}  # identities: equal up to the order of floating-point operations


def run(problem, optimizer, method, T, **options):
    tl, vl, params, hparams = problem
    return mg.hypergradient(tl, vl, params, hparams, steps=T, method=method, **OPTIMIZERS[optimizer], **options)


@functools.lru_cache(maxsize=None)
def reference(name, optimizer) -> Reference:
    """One Reference per problem and optimizer, shared by every method and T: its trajectory and
    Jacobians are computed once (a T=3 run is the start of the T=6 one)."""
    return Reference(PROBLEMS[name](torch.Generator().manual_seed(0)), **OPTIMIZERS[optimizer])


def test_registry_is_complete():
    assert set(mg.METHODS) == set(EXPECTED_VJPS)


def test_every_method_has_a_reference_and_cases():
    missing = sorted(set(mg.METHODS) - set(REFERENCES) | set(mg.METHODS) - set(CASES))
    assert not missing, f"add a reference (tests/references.py) and CASES for {missing}"


# ---- every method against its reference ------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("T", [1, 3, 6])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_method_equals_its_reference(method, optimizer, T, name):
    if method not in REFERENCES or method not in CASES:
        pytest.fail(f"{method!r} is registered but has no reference: add one to tests/references.py and CASES")
    ref = reference(name, optimizer)
    for options in CASES[method](T):
        res = run(ref.problem, optimizer, method, T, **options)
        torch.testing.assert_close(flat(res.grad), REFERENCES[method](ref, T, **options), **TIGHT,
                                   msg=lambda m: f"{method} {options}: {m}")
        torch.testing.assert_close(flat(res.params), ref.w_T(T), **TIGHT)  # the same inner trajectory
        assert res.val_loss == pytest.approx(float(ref.val(ref.w_T(T), ref.a0)), rel=1e-12)


@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_method_with_a_learned_learning_rate_equals_its_reference(method, optimizer):
    """lr is one of hparams: B_t and the unrolled Jacobians include dPhi/dlr."""
    problem = learned_lr(torch.Generator().manual_seed(4))
    tl, vl, params, hparams = problem
    kwargs = {**OPTIMIZERS[optimizer], "lr": hparams[1]}
    ref = Reference(problem, **{**OPTIMIZERS[optimizer], "lr": lambda a: a[1]})
    for options in CASES[method](4):
        options = {"neumann_lr": 0.1, **options} if method == "ift" else options  # no float lr to default to
        res = mg.hypergradient(tl, vl, params, hparams, steps=4, method=method, **kwargs, **options)
        torch.testing.assert_close(flat(res.grad), REFERENCES[method](ref, 4, **options), **TIGHT)


@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_method_with_a_learning_rate_per_tensor_equals_its_reference(method, optimizer):
    """lr gives one learned rate per tensor of params (a learning rate per layer)."""
    problem = layer_lrs(torch.Generator().manual_seed(6))
    tl, vl, params, hparams = problem
    lr = lambda a: (a[2][0].exp(), a[2][1].exp())  # noqa: E731
    ref = Reference(problem, **{**OPTIMIZERS[optimizer], "lr": lr})
    for options in CASES[method](4):
        options = {"neumann_lr": 0.1, **options} if method == "ift" else options
        res = mg.hypergradient(tl, vl, params, hparams, steps=4, method=method, **{**OPTIMIZERS[optimizer], "lr": lr},
                               **options)
        torch.testing.assert_close(flat(res.grad), REFERENCES[method](ref, 4, **options), **TIGHT)


# ---- identities that hold exactly --------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_at_T1_every_unrolled_method_is_exact(name, optimizer):
    """With T=1 every unrolled method is exact: full = greedy (any gamma, both variants) = t1t2 = truncated(1)."""
    problem = PROBLEMS[name](torch.Generator().manual_seed(11))
    want = flat(run(problem, optimizer, "full", 1).grad)
    for method, options in [("greedy", {"gamma": 0.7}), ("greedy", {"gamma": 0.7, "variant": "final"}),
                            ("t1t2", {}), ("truncated", {"k": 1})]:
        torch.testing.assert_close(flat(run(problem, optimizer, method, 1, **options).grad), want, **EXACT)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_truncation_and_decay_limits(name, optimizer):
    """greedy with gamma 0 is t1t2; truncated with k=T is full; truncated with k=1 is t1t2 (both hold
    w_{T-1} and the optimizer state constant and differentiate the last step only)."""
    problem = PROBLEMS[name](torch.Generator().manual_seed(5))
    T = 7
    t1t2 = flat(run(problem, optimizer, "t1t2", T).grad)
    torch.testing.assert_close(flat(run(problem, optimizer, "greedy", T, gamma=0.0).grad), t1t2, **EXACT)
    torch.testing.assert_close(flat(run(problem, optimizer, "truncated", T, k=1).grad), t1t2, **EXACT)
    torch.testing.assert_close(flat(run(problem, optimizer, "truncated", T, k=T).grad),
                               flat(run(problem, optimizer, "full", T).grad), **EXACT)


# ---- what every method returns ---------------------------------------------------------------------------

def structures(gen):
    """The same problem with hparams as a list, a tuple and a dict; and a dict-of-params problem."""
    tl, vl, params, hparams = mlp(gen)
    yield tl, vl, list(params), list(hparams)
    yield tl, vl, tuple(params), tuple(hparams)
    keys = ["warp", "decay"]
    yield (lambda w, a: tl(w, [a[k] for k in keys]), lambda w, a: vl(w, [a[k] for k in keys]),
           params, dict(zip(keys, hparams)))
    yield weighted_logreg(gen)


@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_result_mirrors_structure_and_carries_no_graph(method, optimizer):
    for tl, vl, params, hparams in structures(torch.Generator().manual_seed(0)):
        before = [p.clone() for p in (params.values() if isinstance(params, dict) else params)]
        res = mg.hypergradient(tl, vl, params, hparams, steps=5, lr=0.05, momentum=0.9, method=method,
                               optimizer=optimizer, **OPTIONS.get(method, {}))
        assert type(res.grad) is type(hparams) and type(res.params) is type(params)
        pairs = [(res.grad, hparams), (res.params, params)]
        for out, given in pairs:
            if isinstance(given, dict):
                assert list(out) == list(given)
                out, given = list(out.values()), list(given.values())
            assert len(out) == len(given)
            for o, g in zip(out, given):
                assert o.shape == g.shape and o.dtype == g.dtype
                assert torch.isfinite(o).all()
                assert not o.requires_grad and o.grad_fn is None
        after = params.values() if isinstance(params, dict) else params
        assert all(torch.equal(a, b) for a, b in zip(before, after)), "params (w_0) was modified"
        assert res.vjps == EXPECTED_VJPS[method]
        assert res.method == method
        assert all(getattr(h, "grad", None) is None for h in (hparams.values() if isinstance(hparams, dict) else hparams))


def test_bad_calls_raise_clear_errors():
    problem = quadratic(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unknown method"):
        mg.hypergradient(*problem, steps=3, method="nope")
    with pytest.raises(TypeError, match="takes no option"):
        mg.hypergradient(*problem, steps=3, method="fo", gamma=0.9)
    with pytest.raises(ValueError, match="gamma"):
        mg.hypergradient(*problem, steps=3, method="greedy", gamma=1.5)
    with pytest.raises(ValueError, match="steps"):
        mg.hypergradient(*problem, steps=0, method="full")
    with pytest.raises(ValueError, match="k must be"):
        mg.hypergradient(*problem, steps=3, method="truncated", k=4)
    with pytest.raises(ValueError, match="variant"):
        mg.hypergradient(*problem, steps=3, method="greedy", variant="last")
    with pytest.raises(TypeError, match="floating-point"):
        mg.hypergradient(problem[0], problem[1], [torch.zeros(3, dtype=torch.long)], problem[3], steps=1)


def test_inner_loop_is_the_trajectory_every_method_runs():
    problem = quadratic(torch.Generator().manual_seed(3))
    w_T = mg.inner_loop(problem[0], problem[2], problem[3], steps=7, lr=0.1, momentum=0.9)
    ref = mg.hypergradient(*problem, steps=7, lr=0.1, momentum=0.9, method="fo").params
    torch.testing.assert_close(w_T[0], ref[0], rtol=0, atol=0)


# ---- the step index: step t sees its own batch, the same one everywhere -----------------------------

EXPECTED_STEPS = {  # method -> the t of each train_loss call, in order, at T inner steps
    "greedy": lambda T, options: list(range(1, T + 1)) * (2 if options.get("variant") == "final" else 1),
    "ift": lambda T, options: list(range(1, T + 1)) + [T],  # the Hessian at w_T: the last step's batch
}


@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_step_t_is_called_with_w_t_minus_1_in_every_method_and_replay(method, optimizer):
    """Every call of ``train_loss(w, alpha, t)`` has t in 1 .. T in order (a replay starts again at 1)
    and w = w_{t-1} of the one trajectory that inner_loop runs: a t off by one, a replay that goes
    on counting, or a step taken on another step's batch fails here."""
    tl, vl, params, hparams = minibatch_logreg(torch.Generator().manual_seed(2))
    T, calls = 5, []

    def recording(w, a, t):
        calls.append((t, w["W"].detach().clone()))
        return tl(w, a, t)

    kwargs = {**OPTIMIZERS[optimizer], "steps": T}
    mg.inner_loop(recording, params, hparams, **kwargs)
    trajectory = dict(calls)
    assert list(trajectory) == list(range(1, T + 1))
    for options in CASES[method](T):
        calls.clear()
        res = mg.hypergradient(recording, vl, params, hparams, method=method, **kwargs, **options)
        want = EXPECTED_STEPS.get(method, lambda T, options: list(range(1, T + 1)))(T, options)
        assert [t for t, _ in calls] == want, options
        if method == "ift":  # its last call is the Hessian's, at w_T
            torch.testing.assert_close(calls.pop()[1], res.params["W"], rtol=0, atol=0)
        for t, w in calls:
            torch.testing.assert_close(w, trajectory[t], rtol=0, atol=0)


def test_a_loss_with_or_without_the_step_index():
    """(w, alpha) losses get no t, (w, alpha, t) losses and bound methods get it; a loss that
    declares *args is taken to accept it."""
    from metagreedy.estimators import takes_step

    class Task:
        def loss(self, w, a, t):
            return t

        def plain(self, w, a):
            return 0

    assert not takes_step(lambda w, a: 0) and takes_step(lambda w, a, t: t)
    assert takes_step(Task().loss) and not takes_step(Task().plain)
    assert takes_step(lambda *args: 0) and takes_step(functools.partial(lambda s, w, a, t: t, 1))
    assert not takes_step(lambda w, a, *, t=0: 0)  # keyword-only: not a positional step index
