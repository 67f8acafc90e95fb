"""nn.Module models: the functional path, the higher path and higher.innerloop_ctx agree."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metagreedy as mg
from metagreedy import nn as mgnn
from metagreedy.integrations.higher import higher_forward, higher_sgd, innerloop_full

OPTIONS = {"greedy": {"gamma": 0.9}, "ift": {"terms": 2}, "truncated": {"k": 2}}


def tiny_warp_net():
    """conv (adapted) -> conv (warp) -> linear head (adapted)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Conv2d(3, 3, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 3))


def batches(gen):
    xs, xq = torch.randn(6, 1, 8, 8, generator=gen), torch.randn(9, 1, 8, 8, generator=gen)
    return (xs, torch.arange(6) % 3), (xq, torch.arange(9) % 3)


def test_split_selects_by_prefix_and_copies():
    model = tiny_warp_net()
    w, alpha = mgnn.split(model, ["2."])
    assert list(alpha) == ["2.weight", "2.bias"] and list(w) == ["0.weight", "0.bias", "5.weight", "5.bias"]
    assert all(a.requires_grad for a in alpha.values()) and not any(x.requires_grad for x in w.values())
    w["0.weight"].add_(1.0)
    assert not torch.equal(w["0.weight"], model[0].weight.detach())
    with pytest.raises(ValueError, match="no parameter"):
        mgnn.split(model, ["nope"])


@pytest.mark.parametrize("method", sorted(mg.METHODS))
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_higher_loop_equals_functional_loop(method, momentum):
    model = tiny_warp_net().double()
    w, alpha = mgnn.split(model, ["2."])
    train_batch, val_batch = batches(torch.Generator().manual_seed(1))
    kw = dict(steps=4, lr=0.1, momentum=momentum, method=method, **OPTIONS.get(method, {}))
    ours = mg.hypergradient(*mgnn.losses(mgnn.module_forward(model), F.cross_entropy, train_batch, val_batch),
                            w, alpha, **kw)
    theirs = mg.hypergradient(*mgnn.losses(higher_forward(model), F.cross_entropy, train_batch, val_batch),
                              w, alpha, optimizer=higher_sgd(0.1, momentum), **kw)
    for name in alpha:
        torch.testing.assert_close(theirs.grad[name], ours.grad[name], rtol=1e-10, atol=1e-12)
    for name in w:
        torch.testing.assert_close(theirs.params[name], ours.params[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_full_equals_higher_innerloop_ctx(momentum):
    model = tiny_warp_net().double()
    w, alpha = mgnn.split(model, ["2."])
    train_batch, val_batch = batches(torch.Generator().manual_seed(2))
    ours = mg.hypergradient(*mgnn.losses(mgnn.module_forward(model), F.cross_entropy, train_batch, val_batch),
                            w, alpha, steps=5, lr=0.1, momentum=momentum, method="full")
    ref = innerloop_full(model, list(w), train_batch, val_batch, F.cross_entropy, steps=5, lr=0.1, momentum=momentum)
    for name in alpha:
        torch.testing.assert_close(ours.grad[name], ref[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["full", "greedy"])
def test_a_batch_per_step_through_higher(method):
    """Step t on its own batch (train_loss(w, alpha, t)): the functional and higher loops agree, and
    full equals higher.innerloop_ctx fed the same batch at each step."""
    model = tiny_warp_net().double()
    w, alpha = mgnn.split(model, ["2."])
    gen = torch.Generator().manual_seed(3)
    steps = [None] + [batches(gen)[0] for _ in range(4)]
    val_batch = batches(gen)[1]
    results = []
    for forward, optimizer in [(mgnn.module_forward(model), "sgd"), (higher_forward(model), higher_sgd(0.1, 0.9))]:
        def train_loss(w_, a, t, forward=forward):
            return F.cross_entropy(forward(w_, a, steps[t][0]), steps[t][1])
        val_loss = mgnn.losses(forward, F.cross_entropy, val_batch, val_batch)[1]
        results.append(mg.hypergradient(train_loss, val_loss, w, alpha, steps=4, lr=0.1, momentum=0.9,
                                        method=method, optimizer=optimizer, **OPTIONS.get(method, {})))
    if method == "full":
        results.append(innerloop_full(model, list(w), lambda t: steps[t], val_batch, F.cross_entropy, steps=4, lr=0.1,
                                      momentum=0.9))
    ours = results[0].grad
    for other in results[1:]:
        other = other if isinstance(other, dict) else other.grad
        for name in alpha:
            torch.testing.assert_close(other[name], ours[name], rtol=1e-10, atol=1e-12)
