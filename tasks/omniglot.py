"""Few-shot Omniglot with warp-layer hyperparameters (the method paper's table 3).

Per task: ``T`` steps of momentum SGD on the support set adapt layers 1, 3, 5 and the head; the
validation loss is the query loss; the hyperparameters are the warp layers 2, 4, 6 (and, with
``--init learned``, the initialisation of the adapted layers). The hypergradient of a meta-batch is
the mean over its tasks, computed task by task through ``higher`` (``--loop higher``) or
``torch.func.functional_call`` (``--loop func``), or for the whole meta-batch as one vmapped
computation (``--loop batched``); all give the same numbers (tests/test_omniglot.py). The query set
(10 per class by default, the paper's) is the validation set. The settings of the questions the
paper leaves open (where the adapted layers start, mean or summed losses, how queries are scored,
how meta-validation is held out) are described in docs/GUIDE.md, *The experiments*.
"""
from __future__ import annotations

import higher
import torch
import torch.nn.functional as F
from torch.func import vmap

import metagreedy as mg
from metagreedy import nn as mgnn
from harness.settings import AUTO, UNIT_OPEN, Setting as S, UsageError, at_least, fits_in_memory
from metagreedy.cuda_graph import Replay
from metagreedy.data import DataError
from metagreedy.data.fewshot import (DRAWINGS, IMAGE_SIZE, VAL_SPLITS, background_alphabets, load_alphabets,
                                     make_tasksets, split_sizes)
from metagreedy.data.omniglot import available, download
from metagreedy.estimators import finite
from metagreedy.integrations.higher import attach, higher_forward, higher_sgd
from metagreedy.models import WarpConvNet, default_init, linear_init
from metagreedy.stats import mean_ci95
from metagreedy.stream import STREAMED

from .common import (DATA_ROOT, EVAL_EVERY, LOSS_REDUCTION, STEP_VAL_BATCH, TaskBase, cross_entropy, dataset,
                     element_bytes, graph, inner_arguments, keyed_generator, method_arguments)

DESCRIPTION = "few-shot Omniglot (table 3): warp layers 2/4/6 of a 6-layer conv net are the hyperparameters."
DEFAULTS = dict()  # the common defaults are this task's: it is the main job
QUERY_MODES = ("transductive", "inductive")
SETTINGS = [
    dataset(AUTO, ("auto", "omniglot", "synthetic")),
    DATA_ROOT,
    EVAL_EVERY,
    STEP_VAL_BATCH,
    LOSS_REDUCTION,
    S("ways", 5, "classes per task (N-way)", check=at_least(1), metavar="N"),
    S("shots", 1, "support examples per class (K-shot)", check=at_least(1), metavar="K"),
    S("queries", 10, "query examples per class; the query loss is the validation loss (the paper: 10)",
      check=at_least(1), metavar="Q"),
    S("meta_batch", 1, "tasks per outer step; the hypergradient is their mean (the paper names none: one task, "
      "its Table 3 as this project reads it; 16 is the other common reading)", check=at_least(1, 100_000),
      metavar="N"),
    S("init", "fixed", "where the adapted layers start: fixed = one fixed random initialisation for every task (the "
      "warp layers can co-adapt to it); learned = a meta-learned one (a hyperparameter too); fresh = a fresh random "
      "initialisation per task, drawn like the layers' default one from a generator keyed by (seed, split, task "
      "index), so a task starts from the same weights in training, evaluation, on resume and in reuse (predict on an "
      "episode of yours: keyed by (seed, ways))", choices=("fixed", "learned", "fresh")),
    S("rotations", False, "add each class rotated by 90/180/270 degrees as three new classes"),
    S("val_fraction", 0.2, "background classes held out for meta-validation (the paper: 20%)", check=UNIT_OPEN),
    S("val_split", "classes", "how meta-validation is held out of the background alphabets: classes = --val-fraction "
      "of the classes at random (our reading of the paper; validation characters share alphabets with training "
      "ones); alphabets = whole alphabets, a fixed choice of about --val-fraction of the classes, so that none does",
      choices=VAL_SPLITS),
    S("eval_queries", "transductive", "how periodic and final evaluation score a task's queries: transductive = all "
      "in one batch, so batch norm's statistics come from every query (as in training); inductive = each query in a "
      "batch of the support set and itself alone (Nichol et al. 2018), about 5x the evaluations' time (5-way, CPU: "
      "docs/GUIDE.md). No running statistics: the batch norm keeps none, and the adapted layers before each one "
      "differ in every task", choices=QUERY_MODES),
    S("eval_tasks", 100, "meta-validation tasks per periodic evaluation", check=at_least(1), metavar="N"),
    S("final_eval_tasks", 600, "tasks for the final meta-validation and meta-test accuracy", check=at_least(1),
      metavar="N"),
    S("loop", AUTO, "how a meta-batch is computed: higher (per task, through higher's functional model and "
      "SGD), func (per task, torch.func), batched (all tasks as one vmapped computation), graph (batched, "
      "captured once in a CUDA graph and replayed; CUDA only); auto = graph on a GPU, higher on a CPU (the "
      "faster on each; the same hypergradients; docs/PERFORMANCE.md)",
      choices=("auto", "higher", "func", "batched", "graph")),
    S("memory_format", AUTO, "per-task loop's convolutions: channels_last or contiguous; auto = channels_last on a "
      "CPU (measured faster there)", choices=("auto", "channels_last", "contiguous")),
]
FRESH = 0xF2E5  # --init fresh: the key of the starts, apart from the tasks' own draws
FRESH_SPLITS = {"train": 0, "validation": 1, "test": 2}  # a task's split in its start's key
OWN_EPISODE = 3  # in place of the split for an episode from outside the task sets (predict)


