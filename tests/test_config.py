"""Settings declared once: the table, --help, booleans, tasks and methods a setting applies to,
config files (task defaults and configs/*.yaml state only what differs), W&B sweeps as the agent
runs them, and the task protocol every task follows."""
import glob
import inspect
import itertools
import os

import pytest
import torch
import yaml

import metagreedy as mg
import tasks
import train
from metagreedy import config
from metagreedy.config import BY_NAME, SETTINGS, UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve(*args):
    return config.resolve(list(args), tasks.defaults)


# ---- the table -----------------------------------------------------------------------------------------

def test_every_setting_is_declared_once_with_help_and_valid_default():
    assert len(BY_NAME) == len(SETTINGS)
    assert set(config.METHOD_NAMES) == set(mg.METHODS)
    for s in SETTINGS:
        assert s.help and s.tasks and set(s.tasks) <= set(config.TASKS), s.name
        for task in s.tasks:
            config.check_value(s, tasks.defaults(task).get(s.name, s.default), task)
        if s.methods:
            assert set(s.methods) <= set(mg.METHODS)


def test_task_defaults_state_only_what_differs_and_only_their_own_settings():
    for task in config.TASKS:
        for name, value in tasks.defaults(task).items():
            s = BY_NAME[name]
            assert task in s.tasks, f"{task}.DEFAULTS sets {name}, which does not apply to it"
            assert value != s.default, f"{task}.DEFAULTS repeats the common default of {name}"
            config.check_value(s, value, task)


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))
                                        if not os.path.basename(p).startswith("sweep_")))
def test_config_files_state_only_what_differs(path):
    data = config.load_file(path)
    cfg = resolve("--config", path)
    defaults = tasks.defaults(cfg.task)
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
    for title in config.GROUPS:
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


# ---- W&B sweeps, expanded as the agent does ---------------------------------------------------------------

def expand_sweep(path):
    """The command lines a W&B grid sweep runs: the product of its parameters, each passed as
    ``--name=value`` (Python's str of the YAML value, as the agent formats ``${args}``)."""
    with open(path) as fh:
        sweep = yaml.safe_load(fh)
    assert sweep["method"] == "grid" and sweep["program"] == "train.py"
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args}"]
    params = sweep["parameters"]
    names = list(params)
    grids = [params[n]["values"] if "values" in params[n] else [params[n]["value"]] for n in names]
    return [[f"--{n}={v}" for n, v in zip(names, combo)] for combo in itertools.product(*grids)]


SWEEPS = sorted(glob.glob(os.path.join(ROOT, "configs", "sweep_*.yaml")))


@pytest.mark.parametrize("path", SWEEPS)
def test_every_sweep_command_line_parses_and_no_cell_repeats(path):
    seen = set()
    for argv in expand_sweep(path):
        cfg = config.resolve(argv, tasks.defaults)
        tasks.load(cfg.task).check(cfg)
        key = tuple(sorted(cfg.to_dict().items()))
        assert key not in seen, f"{path}: {argv} repeats another cell"
        seen.add(key)


@pytest.mark.parametrize("task,want", [
    ("omniglot", {(w, m, s) for w in (2, 3, 5, 10) for m in ("fo", "t1t2", "ift", "full", "greedy 0.9",
                                                               "greedy 0.99", "greedy 0.999") for s in range(5)}),
    ("hyper_cleaning", {(d, n, p, m, s) for d in ("mnist", "fashion_mnist") for n in (0.3, 0.5)
                        for p in ("paper", "heldout") for m in ("w/o HPO", "oracle", "t1t2", "ift", "full",
                                                                 "greedy 0.9", "greedy 0.99", "greedy 0.999")
                        for s in range(5)}),
])
def test_sweeps_cover_the_papers_grid_once(task, want):
    got = []
    for path in SWEEPS:
        for argv in expand_sweep(path):
            cfg = config.resolve(argv, tasks.defaults)
            if cfg.task != task:
                continue
            row = f"greedy {cfg.gamma}" if cfg.method == "greedy" else cfg.method
            if task == "omniglot":
                got.append((cfg.ways, row, cfg.seed))
            else:
                row = "oracle" if cfg.oracle else "w/o HPO" if not cfg.hpo else row
                got.append((cfg.dataset, cfg.noise, cfg.protocol, row, cfg.seed))
    assert len(got) == len(set(got)) and set(got) == want


# ---- the task protocol ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", config.TASKS)
def test_every_task_follows_the_protocol(name):
    module = tasks.load(name)
    for attr in ("DESCRIPTION", "DEFAULTS", "check", "run_name", "run_group", "Task"):
        assert hasattr(module, attr), f"tasks.{name} has no {attr}"
    for method, _ in inspect.getmembers(tasks.Task, inspect.isfunction):
        assert callable(getattr(module.Task, method, None)), f"tasks.{name}.Task has no {method}()"
    assert isinstance(getattr(module.Task, "progress", None), tuple)
    cfg = config.resolve(["--task", name], tasks.defaults)
    assert name in module.run_name(cfg) and module.run_group(cfg).startswith(name)


def test_train_py_has_no_task_specific_branches():
    with open(os.path.join(ROOT, "train.py")) as fh:
        source = fh.read()
    for name in config.TASKS:
        assert f'"{name}"' not in source and f"'{name}'" not in source, name


@pytest.mark.parametrize("flags,want", [([], None), (["--neumann-lr", "0.01"], 0.01), (["--neumann-lr", "0"], None)])
def test_neumann_lr_reaches_ift_and_zero_means_the_inner_lr(flags, want):
    from tasks.common import method_options
    cfg = config.resolve(["--task", "toy", "--method", "ift", "--terms", "3", *flags], tasks.defaults)
    assert method_options(cfg) == ({"terms": 3} if want is None else {"terms": 3, "neumann_lr": want})


def test_neumann_lr_changes_the_ift_estimate_of_a_run():
    toy = tasks.load("toy")
    lr = config.resolve(["--task", "toy"], tasks.defaults).inner_lr

    def grad(eta):
        cfg = config.resolve(["--task", "toy", "--method", "ift", "--neumann-lr", str(eta)], tasks.defaults)
        return toy.Task(cfg, torch.device("cpu"), torch.float64).hypergradient(0, [0])[0]["alpha"]
    default, same, other = grad(0), grad(lr), grad(lr / 5)
    assert torch.equal(default, same)
    assert not torch.allclose(other, default)


@pytest.mark.parametrize("args", [["--task", "toy", "--method", "ift", "--neumann-lr", "-0.1"],
                                  ["--task", "toy", "--method", "ift", "--neumann-lr", "nan"],
                                  ["--task", "toy", "--method", "greedy", "--neumann-lr", "0.1"],
                                  ["--task", "toy", "--inner-start", "fresh"],
                                  ["--task", "hyper_cleaning", "--inner-start", "sometimes"]])
def test_the_new_settings_refuse_what_cannot_apply(args):
    with pytest.raises(config.UsageError):
        config.resolve(args, tasks.defaults)
