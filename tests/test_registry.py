"""One agreement suite over the registry: a method is tested the day it is registered."""
import pytest
import torch

import metagreedy as mg
from problems import mlp, quadratic, weighted_logreg

OPTIONS = {"greedy": {"gamma": 0.9}, "ift": {"terms": 3}, "truncated": {"k": 2}}
EXPECTED_VJPS = {"greedy": 5, "t1t2": 1, "ift": 4, "fo": 0, "full": 5, "truncated": 2}


def structures(gen):
    """The same problem with hparams as a list, a tuple and a dict; and a dict-of-params problem."""
    tl, vl, params, hparams = mlp(gen)
    yield tl, vl, list(params), list(hparams)
    yield tl, vl, tuple(params), tuple(hparams)
    keys = ["warp", "decay"]
    yield (lambda w, a: tl(w, [a[k] for k in keys]), lambda w, a: vl(w, [a[k] for k in keys]),
           params, dict(zip(keys, hparams)))
    yield weighted_logreg(gen)


def test_registry_is_complete():
    assert set(mg.METHODS) == set(EXPECTED_VJPS)


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


@pytest.mark.parametrize("method", sorted(mg.METHODS))
def test_every_method_agrees_on_w_T_and_val_loss(method):
    """All methods run the same inner trajectory: same w_T and val_loss as full."""
    problem = quadratic(torch.Generator().manual_seed(1))
    ref = mg.hypergradient(*problem, steps=6, lr=0.1, momentum=0.9, method="full")
    res = mg.hypergradient(*problem, steps=6, lr=0.1, momentum=0.9, method=method, **OPTIONS.get(method, {}))
    torch.testing.assert_close(res.params[0], ref.params[0], rtol=1e-13, atol=1e-14)
    assert res.val_loss == pytest.approx(ref.val_loss, rel=1e-13)


@pytest.mark.parametrize("method", sorted(mg.METHODS))
def test_hypergradient_points_downhill(method):
    """On the quadratic, every estimate is a descent direction for the true outer objective at T=1
    (where they are all exact but fo) or has positive cosine with the exact one."""
    problem = quadratic(torch.Generator().manual_seed(2))
    exact = mg.hypergradient(*problem, steps=3, lr=0.1, method="full").grad[0]
    est = mg.hypergradient(*problem, steps=3, lr=0.1, method=method, **OPTIONS.get(method, {})).grad[0]
    if method != "fo":
        assert torch.nn.functional.cosine_similarity(exact, est, dim=0) > 0


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
