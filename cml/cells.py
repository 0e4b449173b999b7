"""A cell of a run: one method over one task order with one seed, from the model's initial
weights (or its checkpoint) to a result row per task. Executors (cml/executors.py) run cells;
the runner (cml/runner.py) decides which."""

from __future__ import annotations

import os
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from cml.config import RunConfig
from cml.device import release_freed_memory
from cml.engine import EncodedData, Engine, MethodContext
from cml.errors import DivergedError, warn
from cml.experiment import Experiment
from cml.files import UNREADABLE, save_atomically
from cml.methods import METHODS
from cml.model import RelationModel
from cml.timing import TRAIN_PHASE, PhaseTimer
from cml.trackers import Tracking, open_trackers

CHECKPOINTS, LOGS = "checkpoints", "logs"


def task_seed(seed: int, method: str, order: int, task: int) -> int:
    return zlib.crc32(f"{seed}/{method}/{order}/{task}".encode())


class Cell(NamedTuple):
    """One continual run: a method over one task order with one seed."""

    method: str
    order: int
    seed: int

    @property
    def name(self) -> str:
        """Its checkpoint's and log's file name (without suffix)."""
        return f"{self.method}-order{self.order}-seed{self.seed}"


def cells(config: RunConfig, experiment: Experiment) -> list[Cell]:
    """Every (method, order, seed) of the run, in the order they run: the methods side by side
    on each order and seed, so that a grid stopped part-way holds cells the report can pair."""
    return [
        Cell(method, o, seed)
        for seed in config.run_seeds()
        for o in range(len(experiment.orders))
        for method in config.train.methods
    ]


@dataclass
class Grid:
    """What every cell starts from, built once by the driver; an executor hands it to the cells
    (the Ray one through its object store, once for all of them)."""

    config: RunConfig  # resolved
    orders: list[list[list[str]]]  # the tasks of each order
    model: RelationModel  # at its initial weights
    data: EncodedData  # tokenised, with the frozen-layer states
    context: MethodContext
    run_dir: Path

    def to(self, device: torch.device) -> Grid:
        return replace(self, model=self.model.to(device), data=self.data.to(device))


Record = Callable[[dict], None]


def run_cell(grid: Grid, cell: Cell, device: torch.device, record: Record, timer: PhaseTimer, progress: bool) -> None:
    """One cell, from its checkpoint if it has one, else from the model's initial weights. Every
    row of the cell, those restored with the checkpoint first, goes to `record`; the cell's lines
    go to its log (and, with `progress`, to the console beside the bars)."""
    method, o, seed = cell
    tasks = grid.orders[o]
    grid.model.reset_new_layers(seed)
    config = grid.config
    tracking = Tracking(open_trackers(config, grid.run_dir, cell.name))
    engine = Engine(
        grid.model, grid.data, config, METHODS[method], grid.context, device, progress, timer, plugins=(tracking,)
    )
    before = dict(timer.seconds)
    done = _restore(engine, grid.run_dir, cell)
    for row in done:
        record(row)
    with (grid.run_dir / LOGS / f"{cell.name}.log").open("a") as log:

        def say(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            if progress:
                tqdm.write(line)

        say(
            f"[{method}] order {o} seed {seed}: pid {os.getpid()} on {socket.gethostname()}, {device}, "
            f"{torch.get_num_threads()} threads, "
            + (f"restored after task {len(done)}/{len(tasks)}" if done else "from the initial weights")
        )
        bar = tqdm(
            range(len(done), len(tasks)),
            desc=f"{method} order {o} seed {seed}: tasks",
            leave=False,
            initial=len(done),
            total=len(tasks),
            disable=not progress,
        )
        for k in bar:
            engine.seed = task_seed(seed, method, o, k)
            torch.manual_seed(engine.seed)
            began, examples = time.perf_counter(), timer.examples[TRAIN_PHASE]
            try:
                result = engine.run_task(tasks[k])
            except DivergedError as e:
                raise DivergedError(f"{method} order {o} seed {seed} task {k}: {e}") from None
            row = {
                "method": method,
                "order": o,
                "seed": seed,
                "task": k,
                "relations": tasks[k],
                **vars(result),
                "seconds": round(time.perf_counter() - began, 2),
                "train_examples": timer.examples[TRAIN_PHASE] - examples,
            }
            done.append(row)
            record(row)
            _checkpoint(engine, grid.run_dir, cell, done, last=k == len(tasks) - 1)
            release_freed_memory()
            accuracy = (
                f"whole acc {100 * result.whole_accuracy:.1f}, current task {100 * result.task_accuracy[-1]:.1f}"
                if result.evaluated
                else f"not evaluated (--eval-every {config.train.eval_every})"
            )
            say(f"[{method}] order {o} seed {seed} task {k + 1}/{len(tasks)}: {accuracy} ({row['seconds']:.1f} s)")
    tracking.close({phase: {"seconds": timer.seconds[phase] - before.get(phase, 0.0)} for phase in timer.seconds})


def checkpoint_path(run_dir: Path, cell: Cell) -> Path:
    return run_dir / CHECKPOINTS / f"{cell.name}.pt"


def _checkpoint(engine: Engine, run_dir: Path, cell: Cell, rows: list[dict], last: bool) -> None:
    """Keep the state and the rows after the last finished task (a cell that restarts elsewhere
    hands back every row); a cell's checkpoint goes once the cell is done."""
    path = checkpoint_path(run_dir, cell)
    if last:
        path.unlink(missing_ok=True)
        return
    save_atomically({"rows": rows, **engine.state_dict()}, path)


def _restore(engine: Engine, run_dir: Path, cell: Cell) -> list[dict]:
    """The rows of the tasks of `cell` its checkpoint holds, with the engine restored to the state
    after them; none without a checkpoint. A checkpoint that cannot be read is said in one line
    and the cell starts again from the initial weights, its last good state: each task's seed
    is fixed, so it gives the same rows again, and rows already in results.jsonl are not
    written twice."""
    path = checkpoint_path(run_dir, cell)
    if not path.exists():
        return []
    try:
        state = torch.load(path, weights_only=False)
        rows = state["rows"]
    except (*UNREADABLE, KeyError, TypeError) as e:  # not torch's format, or not a checkpoint
        warn(f"unreadable checkpoint ({e.__class__.__name__}): {cell.name} starts again from the initial weights", path)
        return []
    engine.load_state_dict(state)
    return rows
