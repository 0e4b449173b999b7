"""The processes executor against the local one: the same rows and report from cells side by side,
a task's row recorded as the task ends, a cell's own error surfacing as itself, a killed worker
stopping the run that --resume then finishes, and no worker outliving a killed driver."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cml import runner
from cml.cells import CHECKPOINTS, LOGS
from cml.errors import CMLInputError, DivergedError
from cml.experiment import build_experiment
from cml.runner import RESULTS_FILE, prepare_run_dir, run
from tests.test_engine import (  # noqa: F401 (cache_dir: autouse fixture)
    cache_dir,
    grid_config,
    local_grid_run,
    log_lines,
    numbers,
    rows_without_time,
)

ROOT = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE = min(2, os.cpu_count() or 1)


def pid_of(run_dir, cell: str) -> int:
    return int(log_lines(run_dir, cell)[0].split(" pid ")[1].split()[0])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The local run, one cell after another, that every run here is compared with."""
    return local_grid_run(tmp_path_factory)


def test_cells_side_by_side_give_the_rows_and_report_of_a_local_run(tmp_path, local_run):
    local_dir, local_report = local_run
    run_dir = tmp_path / "processes"
    config = grid_config(run_dir, "processes")
    report = run(config, build_experiment(config), progress=False)
    assert rows_without_time(run_dir) == rows_without_time(local_dir)
    assert numbers(report) == numbers(local_report)
    assert not list((run_dir / CHECKPOINTS).iterdir())
    cells = [p.stem for p in (run_dir / LOGS).glob("*.log")]
    assert len(cells) == 4
    assert len({pid_of(run_dir, cell) for cell in cells}) == SIDE_BY_SIDE  # each worker runs cells in turn
    assert os.getpid() not in {pid_of(run_dir, cell) for cell in cells}
    for cell in cells:
        lines = log_lines(run_dir, cell)
        assert "1 threads" in lines[0] and len(lines) == 1 + 5


def test_a_task_is_recorded_as_it_ends_not_when_its_cell_does(tmp_path, monkeypatch):
    """The first row reaches results.jsonl while its cell still runs (its checkpoint is there)."""
    run_dir = tmp_path / "processes"
    config = grid_config(run_dir, "processes")
    config.train.methods = ["cml"]
    config.train.epochs = 20  # a task long enough for its row to arrive while the next one runs
    seen = {}
    original = runner.EXECUTORS["processes"]

    def watching(grid, todo, device, record, timer, progress):
        def spy(row):
            if not seen:
                seen["checkpoints"] = [p.name for p in (run_dir / CHECKPOINTS).glob("*.pt")]
                seen["row"] = row
            record(row)

        original(grid, todo, device, spy, timer, progress)

    monkeypatch.setitem(runner.EXECUTORS, "processes", watching)
    run(config, build_experiment(config), progress=False)
    assert seen["row"]["task"] == 0
    assert f"cml-order{seen['row']['order']}-seed3.pt" in seen["checkpoints"]


def test_a_cell_that_diverges_stops_the_run_with_its_own_error(tmp_path):
    config = grid_config(tmp_path / "run", "processes")
    config.train.lr = 1e30  # inside the domain (0, inf), and enough to blow the weights up
    with pytest.raises(
        DivergedError, match=r"^\w+ order \d seed 3 task 0: learn stage, epoch 1, step \d+: the loss is nan$"
    ):
        run(config, build_experiment(config), progress=False)
    assert not (tmp_path / "run" / "report.md").exists()


def test_a_killed_worker_stops_the_run_and_resume_finishes_it(tmp_path):
    run_dir = tmp_path / "processes"
    config = grid_config(run_dir, "processes")
    config.train.epochs = 2  # long enough a cell to be killed in
    reference = tmp_path / "reference"
    local = grid_config(reference, "local")
    local.train.epochs = 2
    run(local, build_experiment(local), progress=False)
    killed = {}

    def kill_the_first_worker_with_a_checkpoint():
        while not killed:
            for path in (run_dir / CHECKPOINTS).glob("*.pt") if (run_dir / CHECKPOINTS).exists() else ():
                killed["pid"] = pid_of(run_dir, path.stem)
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_the_first_worker_with_a_checkpoint, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match=f"a worker process died .* --resume {run_dir} continues the run"):
        run(config, build_experiment(config), progress=False)
    killer.join(timeout=1)
    assert killed
    run(config, build_experiment(config), resume=True, progress=False)
    lines = (run_dir / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == len({(r["method"], r["order"], r["task"]) for r in map(json.loads, lines)}) == 2 * 2 * 5
    assert rows_without_time(run_dir) == rows_without_time(reference)


def test_no_worker_outlives_a_killed_driver(tmp_path):
    """SIGKILL the command once its cells run: its workers end within seconds, not with their cells."""
    run_dir = tmp_path / "run"
    args = ["--encoder", "tiny", "--max-per-relation", "8", "--orders", "2", "--method", "replay,cml", "--epochs", "20"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "run_cml.py", *args, "--executor", "processes", "--plots", "none", "--output", str(run_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list((run_dir / LOGS).glob("*.log")) if (run_dir / LOGS).exists() else []) < SIDE_BY_SIDE:
        assert time.monotonic() < deadline and driver.poll() is None, "the workers did not start"
        time.sleep(0.1)
    workers = {pid_of(run_dir, p.stem) for p in (run_dir / LOGS).glob("*.log")}
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
        assert time.monotonic() < deadline, "a worker still runs 10 s after its driver was killed"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (FileNotFoundError, StopIteration):
        return "zombie"


def test_processes_run_on_a_cpu_and_take_no_ray_options(tmp_path, monkeypatch):
    config = grid_config(tmp_path / "run", "processes")
    config.train.precision = "fp32"
    monkeypatch.setattr(runner, "resolve_device", lambda _: torch.device("cuda"))
    with pytest.raises(CMLInputError, match="--executor processes runs cells side by side on this machine's CPU"):
        prepare_run_dir(config, resume=False)
    monkeypatch.undo()
    config.executor.gpus_per_cell = 0.5
    with pytest.raises(CMLInputError, match="apply to the ray executor; the processes one runs on --device"):
        prepare_run_dir(config, resume=False)
    assert not (tmp_path / "run").exists()
