"""Settings declared once: the table, --help, booleans, tasks and methods a setting applies to,
config files (task defaults and configs/*.yaml state only what differs), the table the harness
learns from the experiments, and the task protocol every task follows."""
import glob
import inspect
import os
import re

import pytest
import torch

import metagreedy as mg
import tasks
import train
from harness import config
from harness.config import UsageError
from harness.settings import DATA_ROOT

TABLE = config.table(tasks)
BY_NAME, SETTINGS = TABLE.by_name, TABLE.settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(*args):
    return config.resolve(list(args))


# ---- the table -----------------------------------------------------------------------------------------

def test_every_setting_is_declared_once_with_help_and_valid_default():
    assert len(BY_NAME) == len(SETTINGS)
    assert set(config.METHOD_NAMES) == set(mg.METHODS)
    for s in SETTINGS:
        assert s.help and s.tasks and set(s.tasks) <= set(tasks.NAMES), s.name
        for task in s.tasks:
            config.check_value(s, TABLE.defaults[task].get(s.name, s.default), task)
        if s.methods:
            assert set(s.methods) <= set(mg.METHODS)


def test_task_defaults_state_only_what_differs_and_only_their_own_settings():
    for task in tasks.NAMES:
        for name, value in tasks.load(task).DEFAULTS.items():
            s = BY_NAME[name]
            assert task in s.tasks, f"{task}.DEFAULTS sets {name}, which does not apply to it"
            assert value != s.default, f"{task}.DEFAULTS repeats the common default of {name}"
            config.check_value(s, value, task)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_config_files_state_only_what_differs(path):
    data = config.load_file(path)
    cfg = resolve("--config", path)
    defaults = TABLE.defaults[cfg.task]
    for name, value in data.items():
        if name != "task":
            assert value != defaults.get(name, BY_NAME[name].default), f"{path} repeats the default of {name}"


def test_help_shows_every_setting_with_its_default_choices_and_groups(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # independent of line wrapping
    for s in SETTINGS:
        assert s.flag in text, s.name
    for title in TABLE.groups():
        assert title + ":" in text
    assert "--inner-steps T" in text and "(default: 5; hyper_cleaning: 10; toy: 10; long_horizon: 100)" in text
    assert "{greedy,t1t2,ift,fo,full,truncated}" in text
    assert "--rotations[=BOOL], --no-rotations" in text
    assert "[--method greedy only]" in text and "[omniglot and hyper_cleaning and long_horizon only]" in text
    assert "Defaults that differ from the common ones: inner_steps=10, momentum=0.0" in text


# ---- resolving a run's settings -------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("--rotations", True), ("--no-rotations", False), ("--rotations=True", True),
                                        ("--rotations=false", False), ("--rotations=FALSE", False),
                                        ("--rotations=yes", True), ("--rotations=0", False)])
def test_booleans_take_flag_no_flag_and_a_value_in_any_case(text, value):
    assert resolve(text).rotations is value


@pytest.mark.parametrize("args,message", [
    (["--rotations=maybe"], "--rotations must be true or false, got 'maybe'"),
    (["--no-rotations=true"], "--no-rotations takes no value"),
    (["--task", "toy", "--noise", "0.4"], "--noise applies to --task hyper_cleaning, not toy"),
    (["--task", "toy", "--ways", "3"], "--ways applies to --task omniglot, not toy"),
    (["--noise", "0.4"], "--noise applies to --task hyper_cleaning, not omniglot"),
    (["--task", "toy", "--step-val-batch", "4"], "applies to --task omniglot and hyper_cleaning, not toy"),
    (["--method", "fo", "--gamma", "0.5"], "--gamma applies to --method greedy, not fo"),
    (["--method", "greedy", "--terms", "3"], "--terms applies to --method ift, not greedy"),
    (["--method", "full", "--step-val-batch", "5"], "--step-val-batch applies to --method greedy, not full"),
    (["--seed", "1e23"], "--seed must be an integer, got '1e23'"),
    (["--seed", str(10**23)], "--seed must be an integer in [0, 2^63)"),
    (["--seed", "-1"], "--seed must be an integer in [0, 2^63)"),
    (["--inner-lr", "inf"], "--inner-lr must be a positive finite number, got inf"),
    (["--outer-lr", "nan"], "--outer-lr must be a positive finite number, got nan"),
    (["--outer-lr", "-1"], "--outer-lr must be a positive finite number"),
    (["--momentum", "1"], "--momentum must be in [0.0, 1.0), got 1.0"),
    (["--gamma", "nan"], "--gamma must be in [0.0, 1.0], got nan"),
    (["--task", "hyper_cleaning", "--n-val", "0"], "--n-val must be at least 1 and at most"),
    (["--task", "hyper_cleaning", "--dataset", "omniglot"], "unknown --dataset 'omniglot' for hyper_cleaning"),
    (["--dataset", "mnist"], "unknown --dataset 'mnist' for omniglot"),
    (["--loop", "fast"], "unknown --loop 'fast'; choose from auto, higher, func, batched, graph"),
    (["--meta-batch", str(10**20)], "--meta-batch must be at least 1 and at most 100,000"),
    (["--inner-steps", str(10**12)], "--inner-steps must be at least 1 and at most 1,000,000,000"),
])
def test_bad_settings_are_one_line_naming_the_setting(args, message):
    with pytest.raises(UsageError) as e:
        resolve(*args)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_run_holds_only_its_task_and_method_settings():
    cfg = resolve("--task", "toy", "--method", "fo")
    assert "noise" not in cfg and "ways" not in cfg and "gamma" not in cfg and "data_root" not in cfg
    assert cfg.inner_steps == 10 and cfg.outer_optimizer == "sgd"  # the toy's defaults
    cfg = resolve("--method", "greedy")
    assert cfg.gamma == 0.9 and cfg.queries == 10 and "terms" not in cfg and "noise" not in cfg
    with pytest.raises(AttributeError, match="not a setting of this run"):
        cfg.noise


