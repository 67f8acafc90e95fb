"""Bad input to the API raises a TypeError/ValueError that names the argument or the loss, for
every registered method; valid edge cases keep working."""
import math

import pytest
import torch

import metagreedy as mg
from problems import quadratic

OPTIONS = {"greedy": {"gamma": 0.9}, "ift": {"terms": 3}, "truncated": {"k": 2}}
METHODS = sorted(mg.METHODS)
LOSSES = ["train_loss", "val_loss"]


def problem():
    return quadratic(torch.Generator().manual_seed(0))


def run(train_loss, val_loss, params, hparams, method="greedy", steps=3, **kw):
    kw = {"lr": 0.1, "momentum": 0.9, **OPTIONS.get(method, {}), **kw}
    return mg.hypergradient(train_loss, val_loss, params, hparams, steps=steps, method=method, **kw)


def with_loss(which, loss):
    """The quadratic problem with ``train_loss`` or ``val_loss`` replaced by ``loss(original)``."""
    tl, vl, params, hparams = problem()
    if which == "train_loss":
        return loss(tl), vl, params, hparams
    return tl, loss(vl), params, hparams


# ---- 1. what a loss returns ----------------------------------------------------------------------

BAD_RESULTS = {  # name -> (make the bad loss from the good one, exception, what the message names)
    "float": (lambda f: lambda w, a: float(f(w, a).detach()), TypeError, "float"),
    "None": (lambda f: lambda w, a: None, TypeError, "NoneType"),
    "vector": (lambda f: lambda w, a: f(w, a) * torch.ones(4), ValueError, r"shape \(4,\)"),
    "integer": (lambda f: lambda w, a: f(w, a).long(), TypeError, "int64"),
}


@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
@pytest.mark.parametrize("which", LOSSES)
@pytest.mark.parametrize("method", METHODS)
def test_a_loss_must_return_a_floating_scalar_tensor(method, which, kind):
    make, error, names = BAD_RESULTS[kind]
    with pytest.raises(error, match=f"{which}.*{names}"):
        run(*with_loss(which, make), method=method)


@pytest.mark.parametrize("kind", sorted(BAD_RESULTS))
def test_inner_loop_checks_what_train_loss_returns(kind):
    make, error, names = BAD_RESULTS[kind]
    tl, _, params, hparams = problem()
    with pytest.raises(error, match=f"train_loss.*{names}"):
        mg.inner_loop(make(tl), params, hparams, steps=2)


def test_step_val_loss_is_checked_like_the_others():
    tl, vl, params, hparams = problem()
    with pytest.raises(TypeError, match="step_val_loss.*float"):
        run(tl, vl, params, hparams, step_val_loss=lambda w, a, t: float(vl(w, a).detach()))


def test_a_one_element_loss_is_a_scalar():
    tl, vl, params, hparams = problem()
    a = run(tl, vl, params, hparams)
    b = run(lambda w, h: tl(w, h).reshape(1, 1), lambda w, h: vl(w, h).reshape(1), params, hparams)
    torch.testing.assert_close(b.grad[0], a.grad[0], rtol=0, atol=0)


# ---- 2. what a loss depends on, and that it is a function ----------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_train_loss_must_depend_on_params(method):
    """Its gradient in w would be zero and the inner loop would not move (materialized zeros)."""
    _, vl, params, hparams = problem()
    with pytest.raises(ValueError, match="train_loss.*params"):
        run(lambda w, a: (a[0] ** 2).sum(), vl, params, hparams, method=method)
    with pytest.raises(ValueError, match="train_loss.*params"):
        run(lambda w, a: torch.tensor(1.0), vl, params, hparams, method=method)


def test_inner_loop_checks_that_train_loss_depends_on_params():
    _, _, params, hparams = problem()
    with pytest.raises(ValueError, match="train_loss.*params"):
        mg.inner_loop(lambda w, a: (a[0] ** 2).sum(), params, hparams, steps=2)


