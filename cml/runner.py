"""Every method over every order and seed (a cell each) on the same splits, with a run directory
that survives interruption: results appended as each task finishes, a checkpoint after each
task, a report at the end. `--resume DIR` continues from the last finished task and gives the
numbers an uninterrupted run would have given.
"""

from __future__ import annotations

import copy
import json
import os
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import torch
import yaml
from tqdm import tqdm

from cml.config import RunConfig
from cml.device import release_freed_memory, resolve_device, resolve_precision
from cml.encoder import (
    MARKERS,
    RelationEncoder,
    frozen_states_cached,
    load_backbone,
    load_tokenizer,
    tokenize_cached,
)
from cml.engine import EncodedData, Engine, MethodContext
from cml.errors import CMLInputError
from cml.experiment import Experiment, cache_dir
from cml.methods import METHODS, check_classifier, check_difficulty, check_losses, check_methods
from cml.model import RelationModel
from cml.timing import TRAIN_PHASE, PhaseTimer

CONFIG_FILE, RESULTS_FILE, CHECKPOINTS = "config.yaml", "results.jsonl", "checkpoints"
# may differ between a run and its resumption (the head search's options do not touch a run)
IGNORED_ON_RESUME = ("output", "device", "search")


def task_seed(seed: int, method: str, order: int, task: int) -> int:
    return zlib.crc32(f"{seed}/{method}/{order}/{task}".encode())


