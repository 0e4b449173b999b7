"""Every method over every order and seed (a cell each) on the same splits, with a run directory
that survives interruption: results recorded as tasks finish, a checkpoint after each task, a
log per cell, a report at the end. `--resume DIR` skips finished cells, continues the others
from their last finished task, and gives the numbers an uninterrupted run would have given.

This process (the driver) loads the data, tokenises it and caches the frozen-layer states once;
an executor (cml/executors.py) runs the cells, in this process, in processes beside it or on Ray,
and hands their rows back.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from cml.augment import reverse_entities
from cml.cache import cache_dir
from cml.cells import CHECKPOINTS, LOGS, Cell, Grid, cells, checkpoint_path
from cml.config import RunConfig, first_difference, flatten
from cml.data.records import MARKERS
from cml.device import release_freed_memory, resolve_device, resolve_precision
from cml.encoder import RelationEncoder, load_backbone, load_tokenizer
from cml.engine import EncodedData, MethodContext
from cml.errors import CMLInputError, warn
from cml.estimate import Estimate, estimate_run
from cml.executors import EXECUTORS
from cml.experiment import Experiment
from cml.files import write_text_atomically
from cml.frozen import frozen_states_cached
from cml.methods import METHODS, check_classifier, check_difficulty, check_learn_softmax, check_losses, check_methods
from cml.model import RelationModel
from cml.report import write_report
from cml.timing import PhaseTimer
from cml.tokens import tokenize_cached
from cml.trackers import open_trackers, prepare_trackers

CONFIG_FILE, RESULTS_FILE = "config.yaml", "results.jsonl"
# may differ between a run and its resumption: they do not change a number (the head search's
# options do not touch a run, trackers only watch it, plots only draw it; a cell's thread count
# does, so executor.cpus_per_cell must match)
IGNORED_ON_RESUME = (
    "output",
    "device",
    "search",
    "executor.name",
    "executor.ray_address",
    "executor.gpus_per_cell",
    "log_to",
    "mlflow_uri",
    "plots",
)
# may grow on resumption: a cell's numbers depend on its own (method, order, seed) alone, and a
# grid's first orders and seeds are the same however many follow (cml/tasks.py, cml/cells.py)
GROWS_ON_RESUME = ("seeds", "data.orders", "train.methods")


def resolved(config: RunConfig) -> tuple[RunConfig, torch.device]:
    """A copy of the config with the precision, a cell's threads and MLflow's store fixed for this
    machine (as config.yaml records them), and the device."""
    device = resolve_device(config.device)
    config = copy.deepcopy(config)
    config.train.precision = resolve_precision(config.train.precision, device)
    executor = config.executor
    executor.cpus_per_cell = executor.cpus_per_cell or (torch.get_num_threads() if executor.name == "local" else 1)
    if "mlflow" in config.log_to and config.mlflow_uri is None:  # MLflow's file store here, for every worker
        config.mlflow_uri = Path("mlruns").resolve().as_uri()
    return config, device


def check_writable(run_dir: Path) -> Path:
    """`run_dir`, once its nearest existing ancestor is a directory this process may write in."""
    existing = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CMLInputError("output directory is not writable", existing)
    return run_dir


def prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    """Check the config (every option, also where it was built in Python rather than loaded) and
    the run directory before anything is written to it."""
    config.check()
    check_methods(config.train.methods)
    check_classifier(config.train.methods, config.train.classifier)
    check_difficulty(config.train.methods, config.cml.difficulty)
    check_losses(config.train.methods, config.loss)
    check_learn_softmax(config.train.methods, config.cml.learn_softmax)
    if config.executor.name == "ray" and importlib.util.find_spec("ray") is None:
        raise CMLInputError('--executor ray needs Ray: pip install -e ".[ray]"')
    config, device = resolved(config)
    if config.executor.name == "processes" and device.type != "cpu":
        raise CMLInputError(
            f"--executor processes runs cells side by side on this machine's CPU, not on {device}: "
            "--executor local runs them one after another there, ray shares a GPU (--gpus-per-cell)"
        )
    run_dir = check_writable(Path(config.output))
    saved_path = run_dir / CONFIG_FILE
    if resume:
        if not saved_path.exists():
            raise CMLInputError(f"no {CONFIG_FILE}: not a run directory to resume", run_dir)
        # an option the saved config lacks did not exist when the run was made: it ran at the default
        saved = {**flatten(RunConfig().to_dict()), **flatten(yaml.safe_load(saved_path.read_text()))}
        differs = first_difference(saved, config.to_dict(), IGNORED_ON_RESUME + GROWS_ON_RESUME)
        if differs:
            key, used, asked = differs
            raise CMLInputError(
                f"cannot resume: the run used {key}={used!r}, this command asks {key}={asked!r}", saved_path
            )
        check_growth(saved, flatten(config.to_dict()), saved_path)
    elif (run_dir / RESULTS_FILE).exists():
        raise CMLInputError(
            f"holds a run already ({RESULTS_FILE}); continue it with --resume {run_dir} or pick another --output",
            run_dir,
        )
    return run_dir


def check_growth(saved: dict, asked: dict, path: Path) -> None:
    """A resumed run may add seeds, orders and methods (the new cells run, the finished ones are
    kept), never drop them: the rows of the cells it would drop are in results.jsonl already."""
    for key in GROWS_ON_RESUME:
        used, wanted = saved[key], asked[key]
        kept = set(used) <= set(wanted) if key == "train.methods" else wanted >= used
        if not kept:
            raise CMLInputError(
                f"cannot resume: the run used {key}={used!r}, this command asks {key}={wanted!r} "
                "(a resumed run may add seeds, orders and methods, not drop them)",
                path,
            )
    if asked["data.orders"] != saved["data.orders"] and saved["data.curriculum_orders"]:
        raise CMLInputError(
            "cannot resume with more --orders: the run's two curriculum orders come after its last order "
            "(--curriculum-order), so their numbers would move",
            path,
        )


ROW_KEYS = ("method", "order", "seed", "task")


def row_key(row: dict) -> tuple[str, int, int, int]:
    return tuple(row[k] for k in ROW_KEYS)


def read_results(run_dir: Path, mend: bool = False) -> dict[tuple[str, int, int, int], dict]:
    """Rows by (method, order, seed, task). A last line without its newline was being written
    when the run stopped: if it is not a whole row it is dropped with a warning (its cell's
    checkpoint still holds the state before that task, so the task runs again and nothing is
    lost), and with `mend` it is cut from the file so that the next row starts a line of its own.
    A bad line anywhere else is an input error naming the file and the line."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return {}
    data = path.read_bytes()
    *lines, last = data.split(b"\n")
    rows = {}
    for i, line in enumerate(lines, 1):
        if line.strip():
            row = _row(line)
            if row is None:
                raise CMLInputError(f"line {i} is not a result row; remove it (its task then runs again)", path)
            rows[row_key(row)] = row
    if last.strip():
        row = _row(last)
        if row is not None:
            rows[row_key(row)] = row
            if mend:
                with path.open("ab") as f:
                    f.write(b"\n")
        else:
            warn(f"dropped a torn last line (line {len(lines) + 1}, {len(last)} bytes): its task runs again", path)
            if mend:
                os.truncate(path, len(data) - len(last))
    return rows


