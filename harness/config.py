"""Experiment settings, each declared once: name, default, choices, help, the tasks it applies to.

The settings of every task are :data:`COMMON`, here; a task declares its own in its module
(``SETTINGS``, in the language of :mod:`harness.settings`), and the table learns them from the
experiments, the checkout's ``tasks`` package (or a registry of the same kind passed to
:func:`using`): it names no task and no setting of one. Precedence: a setting's default < its
task's ``DEFAULTS`` (only what differs for that task) < ``--config FILE`` < command-line flags. A run
holds the settings of its task (and the options of its method) only; a setting of another task, or an
option of another method, is an error that names where it applies. ``python train.py --help`` is
generated from the table.
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import os
import sys
from typing import Any, Mapping, NamedTuple, Optional

from metagreedy.estimators import METHODS

import tasks

from .settings import AUTO, NON_NEGATIVE, POSITIVE, SEED, Setting, UsageError, at_least, brief, in_range, path_text

METHOD_NAMES = tuple(METHODS)  # the estimators' registry, metagreedy.METHODS

S = Setting
COMMON = [  # the settings of every task; each task declares its own (tasks/<task>.py's SETTINGS)
    # ---- what to run ----
    S("task", "", "the experiment (its settings are in its group below; the first is the main job)"),
    S("method", "greedy", "the hypergradient estimator (README's table)", choices=METHOD_NAMES),
    S("gamma", 0.9, "greedy's decay gamma in equation 6 (the paper picks 0.9, 0.99 or 0.999 on validation)",
      check=in_range(0.0, 1.0), methods=("greedy",)),
    S("variant", "eq6", "greedy: eq6 = equation 6 as written; final = grad L_val(w_T) in every term",
      choices=("eq6", "final"), methods=("greedy",)),
    S("terms", 2, "IFT: Neumann series terms K", check=at_least(0), methods=("ift",), metavar="K"),
    S("neumann_lr", 0.0, "IFT: the Neumann step eta in H^-1 ~ eta sum_{j<=K} (I - eta H)^j; the series converges "
      "only where every Hessian eigenvalue at w_T lies in (0, 2/eta); 0 = IFT's default, the inner learning rate",
      check=NON_NEGATIVE, methods=("ift",), metavar="ETA"),
    S("k", 1, "truncated: inner steps back-propagated through (at most --inner-steps)", check=at_least(1),
      methods=("truncated",)),
    # ---- the inner problem: w_t = Phi(w_{t-1}, alpha) ----
    S("inner_steps", 5, "T, inner optimizer steps per hypergradient", check=at_least(1), metavar="T"),
    S("inner_lr", 0.1, "inner learning rate", check=POSITIVE, metavar="LR"),
    S("momentum", 0.9, "inner momentum (torch.optim.SGD's convention)", check=in_range(0.0, 1.0, high_open=True)),
    S("inner_optimizer", "sgd", "inner optimizer: momentum SGD (the paper's) or Adam", choices=("sgd", "adam")),
    # ---- the outer problem ----
    S("outer_steps", 2000, "outer (hyperparameter) steps; --resume may raise it", check=at_least(0),
      resumable=True, metavar="N"),
    S("outer_lr", 1e-3, "outer learning rate", check=POSITIVE, metavar="LR"),
    S("outer_optimizer", "adam", "outer optimizer on alpha", choices=("adam", "sgd")),
    S("seed", 0, "seed of the run: its tasks, noisy labels and initialisation are functions of it", check=SEED),
    S("max_bad_steps", 5, "consecutive non-finite hypergradients before the run stops", check=at_least(1)),
    S("dtype", "float32", "floating-point precision of the whole run", choices=("float32", "float64")),
    S("tf32", False, "on a GPU, let float32 convolutions and matrix products run in TF32 (10-bit mantissa; torch's "
      "default for cuDNN convolutions); off by default: hypergradients are sensitive to round-off "
      "(docs/PERFORMANCE.md, precision)"),
    # ---- infrastructure (none of these changes a run's numbers) ----
    S("run_dir", "", "the run's directory (default: runs/<name>-<time>); it must not hold another run",
      resumable=True, metavar="DIR"),
    S("checkpoint_every", 100, "outer steps between checkpoints", check=at_least(1), resumable=True, metavar="N"),
    S("device", AUTO, "auto (a GPU when there is one), cpu or cuda", choices=("auto", "cpu", "cuda"),
      resumable=True),
    S("wandb", AUTO, "W&B logging: auto = online when logged in (WANDB_API_KEY or netrc) and the server answers, "
      "else offline", choices=("auto", "online", "offline", "disabled"), resumable=True),
    S("wandb_project", "metagreedy", "W&B project", resumable=True, metavar="NAME"),
    S("wandb_group", "", "W&B group (default: one the task names from the run's settings)", resumable=True,
      metavar="NAME"),
    S("progress", True, "show a progress bar", resumable=True),
]
del S
COMMON_GROUP = "common to every task"


class Table:
    """Every setting of every task: :data:`COMMON`, and the ``SETTINGS`` each task of ``experiments``
    declares (``experiments.NAMES`` and ``experiments.load(name)`` -> the task's module, as the
    checkout's ``tasks`` package). A setting several tasks declare is one flag: its tasks are those
    that declare it, its choices and help may differ by task, and a task's own default goes to that
    task's defaults. ``upgrades``: each task's ``upgrade`` of its stored runs, or None."""

    def __init__(self, experiments):
        self.tasks = tuple(experiments.NAMES)
        modules = {name: experiments.load(name) for name in self.tasks}
        self.descriptions = {name: m.DESCRIPTION for name, m in modules.items()}
        self.defaults = {name: dict(m.DEFAULTS) for name, m in modules.items()}
        self.upgrades = {name: getattr(m, "upgrade", None) for name, m in modules.items()}
        declared: dict[str, list] = {}
        for name, module in modules.items():
            for s in getattr(module, "SETTINGS", ()):
                declared.setdefault(s.name, []).append((name, s))
        settings = [dataclasses.replace(s, tasks=self.tasks) for s in COMMON]
        settings[0] = dataclasses.replace(settings[0], default=self.tasks[0], choices=self.tasks)  # --task
        settings += [self._merge(versions) for versions in declared.values()]
        self.settings = settings
        self.by_name = {s.name: s for s in settings}
        if len(self.by_name) != len(settings):
            raise TypeError("a task declares a setting of every task: "
                            f"{sorted(n for n in declared if n in {s.name for s in COMMON})}")

    def _merge(self, versions: list) -> Setting:
        """One setting from the versions the tasks declare (``[(task, Setting)]``)."""
        def shape(s: Setting) -> tuple:  # what every declaration of one flag must agree on
            return (s.kind, s.methods, s.resumable, s.pinned, s.metavar, s.check and s.check[1],
                    s.requires and s.requires[1])

        first = versions[0][1]
        for task, s in versions[1:]:
            if shape(s) != shape(first):
                raise TypeError(f"tasks declare --{s.name.replace('_', '-')} differently ({versions[0][0]}, {task})")
            if s.default != first.default:
                self.defaults[task].setdefault(s.name, s.default)
        helps = {s.help for _, s in versions}
        text = first.help if len(helps) == 1 else "; ".join(f"{task}: {s.help}" for task, s in versions)
        choices = {task: s.choices for task, s in versions}
        if all(c == first.choices for c in choices.values()):
            choices = first.choices
        return dataclasses.replace(first, help=text, choices=choices, tasks=tuple(t for t, _ in versions))

    def groups(self) -> dict:
        """--help's groups: the common one, then one per task (its own settings), by title."""
        return {COMMON_GROUP: None, **{f"--task {t}": t for t in self.tasks}}


_tables: dict = {}
_experiments = contextvars.ContextVar("experiments", default=tasks)


def registry_problem(experiments) -> str:
    """Why ``experiments`` is not a registry of tasks of the kind of the checkout's ``tasks`` ('' when
    it is): ``NAMES``, a non-empty tuple of task names, and ``load(name)`` -> the task's module."""
    names = getattr(experiments, "NAMES", None)
    if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) for n in names):
        return f"got {type(experiments).__name__}, which has no NAMES (a non-empty tuple of task names)"
    if not callable(getattr(experiments, "load", None)):
        return f"got {type(experiments).__name__}, which has no load(name) giving a task's module"
    return ""


