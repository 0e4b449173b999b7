import re
from pathlib import Path

import pytest
import yaml

from cml.cli import config_from_args, main, parser
from cml.config import load_config, options
from cml.errors import CMLInputError


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\ndata:\n  orders: 3\n  dataset: demo\ntrain:\n  epochs: 4\n")
    config, _ = config_from_args(
        parser().parse_args(["--config", str(path), "--orders", "2", "--method", "replay,joint"])
    )
    assert (config.seed, config.data.orders, config.train.epochs) == (7, 2, 4)
    assert config.train.methods == ["replay", "joint"]


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(CMLInputError, match=r"c.yaml: unknown key train.epoch"):
        load_config(path)


def test_plan_is_printed(capsys):
    # the tiny encoder: the plan's estimate times a few steps of the run's own model
    assert main(["--dataset", "demo", "--orders", "2", "--encoder", "tiny", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "20 relations, 800 train / 200 val / 400 test" in out and "order 1 (random, seed 2121)" in out


def sample(opt):
    """A valid value of an option other than its default, and how it is written on the command line."""
    if opt.kind is bool:
        return True, []
    if opt.kind is list:
        value = {"log_to": ["tensorboard", "mlflow"]}.get(opt.key, ["replay", "cml"])
        return value, [",".join(value)]
    if opt.choices:
        value = next(c for c in reversed(opt.choices) if c != opt.default)
    elif opt.kind is str:
        value = {"train.head": "linear", "cml.types": "induced"}.get(opt.key, "somewhere")
    elif opt.kind is int:
        value = int(opt.domain.low) + 3
        if value > opt.domain.high:  # a short closed range: its largest value that is not the default
            value = next(v for v in range(int(opt.domain.high), int(opt.domain.low) - 1, -1) if v != opt.default)
    else:
        value = 0.375
    return value, [str(value)]


def edges(opt) -> tuple[list, list]:
    """(values at the edges of a numeric option's domain that it must accept, values just outside
    that it must refuse): a closed edge is allowed and one step past it is not; an open edge is
    not allowed and one step inside it is."""
    d, inside, outside = opt.domain, [], []
    for edge, is_open, sign in ((d.low, d.low_open, -1), (d.high, d.high_open, +1)):
        if edge in (float("inf"), -float("inf")):
            continue
        step = 1 if opt.kind is int else 1e-6 * max(1.0, abs(edge))
        inside.append(edge - sign * step if is_open else edge)
        outside.append(edge if is_open else edge + sign * step)
    return [int(v) if opt.kind is int else v for v in inside], [int(v) if opt.kind is int else v for v in outside]


def wrong(opt):
    """Values the option must refuse, each with the words of the refusal."""
    bad = [(3, "expected") if opt.kind in (str, list) else ("many", "expected")]
    if opt.choices:
        bad.append(("nonsense", "use one of"))
    if opt.kind in (int, float):
        bad += [(v, "it must be " + opt.domain.words()) for v in edges(opt)[1]]
    if opt.kind is float:
        bad.append((float("nan"), "it must be"))
    return bad


CONTEXTS = [{}, {"executor": {"name": "ray"}}]  # settings under which an option is used: some are ray's only


def with_value(opt, value, context: dict) -> dict:
    values = {section: dict(settings) for section, settings in context.items()}
    if opt.section:
        values.setdefault(opt.section, {})[opt.name] = value
    else:
        values[opt.name] = value
    return values


def context_of(opt, value, path: Path) -> dict:
    """The first context in which `opt` at `value` is a valid config."""
    for context in CONTEXTS:
        if opt.name in context.get(opt.section, {}):
            continue
        path.write_text(yaml.safe_dump(with_value(opt, value, context)))
        try:
            load_config(path)
        except CMLInputError:
            continue
        return context
    raise AssertionError(f"{opt.key} = {value!r} is valid in no context")


@pytest.mark.parametrize("opt", options(), ids=lambda o: o.key)
def test_every_option_has_a_flag_a_yaml_key_and_validation_that_agree(tmp_path, opt):
    value, text = sample(opt)
    path = tmp_path / "c.yaml"
    context = context_of(opt, value, path)
    flag_of = {o.key: o.flag for o in options()}
    context_flags = [
        arg
        for section, settings in context.items()
        for k, v in settings.items()
        for arg in (flag_of[f"{section}.{k}"], v)
    ]
    config, _ = config_from_args(parser().parse_args([*context_flags, opt.flag, *text]))
    assert opt.get(config) == value

    path.write_text(yaml.safe_dump(with_value(opt, value, context)))
    assert opt.get(load_config(path)) == value
    for bad, words in wrong(opt):
        path.write_text(yaml.safe_dump(with_value(opt, bad, {})))
        with pytest.raises(CMLInputError, match=rf"c.yaml: {re.escape(opt.key)} is .*; .*{re.escape(words)}"):
            load_config(path)
    if opt.kind in (int, float):
        for edge in edges(opt)[0]:
            path.write_text(yaml.safe_dump(with_value(opt, edge, context)))
            assert opt.get(load_config(path)) == edge
    assert opt.help and opt.flag.startswith("--")


@pytest.mark.parametrize("opt", [o for o in options() if o.kind in (int, float)], ids=lambda o: o.key)
def test_every_numeric_option_declares_its_domain_and_the_help_says_it(opt):
    from cml.cli import _help

    assert opt.domain is not None, f"{opt.key} declares no domain"
    assert f"({opt.domain.words()}" in _help(opt)


def test_an_out_of_range_flag_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys):
    assert main(["--lr", "-1", "--encoder", "tiny", "--output", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == "error: config: train.lr is -1.0; it must be above 0"
    assert not (tmp_path / "run").exists()


def test_flags_are_unique_and_every_shipped_config_loads():
    flags = [o.flag for o in options()]
    assert len(flags) == len(set(flags))
    for path in sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml")):
        load_config(path)  # every shipped config is valid


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--augment", "rotate"], "invalid choice"),
        (["--order-protocol", "backwards"], "invalid choice"),
    ],
)
def test_bad_choices_exit_2(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(flags)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bad_choice_in_a_file_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  classifier: knn\n")
    with pytest.raises(
        CMLInputError, match=r"c.yaml: train.classifier is 'knn'; use one of auto, linear, ncm, ensemble"
    ):
        load_config(path)


@pytest.mark.parametrize("name", ["fewrel-paper", "tacred-paper"])
def test_the_literature_configs_run_end_to_end_on_the_tiny_model(name, tmp_path, monkeypatch):
    """The GPU protocol as shipped (every layer trained, full augmentation, its loss weights and
    methods), with only the encoder, the data and the epochs made small."""
    import json
    from pathlib import Path

    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path / "cache"))
    config = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    out = tmp_path / "run"
    small = ["--dataset", "demo", "--encoder", "tiny", "--max-per-relation", "6", "--orders", "1", "--plots", "none"]
    assert (
        main(["--config", str(config), *small, "--epochs", "1", "--consolidate-epochs", "1", "--output", str(out)]) == 0
    )
    saved = load_config(out / "config.yaml")
    assert saved.encoder.freeze_layers == 0 and saved.train.augment == "full"
    assert saved.loss == load_config(config).loss
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == set(load_config(config).train.methods)


