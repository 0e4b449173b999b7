"""The ray executor against the local one: the same rows and report, a killed worker retried
from its checkpoint, a cell's own error surfacing as itself, and --resume skipping finished cells."""

import json
import os
import signal
import threading
import time

import pytest

from cml.cells import CHECKPOINTS
from cml.cli import main
from cml.errors import DivergedError
from cml.experiment import build_experiment
from cml.runner import RESULTS_FILE, run
from tests.test_engine import (  # noqa: F401 (cache_dir: autouse fixture)
    cache_dir,
    grid_config,
    local_grid_run,
    log_lines,
    numbers,
    rows_without_time,
)

pytest.importorskip("ray", reason="the ray extra is part of the test extra")


@pytest.fixture(autouse=True)
def on_ray(local_ray):
    local_ray()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The undisturbed local run every ray run here is compared with."""
    return local_grid_run(tmp_path_factory)


def test_ray_gives_the_rows_and_report_of_a_local_run(tmp_path, local_run):
    local_dir, local_report = local_run
    config = grid_config(tmp_path / "ray", "ray")
    report = run(config, build_experiment(config), progress=False)
    assert rows_without_time(tmp_path / "ray") == rows_without_time(local_dir)
    assert numbers(report) == numbers(local_report)
    assert report["config"]["executor"]["name"] == "ray"
    assert not list((tmp_path / "ray" / CHECKPOINTS).iterdir())
    for cell in ("replay-order0-seed3", "cml-order1-seed3"):
        lines = log_lines(tmp_path / "ray", cell)
        assert "from the initial weights" in lines[0] and "1 threads" in lines[0]
        assert len(lines) == 1 + 5  # the start, then a line per task


def test_a_worker_killed_mid_cell_is_retried_from_its_checkpoint(tmp_path, local_run):
    run_dir = tmp_path / "ray"
    config = grid_config(run_dir, "ray")
    killed = {}

    def kill_first_worker_with_a_checkpoint():
        """SIGKILL the worker of the first cell to finish a task (its checkpoint appears)."""
        while not killed:
            for path in (run_dir / CHECKPOINTS).glob("*.pt") if (run_dir / CHECKPOINTS).exists() else ():
                cell = path.stem
                pid = int(log_lines(run_dir, cell)[0].split(" pid ")[1].split()[0])
                os.kill(pid, signal.SIGKILL)
                killed.update(cell=cell, pid=pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_worker_with_a_checkpoint, daemon=True)
    killer.start()
    report = run(config, build_experiment(config), progress=False)
    killer.join(timeout=1)
    assert killed, "no checkpoint appeared while the run went on"
    first, *_, again = [line for line in log_lines(run_dir, killed["cell"]) if " pid " in line]
    assert f"pid {killed['pid']} " in first
    assert f"pid {killed['pid']} " not in again and "restored after task" in again  # continued, not restarted
    lines = (run_dir / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == len({(r["method"], r["order"], r["task"]) for r in map(json.loads, lines)}) == 2 * 2 * 5
    assert rows_without_time(run_dir) == rows_without_time(local_run[0])
    assert numbers(report) == numbers(local_run[1])


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_cell_that_diverges_stops_the_run_with_its_own_error(tmp_path, executor, capsys):
    config = grid_config(tmp_path / "run", executor)
    config.train.lr = 1e30  # inside the domain (0, inf), and enough to blow the weights up
    with pytest.raises(
        DivergedError, match=r"^\w+ order \d seed 3 task 0: learn stage, epoch 1, step \d+: the loss is nan$"
    ):
        run(config, build_experiment(config), progress=False)
    args = ["--encoder", "tiny", "--max-per-relation", "8", "--orders", "1", "--method", "replay", "--lr", "1e30"]
    assert main([*args, "--executor", executor, "--output", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    assert "error: replay order 0 seed 2021 task 0: learn stage" in err and "Traceback" not in err
    assert not (tmp_path / "cli" / "report.md").exists()


def test_resume_on_ray_runs_only_the_cells_not_recorded(tmp_path, local_run):
    run_dir = tmp_path / "ray"
    config = grid_config(run_dir, "ray")
    run(config, build_experiment(config), progress=False)
    results = run_dir / RESULTS_FILE
    kept = [line for line in results.read_text().splitlines() if '"method": "cml", "order": 1' not in line]
    results.write_text("\n".join(kept) + "\n")  # as if the driver stopped before that cell came back
    (run_dir / "report.md").unlink()
    assert main(["--resume", str(run_dir), "--executor", "ray"]) == 0
    assert rows_without_time(run_dir) == rows_without_time(local_run[0])
    assert len(results.read_text().splitlines()) == 2 * 2 * 5
    assert len(log_lines(run_dir, "cml-order1-seed3")) == 2 * 6  # ran again
    assert len(log_lines(run_dir, "replay-order0-seed3")) == 6  # skipped


def test_resume_keeps_the_thread_count_and_executor_options_need_ray(tmp_path, capsys):
    config = grid_config(tmp_path / "run", "local")
    config.train.methods = ["finetune"]
    config.data.orders = 1
    run(config, build_experiment(config), progress=False)
    assert main(["--resume", str(tmp_path / "run"), "--cpus-per-cell", "2"]) == 2
    assert "executor.cpus_per_cell=1" in capsys.readouterr().err
    assert main(["--encoder", "tiny", "--gpus-per-cell", "0.5", "--output", str(tmp_path / "never")]) == 2
    assert "add --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_on_ray_every_cell_logs_to_the_trackers_as_its_own_run_in_one_group(tmp_path):
    from mlflow.tracking import MlflowClient

    config = grid_config(tmp_path / "ray", "ray")
    config.data.orders = 1
    config.log_to, config.mlflow_uri = ["mlflow", "tensorboard"], (tmp_path / "mlruns").as_uri()
    run(config, build_experiment(config), progress=False)
    client = MlflowClient(config.mlflow_uri)
    experiment = client.get_experiment_by_name("ray")
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert names == {"replay-order0-seed3", "cml-order0-seed3", "report"}
    assert {p.name for p in (tmp_path / "ray" / "tensorboard").iterdir()} == names
