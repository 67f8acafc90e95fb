"""The chain of oracles: closed forms and finite differences -> exact reverse mode; the options of
the estimators. Every method against its explicit-Jacobian reference: test_registry.py."""
import pytest
import torch

import metagreedy as mg
from problems import PROBLEMS, TOY_G, flat, quadratic, toy, weighted_logreg
from references import Reference, greedy


def run(problem, method, T, lr=0.1, momentum=0.0, **options):
    tl, vl, params, hparams = problem
    return mg.hypergradient(tl, vl, params, hparams, steps=T, lr=lr, momentum=momentum, method=method, **options)


# ---- closed forms on the toy problem ------------------------------------------------------------

def toy_closed_forms(T, lr=0.1, gamma=0.9):
    """w_T = alpha + (I - lr G)^T (w_0 - alpha); dw_T/dalpha = I - (I - lr G)^T; B_t = lr G."""
    a, w0 = torch.ones(2), torch.full((2,), 2.0)
    grad_val = lambda w: 2 * w + 20 * torch.sin(w) * torch.cos(w)  # noqa: E731
    w_T = a + (1 - lr * TOY_G) ** T * (w0 - a)
    exact = grad_val(w_T) * (1 - (1 - lr * TOY_G) ** T)
    greedy = torch.zeros(2)
    for t in range(1, T + 1):
        w_t = a + (1 - lr * TOY_G) ** t * (w0 - a)
        greedy += gamma ** (T - t) * grad_val(w_t) * lr * TOY_G
    final = grad_val(w_T) * lr * TOY_G * sum(gamma ** (T - t) for t in range(1, T + 1))
    return w_T, exact, greedy, final


@pytest.mark.parametrize("T", [1, 5, 10, 20])
def test_toy_full_equals_closed_form(T):
    w_T, exact, _, _ = toy_closed_forms(T)
    res = run(toy(), "full", T)
    torch.testing.assert_close(res.grad[0], exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.params[0], w_T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1, 5, 10])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.9, 1.0])
def test_toy_greedy_equals_closed_form(T, gamma):
    _, _, greedy, final = toy_closed_forms(T, gamma=gamma)
    torch.testing.assert_close(run(toy(), "greedy", T, gamma=gamma).grad[0], greedy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(run(toy(), "greedy", T, gamma=gamma, variant="final").grad[0], final,
                               rtol=1e-12, atol=1e-12)


# ---- exact reverse mode against central finite differences ------------------------------------------

@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.9), ("adam", 0.0)])
@pytest.mark.parametrize("name", ["mlp", "weighted_logreg"])
def test_full_matches_central_differences(name, optimizer, momentum):
    """d val_loss(w_T(alpha), alpha)/dalpha by central differences of the reference's forward unroll
    (momentum or Adam state included), against ``full``; the tolerance is the differences' own error."""
    problem = PROBLEMS[name](torch.Generator().manual_seed(3))
    T, lr, eps = 6, 0.05, 1e-6
    ref = Reference(problem, optimizer, lr=lr, momentum=momentum)
    got = flat(mg.hypergradient(*problem, steps=T, lr=lr, momentum=momentum, optimizer=optimizer,
                                method="full").grad)
    fd = torch.tensor([(ref.val_at(ref.a0 + eps * e, T) - ref.val_at(ref.a0 - eps * e, T)) / (2 * eps)
                      for e in torch.eye(len(ref.a0))])
    torch.testing.assert_close(got, fd, rtol=1e-7, atol=1e-9)


def test_full_unroll_passes_gradcheck():
    """torch's own gradcheck on the differentiable unroll that ``full`` differentiates."""
    tl, vl, params, hparams = weighted_logreg(torch.Generator().manual_seed(1))
    opt = mg.sgd(0.1, 0.9)

    def val_of(weights):
        w = tuple(p.clone() for p in params.values())
        keys = list(params)
        train = lambda w, a: tl(dict(zip(keys, w)), {"weights": a[0]})  # noqa: E731
        state = opt.init(w)
        for _ in range(4):
            w = tuple(x if x.requires_grad else x.requires_grad_() for x in w)
            g = torch.autograd.grad(train(w, (weights,)), w, create_graph=True)
            w, state = opt.update(g, state, w, (weights,))
        return vl(dict(zip(keys, w)), {"weights": weights})

    assert torch.autograd.gradcheck(val_of, (hparams["weights"].detach().clone().requires_grad_(),))


# ---- greedy's per-step validation loss ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("optimizer, momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.0)])
@pytest.mark.parametrize("T", [1, 5])
def test_greedy_step_val_loss_equals_explicit_equation_6(name, optimizer, momentum, T):
    """``step_val_loss(w, alpha, t)`` replaces L_val in the terms t < T (never at t = T, nor in the
    direct term); a step-dependent loss checks that t is passed as 1..T-1."""
    problem = PROBLEMS[name](torch.Generator().manual_seed(T + 3))
    vl = problem[1]
    step = lambda w, a, t: (1 + t) * vl(w, a) ** 2  # noqa: E731
    kw = dict(steps=T, lr=0.1, momentum=momentum, optimizer=optimizer, method="greedy", gamma=0.8)
    got = flat(mg.hypergradient(*problem, step_val_loss=step, **kw).grad)
    want = greedy(Reference(problem, optimizer, lr=0.1, momentum=momentum), T, gamma=0.8, step_val_loss=step)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    plain = flat(mg.hypergradient(*problem, **kw).grad)
    if T == 1:  # no term t < T: the option cannot change anything
        torch.testing.assert_close(got, plain, rtol=0, atol=0)
    else:  # it changes the estimate, and giving val_loss back gives plain greedy
        assert (got - plain).norm() > 1e-3 * plain.norm()
        same = flat(mg.hypergradient(*problem, step_val_loss=lambda w, a, t: vl(w, a), **kw).grad)
        torch.testing.assert_close(same, plain, rtol=1e-12, atol=1e-13)