def test_precedence_defaults_task_file_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: hyper_cleaning\ngamma: 0.5\nouter-steps: 3\n")
    cfg = resolve("--config", str(path), "--outer-steps", "2")
    assert (cfg.gamma, cfg.outer_steps, cfg.inner_steps, cfg.inner_lr) == (0.5, 2, 10, 0.1)


def test_wandb_agent_style_underscores_are_accepted():
    assert resolve("--step_val_batch=5", "--meta_batch=4").meta_batch == 4


@pytest.mark.parametrize("content,message", [
    ("task: [toy\n", "not valid YAML"), ("gama: 0.9\n", "unknown setting 'gama'"),
    ("gamma: high\n", "'gamma' must be float"), ("ways: 2.5\n", "'ways' must be int"),
    ("- 1\n- 2\n", "must hold a mapping"), ("rotations: 3\n", "'rotations' must be true or false"),
    ("task: toy\nnoise: 0.5\n", "'noise' in config file"),
])
def test_bad_config_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(UsageError) as e:
        resolve("--config", str(path))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_alias_bomb_is_refused_quickly_with_a_bounded_message(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    for key in ("gamma", "seed"):  # under an unknown key and under known ones
        path = tmp_path / f"bomb-{key}.yaml"
        path.write_text("\n".join(lines) + f"\n{key}: *a8\n")
        with pytest.raises(UsageError) as e:
            resolve("--config", str(path))
        assert "expands to more than" in str(e.value) and len(str(e.value)) < 300


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("outer_lr: 1e-3\ninner_lr: 5E-2\n")  # YAML 1.1 reads these as strings
    cfg = resolve("--config", str(path))
    assert (cfg.outer_lr, cfg.inner_lr) == (1e-3, 5e-2)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_text("[" * 50000 + "]" * 50000), "nested too deeply"),
    (lambda p: p.mkdir(), "is not a regular file"),
])
def test_deep_or_odd_config_files_are_one_line(tmp_path, make, message):
    path = tmp_path / "c.yaml"
    make(path)
    with pytest.raises(UsageError, match=message):
        resolve("--config", str(path))


def test_an_oversized_config_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("task: toy\nwandb_group: " + "x" * (config.MAX_CONFIG_BYTES + 1) + "\n")
    with pytest.raises(UsageError, match="more than a settings file can need"):
        resolve("--config", str(path))