def test_seeds_below_one_is_an_input_error(tmp_path, capsys):
    from cml.cli import main

    assert main(["--seeds", "0", "--encoder", "tiny", "--output", str(tmp_path / "run")]) == 2
    assert "seeds is 0; it must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_config_built_in_python_is_validated_before_a_run_writes_anything(tmp_path):
    from cml.config import RunConfig
    from cml.runner import prepare_run_dir

    config = RunConfig(output=str(tmp_path / "run"))
    config.train.epochs = -1
    with pytest.raises(CMLInputError, match=r"train.epochs is -1; it must be at least 0"):
        prepare_run_dir(config, resume=False)
    config.train.epochs, config.train.head = 1, str(tmp_path / "missing.json")
    with pytest.raises(CMLInputError, match=r"train.head is .*missing.json: genotype file not found"):
        prepare_run_dir(config, resume=False)
    assert not (tmp_path / "run").exists()


def test_a_named_dataset_without_a_config_starts_from_the_file_shipped_for_it(monkeypatch):
    import torch

    from cml.cli import SHIPPED

    config, origin = config_from_args(parser().parse_args(["--dataset", "fewrel", "--method", "cml"]))
    shipped = load_config(SHIPPED / "fewrel.yaml")
    shipped.train.methods = ["cml"]  # the flags still win
    assert config == shipped
    assert origin.startswith("configs/fewrel.yaml: the budget shipped for --dataset fewrel on a CPU")
    assert "fewrel-paper.yaml is the literature protocol" in origin

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config, origin = config_from_args(parser().parse_args(["--dataset", "tacred"]))
    assert config == load_config(SHIPPED / "tacred-paper.yaml") and "literature protocol" in origin

    config, origin = config_from_args(parser().parse_args(["--dataset", "demo"]))
    assert config == load_config(None, {"data": {"dataset": "demo"}}) and origin == "the built-in defaults"


def test_the_run_records_where_its_settings_came_from(monkeypatch, tmp_path, capsys):
    import cml.cli
    from cml.data import DATASETS, make_demo

    monkeypatch.setattr(cml.cli, "SHIPPED", tmp_path)
    monkeypatch.setitem(DATASETS, "mine", lambda directory, seed: make_demo())
    (tmp_path / "mine.yaml").write_text(
        "data: {max_per_relation: 6, orders: 1}\nencoder: {name: tiny, freeze_layers: 1}\n"
        "train: {methods: [replay], epochs: 1}\n"
    )
    out = tmp_path / "run"
    assert main(["--dataset", "mine", "--output", str(out)]) == 0
    assert f"settings: {tmp_path / 'mine.yaml'}: the budget shipped for --dataset mine" in capsys.readouterr().out
    header = (out / "config.yaml").read_text().splitlines()[0]
    assert (
        header
        == f"# settings: {tmp_path / 'mine.yaml'}: the budget shipped for --dataset mine on a CPU, then the flags given"
    )
    saved = load_config(out / "config.yaml")
    assert saved.train.methods == ["replay"] and saved.encoder.name == "tiny"
    assert main(["--resume", str(out)]) == 0  # a resumed run keeps the first run's header
    assert (out / "config.yaml").read_text().splitlines()[0] == header