def check(cfg) -> None:
    """What can be refused before any image is read or drawn."""
    if cfg.shots + cfg.queries > DRAWINGS:
        raise UsageError(f"--shots + --queries = {cfg.shots + cfg.queries} is more than the {DRAWINGS} drawings a "
                         "class has")
    for split, classes in split_sizes(cfg.val_fraction, cfg.rotations, val_split=cfg.val_split).items():
        if cfg.ways > classes:
            raise UsageError(f"{cfg.ways}-way tasks need {cfg.ways} classes, but the {split} split has {classes}")
    n_queries, batch = cfg.ways * cfg.queries, cfg.get("step_val_batch", 0)
    if batch and (batch % cfg.ways or batch > n_queries):
        raise UsageError(f"--step-val-batch must be a multiple of --ways = {cfg.ways} and at most the "
                         f"{n_queries} queries of a task, got {batch}")
    fits_in_memory(memory(cfg))


def memory(cfg) -> dict:
    """Lower bounds of the bytes of a hypergradient's tensors, by the settings that size them: the
    tasks computed at once (a meta-batch with --loop batched or graph, else one), their images and
    the activations of each image (the six convolutions' outputs, 32 channels), and the graph of
    the inner steps kept (the support set's activations and the adapted weights, twice)."""
    at_once = cfg.meta_batch if cfg.loop in ("batched", "graph") else 1
    e, images = element_bytes(cfg), cfg.ways * (cfg.shots + cfg.queries)
    activations = 32 * 2 * (28 ** 2 + 14 ** 2 + 7 ** 2)
    weights = 9 * 32 + 32 + 5 * (9 * 32 * 32 + 32) + (9 * 32 + 1) * cfg.ways
    which = f"--meta-batch {at_once} with --loop {cfg.loop}: {at_once} tasks" if at_once > 1 else "a task"
    return {f"{which} of --ways {cfg.ways} x (--shots {cfg.shots} + --queries {cfg.queries}) images":
            at_once * images * (IMAGE_SIZE ** 2 + activations) * e,
            **graph(cfg, at_once * (cfg.ways * cfg.shots * activations + 2 * weights) * e)}


def variant(cfg) -> str:
    """The run's answers to the paper's open questions where they are not the defaults, for its name."""
    changed = [f"init-{cfg.init}" if cfg.init == "fresh" else "",
               f"loss-{cfg.loss_reduction}" if cfg.loss_reduction != "mean" else "",
               cfg.eval_queries if cfg.eval_queries != "transductive" else "",
               f"val-{cfg.val_split}" if cfg.val_split != "classes" else ""]
    return "".join(f"-{c}" for c in changed if c)