def test_error_messages_are_bounded(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("gamma: [" + ", ".join(["1"] * 5000) + "]\n")
    with pytest.raises(UsageError) as e:
        resolve("--config", str(path))
    assert len(str(e.value)) < 300
    with pytest.raises(UsageError) as e:
        resolve("--loop", "x" * 100000)
    assert len(str(e.value)) < 400


# ---- the task protocol ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", tasks.NAMES)
def test_every_task_follows_the_protocol(name):
    module = tasks.load(name)
    for attr in ("DESCRIPTION", "DEFAULTS", "SETTINGS", "check", "run_name", "run_group", "Task"):
        assert hasattr(module, attr), f"tasks.{name} has no {attr}"
    for method, _ in inspect.getmembers(tasks.Task, inspect.isfunction):
        assert callable(getattr(module.Task, method, None)), f"tasks.{name}.Task has no {method}()"
    assert isinstance(getattr(module.Task, "progress", None), tuple)
    cfg = config.resolve(["--task", name])
    assert name in module.run_name(cfg) and module.run_group(cfg).startswith(name)


def test_train_py_has_no_task_specific_branches():
    with open(os.path.join(ROOT, "train.py")) as fh:
        source = fh.read()
    for name in tasks.NAMES:
        assert f'"{name}"' not in source and f"'{name}'" not in source, name


@pytest.mark.parametrize("flags,want", [([], 0.0), (["--neumann-lr", "0.01"], 0.01), (["--neumann-lr", "0"], 0.0)])
def test_neumann_lr_reaches_ift_and_zero_means_the_inner_lr(flags, want):
    """The setting reaches IFT as it is; that 0 is the inner learning rate IFT alone decides
    (tests/test_estimators.py), as the estimate below shows."""
    from tasks.common import method_arguments
    cfg = config.resolve(["--task", "toy", "--method", "ift", "--terms", "3", *flags])
    assert method_arguments(cfg, "ift") == {"method": "ift", "terms": 3, "neumann_lr": want}
    assert method_arguments(cfg, "fo") == {"method": "fo"}  # another method of the task: its own defaults


def test_neumann_lr_changes_the_ift_estimate_of_a_run():
    toy = tasks.load("toy")
    lr = config.resolve(["--task", "toy"]).inner_lr

    def grad(eta):
        cfg = config.resolve(["--task", "toy", "--method", "ift", "--neumann-lr", str(eta)])
        return toy.Task(cfg, torch.device("cpu"), torch.float64).hypergradient(0, [0])[0]["alpha"]
    default, same, other = grad(0), grad(lr), grad(lr / 5)
    assert torch.equal(default, same)
    assert not torch.allclose(other, default)


@pytest.mark.parametrize("args", [["--task", "toy", "--method", "ift", "--neumann-lr", "-0.1"],
                                  ["--task", "toy", "--method", "ift", "--neumann-lr", "nan"],
                                  ["--task", "toy", "--method", "greedy", "--neumann-lr", "0.1"],
                                  ["--task", "toy", "--inner-start", "fresh"],
                                  ["--task", "hyper_cleaning", "--inner-start", "sometimes"],
                                  ["--task", "toy", "--loss-reduction", "sum"],
                                  ["--task", "long_horizon", "--loss-reduction", "sum"],
                                  ["--loss-reduction", "max"],
                                  ["--init", "random"],
                                  ["--eval-queries", "running"],
                                  ["--task", "hyper_cleaning", "--eval-queries", "inductive"],
                                  ["--val-split", "writers"],
                                  ["--task", "hyper_cleaning", "--val-split", "alphabets"],
                                  ["--noise-model", "any"],
                                  ["--task", "hyper_cleaning", "--noise-model", "same"]])
def test_the_new_settings_refuse_what_cannot_apply(args):
    with pytest.raises(config.UsageError):
        config.resolve(args)


LEVEL_SETTINGS = {"omniglot": {"loss_reduction": "mean", "eval_queries": "transductive", "val_split": "classes"},
                  "hyper_cleaning": {"loss_reduction": "mean", "noise_model": "other"}}


@pytest.mark.parametrize("task", sorted(LEVEL_SETTINGS))
def test_a_config_stored_before_the_level_settings_reads_as_that_runs_behaviour(tmp_path, task):
    """A run stored before --loss-reduction, --eval-queries, --val-split and --noise-model existed
    (config.yaml without them) is read, as the campaign and --resume read it, with the behaviour it
    had: the defaults, which are those earlier behaviours."""
    from harness import files, rundir
    cfg = resolve("--task", task)
    assert {k: cfg.get(k) for k in LEVEL_SETTINGS[task]} == LEVEL_SETTINGS[task]
    old = {k: v for k, v in cfg.to_dict().items() if k not in LEVEL_SETTINGS[task]}
    rundir.write_yaml(str(tmp_path / "config.yaml"), {**old, "facts": {}})
    stored = files.read_settings(str(tmp_path))  # not refused as damaged
    assert config.stored_problem(config.upgrade({k: v for k, v in stored.items() if k != "facts"})) == ""
    assert config.upgrade(old) == cfg.to_dict()
    assert "lacks" in config.stored_problem({k: v for k, v in old.items() if k != "inner_steps"})  # others: not


# ---- the table is the experiments': the harness names none ---------------------------------------------

def test_the_harness_names_no_task_and_learns_the_settings_from_the_experiments():
    """No module of the harness names a task, or a setting a task declares (the settings of every
    task are the harness's, COMMON, as is where the data is, DATA_ROOT; ``dataset`` is also the fact
    every run records, the data it used, which its summary.json holds)."""
    own = {s.name for s in config.COMMON} | {DATA_ROOT.name, "dataset"}
    declared = {s.name for s in SETTINGS} - own
    for path in glob.glob(os.path.join(ROOT, "harness", "**", "*.py"), recursive=True):
        with open(path) as fh:
            source = fh.read()
        for name in (*tasks.NAMES, *declared):
            assert not re.search(rf"[\"']{name}[\"']|\b(cfg|config)\.{name}\b", source), (path, name)  # quoted, or read
    assert BY_NAME["task"].choices == tasks.NAMES and BY_NAME["task"].default == tasks.NAMES[0]
    assert BY_NAME["ways"].tasks == ("omniglot",) and BY_NAME["noise"].tasks == ("hyper_cleaning",)
    assert BY_NAME["n_train"].tasks == ("hyper_cleaning", "long_horizon")
    assert BY_NAME["dataset"].choices_for("toy") is None and "synthetic" in BY_NAME["dataset"].choices_for("omniglot")
    assert TABLE.defaults["long_horizon"]["n_train"] == 10000 and BY_NAME["n_train"].default == 1000


def test_each_task_upgrades_its_own_stored_runs():
    """A stored run without a setting added since is read as it behaved: the harness adds those of
    every task, the task its own (hyper-cleaning's --inner-start: its first runs continued online);
    a registry without that task upgrades the others all the same."""
    cleaning = config.resolve(["--task", "hyper_cleaning", "--method", "ift"]).to_dict()
    old = {k: v for k, v in cleaning.items() if k not in ("inner_start", "tf32", "neumann_lr")}
    assert config.upgrade(old) == {**old, "tf32": None, "neumann_lr": 0.0, "inner_start": "continue"}
    assert config.stored_problem(old) == ""
    toy = {k: v for k, v in config.resolve(["--task", "toy"]).to_dict().items() if k != "tf32"}
    with config.using(_Experiments(toy=tasks.load("toy"))):
        assert config.upgrade(toy) == {**toy, "tf32": None} and config.stored_problem(toy) == ""
        assert "unknown task" in config.stored_problem(old)


def test_a_setting_that_requires_others_is_refused_without_them():
    with pytest.raises(UsageError, match="--step-val-batch applies to --method greedy --variant eq6 only"):
        config.validate(resolve("--method", "greedy", "--variant", "final", "--step-val-batch", "5"))
    config.validate(resolve("--method", "greedy", "--variant", "final"))  # at its default it asks nothing


class _Experiments:
    """A registry of experiments made up for a test: ``NAMES`` and ``load(name)``."""

    def __init__(self, **modules):
        self.NAMES, self.modules = tuple(modules), modules

    def load(self, name):
        return self.modules[name]


def _task(*settings, defaults=None):
    import types
    return types.SimpleNamespace(DESCRIPTION="made up: for a test.", DEFAULTS=defaults or {}, SETTINGS=list(settings))


def test_a_registry_handed_in_is_the_table_and_its_tasks_are_the_choices():
    from harness.settings import Setting, at_least
    width = Setting("width", 8, "a width", check=at_least(1))
    table = config.table(_Experiments(a=_task(width), b=_task(Setting("width", 16, "a width", check=at_least(1)))))
    assert table.by_name["task"].choices == ("a", "b") and table.by_name["task"].default == "a"
    assert table.by_name["width"].tasks == ("a", "b") and table.defaults["b"] == {"width": 16}
    assert [s.name for s in table.settings][: len(config.COMMON)] == [s.name for s in config.COMMON]


@pytest.mark.parametrize("second", [
    "common",  # a task may not declare a setting every task has
    "kind",  # nor declare a shared one as another type
])
def test_conflicting_declarations_are_refused_when_the_table_is_built(second):
    from harness.settings import Setting
    other = Setting("seed", 0, "mine") if second == "common" else Setting("width", 8.0, "a width")
    with pytest.raises(TypeError):
        config.table(_Experiments(a=_task(Setting("width", 8, "a width")), b=_task(other)))