@pytest.mark.parametrize("method", METHODS)
def test_val_loss_must_depend_on_params_or_hparams(method):
    tl, _, params, hparams = problem()
    outside = torch.ones(4, requires_grad=True)  # a tensor that is neither w nor alpha
    for val_loss in (lambda w, a: torch.tensor(1.0), lambda w, a: (w[0].detach() ** 2).sum(),
                     lambda w, a: (outside ** 2).sum()):
        with pytest.raises(ValueError, match="val_loss.*params.*hparams"):
            run(tl, val_loss, params, hparams, method=method)


@pytest.mark.parametrize("which", LOSSES)
def test_a_loss_must_be_callable(which):
    with pytest.raises(TypeError, match=f"{which}.*callable.*Tensor"):
        run(*with_loss(which, lambda f: torch.tensor(1.0)))
    if which == "train_loss":
        with pytest.raises(TypeError, match="train_loss.*callable"):
            mg.inner_loop(None, *problem()[2:], steps=2)


# ---- 3. non-finite losses ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("which", LOSSES)
@pytest.mark.parametrize("method", METHODS)
def test_a_non_finite_loss_raises_NonFiniteLoss(method, which, value):
    """The gradients stay finite (a constant is added): the check is on the losses' values."""
    with pytest.raises(mg.NonFiniteLoss, match=f"{which}.*{value}") as info:
        run(*with_loss(which, lambda f: lambda w, a: f(w, a) + value), method=method)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("method", METHODS)
def test_a_diverging_inner_loop_raises_NonFiniteLoss(method):
    """A step size far too large: w overflows after some steps; the final losses are not finite."""
    with pytest.raises(mg.NonFiniteLoss, match="(train|val)_loss.*(nan|inf)"):
        run(*problem(), method=method, steps=200, lr=100.0, momentum=0.0)


def test_inner_loop_raises_NonFiniteLoss():
    tl, _, params, hparams = problem()
    with pytest.raises(mg.NonFiniteLoss, match="train_loss.*nan"):
        mg.inner_loop(lambda w, a: tl(w, a) + math.nan, params, hparams, steps=2)


# ---- 4. optimizer and method settings ------------------------------------------------------------

BAD_SETTINGS = [  # (keyword arguments, exception, what the message names)
    ({"lr": -0.1}, ValueError, "lr"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"lr": math.inf}, ValueError, "lr"),
    ({"lr": "0.1"}, TypeError, "lr"),
    ({"lr": torch.tensor(-0.1)}, ValueError, "lr"),
    ({"momentum": -0.1}, ValueError, "momentum"),
    ({"momentum": 1.0}, ValueError, "momentum"),
    ({"momentum": math.nan}, ValueError, "momentum"),
    ({"optimizer": "adam", "betas": (1.0, 0.999)}, ValueError, "betas"),
    ({"optimizer": "adam", "betas": (0.9, -0.1)}, ValueError, "betas"),
    ({"optimizer": "adam", "betas": (0.9, math.nan)}, ValueError, "betas"),
    ({"optimizer": "adam", "eps": 0.0}, ValueError, "eps"),
    ({"optimizer": "adam", "eps": -1e-8}, ValueError, "eps"),
    ({"optimizer": "adam", "eps": math.inf}, ValueError, "eps"),
    ({"steps": True}, TypeError, "steps"),
    ({"steps": 2.0}, TypeError, "steps"),
    ({"method": "greedy", "gamma": math.nan}, ValueError, "gamma"),
    ({"method": "greedy", "gamma": "0.9"}, TypeError, "gamma"),
    ({"method": "ift", "terms": 2.5}, TypeError, "terms"),
    ({"method": "ift", "terms": True}, TypeError, "terms"),
    ({"method": "truncated", "k": 1.5}, TypeError, "k"),
]


@pytest.mark.parametrize("kwargs, error, names", BAD_SETTINGS, ids=[str(s[0]) for s in BAD_SETTINGS])
def test_bad_settings_raise_naming_the_setting(kwargs, error, names):
    with pytest.raises(error, match=names):
        run(*problem(), **kwargs)


