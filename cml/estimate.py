"""How long a run will take, before it starts: what every cell must push through the encoder,
counted from its method's stages and the tasks' sizes, times the encoder's speed on this machine,
measured by a short warm-up of the run's own model on its own batches.

The count follows the stages' declarations (cml/stages.py): a training stage's epochs over its
data (plus one forward pass for a teacher or a feature bank), memory selection and prototype
refreshes over what they encode, and the evaluation of every seen relation after each task. What
is not encoder work (K-means, optimiser, the meta step) is left out, so the estimate is a lower
bound by that much; the report sets the real wall time beside it.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch

from cml.cells import Cell
from cml.config import RunConfig
from cml.engine import EncodedData, Engine, MethodContext
from cml.executors import cells_at_once
from cml.methods import METHODS, Method
from cml.model import RelationModel
from cml.stages import TERMS, SelectMemory, StageData, Train, hybrid_sources
from cml.timing import TRAIN_PHASE, PhaseTimer

AUGMENTED_COPIES = {"none": 1, "swap": 2, "full": 4}  # sentences per memory item after cml/augment.py
WARMUP_BATCHES = 6  # timed, after one untimed batch of each kind


@dataclass
class Workload:
    """Examples through the encoder: forward and backward (training), forward only (the rest)."""

    train: int = 0
    forward: int = 0

    def __add__(self, other: Workload) -> Workload:
        return Workload(self.train + other.train, self.forward + other.forward)


def cell_workload(
    method: Method, tasks: list[list[str]], data: EncodedData, config: RunConfig, context: MethodContext
) -> Workload:
    """What one cell of `method` over `tasks` pushes through the encoder."""
    n_train = torch.bincount(data.train.labels, minlength=len(data.relations)).tolist()
    n_eval = torch.bincount(data.evaluation.labels, minlength=len(data.relations)).tolist()
    count = lambda relations, per: sum(per[data.label_of[r]] for r in relations)
    m, copies = config.train.memory_size, AUGMENTED_COPIES[config.train.augment]
    hybrids = lambda task, pairs: len(hybrid_sources(data.train, data.train_indices(task), pairs, data.label_of)[0])
    total, seen, in_memory = Workload(), [], []
    for k, task in enumerate(tasks):
        seen = seen + task
        for stage in method.stages:
            if k < stage.first_task:
                continue
            slots = {r: min(m, n_train[data.label_of[r]]) for r in in_memory}
            held = sorted(slots.values(), reverse=True)
            memory = sum(held)
            if isinstance(stage, Train):
                n = {
                    # with its own classes: the reversed relations' sentences once more, and the hybrids
                    "task": count(task, n_train)
                    + count(stage.reversed_relations(task, context), n_train)
                    + hybrids(task, stage.hybrid_pairs(task, context)),
                    "task+memory": count(task, n_train) + memory,
                    # the threatened relations' memory: at most the `threatened` largest (exact when all hold m)
                    "task+threatened": count(task, n_train) + sum(held[: config.cml.threatened]),
                    # with reversed classes: the memory of the reversed relations once more
                    "memory": memory * (copies if stage.augment else 1)
                    + sum(slots[r] for r in stage.reversed_relations(in_memory, context)),
                    "seen": count(seen, n_train),
                }[stage.data]
                passes = int(stage.needs_teacher) + int(any(TERMS[t].bank for t in stage.losses))
                total += Workload(getattr(config.train, stage.epochs_option) * n, passes * n)
            elif isinstance(stage, SelectMemory):
                in_memory = list(dict.fromkeys(in_memory + task))
                total += Workload(0, count(task, n_train))
            else:  # RefreshPrototypes
                total += Workload(0, memory)
        if (k + 1) % config.train.eval_every == 0 or k == len(tasks) - 1:
            total += Workload(0, count(seen, n_eval))
    return total


@dataclass
class Rates:
    """Seconds per example on this machine, with a cell's threads and precision."""

    train: float
    forward: float

    def seconds(self, work: Workload) -> float:
        return work.train * self.train + work.forward * self.forward


def measure_rates(
    model: RelationModel, data: EncodedData, config: RunConfig, context: MethodContext, device: torch.device
) -> Rates:
    """Time a few training steps and evaluation batches of the real model on a random sample of
    the training data, through the engine's own step; the model's weights, and the random state,
    are as they were before."""
    saved = copy.deepcopy(model.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(config.executor.cpus_per_cell)
    timer = PhaseTimer()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            engine = Engine(model, data, config, METHODS["finetune"], context, device, progress=False, timer=timer)
            engine.seen[:] = True
            size = config.train.batch_size
            items = torch.randperm(len(data.train))[: (WARMUP_BATCHES + 1) * max(size, engine.eval_batch_size)]
            batches = data.train.length_grouped(items, size, config.train.length_window)[: WARMUP_BATCHES + 1]
            position = torch.full((len(data.train),), -1, dtype=torch.long)
            stage = StageData(data.train, items, position, engine.seen, engine.old_ids, {}, None, None, None)
            optimizer = engine.optimizer()
            model.train()
            loss = lambda out, labels, teacher: torch.nn.functional.cross_entropy(out.logits.float(), labels)
            engine.train_step(stage, batches[0], optimizer, loss)
            timer.seconds.clear()
            timer.examples.clear()
            for batch in batches[1:] or batches:  # a split of one batch: time that one again
                engine.train_step(stage, batch, optimizer, loss)
            train = sum(timer.seconds.values()) / timer.examples[TRAIN_PHASE]
            engine.encode(data.train, items[: engine.eval_batch_size], "warm-up")
            began = time.perf_counter()
            engine.encode(data.train, items, "forward")
            forward = (time.perf_counter() - began) / len(items)
    finally:
        model.load_state_dict(saved)
        torch.set_num_threads(threads)
    return Rates(train, forward)


@dataclass
class Estimate:
    cells: int
    work: Workload
    seconds: float  # wall time, with `parallel` cells at once
    parallel: int
    rates: Rates

    def describe(self) -> str:
        return (
            f"estimate: {self.cells} cells, {self.work.train:,} training examples (forward + backward) and "
            f"{self.work.forward:,} forward-only (evaluation, memory, teachers); at {1 / self.rates.train:.0f} "
            f"and {1 / self.rates.forward:.0f} examples/s per cell (measured just now), "
            f"{self.parallel} cell{'s' if self.parallel > 1 else ''} at a time: about {_duration(self.seconds)} "
            "(encoder work only; the rest adds to it)"
        )


def estimate_run(
    cells: list[Cell],
    orders: list[list[list[str]]],
    model: RelationModel,
    data: EncodedData,
    config: RunConfig,
    context: MethodContext,
    device: torch.device,
) -> Estimate:
    """The estimate for `cells` (config resolved: a cell's threads fixed)."""
    rates = measure_rates(model, data, config, context, device)
    work = [cell_workload(METHODS[c.method], orders[c.order], data, config, context) for c in cells]
    parallel = cells_at_once(config, device)
    total = sum(work, Workload())
    seconds = sum(rates.seconds(w) for w in work) / min(parallel, max(1, len(cells)))
    return Estimate(len(cells), total, seconds, parallel, rates)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
