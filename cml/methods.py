"""Methods as small strategies on the one engine. `METHODS` maps a `--method` name to a factory."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from cml.config import CMLConfig
from cml.curriculum import CurriculumScheduler
from cml.engine import Engine, Strategy
from cml.errors import CMLInputError
from cml.memory import select_prototypes
from cml.relations import RelationSpace


@dataclass
class MethodContext:
    """What a method may need beyond the engine: relation similarities and its options."""

    space: RelationSpace
    options: CMLConfig
    n_tasks: int


class Finetune(Strategy):
    """No memory: the lower bound."""


class Replay(Strategy):
    """Episodic memory (K-means prototypes per relation) replayed together with each new task."""

    def training_indices(self, engine: Engine) -> torch.Tensor:
        return torch.cat([engine.data.train_indices(engine.current), engine.memory.indices()])

    def after_task(self, engine: Engine) -> None:
        update_memory(engine)


class Joint(Strategy):
    """All training data of every relation seen so far: the upper bound."""

    def training_indices(self, engine: Engine) -> torch.Tensor:
        return engine.data.train_indices([r for task in engine.tasks for r in task])


def update_memory(engine: Engine) -> None:
    """Encode the new relations' training examples with the updated model (in one pass, so the
    batches are full and sorted by length); keep each relation's K-means prototypes."""
    indices = engine.data.train_indices(engine.current)
    features = engine.features(indices)
    labels = engine.data.train.labels[indices]
    for relation in engine.current:
        mine = (labels == engine.data.label_of[relation]).nonzero().flatten()
        with engine.timer("memory K-means"):
            keep = select_prototypes(features[mine.numpy()], engine.config.memory_size, engine.seed)
        engine.memory.add(relation, indices[mine[torch.as_tensor(keep, dtype=torch.long)]])


META_SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "fixed": lambda eps, k, n: eps,
    "linear": lambda eps, k, n: eps * (1 - k / n),
    "sqrt": lambda eps, k, n: eps * math.sqrt(1 - k / n),
}


class CML(Replay):
    """Curriculum-meta learning (METHOD.md section 3.3): memory replayed from easy (relations
    unlike the current task's) to hard (relations like them), then a Reptile step that moves the
    weights only part of the way from where the task started to where training took them."""

    def __init__(self, context: MethodContext, curriculum: bool = True, meta: bool = True):
        self.context, self.curriculum, self.meta = context, curriculum, meta
        self.start: dict[str, torch.Tensor] | None = None

    def batches(self, engine: Engine, indices: torch.Tensor, epoch: int) -> Iterator[torch.Tensor]:
        if not self.curriculum:
            yield from super().batches(engine, indices, epoch)
            return
        current = torch.tensor([engine.data.label_of[r] for r in engine.current])
        is_task = torch.isin(engine.data.train.labels[indices], current)
        task, memory = indices[is_task], indices[~is_task]
        task_batches = engine.length_grouped(task)
        if len(memory) == 0:
            yield from task_batches
            return
        opts = self.context.options
        relation_of = engine.data.relations
        difficulty = {r: self.context.space.relation_difficulty(r, engine.current) for r in engine.memory.slots}
        scores = [difficulty[relation_of[int(label)]] for label in engine.data.train.labels[memory]]
        scheduler = CurriculumScheduler(
            scores,
            math.ceil(len(memory) / len(task_batches)),
            opts.pacing,
            opts.start_fraction,
            opts.direction,
            seed=engine.seed + epoch,
        )
        memory_batches = [memory[torch.tensor(b, dtype=torch.long)] for b in scheduler]
        for i, batch in enumerate(task_batches):
            yield torch.cat([batch, memory_batches[i]]) if i < len(memory_batches) else batch

    def before_task(self, engine: Engine) -> None:
        first = len(engine.tasks) == 1  # nothing to protect yet
        self.start = (
            None
            if first or not self.meta
            else {n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad}
        )

    def after_training(self, engine: Engine) -> None:
        """theta <- theta_before + eps_k (theta_after - theta_before), except the classifier rows of
        the relations that arrived with this task: like the first task, they have nothing to protect."""
        if self.start is None:
            return
        opts = self.context.options
        eps = META_SCHEDULES[opts.meta_schedule](opts.meta_eps, len(engine.tasks) - 1, self.context.n_tasks)
        new_rows = [engine.data.label_of[r] for r in engine.current]
        with torch.no_grad():
            for n, p in engine.model.named_parameters():
                if n in self.start:
                    mixed = self.start[n].lerp_(p, eps)
                    if n.startswith("classifier."):
                        mixed[new_rows] = p[new_rows]
                    p.copy_(mixed)
        self.start = None


METHODS: dict[str, Callable[[MethodContext], Strategy]] = {
    "finetune": lambda ctx: Finetune(),
    "replay": lambda ctx: Replay(),
    "joint": lambda ctx: Joint(),
    "cml": lambda ctx: CML(ctx),
    "cml-no-curriculum": lambda ctx: CML(ctx, curriculum=False),
    "cml-no-meta": lambda ctx: CML(ctx, meta=False),
}


def check_methods(names: list[str]) -> None:
    if not names:
        raise CMLInputError("no method given: use --method with one or more of " + ", ".join(METHODS))
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise CMLInputError(f"unknown method {unknown[0]!r}: use one of {', '.join(METHODS)}")


def make_strategy(name: str, context: MethodContext) -> Strategy:
    check_methods([name])
    return METHODS[name](context)