@contextlib.contextmanager
def using(experiments):
    """Within the block, the settings table, and every reader of a stored run's settings, is that of
    ``experiments``, a registry of the kind :func:`registry_problem` checks (None keeps the one in
    force: the checkout's ``tasks`` unless another block says otherwise). Yields the registry in force."""
    token = _experiments.set(_experiments.get() if experiments is None else experiments)
    try:
        yield _experiments.get()
    finally:
        _experiments.reset(token)


def table(experiments=None) -> Table:
    """The settings table of ``experiments`` (default: the registry in force, see :func:`using`)."""
    if experiments is None:
        experiments = _experiments.get()
    key = id(experiments)
    if key not in _tables or _tables[key][0] is not experiments:
        _tables[key] = (experiments, Table(experiments))
    return _tables[key][1]


def setting(name: str) -> Optional[Setting]:
    """The setting called ``name`` in the table, or None."""
    return table().by_name.get(name)

# ---- the resolved settings of one run ---------------------------------------------------------------

class Config:
    """The settings of one run, read as attributes; only those that apply to its task and method."""

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"'{name}' is not a setting of this run (task {self._values.get('task')}, "
                                 f"method {self._values.get('method')})") from None

    def __setattr__(self, name, value):
        raise AttributeError("a Config is read-only; use replace()")

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str, default: Any = None) -> Any:
        """A setting that may not apply to this run (e.g. an option of another method)."""
        return self._values.get(name, default)

    def __eq__(self, other) -> bool:
        return isinstance(other, Config) and self._values == other._values

    def __repr__(self) -> str:
        return f"Config({self._values!r})"

    def replace(self, **changes) -> "Config":
        return Config({**self._values, **changes})

    def to_dict(self) -> dict:
        return dict(self._values)


