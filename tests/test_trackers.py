"""--log-to: a demo run streamed to TensorBoard, MLflow's file store and W&B offline, read back by
their own readers (W&B ships none for offline files: its record file is checked for each metric)."""

import json

import pytest

from cml.cli import main
from tests.test_engine import cache_dir  # noqa: F401 (autouse fixture)

CELL = "replay-order0-seed2021"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackers")
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)  # MLflow's file store: mlruns/ here
        env.setenv("CML_CACHE_DIR", str(root / "cache"))
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_API_KEY", raising=False)
        args = ["--encoder", "tiny", "--max-per-relation", "6", "--orders", "1", "--method", "replay", "--epochs", "1"]
        assert main([*args, "--log-to", "tensorboard,mlflow,wandb", "--output", str(root / "run")]) == 0
    rows = [json.loads(line) for line in (root / "run" / "results.jsonl").read_text().splitlines()]
    whole = [sum(a * n for a, n in zip(r["task_accuracy"], r["task_size"])) / sum(r["task_size"]) for r in rows]
    return root, whole


def test_tensorboard_holds_each_tasks_accuracy_the_losses_and_the_report(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, whole = logged
    cell = EventAccumulator(str(root / "run" / "tensorboard" / CELL))
    cell.Reload()
    assert [e.step for e in cell.Scalars("accuracy/whole")] == [1, 2, 3, 4, 5]
    assert [e.value for e in cell.Scalars("accuracy/whole")] == pytest.approx(whole, abs=1e-6)
    assert len(cell.Scalars("loss/learn")) > 5 and "seconds/train forward_backward" in cell.Tags()["scalars"]
    report = EventAccumulator(str(root / "run" / "tensorboard" / "report"), size_guidance={"images": 0})
    report.Reload()
    assert "accuracy_by_stage" in report.Tags()["images"]


def test_mlflow_holds_the_config_the_accuracies_and_the_report_files(logged):
    from mlflow.tracking import MlflowClient

    root, whole = logged
    client = MlflowClient((root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("run")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {CELL, "report"}
    history = client.get_metric_history(runs[CELL].info.run_id, "accuracy.whole")
    assert [m.step for m in history] == [1, 2, 3, 4, 5] and [m.value for m in history] == pytest.approx(whole)
    assert runs[CELL].data.params["train.methods"] == "['replay']"
    artifacts = {a.path for a in client.list_artifacts(runs["report"].info.run_id)}
    assert {"report.json", "report.md", "accuracy_by_stage.png"} <= artifacts


def test_wandb_runs_offline_with_every_metric_in_its_record_file(logged):
    root, _ = logged
    runs = sorted((root / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # the cell and the report
    records = b"".join(p.read_bytes() for r in runs for p in r.glob("run-*.wandb"))
    for key in (b"accuracy/whole", b"accuracy/old", b"loss/learn", b"train.methods"):
        assert key in records
    assert any((r / "files" / "report.md").exists() for r in runs)


def test_a_tracker_that_is_not_installed_is_an_error_naming_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["--log-to", "wandb", "--encoder", "tiny", "--output", str(tmp_path / "run")]) == 2
    assert "--log-to wandb needs wandb: pip install -e '.[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_mlflow_cells_creating_their_group_at_once_share_it(tmp_path, monkeypatch):
    """Another cell creates the experiment between this cell's lookup and its creation (two Ray
    workers starting side by side): the creation is refused, and the cell joins the other's."""
    from mlflow.tracking import MlflowClient

    from cml.trackers import MLflow

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    lookup = MlflowClient.get_experiment_by_name
    raced = {"done": False}

    def late_lookup(self, name):
        if not raced["done"]:  # the first lookup misses; meanwhile the other cell creates it
            raced["done"] = True
            MlflowClient(uri).create_experiment(name)
            return None
        return lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", late_lookup)
    first = MLflow(uri, "grid", "cml-order0-seed3", {})
    second = MLflow(uri, "grid", "cml-order1-seed3", {})
    client = MlflowClient(uri)
    experiment = lookup(client, "grid").experiment_id
    assert {r.info.run_name for r in client.search_runs([experiment])} == {"cml-order0-seed3", "cml-order1-seed3"}
    assert first.run_id != second.run_id


def test_the_driver_makes_the_mlflow_group_before_any_cell_starts(tmp_path, monkeypatch):
    """Two cells creating the group at the same moment can make twins in MLflow's file store (its
    check and its creation are not one step), so the group exists before the executor starts."""
    from mlflow.tracking import MlflowClient

    from cml import runner
    from cml.experiment import build_experiment
    from tests.test_engine import small_config

    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    config.log_to, config.mlflow_uri = ["mlflow"], (tmp_path / "mlruns").as_uri()
    local, seen = runner.EXECUTORS["local"], {}

    def executor(*args):
        seen["group"] = MlflowClient(config.mlflow_uri).get_experiment_by_name("run")
        return local(*args)

    monkeypatch.setitem(runner.EXECUTORS, "local", executor)
    runner.run(config, build_experiment(config), progress=False)
    assert seen["group"] is not None
    client = MlflowClient(config.mlflow_uri)
    runs = client.search_runs([seen["group"].experiment_id])
    assert {r.info.run_name for r in runs} == {"finetune-order0-seed3", "report"}
    assert [e.name for e in client.search_experiments()].count("run") == 1
