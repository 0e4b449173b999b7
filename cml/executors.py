"""Where the cells of a run execute, behind one signature: one after another in this process
(`local`), or each as a Ray task (`ray`), on this machine or a cluster.

Either way a cell starts from the grid the driver built (the data tokenised and the frozen-layer
states cached once), writes its checkpoint and log into the run directory, and hands every row
back to the driver, which alone writes results.jsonl. A cell's numbers depend on its seed and
thread count, not on where it ran, so both executors give the same rows for the same
`--cpus-per-cell`. Ray retries a cell whose worker dies; the retry continues from the cell's
checkpoint and rows already recorded are not written twice. A cell that fails on its own
(bad input, a diverged loss) stops the run with its own exception.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from tqdm import tqdm

from cml.cells import Cell, Grid, Record, run_cell
from cml.device import resolve_device
from cml.engine import TaskResult
from cml.timing import PhaseTimer

# attempts after a cell's worker dies (a killed process, a lost node); a cell's own error is never retried
MAX_RETRIES = 3

Executor = Callable[[Grid, list[Cell], torch.device, Record, PhaseTimer, bool], None]


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


def ray_cell(grid: Grid, cell: Cell) -> tuple[list[dict], PhaseTimer]:
    """A cell as a Ray task, on the device Ray gave its worker: its rows and where its time went."""
    torch.set_num_threads(grid.config.executor.cpus_per_cell)
    device = resolve_device(grid.config.device)
    rows, timer = [], PhaseTimer()
    run_cell(grid.to(device), cell, device, rows.append, timer, progress=False)
    return rows, timer


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
    task = ray.remote(ray_cell).options(
        num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell, max_retries=MAX_RETRIES, retry_exceptions=False
    )
    pending = {}
    try:
        shared = ray.put(grid.to(torch.device("cpu")))
        pending = {task.remote(shared, cell): cell for cell in todo}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            method, o, seed = pending.pop(ref)
            try:
                rows, cell_timer = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise e.cause from None  # the cell's own error, not Ray's wrapper of it
            for row in rows:
                record(row)
            timer.add(cell_timer)
            if progress:
                tqdm.write(
                    f"[{method}] order {o} seed {seed}: final whole acc {100 * TaskResult.from_row(rows[-1]).whole_accuracy:.1f} "
                    f"({sum(r['seconds'] for r in rows):.1f} s)"
                )
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Executor] = {"local": run_local, "ray": run_ray}