@pytest.mark.parametrize("kwargs, error, names", [s for s in BAD_SETTINGS if set(s[0]) <= {"lr", "momentum"}])
def test_sgd_and_make_optimizer_check_their_settings(kwargs, error, names):
    settings = {"lr": 0.1, "momentum": 0.9, **kwargs}
    with pytest.raises(error, match=names):
        mg.sgd(settings["lr"], settings["momentum"])
    with pytest.raises(error, match=names):
        mg.make_optimizer("sgd", settings["lr"], settings["momentum"])


@pytest.mark.parametrize("kwargs, error, names", [s for s in BAD_SETTINGS if s[0].get("optimizer") == "adam"])
def test_adam_and_make_optimizer_check_their_settings(kwargs, error, names):
    settings = {"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8, **kwargs}
    with pytest.raises(error, match=names):
        mg.adam(settings["lr"], settings["betas"], settings["eps"])
    with pytest.raises(error, match=names):
        mg.make_optimizer("adam", settings["lr"], betas=settings["betas"], eps=settings["eps"])


@pytest.mark.parametrize("name, options", [("greedy", {"gamma": 1.5}), ("greedy", {"gamma": math.nan}),
                                           ("ift", {"terms": -1}), ("ift", {"terms": 2.5}),
                                           ("truncated", {"k": 0}), ("truncated", {"k": 1.5})])
def test_estimators_check_their_own_options(name, options):
    """Called straight from the registry with a Bilevel, not through hypergradient."""
    tl, vl, params, hparams = problem()
    bilevel = mg.Bilevel(tl, vl, mg.sgd(0.1, 0.9), 3)
    with pytest.raises((TypeError, ValueError), match=next(iter(options))):
        mg.METHODS[name](bilevel, tuple(params), tuple(hparams), **options)


# ---- valid edge cases ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_lr_zero_leaves_w_and_gives_the_direct_term(method):
    tl, vl, params, hparams = problem()
    res = run(tl, vl, params, hparams, method=method, lr=0.0, momentum=0.0)
    torch.testing.assert_close(res.params[0], params[0], rtol=0, atol=0)
    torch.testing.assert_close(res.grad[0], 0.2 * hparams[0].detach(), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
def test_edge_settings_that_are_valid(method):
    tl, vl, params, hparams = problem()
    ref = run(tl, vl, params, hparams, method=method, momentum=0.0)
    zero_dim = run(tl, vl, params, hparams, method=method, momentum=0, lr=torch.tensor(0.1))
    torch.testing.assert_close(zero_dim.grad[0], ref.grad[0], rtol=1e-14, atol=1e-15)
    adam = run(tl, vl, params, hparams, method=method, optimizer="adam", betas=(0.0, 0.0), eps=1e-300)
    assert torch.isfinite(adam.grad[0]).all()


@pytest.mark.parametrize("method", METHODS)
def test_val_loss_of_alpha_only(method):
    """w_T does not enter: every method gives grad_alpha val_loss exactly."""
    tl, _, params, hparams = problem()
    res = run(tl, lambda w, a: (a[0] ** 2).sum(), params, hparams, method=method)
    torch.testing.assert_close(res.grad[0], 2 * hparams[0].detach(), rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_a_learned_lr(method):
    """lr is one of hparams; train_loss need not depend on alpha."""
    tl, vl, params, _ = problem()
    lr = torch.tensor(0.1, requires_grad=True)
    res = run(lambda w, a: tl(w, [torch.ones(3)]), vl, params, [lr], method=method, lr=lr,
              **({"neumann_lr": 0.1} if method == "ift" else {}))
    assert res.grad[0].shape == () and torch.isfinite(res.grad[0])
    if method in ("full", "greedy", "t1t2", "truncated"):
        assert res.grad[0] != 0
    inner = mg.inner_loop(lambda w, a: tl(w, [torch.ones(3)]), params, [lr], steps=3, lr=lr, momentum=0.9)
    torch.testing.assert_close(inner[0], res.params[0], rtol=0, atol=0)
