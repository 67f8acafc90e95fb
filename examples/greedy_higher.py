"""Greedy in a higher loop: meta-train the warp layers 2/4/6 of Omniglot's network.

Each task is a ``higher.innerloop_ctx`` loop of momentum SGD on the support set, as a MAML-style
researcher writes it; three lines attach greedy (equation 6) to it, and the outer Adam steps the
warp layers on the hypergradient written into their ``.grad``.

    python examples/greedy_higher.py --data-root ./data      # Omniglot, or the synthetic alphabet
    python examples/greedy_higher.py --check                 # against mg.hypergradient, float64
"""
import sys

import higher
import torch
import torch.nn.functional as F

import common
from metagreedy.integrations.higher import attach
from metagreedy.models import WarpConvNet


def hypergradient(model, warp, episode, args, scale=1.0):
    """One task: T inner steps on the support set, greedy's hypergradient added to the warp layers' .grad."""
    xs, ys, xq, yq = episode
    inner_opt = torch.optim.SGD([p for n, p in model.named_parameters() if n not in warp], lr=args.inner_lr,
                                momentum=0.9)
    with higher.innerloop_ctx(model, inner_opt) as (fmodel, diffopt):
        hg = attach(fmodel, diffopt, warp, lambda: F.cross_entropy(fmodel(xq), yq), gamma=args.gamma)  # greedy
        for _ in range(args.inner_steps):
            diffopt.step(F.cross_entropy(fmodel(xs), ys))
            hg.step()  # greedy
        hg.backward(scale)  # greedy
    return hg


def warp_layers(model: WarpConvNet) -> dict:
    return {n: p for n, p in model.named_parameters() if n.startswith(WarpConvNet.WARP)}


def main(argv=None) -> int:
    args = common.parser(__doc__).parse_args(argv)
    if args.check:  # the loop above against mg.hypergradient(method="greedy") through torch.func
        model, episode = common.tiny_problem()
        got = hypergradient(model, warp_layers(model), episode, args).grad()
        return common.report_check(got, common.reference(model, episode, args, momentum=0.9))
    model = WarpConvNet(args.ways)
    warp = warp_layers(model)
    common.meta_train(args, warp.values(), lambda episode, scale: hypergradient(model, warp, episode, args, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
