"""The Python API: `cml.run` from a dict, a RunConfig or a file, validated as the command line
validates, writing nothing unless asked; `cml.load_results` reading a run directory back."""

import pytest

import cml
from cml.cli import main
from cml.config import RunConfig
from cml.errors import CMLInputError
from tests.test_engine import cache_dir, rows_without_time  # noqa: F401 (cache_dir: autouse fixture)

SMALL = {
    "data": {"dataset": "demo", "orders": 2, "max_per_relation": 8},
    "encoder": {"name": "tiny", "freeze_layers": 1},
    "train": {"methods": ["finetune", "replay"], "epochs": 1},
    "plots": "none",  # about a second a report; tests/test_engine.py draws them
}


def test_a_run_from_a_dict_gives_the_command_lines_rows_and_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = cml.run(SMALL)
    assert results.run_dir is None and not any(tmp_path.iterdir())  # nothing written here
    argv = ["--dataset", "demo", "--orders", "2", "--max-per-relation", "8", "--encoder", "tiny"]
    argv += ["--freeze-layers", "1", "--method", "finetune,replay", "--epochs", "1", "--plots", "none"]
    argv += ["--output", str(tmp_path / "cli")]
    assert main(argv) == 0
    without_time = [{k: v for k, v in r.items() if k != "seconds"} for r in results.rows]
    assert without_time == rows_without_time(tmp_path / "cli")
    assert set(results.report["methods"]) == {"finetune", "replay"}

    frame = results.frame()
    assert list(frame.columns)[:4] == ["method", "order", "seed", "task"] and len(frame) == 2 * 2 * 5
    final = frame[frame.task == 4].groupby("method").whole_accuracy.mean()
    assert final["replay"] == pytest.approx(results.report["methods"]["replay"]["final_whole_accuracy"]["mean"])


def test_a_kept_run_reads_back_with_load_results(tmp_path):
    kept = cml.run(RunConfig.from_dict(SMALL), output=tmp_path / "run")
    assert kept.run_dir == tmp_path / "run" and (tmp_path / "run" / "report.md").exists()
    again = cml.load_results(tmp_path / "run")
    assert again.rows == kept.rows and again.report == kept.report


def test_a_bad_config_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(CMLInputError, match="config dict: unknown key train.epoch"):
        cml.run({"train": {"epoch": 3}})
    with pytest.raises(CMLInputError, match=r"config dict: train.lr is -1; it must be above 0"):
        cml.run({"train": {"lr": -1}})
    with pytest.raises(CMLInputError, match="unknown method 'nonesuch'"):
        cml.run({**SMALL, "train": {"methods": ["nonesuch"]}}, output=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(CMLInputError, match="not a run directory"):
        cml.load_results(tmp_path)