# ---- reading values: flags, files ---------------------------------------------------------------------

def parse_bool(text) -> bool:
    """true/false, yes/no, on/off, 1/0 in any case (the W&B agent passes True / False)."""
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {brief(text)}")


def _from_text(setting: Setting, text: str) -> Any:
    kind = setting.kind
    try:
        if kind is bool:
            return parse_bool(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:  # a UsageError passes through argparse unchanged: one line without its prefix
        want = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise UsageError(f"{setting.flag} must be {want}, got {brief(text)}") from None
    return text


def _from_file(setting: Setting, value: Any, where: str) -> Any:
    """Check a value from a config file against the setting's type (ints are accepted for floats)."""
    kind = setting.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is bool and not isinstance(value, bool):
        raise UsageError(f"{where}: '{setting.name}' must be true or false, got {brief(value)}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UsageError(f"{where}: '{setting.name}' must be {kind.__name__}, got {type(value).__name__} "
                         f"{brief(value)}")
    return value


MAX_YAML_NODES = 10_000  # far beyond any config file; YAML aliases cannot make one expand past it
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines; a larger one is not read (parsing is slow)


def _count_nodes(data, budget: int) -> int:
    """Nodes of ``data`` as a tree (aliases counted each time they are used), stopping at ``budget``."""
    seen, stack = 0, [data]
    while stack and seen <= budget:
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return seen


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """YAML's safe loader that refuses a mapping with a key written twice (YAML keeps the last)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    duplicate = False
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {brief(key)} (line "
                                                            f"{key_node.start_mark.line + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def load_file(path: str) -> dict:
    """The settings in a YAML file: a mapping of setting name to value, checked against the table."""
    import yaml

    where = f"config file {path_text(path)}"
    if not os.path.exists(path):
        raise UsageError(f"{where} does not exist")
    if not os.path.isfile(path):
        raise UsageError(f"{where} is not a regular file")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise UsageError(f"{where} is {os.path.getsize(path)} bytes, more than a settings file can need "
                         f"({MAX_CONFIG_BYTES}); refusing to read it")
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise UsageError(f"{where} is not valid YAML: {brief(str(e).splitlines()[0])}") from None
    except RecursionError:
        raise UsageError(f"{where} is nested too deeply to be a settings file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{where} cannot be read ({type(e).__name__})") from None
    if data is None:
        return {}
    if _count_nodes(data, MAX_YAML_NODES) > MAX_YAML_NODES:
        raise UsageError(f"{where} expands to more than {MAX_YAML_NODES} values (YAML aliases?); refusing it")
    if not isinstance(data, dict):
        raise UsageError(f"{where} must hold a mapping of setting: value")
    out, by_name = {}, table().by_name
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in by_name:
            raise UsageError(f"{where}: unknown setting {brief(key)}")
        out[name] = _from_file(by_name[name], value, where)
    return out


# ---- the command line ------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(brief(message) if len(message) > 300 else message)


class _Help(argparse.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32, width=110)

    def _format_action_invocation(self, action):
        if isinstance(action, _Bool):
            return f"{action.option_strings[0]}[=BOOL], {action.option_strings[1]}"
        return super()._format_action_invocation(action)


def _show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _default_text(setting: Setting, task_defaults: Mapping[str, dict]) -> str:
    parts = [f"default: {_show(setting.default)}"] if setting.default != "" else []
    parts += [f"{task}: {_show(d[setting.name])}" for task, d in task_defaults.items() if setting.name in d]
    return f" ({'; '.join(parts)})" if parts else ""


def _applies_text(setting: Setting) -> str:
    where = []
    if setting.tasks != table().tasks and len(setting.tasks) > 1:
        where.append(" and ".join(setting.tasks))
    if setting.methods:
        where.append("--method " + "/".join(setting.methods))
    return f" [{', '.join(where)} only]" if where else ""


class _Bool(argparse.Action):
    """``--flag``, ``--flag=VALUE`` (true/false in any case) and ``--no-flag``."""

    def __init__(self, option_strings, dest, setting, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=None, metavar="BOOL", **kwargs)
        self.setting = setting

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                raise UsageError(f"{option_string} takes no value; use {self.setting.flag}=true|false")
            setattr(namespace, self.dest, False)
        else:
            try:
                setattr(namespace, self.dest, True if value is None else parse_bool(value))
            except ValueError:
                raise UsageError(f"{option_string} must be true or false, got {brief(value)}") from None


def parser():
    """The command line: one flag per setting, grouped by task, each with its help, default and choices.
    Booleans take ``--flag``, ``--no-flag`` and ``--flag=true|false``."""
    t = table()
    p = _Parser(prog="train.py", formatter_class=_Help, allow_abbrev=False,
                description="metagreedy: meta-training and hyperparameter optimization with greedy hypergradients. "
                "Boolean settings take --flag, --no-flag or --flag=true|false. A setting of another task, or an "
                "option of another --method, is an error.")
    p.add_argument("--config", metavar="FILE", help="a YAML file of settings (flags override it)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint; its settings are "
                   "kept, and only --outer-steps (upward), --device, --data-root, --run-dir (the same), "
                   "--checkpoint-every, --wandb* and --progress may be given")
    groups = {}
    for title, task in t.groups().items():
        text = None
        if task is not None:
            changed = ", ".join(f"{k}={_show(v)}" for k, v in t.defaults[task].items()) or "none"
            text = f"{t.descriptions[task]} Defaults that differ from the common ones: {changed}."
        groups[task] = p.add_argument_group(title, text)
    for s in t.settings:
        group = groups[s.tasks[0] if len(s.tasks) == 1 else None]
        choices = s.choices_for(s.tasks[0]) if not isinstance(s.choices, dict) else None
        text = f"{s.help}{_applies_text(s)}{_default_text(s, t.defaults)}".replace("%", "%%")
        if isinstance(s.choices, dict):
            text += "; choices: " + "; ".join(f"{t}: {', '.join(c)}" for t, c in s.choices.items())
        if s.kind is bool:
            group.add_argument(s.flag, "--no-" + s.flag[2:], dest=s.name, action=_Bool, setting=s, help=text)
        else:
            metavar = s.metavar or ("{" + ",".join(map(str, choices)) + "}" if choices else s.kind.__name__.upper())
            group.add_argument(s.flag, dest=s.name, default=None, metavar=metavar,
                               type=lambda v, s=s: _from_text(s, v), help=text)
    return p


class Invocation(NamedTuple):
    explicit: dict  # settings given in --config and as flags (flags win), by name
    from_flags: dict  # the flags alone
    resume: str  # --resume DIR, or ""
    config_file: str


def parse(argv: Optional[list] = None, root: Optional[str] = None) -> Invocation:
    """Read the command line once: the settings the user gave (``--config`` file, then flags). A
    relative ``--config`` path is read from ``root`` (default: the working directory)."""
    argv = [_dashes(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:
        args = parser().parse_args(argv)
    except argparse.ArgumentTypeError as e:  # pragma: no cover - argparse reports through error()
        raise UsageError(str(e)) from None
    flags = {k: v for k, v in vars(args).items() if v is not None and k not in ("config", "resume")}
    from_file = load_file(os.path.join(root or "", args.config)) if args.config else {}
    return Invocation({**from_file, **flags}, flags, args.resume or "", args.config or "")


def _dashes(arg: str) -> str:
    """``--outer_steps=5`` (as W&B agents pass a sweep's parameter names) -> ``--outer-steps=5``."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg[2:].partition("=")
    return "--" + name.replace("_", "-") + eq + value


def _where(name: str, inv: Invocation) -> str:
    return table().by_name[name].flag if name in inv.from_flags else f"'{name}' in config file {brief(inv.config_file)}"


def resolve_settings(inv: Invocation) -> Config:
    """The run's settings: defaults < task defaults < file < flags, checked, only those that apply."""
    t = table()
    by_name = t.by_name
    task = inv.explicit.get("task", by_name["task"].default)
    if task not in t.tasks:
        raise UsageError(f"unknown --task {brief(task)}; choose from {', '.join(t.tasks)}")
    defaults = t.defaults[task]
    method = inv.explicit.get("method", defaults.get("method", by_name["method"].default))
    if method not in METHOD_NAMES:
        raise UsageError(f"unknown --method {brief(method)}; choose from {', '.join(METHOD_NAMES)}")
    for name in inv.explicit:
        s = by_name[name]
        if task not in s.tasks:
            raise UsageError(f"{_where(name, inv)} applies to --task {' and '.join(s.tasks)}, not {task}")
        if s.methods is not None and method not in s.methods:
            raise UsageError(f"{_where(name, inv)} applies to --method {' and '.join(s.methods)}, not {method}")
    values = {s.name: s.default for s in t.settings if s.applies(task, method)}
    values.update({k: v for k, v in defaults.items() if k in values})
    values.update(inv.explicit)
    for name, value in values.items():
        check_value(by_name[name], value, task)
    return Config(values)


def check_value(s: Setting, value: Any, task: str) -> None:
    choices = s.choices_for(task)
    if choices is not None and value not in choices:
        raise UsageError(f"unknown {s.flag} {brief(value)}" + (f" for {task}" if isinstance(s.choices, dict) else "")
                         + f"; choose from {', '.join(map(str, choices))}")
    if s.check is not None:
        ok, requirement = s.check
        if not ok(value):
            raise UsageError(f"{s.flag} must be {requirement}, got {brief(value)}")


def resolve(argv: Optional[list] = None, root: Optional[str] = None) -> Config:
    """Settings for a new run from the command line (``--resume`` is train.py's business); a
    relative ``--config`` path is read from ``root`` (default: the working directory)."""
    return resolve_settings(parse(argv, root))


def validate(cfg: Config) -> None:
    """Checks between settings that hold for every task, and what each setting ``requires`` of the
    others when it is not at its default; each task checks its own (tasks.<task>.check)."""
    if cfg.method == "truncated" and cfg.k > cfg.inner_steps:
        raise UsageError(f"--k must be in [1, --inner-steps = {cfg.inner_steps}], got {cfg.k}")
    t = table()
    for name, value in cfg.to_dict().items():
        s = t.by_name[name]
        if s.requires and value != t.defaults[cfg.task].get(name, s.default) and not s.requires[0](cfg):
            raise UsageError(f"{s.flag} applies to {s.requires[1]} only")
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here (torch.cuda.is_available() is False); "
                             "use --device cpu or auto")


def pin(settings: Mapping[str, Any], facts: Mapping[str, Any]) -> dict:
    """A run's settings with each pinned "auto" replaced by what the run used (its facts): a
    resumed or reused run goes on with the same data, whatever it finds on this machine."""
    out = dict(settings)
    for s in table().settings:
        if s.pinned and out.get(s.name) == AUTO and facts.get(s.name) not in (None, AUTO):
            out[s.name] = facts[s.name]
    return out


# Settings of every task added after runs were stored without them, with the value that says how
# those runs behaved: a stored config that lacks one is read with it (upgrade()). Each task upgrades
# its own settings (its module's ``upgrade``, tasks/__init__.py).
ADDED_LATER = {"tf32": None,  # None: torch's defaults (TF32 in cuDNN convolutions, not in matmuls)
               "neumann_lr": 0.0}  # IFT's default step, as before the setting existed


def upgrade(stored: Mapping[str, Any]) -> dict:
    """A stored config with the settings added since it was written, at their earlier behaviour:
    those of every task here, then the task's own (its ``upgrade``)."""
    out = dict(stored)
    task, method, t = out.get("task"), out.get("method"), table()
    if task in t.tasks and method in METHOD_NAMES:
        for name, value in ADDED_LATER.items():
            if t.by_name[name].applies(task, method):
                out.setdefault(name, value)
        if t.upgrades[task] is not None:
            out = dict(t.upgrades[task](out))
    return out


def stored_problem(stored: Mapping[str, Any]) -> str:
    """Why a checkpoint's settings, upgraded, cannot be a run's ('' when they can): unknown or
    missing settings, or values no run could have."""
    stored = upgrade(stored)
    task, method, t = stored.get("task"), stored.get("method"), table()
    if task not in t.tasks or method not in METHOD_NAMES:
        return f"names an unknown task or method ({brief(task)}, {brief(method)})"
    want = {s.name for s in t.settings if s.applies(task, method)}
    unknown, missing = sorted(set(stored) - want), sorted(want - set(stored))
    if unknown or missing:
        return f"has settings this version does not know ({brief(unknown)}) or lacks ({brief(missing)})"
    for name, value in stored.items():
        s = t.by_name[name]
        if name in ADDED_LATER and value == ADDED_LATER[name]:
            continue
        if not isinstance(value, s.kind) or (s.kind is int and isinstance(value, bool)):
            return f"holds {name} = {brief(value)}, not a {s.kind.__name__}"
        try:
            check_value(s, value, task)
        except UsageError as e:
            return f"holds a setting no run can have ({e})"
    return ""


def for_resume(stored: Mapping[str, Any], inv: Invocation) -> Config:
    """A resumed run's settings: the checkpoint's, with only the settings that cannot change its
    results taken from the command line; anything else that differs is refused, listed."""
    cfg, by_name = Config(stored), table().by_name
    differ = []
    for name, value in inv.explicit.items():
        s = by_name[name]
        if name not in stored:
            differ.append(f"{_where(name, inv)} (not a setting of this {stored.get('task')} / "
                          f"{stored.get('method')} run)")
        elif s.resumable:
            check_value(s, value, stored["task"])
        elif value != stored[name]:
            differ.append(f"{_where(name, inv)} {brief(value)} (the run has {brief(stored[name])})")
    if differ:
        allowed = ", ".join(s.flag for s in by_name.values() if s.resumable)
        raise UsageError("--resume keeps the run's settings; these differ: " + "; ".join(differ[:6])
                         + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
                         + f". Only {allowed} may change on resume")
    return cfg.replace(**{k: v for k, v in inv.explicit.items() if by_name[k].resumable})


def apply_numerics(cfg) -> None:
    """Set torch's process-wide TF32 switches from ``cfg.tf32``. A run stored before the setting
    existed has none: torch's defaults (TF32 in cuDNN convolutions only) are left as they were."""
    import torch
    tf32 = cfg.get("tf32")
    if tf32 is not None:
        torch.backends.cudnn.allow_tf32 = bool(tf32)
        torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