def test_step_val_loss_is_for_equation_6_only():
    problem = quadratic(torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="eq6"):
        run(problem, "greedy", 3, variant="final", step_val_loss=lambda w, a, t: problem[1](w, a))
    with pytest.raises(TypeError, match="step_val_loss"):
        run(problem, "full", 3, step_val_loss=lambda w, a, t: problem[1](w, a))


def test_fo_is_direct_gradient_only():
    tl, vl, params, hparams = quadratic(torch.Generator().manual_seed(4))
    res = run((tl, vl, params, hparams), "fo", 5)
    torch.testing.assert_close(res.grad[0], 0.2 * hparams[0].detach(), rtol=1e-14, atol=0)
    assert res.vjps == 0


# ---- IFT converges to the implicit-function hypergradient ----------------------------------------

def test_ift_converges_on_ridge_as_terms_grow():
    """Ridge regression with per-feature log penalties alpha. Started at the exact minimiser w*,
    IFT's Neumann series must approach the implicit-function hypergradient as K grows."""
    gen = torch.Generator().manual_seed(0)
    n, d = 30, 4
    X, y = torch.randn(n, d, generator=gen), torch.randn(n, generator=gen)
    Xv, yv = torch.randn(20, d, generator=gen), torch.randn(20, generator=gen)
    alpha = torch.randn(d, generator=gen) * 0.3

    def train_loss(w, a):
        return 0.5 * ((X @ w[0] - y) ** 2).mean() + 0.5 * (torch.exp(a[0]) * w[0] ** 2).sum()

    def val_loss(w, a):
        return 0.5 * ((Xv @ w[0] - yv) ** 2).mean()

    H = X.T @ X / n + torch.diag(torch.exp(alpha))
    w_star = torch.linalg.solve(H, X.T @ y / n)
    dval = Xv.T @ (Xv @ w_star - yv) / 20
    # g = H w - X^T y / n ; dg/dalpha = diag(exp(alpha) w*) ; hypergrad = -dval^T H^{-1} dg/dalpha
    exact = -torch.linalg.solve(H, dval) * torch.exp(alpha) * w_star
    errors = []
    for K in [0, 1, 2, 5, 10, 40]:
        res = mg.hypergradient(train_loss, val_loss, [w_star], [alpha.clone().requires_grad_()],
                               steps=1, lr=0.0, method="ift", terms=K, neumann_lr=0.5)
        errors.append((res.grad[0] - exact).norm().item() / exact.norm().item())
        assert res.vjps == K + 1
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-10, errors


def test_ift_alone_decides_its_default_step_the_inner_learning_rate():
    """``neumann_lr`` None (IFT's default) and 0 (the settings' default) are the inner optimizer's
    learning rate, read by IFT from the optimizer itself (hypergradient passes no step of its own:
    an optimizer object's rate counts, not ``lr``); any other step is taken as given."""
    problem = quadratic(torch.Generator().manual_seed(5))

    def grad(**options):
        return flat(run(problem, "ift", 4, **{"lr": 0.05, "momentum": 0.9, "terms": 3, **options}).grad)

    default = grad()
    assert torch.equal(grad(neumann_lr=0.0), default) and torch.equal(grad(neumann_lr=0.05), default)
    assert torch.equal(grad(optimizer=mg.sgd(0.05, 0.9), lr=0.3), default)
    assert not torch.allclose(grad(neumann_lr=0.01), default)
    with pytest.raises(ValueError, match="neumann_lr"):
        grad(neumann_lr=-0.1)
    with pytest.raises(ValueError, match="pass neumann_lr"):  # a learned lr has no value to default to
        run(problem, "ift", 2, lr=lambda a: 0.1, terms=1)


# ---- learning rate as a hyperparameter --------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_learned_learning_rate(momentum):
    tl, vl, params, hparams = quadratic(torch.Generator().manual_seed(9))
    lr = torch.tensor(0.05, requires_grad=True)
    train = lambda w, a: tl(w, a[:1])  # noqa: E731
    val = lambda w, a: vl(w, a[:1])  # noqa: E731
    hp = [hparams[0], lr]
    res = mg.hypergradient(train, val, params, hp, steps=6, lr=lr, momentum=momentum, method="full")
    eps = 1e-6

    def val_at(step):
        return mg.hypergradient(train, val, params, [hparams[0], torch.tensor(step)], steps=6, lr=step,
                                momentum=momentum, method="fo").val_loss

    fd = (val_at(0.05 + eps) - val_at(0.05 - eps)) / (2 * eps)
    assert abs(res.grad[1].item() - fd) < 1e-7