def run_name(cfg) -> str:
    return f"omniglot-{cfg.ways}way{cfg.shots}shot{variant(cfg)}-{cfg.method}-seed{cfg.seed}"


def run_group(cfg) -> str:
    return f"omniglot/{cfg.ways}way-{cfg.shots}shot{variant(cfg)}/{cfg.method}"


def choose_dataset(cfg) -> str:
    """``omniglot`` or ``synthetic`` for ``--dataset auto|omniglot|synthetic``."""
    if cfg.dataset == "synthetic" or available(cfg.data_root):
        return "synthetic" if cfg.dataset == "synthetic" else "omniglot"
    try:
        download(cfg.data_root)
        return "omniglot"
    except DataError:
        if cfg.dataset == "omniglot":
            raise
        return "synthetic"


def choose_loop(cfg, device) -> str:
    """The inner-loop path for ``--loop auto``: on a GPU the vmapped meta-batch captured in a CUDA
    graph (the fastest there, with the same hypergradients; the figures are in docs/PERFORMANCE.md),
    on a CPU the per-task higher loop (faster there). Resolved on each machine a run (re)starts on."""
    if cfg.loop != "auto":
        return cfg.loop
    return "graph" if device.type == "cuda" else "higher"


# Settings added after runs were stored without them, at the value that says how those runs behaved.
ADDED_LATER = {"loss_reduction": "mean", "eval_queries": "transductive", "val_split": "classes"}


def upgrade(stored: dict) -> dict:
    """A stored run's settings with those added since (tasks/__init__.py), at their earlier behaviour:
    mean losses, the queries scored together, meta-validation held out by class."""
    return {**ADDED_LATER, **stored}


