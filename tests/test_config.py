import pytest

from cml.cli import config_from_args, main, parser
from cml.config import load_config
from cml.errors import CMLInputError


def test_flags_override_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\ndata:\n  orders: 3\n  dataset: demo\ntrain:\n  epochs: 4\n")
    config = config_from_args(parser().parse_args(["--config", str(path), "--orders", "2", "--method", "replay,joint"]))
    assert (config.seed, config.data.orders, config.train.epochs) == (7, 2, 4)
    assert config.train.methods == ["replay", "joint"]


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(CMLInputError, match=r"c.yaml: unknown key train.epoch"):
        load_config(path)


def test_plan_is_printed(capsys):
    assert main(["--dataset", "demo", "--orders", "2", "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "20 relations, 800 train / 200 val / 400 test" in out and "order 1 (random, seed 2121)" in out


def test_every_flag_reaches_its_config_field_and_every_config_in_configs_loads(tmp_path):
    from pathlib import Path

    from cml.cli import FLAGS

    args = parser().parse_args(["--loss-margin", "0.3", "--loss-bank-sample", "7", "--classifier", "ncm", "--beta", "0.1"])
    config = config_from_args(args)
    assert (config.loss.margin, config.loss.bank_sample) == (0.3, 7)
    assert (config.train.classifier, config.train.beta) == ("ncm", 0.1)
    for dest, (section, key) in FLAGS.items():
        assert hasattr(parser().parse_args([]), dest), dest
        assert hasattr(getattr(config, section) if section else config, key), (dest, section, key)
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
    with pytest.raises(CMLInputError, match=r"c.yaml: train.classifier is 'knn'; use one of auto, linear, ncm, ensemble"):
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
    small = ["--dataset", "demo", "--encoder", "tiny", "--max-per-relation", "6", "--orders", "1"]
    assert main(["--config", str(config), *small, "--epochs", "1", "--consolidate-epochs", "1", "--output", str(out)]) == 0
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
