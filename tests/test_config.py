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