def resolved(config: RunConfig) -> tuple[RunConfig, torch.device]:
    """A copy of the config with the precision fixed for this machine (as config.yaml records
    it), and the device."""
    device = resolve_device(config.device)
    config = copy.deepcopy(config)
    config.train.precision = resolve_precision(config.train.precision, device)
    return config, device


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_writable(run_dir: Path) -> Path:
    """`run_dir`, once its nearest existing ancestor is a directory this process may write in."""
    existing = next((p for p in [run_dir, *run_dir.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CMLInputError("output directory is not writable", existing)
    return run_dir


def prepare_run_dir(config: RunConfig, resume: bool) -> Path:
    """Check everything about the run directory before anything is written to it."""
    check_methods(config.train.methods)
    check_classifier(config.train.methods, config.train.classifier)
    check_difficulty(config.train.methods, config.cml.difficulty)
    check_losses(config.train.methods, config.loss)
    config, _ = resolved(config)
    run_dir = check_writable(Path(config.output))
    saved_path = run_dir / CONFIG_FILE
    if resume:
        if not saved_path.exists():
            raise CMLInputError(f"no {CONFIG_FILE}: not a run directory to resume", run_dir)
        saved = _flat(yaml.safe_load(saved_path.read_text()))
        wanted = _flat(config.to_dict())
        for key in sorted(set(saved) | set(wanted)):
            if key.split(".")[0] not in IGNORED_ON_RESUME and saved.get(key) != wanted.get(key):
                raise CMLInputError(
                    f"cannot resume: the run used {key}={saved.get(key)!r}, this command asks {key}={wanted.get(key)!r}",
                    saved_path,
                )
    elif (run_dir / RESULTS_FILE).exists():
        raise CMLInputError(
            f"holds a run already ({RESULTS_FILE}); continue it with --resume {run_dir} or pick another --output",
            run_dir,
        )
    return run_dir


def read_results(run_dir: Path) -> dict[tuple[str, int, int, int], dict]:
    """Rows by (method, order, seed, task); a task recorded twice (re-run after a crash) keeps the last row."""
    path = run_dir / RESULTS_FILE
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[(row["method"], row["order"], row["seed"], row["task"])] = row
    return rows


def build_model(config: RunConfig, tokenizer, n_relations: int) -> RelationModel:
    backbone = load_backbone(config.encoder.name, tokenizer, config.seed, config.encoder.marker_init)
    encoder = RelationEncoder(backbone, config.encoder.freeze_layers)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return RelationModel(encoder, n_relations, config.train.head)


def encode_data(
    config: RunConfig, experiment: Experiment, tokenizer, model: RelationModel, device: torch.device
) -> EncodedData:
    """Tokenise the training split and the split results are measured on, once; with frozen
    layers, also run them once over every sentence (both cached on disk)."""
    ds, pad_id = experiment.dataset, tokenizer.pad_token_id or 0
    evaluation = getattr(ds, config.data.eval_split)
    splits = [
        tokenize_cached(tokenizer, examples, ds.label_of, config.encoder.max_length, cache_dir())
        for examples in (ds.train, evaluation)
    ]
    if model.encoder.frozen_layers > 0:
        model.to(device)
        for split in splits:
            split.hidden = frozen_states_cached(
                model.encoder, config.encoder.name, config.encoder.marker_init, split, pad_id, cache_dir(), device
            )
    markers = tuple(tokenizer.convert_tokens_to_ids(list(MARKERS)))
    return EncodedData(*splits, ds.relations, pad_id, markers).to(device)


def build_learner(config: RunConfig, experiment: Experiment, device: torch.device):
    """The model at its initial weights, the encoded data, and what methods need: shared by all runs."""
    tokenizer = load_tokenizer(config.encoder.name)
    model = build_model(config, tokenizer, len(experiment.dataset.relations))
    data = encode_data(config, experiment, tokenizer, model, device)
    return model, data, MethodContext(experiment.space, config.cml, len(experiment.orders[0].tasks))


class Cell(NamedTuple):
    """One continual run: a method over one task order with one seed."""

    method: str
    order: int
    seed: int


def cells(config: RunConfig, experiment: Experiment) -> list[Cell]:
    """Every (method, order, seed) of the run, in the order they run."""
    return [
        Cell(method, o, seed)
        for method in config.train.methods
        for seed in config.run_seeds()
        for o in range(len(experiment.orders))
    ]


def run(
    config: RunConfig,
    experiment: Experiment,
    resume: bool = False,
    progress: bool = True,
    timer: PhaseTimer | None = None,
) -> dict:
    """Run every cell; returns the report (also written to the run directory).
    `timer` collects where the time goes (the report holds its totals)."""
    from cml.report import write_report

    config, device = resolved(config)
    timer = timer or PhaseTimer()
    run_dir = prepare_run_dir(config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    if progress:
        tqdm.write(f"device {device}, precision {config.train.precision}")
    with timer("data and model"):
        model, data, context = build_learner(config, experiment, device)
    release_freed_memory()
    pretrained = copy.deepcopy(model.state_dict())
    rows = read_results(run_dir)
    with (run_dir / RESULTS_FILE).open("a") as log:
        for cell in tqdm(cells(config, experiment), desc="runs (method, order, seed)", disable=not progress):
            model.load_state_dict(pretrained)
            model.reset_new_layers(cell.seed)
            engine = Engine(model, data, config, METHODS[cell.method], context, device, progress=progress, timer=timer)
            run_cell(engine, cell, experiment.orders[cell.order].tasks, run_dir, rows, log, progress)
    return write_report(run_dir, config, experiment, rows, timer.summary())


def run_cell(
    engine: Engine, cell: Cell, tasks: list[list[str]], run_dir: Path, rows: dict, log, progress: bool
) -> None:
    """The tasks of one cell not yet in `rows`, from its checkpoint; each task's row is appended
    to `log` and `rows` as it finishes."""
    method, o, seed = cell
    start = _restore(engine, run_dir, rows, cell, len(tasks))
    bar = tqdm(
        range(start, len(tasks)),
        desc=f"{method} order {o} seed {seed}: tasks",
        leave=False,
        initial=start,
        total=len(tasks),
        disable=not progress,
    )
    timer = engine.timer
    for k in bar:
        engine.seed = task_seed(seed, method, o, k)
        torch.manual_seed(engine.seed)
        began, examples = time.perf_counter(), timer.examples[TRAIN_PHASE]
        result = engine.run_task(tasks[k])
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
        rows[(method, o, seed, k)] = row
        log.write(json.dumps(row) + "\n")
        log.flush()
        _checkpoint(engine, run_dir, cell, k, last=k == len(tasks) - 1)
        release_freed_memory()
        tqdm.write(
            f"[{method}] order {o} seed {seed} task {k + 1}/{len(tasks)}: "
            f"whole acc {100 * result.whole_accuracy:.1f}, "
            f"current task {100 * result.task_accuracy[-1]:.1f} ({row['seconds']:.1f} s)"
        )


def _checkpoint_path(run_dir: Path, cell: Cell) -> Path:
    return run_dir / CHECKPOINTS / f"{cell.method}-order{cell.order}-seed{cell.seed}.pt"


def _checkpoint(engine: Engine, run_dir: Path, cell: Cell, task: int, last: bool) -> None:
    """Keep the state after the last finished task; a cell's checkpoint goes once the cell is done."""
    path = _checkpoint_path(run_dir, cell)
    if last:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    torch.save({"task": task, **engine.state_dict()}, tmp)
    tmp.replace(path)


def _restore(engine: Engine, run_dir: Path, rows: dict, cell: Cell, n_tasks: int) -> int:
    """The first task of `cell` still to run, with the engine restored to the state before it."""
    done = sum(1 for k in range(n_tasks) if (*cell, k) in rows)
    if done == n_tasks:
        return n_tasks
    path = _checkpoint_path(run_dir, cell)
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=False)
    engine.load_state_dict(state)
    return state["task"] + 1
