"""Where the cells of a run execute, behind one signature: one after another in this process
(`local`), side by side on this CPU in a process each (`processes`), or each as a Ray task
(`ray`), on this machine or a cluster.

Either way a cell starts from the grid the driver built (the data tokenised and the frozen-layer
states cached once), writes its checkpoint and log into the run directory, and hands every row
back to the driver, which alone writes results.jsonl. A cell's numbers depend on its seed and
thread count, not on where it ran, so every executor gives the same rows for the same
`--cpus-per-cell`. Ray retries a cell whose worker dies; the retry continues from the cell's
checkpoint and rows already recorded are not written twice. Under `processes` a dead process
stops the run, and `--resume` continues it from the checkpoints. A cell that fails on its own
(bad input, a diverged loss) stops the run with its own exception.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

import torch
import torch.multiprocessing
from tqdm import tqdm

from cml.cells import Cell, Grid, Record, run_cell
from cml.config import RunConfig
from cml.device import resolve_device
from cml.engine import TaskResult
from cml.timing import PhaseTimer

# attempts after a cell's worker dies (a killed process, a lost node); a cell's own error is never retried
MAX_RETRIES = 3

Executor = Callable[[Grid, list[Cell], torch.device, Record, PhaseTimer, bool], None]


def cells_at_once(config: RunConfig, device: torch.device) -> int:
    """How many cells run side by side (config resolved): on a CPU, as many as this machine's
    cores hold at `cpus_per_cell` threads each, except under `local`."""
    if config.executor.name == "local" or device.type != "cpu":
        return 1
    return max(1, (os.cpu_count() or 1) // config.executor.cpus_per_cell)


def run_local(
    grid: Grid, todo: list[Cell], device: torch.device, record: Record, timer: PhaseTimer, progress: bool
) -> None:
    """The cells in order, in this process, on `device`, each from the model's initial weights."""
    initial = copy.deepcopy(grid.model.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(grid.config.executor.cpus_per_cell)
    try:
        for cell in todo:
            grid.model.load_state_dict(initial)
            run_cell(grid, cell, device, record, timer, progress)
    finally:
        torch.set_num_threads(threads)


def cell_in_process(grid: Grid, cell: Cell, record: Record | None = None) -> tuple[list[dict], PhaseTimer]:
    """A cell in a process of its own (a Ray worker or a local one): its rows, each also to
    `record` as its task ends, and where its time went. The cell trains a copy of the model: the
    grid's keeps the initial weights for the process's next cell."""
    torch.set_num_threads(grid.config.executor.cpus_per_cell)
    device = resolve_device(grid.config.device)
    grid = replace(grid, model=copy.deepcopy(grid.model)).to(device)
    rows, timer = [], PhaseTimer()

    def keep(row: dict) -> None:
        rows.append(row)
        if record is not None:
            record(row)

    run_cell(grid, cell, device, keep, timer, progress=False)
    return rows, timer


def cell_done(cell: Cell, rows: list[dict], cell_timer: PhaseTimer, record: Record, timer: PhaseTimer, progress: bool):
    """A finished cell's rows and time into the run; rows recorded before are not written twice."""
    for row in rows:
        record(row)
    timer.add(cell_timer)
    if progress:
        tqdm.write(
            f"[{cell.method}] order {cell.order} seed {cell.seed}: final whole acc "
            f"{100 * TaskResult.from_row(rows[-1]).whole_accuracy:.1f} ({sum(r['seconds'] for r in rows):.1f} s)"
        )


# a `processes` worker's grid and its channel for rows to the driver, set as the process starts
_grid: Grid | None = None
_rows: queue.Queue | None = None


def _start_worker(grid: Grid, rows: queue.Queue, driver: int) -> None:
    """A worker holds the grid for all its cells, and ends with the driver (killed or stopped)
    rather than finish a cell whose rows nobody would record."""
    global _grid, _rows
    _grid, _rows = grid, rows

    def watch() -> None:
        while os.getppid() == driver:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker_cell(cell: Cell) -> tuple[list[dict], PhaseTimer]:
    return cell_in_process(_grid, cell, _rows.put)


def run_processes(
    grid: Grid, todo: list[Cell], device: torch.device, record: Record, timer: PhaseTimer, progress: bool
) -> None:
    """The cells side by side, as many at a time as the cores hold, each in a worker process that
    runs cells one after another. The grid goes to each worker once, its tensors in shared memory
    (torch.multiprocessing), so the data is held once for all; a task's row reaches results.jsonl
    as the task ends. A dead worker stops the run (--resume continues it)."""
    workers = min(cells_at_once(grid.config, device), len(todo))
    if not workers:
        return
    spawn = torch.multiprocessing.get_context("spawn")  # not fork: the driver's threads are not fork-safe
    rows = spawn.Queue()
    pool = ProcessPoolExecutor(workers, spawn, initializer=_start_worker, initargs=(grid, rows, os.getpid()))

    def drain() -> None:
        while True:
            try:
                record(rows.get_nowait())
            except queue.Empty:
                return

    pending = {pool.submit(_worker_cell, cell): cell for cell in todo}
    try:
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)  # and the rows sent meanwhile
            drain()
            for future in done:
                cell = pending.pop(future)
                try:
                    cell_rows, cell_timer = future.result()
                except BrokenProcessPool:
                    raise RuntimeError(
                        f"a worker process died (killed, or out of memory) while {cell.name} ran; the tasks that "
                        f"finished are kept, and --resume {grid.run_dir} continues the run from them"
                    ) from None
                cell_done(cell, cell_rows, cell_timer, record, timer, progress)
    except BaseException:  # a cell's own error, a dead worker, Ctrl-C: the other cells stop with the run
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list((pool._processes or {}).values()):  # terminate_workers() from Python 3.14 on
            process.terminate()
        raise
    pool.shutdown()


def run_ray(
    grid: Grid, todo: list[Cell], device: torch.device, record: Record, timer: PhaseTimer, progress: bool
) -> None:
    """Every cell at once as a Ray task holding `cpus_per_cell` CPUs and `gpus_per_cell` GPUs;
    Ray runs as many together as the cluster holds. Rows are recorded as each cell finishes.
    Uses the Ray this process is connected to, else starts or joins one (`ray_address`)."""
    if not todo:
        return
    import ray

    options = grid.config.executor
    started = not ray.is_initialized()
    if started:
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False)
    task = ray.remote(cell_in_process).options(
        num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell, max_retries=MAX_RETRIES, retry_exceptions=False
    )
    pending = {}
    try:
        shared = ray.put(grid.to(torch.device("cpu")))
        pending = {task.remote(shared, cell): cell for cell in todo}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            try:
                rows, cell_timer = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise e.cause from None  # the cell's own error, not Ray's wrapper of it
            cell_done(cell, rows, cell_timer, record, timer, progress)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Executor] = {"local": run_local, "processes": run_processes, "ray": run_ray}