def _row(line: bytes) -> dict | None:
    """A result row, or None where the line is not one (cut short, not JSON, not UTF-8)."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return row if isinstance(row, dict) and all(k in row for k in ROW_KEYS) else None


def build_model(config: RunConfig, tokenizer, n_relations: int) -> RelationModel:
    backbone = load_backbone(config.encoder.name, tokenizer, config.seed, config.encoder.marker_init)
    encoder = RelationEncoder(backbone, config.encoder.freeze_layers)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return RelationModel(encoder, n_relations, config.train.head)


def encode_data(
    config: RunConfig, experiment: Experiment, tokenizer, model: RelationModel, device: torch.device, reverses: bool
) -> EncodedData:
    """Tokenise the training split and the split results are measured on, once; with frozen
    layers, also run them once over every sentence (both cached on disk). `reverses`: a method
    gives reversed classes, so every training sentence is also made with head and tail swapped,
    its states run and cached like the others (the same in every order and cell)."""
    ds, pad_id = experiment.dataset, tokenizer.pad_token_id or 0
    evaluation = getattr(ds, config.data.eval_split)
    splits = [
        tokenize_cached(tokenizer, examples, ds.label_of, config.encoder.max_length, cache_dir())
        for examples in (ds.train, evaluation)
    ]
    for name, split in zip(("training", config.data.eval_split), splits):
        if split.cut:
            warn(
                f"{split.cut:,} of {len(split):,} {name} sentences are longer than --max-length "
                f"{config.encoder.max_length} word pieces and were cut around their entities"
                + (f"; {split.lost_markers:,} lost an entity's closing marker" if split.lost_markers else ""),
                ds.source,
            )
    markers = tuple(tokenizer.convert_tokens_to_ids(list(MARKERS)))
    train = splits[0]
    flipped = reverse_entities(train, torch.arange(len(train)), train.labels, markers) if reverses else None
    if model.encoder.frozen_layers > 0:
        model.to(device)
        for split in [*splits, flipped] if flipped is not None else splits:
            split.hidden = frozen_states_cached(model.encoder, split, pad_id, cache_dir(), device)
    return EncodedData(*splits, ds.relations, pad_id, markers, flipped).to(device)


def build_learner(config: RunConfig, experiment: Experiment, device: torch.device):
    """The model at its initial weights, the encoded data, and what methods need: shared by all runs."""
    tokenizer = load_tokenizer(config.encoder.name)
    model = build_model(config, tokenizer, len(experiment.dataset.relations))
    context = MethodContext(experiment.space, config.cml, len(experiment.orders[0].tasks), experiment.dataset.symmetric)
    reverses = any(METHODS[m].reverses(experiment.dataset.relations, context) for m in config.train.methods)
    data = encode_data(config, experiment, tokenizer, model, device, reverses)
    return model, data, context


def run(
    config: RunConfig,
    experiment: Experiment,
    resume: bool = False,
    progress: bool = True,
    timer: PhaseTimer | None = None,
    origin: str | None = None,
) -> dict:
    """Run every cell not finished yet; returns the report (also written to the run directory).
    `timer` collects where the time goes (the report holds its totals); `origin`, where the
    settings came from, heads config.yaml (a resumed run keeps the first run's)."""

    began = time.perf_counter()
    config, device = resolved(config)
    timer = timer or PhaseTimer()
    run_dir = prepare_run_dir(config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / CONFIG_FILE
    header = "".join(line for line in saved.read_text().splitlines(True) if line.startswith("#")) if resume else ""
    header = header or (f"# settings: {origin}\n" if origin else "")
    write_text_atomically(saved, header + yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    (run_dir / LOGS).mkdir(exist_ok=True)
    if progress:
        tqdm.write(f"device {device}, precision {config.train.precision}, executor {config.executor.name}")
    with timer("data and model"):
        model, data, context = build_learner(config, experiment, device)
    release_freed_memory()
    grid = Grid(config, [order.tasks for order in experiment.orders], model, data, context, run_dir)
    rows = read_results(run_dir, mend=True)
    todo = unfinished(config, experiment, rows)
    for cell in todo:
        done = sum((*cell, k) in rows for k in range(len(grid.orders[cell.order])))
        if done and not checkpoint_path(run_dir, cell).exists():
            warn(f"{cell.name} has {done} rows but no checkpoint: it starts again from the initial weights", run_dir)
    with timer("estimate"):
        estimate = estimate_run(todo, grid.orders, model, data, config, context, device) if todo else None
    if progress and estimate:
        tqdm.write(estimate.describe())
    tasks = len(cells(config, experiment)) * len(grid.orders[0])
    with (
        (run_dir / RESULTS_FILE).open("a") as log,
        tqdm(total=tasks, initial=len(rows), desc="tasks of all cells", disable=not progress) as bar,
    ):

        def record(row: dict) -> None:
            """A row into results.jsonl, once: a task re-run after a fault is not written again."""
            key = row_key(row)
            if key not in rows:
                rows[key] = row
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update()

        prepare_trackers(config, run_dir)
        EXECUTORS[config.executor.name](grid, todo, device, record, timer, progress)
    estimated = round(estimate.seconds, 1) if estimate else None
    wall = {"estimated_seconds": estimated, "seconds": round(time.perf_counter() - began, 1)}
    report = write_report(run_dir, config, experiment, rows, timer.summary(), wall)
    if config.log_to:  # the report's files, as a tracker run of their own
        files = [run_dir / "report.json", run_dir / "report.md", *sorted(run_dir.glob("*.png"))]
        for tracker in open_trackers(config, run_dir, "report"):
            tracker.files(files)
            tracker.close()
    return report


def unfinished(config: RunConfig, experiment: Experiment, rows: dict) -> list[Cell]:
    """The cells with a task not in `rows` yet."""
    tasks = len(experiment.orders[0].tasks)
    return [cell for cell in cells(config, experiment) if any((*cell, k) not in rows for k in range(tasks))]


def plan_estimate(config: RunConfig, experiment: Experiment) -> Estimate:
    """What `run` would estimate, without running: the learner is built (its caches stay for the run)."""
    config, device = resolved(config)
    model, data, context = build_learner(config, experiment, device)
    rows = read_results(Path(config.output))
    orders = [order.tasks for order in experiment.orders]
    return estimate_run(unfinished(config, experiment, rows), orders, model, data, config, context, device)