class Task(TaskBase):
    progress = ("meta_val_acc",)
    lazy_data = True  # reuse may build it without data: predict() on the user's images needs none

    def __init__(self, cfg, device, dtype, tasksets=None, lazy=False):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.loop = choose_loop(cfg, device)  # first: a bad choice is refused before any data is built
        if self.loop == "graph" and device.type != "cuda":
            if not lazy:
                raise UsageError("--loop graph captures the meta-batch in a CUDA graph: it needs a CUDA GPU "
                                 "(--device cuda)")
            self.loop = "batched"  # a GPU-trained run reused elsewhere: adapting needs no graph; the same numbers
        self.alphabets, self.groups, self.diverged, self._sets = None, None, 0, tasksets
        if tasksets is not None:
            self.dataset = "custom"
        elif lazy and cfg.dataset != "auto":  # read when a split is first asked for (_data)
            self.dataset = cfg.dataset
        else:
            self._data()  # training: bad data fails here, before anything is written
        self.replay = Replay(self.batched_estimate_on) if self.loop == "graph" else None
        # NHWC convolutions: the per-task loop is faster on CPU (docs/PERFORMANCE.md); same numbers
        self.format = torch.channels_last if cfg.memory_format == "channels_last" or (
            cfg.memory_format == "auto" and device.type == "cpu" and self.loop not in ("batched", "graph")) \
            else torch.contiguous_format
        torch.manual_seed(cfg.seed)  # the fixed random initialisation: one per seed (stored in checkpoints)
        self.model = WarpConvNet(cfg.ways).to(device=device, dtype=dtype, memory_format=self.format)
        self.w0, warp = mgnn.split(self.model, WarpConvNet.WARP)
        self.hparams = dict(warp)
        if cfg.init == "learned":  # w = init + delta, delta_0 = 0: same dynamics, init is a hyperparameter
            self.hparams.update({f"init.{n}": w.clone().requires_grad_() for n, w in self.w0.items()})
        # the batched path runs the network under vmap, which needs torch.func's functional_call
        self.forward = higher_forward(self.model) if self.loop == "higher" else mgnn.module_forward(self.model)
        self.optimizer = higher_sgd(cfg.inner_lr, cfg.momentum) if self.loop == "higher" and \
            cfg.inner_optimizer == "sgd" else cfg.inner_optimizer

    def _data(self):
        """The train, validation and test task sets, the data read the first time they are needed."""
        if self._sets is None:
            self.dataset = choose_dataset(self.cfg)
            self.alphabets = load_alphabets(self.dataset, self.cfg.data_root)
            if self.cfg.val_split == "alphabets":  # the alphabet of each background class
                self.groups = background_alphabets(self.dataset, self.cfg.data_root, len(self.alphabets[0]))
            self._sets = self._tasksets(self.cfg.ways, self.cfg.shots, self.cfg.queries)
        return self._sets

    train_tasks = property(lambda self: self._data()[0])
    val_tasks = property(lambda self: self._data()[1])
    test_tasks = property(lambda self: self._data()[2])

    def _tasksets(self, ways, shots, queries):
        if self.alphabets is None:
            if self._sets is None:
                self._data()
            else:
                raise ValueError("this task was built on given task sets: it cannot make tasks of other sizes")
        try:
            return make_tasksets(*self.alphabets, ways, shots, queries, seed=self.cfg.seed,
                                 val_fraction=self.cfg.val_fraction, rotations=self.cfg.rotations,
                                 val_split=self.cfg.val_split, alphabets=self.groups)
        except ValueError as e:  # too many ways, too many shots + queries
            raise UsageError(str(e)) from None

    def info(self) -> dict:
        return {"dataset": self.dataset, "image_size": IMAGE_SIZE, "loop": self.loop,
                "memory_format": "channels_last" if self.format is torch.channels_last else "contiguous",
                "adapted": list(self.w0), "hyper": list(self.hparams)}

    def notice(self):
        if self.dataset == "synthetic":
            return ("no Omniglot data was used: this run is on the built-in synthetic alphabet (dataset: synthetic); "
                    f"put omniglot-py/ under {self.cfg.data_root} or run online to use the real data")
        return None

    def state(self) -> dict:
        """The fixed initialisation of the adapted layers: reuse needs no re-drawn random numbers."""
        return {"w0": {n: w.detach().cpu() for n, w in self.w0.items()}}

    def load_state(self, state: dict) -> None:
        self.w0 = self._placed(state["w0"])

    def _placed(self, w: dict) -> dict:
        """Weights on the task's device and dtype, the convolutions' in its memory format."""
        return {n: t.to(self.device, self.dtype, memory_format=self.format) if t.dim() == 4 else
                t.to(self.device, self.dtype) for n, t in w.items()}

    # ---- one task ----
    def _forward(self, w, alpha, x):
        if self.cfg.init == "learned":
            w = {n: alpha[f"init.{n}"] + d for n, d in w.items()}
            alpha = {n: a for n, a in alpha.items() if not n.startswith("init.")}
        return self.forward(w, alpha, x)

    def _start(self, index=None):
        """Where the inner loop of training task ``index`` starts, in the variables it adapts (with
        ``--init learned``, the offsets from the learned initialisation)."""
        if self.cfg.init == "learned":
            return {n: torch.zeros_like(w) for n, w in self.w0.items()}
        if self.cfg.init == "fresh":
            if index is None:
                raise ValueError("--init fresh starts each task from a draw keyed by its index: give the index")
            return self.fresh_start(self.cfg.ways, "train", index)
        return self.w0

    def fresh_start(self, ways: int, split=None, index=None) -> dict:
        """``--init fresh``: where task ``index`` of ``split`` (train, validation or test) starts, drawn
        as the adapted layers' default initialisation (:func:`metagreedy.models.default_init`) from a
        generator keyed by (seed, split, index), so that a task starts from the same weights in
        training, in evaluation, on resume and in reuse. An episode from outside the task sets
        (``predict`` on your images, ``split`` None) has no index: it starts from the draw keyed by
        (seed, ways), the same for every such episode of that many ways."""
        if split is not None and index is None:
            raise ValueError(f"--init fresh starts task i of a split from its own draw: give the index in {split}")
        key = (OWN_EPISODE, ways) if split is None else (FRESH_SPLITS[split], index)
        shapes = {n: (ways, *w.shape[1:]) if n.startswith("head.") else tuple(w.shape) for n, w in self.w0.items()}
        return self._placed(default_init(shapes, keyed_generator(self.cfg.seed, FRESH, *key)))

    def stacked_start(self, indices) -> tuple:
        """The starts of training tasks ``indices`` stacked on a leading axis, in ``w0``'s order, for
        the batched paths (with ``--init fresh``; other inits start every task alike: ``()``)."""
        if self.cfg.init != "fresh":
            return ()
        starts = [self._start(i) for i in indices]
        return tuple(torch.stack([s[n] for s in starts]) for n in self.w0)

    def _episode(self, task):
        return [t.to(self.device, self.dtype, memory_format=self.format) if t.is_floating_point() else t.to(self.device)
                for t in task]

    def step_queries(self, yq, t):
        """Indices into ``yq`` (one task's query labels, or a meta-batch's, tasks on the first axis)
        of the queries behind grad L_val(w_t) at step t < T with ``--step-val-batch``: the same
        number of every class, a window that moves on each step and wraps around, so that the steps
        together use the query set evenly."""
        k = self.cfg.step_val_batch // self.cfg.ways
        by_class = torch.argsort(yq, dim=-1, stable=True).unflatten(-1, (self.cfg.ways, -1))  # [..., ways, queries]
        j = ((t - 1) * k + torch.arange(k, device=yq.device)) % by_class.shape[-1]
        return by_class[..., j].flatten(-2)

    def adapt_and_estimate(self, task, method=None, index=None):
        """The hypergradient of one task (``index``: its index in the training tasks, which
        ``--init fresh``'s start is keyed by) and its query accuracy after adaptation."""
        xs, ys, xq, yq = self._episode(task)
        reduction = self.cfg.loss_reduction
        loss = lambda out, y: cross_entropy(out, y, reduction)  # noqa: E731
        train_loss, val_loss = mgnn.losses(self._forward, loss, (xs, ys), (xq, yq))

        def step_val_loss(w, a, t):
            idx = self.step_queries(yq, t)
            return cross_entropy(self._forward(w, a, xq[idx]), yq[idx], reduction, total=len(yq))

        arguments = method_arguments(self.cfg, method or self.cfg.method, step_val_loss)
        if self.loop == "higher" and self.streamed(arguments):
            res = self.higher_loop(self._start(index), (xs, ys, xq, yq), loss, arguments)
        else:
            res = mg.hypergradient(train_loss, val_loss, self._start(index), self.hparams,
                                   **inner_arguments(self.cfg, optimizer=self.optimizer), **arguments)
        with torch.no_grad():
            acc = (self._forward(res.params, self.hparams, xq).argmax(1) == yq).double().mean().item()
        return res, acc

    def streamed(self, arguments: dict) -> bool:
        """Whether ``--loop higher`` runs ``method`` as a researcher's own higher loop with the stream
        attached: the methods that need only the current step, with momentum SGD on the adapted weights
        themselves (not a learned initialisation's offsets) and one validation loss at every step. The
        others run through ``mg.hypergradient`` on higher's functional model and SGD."""
        return (arguments["method"] in STREAMED and self.cfg.init != "learned" and self.cfg.inner_optimizer == "sgd"
                and arguments.get("variant", "eq6") == "eq6" and "step_val_loss" not in arguments)

    def higher_loop(self, w0: dict, episode, loss, arguments: dict) -> mg.Hypergradient:
        """One task's hypergradient as the README's "greedy in your own loop" writes it: a
        ``higher.innerloop_ctx`` loop of momentum SGD on the support set, the public integration
        attached (:func:`metagreedy.integrations.higher.attach`). Its fast weights start at the task's
        ``w0`` and alpha, the warp layers the outer optimizer updates; ``loss(out, y)`` reduces as
        ``--loss-reduction`` says."""
        xs, ys, xq, yq = episode
        names = [n for n, _ in self.model.named_parameters()]
        start = {**w0, **self.hparams}
        inner = inner_arguments(self.cfg)
        inner_opt = torch.optim.SGD([p for n, p in self.model.named_parameters() if n not in self.hparams],
                                    lr=inner["lr"], momentum=inner["momentum"])
        with higher.innerloop_ctx(self.model, inner_opt) as (fmodel, diffopt):
            fmodel.update_params([start[n] for n in names])
            method = arguments["method"]
            hg = attach(fmodel, diffopt, self.hparams, lambda: loss(fmodel(xq), yq), method=method,
                        **{k: arguments[k] for k in STREAMED[method] if k in arguments})
            for _ in range(inner["steps"]):
                train_loss = loss(fmodel(xs), ys)
                diffopt.step(train_loss)
                hg.step()
            grads = hg.grad()
            w_T = {n: w.detach() for n, w in zip(names, fmodel.fast_params) if n not in self.hparams}
        return mg.Hypergradient(grad=grads, params=w_T, vjps=hg.vjps, train_loss=finite("train_loss", train_loss.detach()),
                                val_loss=hg.val_loss, method=method)

    # ---- the protocol train.py drives ----
    def batched_estimate(self, episodes, method=None, start=()):
        """The meta-batch's inner loops as one computation: the tasks' adapted weights stacked on a
        leading axis, the network run with ``torch.func.vmap``. Tasks are independent, so the
        stacked problem's hypergradient (the tasks' train losses summed, their validation losses
        averaged, each reduced over its examples as ``--loss-reduction`` says) is the mean of the
        per-task hypergradients for every method (tests/test_omniglot.py). ``start``: the tasks'
        starts, stacked (:meth:`stacked_start`); none when every task starts alike."""
        return self.batched_estimate_on(*self.stack(episodes), *start, method=method)

    def stack(self, episodes):
        """A meta-batch's episodes as four tensors on the device, tasks on the first axis."""
        return tuple(torch.stack(t) for t in zip(*[self._episode(e) for e in episodes]))

    def batched_estimate_on(self, xs, ys, xq, yq, *start, method=None):
        """:meth:`batched_estimate` on stacked tensors (the episodes', then the starts' if any): no
        host-device traffic but the final losses' finiteness check, so that a GPU can capture it in
        a CUDA graph (``--loop graph``)."""
        (n_tasks, n_support), summed = ys.shape, self.cfg.loss_reduction == "sum"
        stacked = lambda w, a, x: vmap(lambda wb, xb: self._forward(wb, a, xb))(w, x)  # noqa: E731

        def train_loss(w, a):
            total = F.cross_entropy(stacked(w, a, xs).flatten(0, 1), ys.flatten(), reduction="sum")
            return total if summed else total / n_support

        def val_loss(w, a):
            out = stacked(w, a, xq).flatten(0, 1)
            return F.cross_entropy(out, yq.flatten(), reduction="sum") / n_tasks if summed else \
                F.cross_entropy(out, yq.flatten())

        def step_val_loss(w, a, t):  # with a sum, each task's window stands for its queries' sum
            rows, idx = torch.arange(n_tasks, device=yq.device)[:, None], self.step_queries(yq, t)
            loss = F.cross_entropy(stacked(w, a, xq[rows, idx]).flatten(0, 1), yq[rows, idx].flatten())
            return loss * yq.shape[1] if summed else loss

        start = dict(zip(self.w0, start)) if start else \
            {n: w.expand(n_tasks, *w.shape).clone() for n, w in self._start().items()}
        res = mg.hypergradient(train_loss, val_loss, start, self.hparams, **inner_arguments(self.cfg),
                               **method_arguments(self.cfg, method or self.cfg.method, step_val_loss))
        with torch.no_grad():
            acc = (stacked(res.params, self.hparams, xq).argmax(-1) == yq).double().mean(1)
        return res, acc, n_tasks

    def hypergradient(self, step, members):
        if self.loop in ("batched", "graph") and members:
            indices = [step * self.cfg.meta_batch + j for j in members]
            episodes, start = [self.train_tasks[i] for i in indices], self.stacked_start(indices)
            if self.replay is not None and len(members) == self.cfg.meta_batch:  # the captured shapes
                res, acc, n = self.replay(*self.stack(episodes), *start)
                res = res._replace(train_loss=finite("train_loss", res.train_loss),
                                   val_loss=finite("val_loss", res.val_loss))
            else:
                res, acc, n = self.batched_estimate(episodes, start=start)
            return ({k: g * n for k, g in res.grad.items()},
                    {"val_loss": res.val_loss, "train_loss": res.train_loss / n,
                     "train_query_acc": acc.mean().item(), "vjps": res.vjps}, n)
        grads = {n: torch.zeros_like(a) for n, a in self.hparams.items()}
        val_losses, train_losses, accs, vjps = [], [], [], 0
        for j in members:
            index = step * self.cfg.meta_batch + j
            res, acc = self.adapt_and_estimate(self.train_tasks[index], index=index)
            for n in grads:
                grads[n] += res.grad[n]
            val_losses.append(res.val_loss)
            train_losses.append(res.train_loss)
            accs.append(acc)
            vjps = res.vjps
        n = max(len(members), 1)
        metrics = {"val_loss": sum(val_losses) / n, "train_loss": sum(train_losses) / n,
                   "train_query_acc": sum(accs) / n, "vjps": vjps}
        return grads, metrics, len(members)

    # ---- adapting to a task and classifying its queries (evaluation, and reuse of a trained run) ----
    def start_weights(self, ways: int, split=None, index=None) -> dict:
        """Where adaptation starts for a task of ``ways`` classes, as absolute weights: the fixed (or,
        with ``--init learned``, the learned) initialisation of the adapted layers. The head has one
        row per class, so for another number of ways than the run's it is drawn as ``nn.Linear``
        initialises it, from a generator keyed by (seed, ways): the same run and ways give the same
        predictions everywhere. SGD on w = init + delta from delta = 0 takes the same steps as SGD on w
        from init, so evaluation adapts the absolute weights. With ``--init fresh``, task ``index`` of
        ``split`` starts from its own draw (:meth:`fresh_start`; ``split`` None: an episode of yours)."""
        if self.cfg.init == "fresh":
            return self.fresh_start(ways, split, index)
        if self.cfg.init == "learned":
            w = {n: self.hparams[f"init.{n}"].detach() for n in self.w0}
        else:
            w = dict(self.w0)
        if ways != self.cfg.ways:
            weight, bias = linear_init(w["head.weight"].shape[1], ways, self.cfg.seed)
            w["head.weight"], w["head.bias"] = (t.to(self.device, self.dtype) for t in (weight, bias))
        return w

    def warp(self) -> dict:
        return {n: a.detach() for n, a in self.hparams.items() if not n.startswith("init.")}

    def adapt(self, support_x, support_y, ways: int, split=None, index=None) -> dict:
        """w_T: T inner steps on the support set, as training adapts (no hypergradient), from
        :meth:`start_weights`."""
        warp = self.warp()
        train_loss = lambda w, a: cross_entropy(self.forward(w, a, support_x), support_y,  # noqa: E731
                                                self.cfg.loss_reduction)
        return mg.inner_loop(train_loss, self.start_weights(ways, split, index), warp,
                             **inner_arguments(self.cfg, optimizer=self.optimizer))

    def predict(self, support_x, support_y, query_x, query_mode=None):
        """Labels (0..ways-1, on the CPU) of ``query_x`` after adapting to the support set as training
        adapted (T inner steps from the run's initialisation, warp layers fixed): the reuse of a
        trained run (``run.predict``). Images are float tensors [N, 1, 28, 28] in [0, 1], ink = 1,
        as the task samplers and ``metagreedy.data.omniglot.preprocess`` give them, checked here;
        any number of ways and shots (see :meth:`start_weights` for the head). ``query_mode``: see
        :meth:`_predict` (None: the run's ``--eval-queries``)."""
        for name, x in (("support_x", support_x), ("query_x", query_x)):
            check_images(name, x)
        support_y = torch.as_tensor(support_y)
        if support_y.dim() != 1 or support_y.is_floating_point() or len(support_y) != len(support_x):
            raise ValueError(f"support_y must hold one integer label per support image, got {described(support_y)}")
        return self._predict(support_x.detach(), support_y, query_x.detach(), query_mode).cpu()

    def _predict(self, support_x, support_y, query_x, query_mode=None, split=None, index=None):
        """Labels of ``query_x`` after adapting to the support set (labels 0..ways-1, every class
        present). ``transductive``: the queries are one batch, so batch norm's statistics come from
        all of them (as in training); ``inductive``: each query is classified in a batch of the
        support images and itself alone (Nichol et al. 2018), so its label does not depend on the
        other queries; None: the run's ``--eval-queries``. ``split`` and ``index``: the task set and
        index the episode comes from, which ``--init fresh`` keys its start by (None: yours)."""
        query_mode = query_mode or self.cfg.eval_queries
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES}, got {query_mode!r}")
        xs, ys, xq = self._episode((support_x, support_y, query_x))
        ways = int(ys.max()) + 1
        if ys.dim() != 1 or ys.min() < 0 or not torch.equal(torch.unique(ys), torch.arange(ways, device=ys.device)):
            raise ValueError("support_y must hold the labels 0..ways-1, every one at least once")
        w_T = self.adapt(xs, ys, ways, split, index)
        warp = self.warp()
        with torch.no_grad():
            if query_mode == "transductive":
                return self.forward(w_T, warp, xq).argmax(1)
            forward = mgnn.module_forward(self.model)  # vmap needs torch.func's functional_call
            batches = torch.cat([xs.expand(len(xq), *xs.shape), xq[:, None]], 1).contiguous()  # [Q, S + 1, ...]
            w_T = {n: w.contiguous() for n, w in w_T.items()}
            return vmap(lambda x: forward(w_T, warp, x)[-1])(batches).argmax(-1)

    def accuracy(self, tasks, count: int, query_mode=None, split=None) -> list[float]:
        """Query accuracy after adaptation on tasks 0..count-1 of the task set ``tasks`` (``split``:
        which one, for ``--init fresh``'s starts; None: started as :meth:`predict` starts episodes of
        yours); a task whose adaptation diverges (a non-finite support loss) classifies nothing:
        accuracy 0, counted in ``self.diverged``."""
        out = []
        for i in range(count):
            xs, ys, xq, yq = self._episode(tasks[i])
            try:
                out.append((self._predict(xs, ys, xq, query_mode, split, i) == yq).double().mean().item())
            except mg.NonFiniteLoss:
                out.append(0.0)
                self.diverged += 1
        return out

    def split(self, name: str, ways=None, shots=None, queries=None):
        """The meta-validation or meta-test task set, at the run's sizes or others."""
        index = {"validation": 1, "test": 2}.get(name)
        if index is None:
            raise ValueError(f"split must be 'validation' or 'test', got {name!r}")
        sizes = (ways or self.cfg.ways, shots or self.cfg.shots, queries or self.cfg.queries)
        if sizes == (self.cfg.ways, self.cfg.shots, self.cfg.queries):
            return (self.train_tasks, self.val_tasks, self.test_tasks)[index]
        return self._tasksets(*sizes)[index]

    def score(self, split: str = "test", tasks: int | None = None, ways=None, shots=None, queries=None,
              query_mode=None) -> tuple[float, float, int]:
        """Mean query accuracy, the half-width of its 95% confidence interval and the number of tasks,
        over the first ``tasks`` tasks of a split (default: --final-eval-tasks, and the queries scored
        as --eval-queries says: as the run's summary)."""
        tasks = self.cfg.final_eval_tasks if tasks is None else tasks
        for name, value in (("tasks", tasks), ("ways", ways), ("shots", shots), ("queries", queries)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        return (*mean_ci95(self.accuracy(self.split(split, ways, shots, queries), tasks, query_mode, split)), tasks)

    def evaluate(self, step):
        self.diverged = 0
        mean, ci = mean_ci95(self.accuracy(self.val_tasks, self.cfg.eval_tasks, split="validation"))
        return {"meta_val_acc": mean, "meta_val_ci95": ci, **self._diverged()}

    def final(self):
        self.diverged = 0
        val, val_ci, _ = self.score("validation")
        test, test_ci, _ = self.score("test")
        return {"meta_val_acc": val, "meta_val_ci95": val_ci, "meta_test_acc": test, "meta_test_ci95": test_ci,
                "eval_tasks": self.cfg.final_eval_tasks, **self._diverged()}

    def _diverged(self) -> dict:
        return {"eval_diverged_tasks": self.diverged} if self.diverged else {}


def check_images(name: str, x) -> None:
    """Refuse, in one line, what cannot be images as the task samplers give them: float tensors
    [N, 1, 28, 28] in [0, 1], finite."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or \
            tuple(x.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE) or len(x) == 0:
        raise ValueError(f"{name} must be a float tensor [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] in [0, 1] (see "
                         f"metagreedy.data.omniglot.preprocess), got {described(x)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds values that are not finite (NaN or infinite)")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        raise ValueError(f"{name} must be in [0, 1] (ink = 1, as metagreedy.data.omniglot.preprocess gives it), got "
                         f"values in [{low:.4g}, {high:.4g}]" + ("; divide 0-255 images by 255" if high > 1.5 else ""))


def described(x) -> str:
    return f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
