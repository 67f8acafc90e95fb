"""Greedy in a learn2learn loop: MAML's ``clone()`` / ``adapt()`` adapt layers 1/3/5 and the head of
Omniglot's warp network, and greedy meta-trains the warp layers 2/4/6, kept outside the learner.

    python examples/greedy_learn2learn.py --data-root ./data   # Omniglot, or the synthetic alphabet
    python examples/greedy_learn2learn.py --check              # against mg.hypergradient, float64
"""
import sys

import torch.nn.functional as F
from torch import nn

import common
from metagreedy.integrations.learn2learn import attach
from metagreedy.models import WarpConvNet

try:
    import learn2learn as l2l
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("this example needs learn2learn: pip install learn2learn (on Python >= 3.11: bash "
             "scripts/install_learn2learn.sh)")

ADAPTED, WARP = ("task1", "task3", "task5"), ("warp2", "warp4", "warp6")


def split(model: WarpConvNet):
    """The network's adapted layers (for the learner) and its warp layers (the hyperparameters)."""
    return (nn.ModuleDict({n: getattr(model, n) for n in (*ADAPTED, "head")}),
            nn.ModuleDict({n: getattr(model, n) for n in WARP}))


def net(adapted, warp, x):
    for a, w in zip(ADAPTED, WARP):
        x = warp[w](adapted[a](x))
    return adapted["head"](x.flatten(1))


def hypergradient(maml, warp, episode, args, scale=1.0):
    """One task: T MAML steps on the support set, greedy's hypergradient added to the warp layers' .grad."""
    xs, ys, xq, yq = episode
    learner = maml.clone()
    hg = attach(learner, dict(warp.named_parameters()), lambda: F.cross_entropy(net(learner.module, warp, xq), yq),
                gamma=args.gamma)  # greedy
    for _ in range(args.inner_steps):
        learner.adapt(F.cross_entropy(net(learner.module, warp, xs), ys))
        hg.step()  # greedy
    hg.backward(scale)  # greedy
    return hg


def main(argv=None) -> int:
    args = common.parser(__doc__).parse_args(argv)
    if args.check:  # the loop above against mg.hypergradient(method="greedy"), MAML's plain SGD: momentum 0
        model, episode = common.tiny_problem()
        adapted, warp = split(model)
        got = hypergradient(l2l.algorithms.MAML(adapted, lr=args.inner_lr), warp, episode, args).grad()
        return common.report_check(got, common.reference(model, episode, args, momentum=0.0))
    adapted, warp = split(WarpConvNet(args.ways))
    maml = l2l.algorithms.MAML(adapted, lr=args.inner_lr)
    common.meta_train(args, warp.parameters(), lambda episode, scale: hypergradient(maml, warp, episode, args, scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
