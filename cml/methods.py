"""Methods as small strategies on the one engine. `METHODS` maps a `--method` name to a factory."""
from __future__ import annotations

import torch

from cml.engine import Engine, Strategy
from cml.errors import CMLInputError
from cml.memory import select_prototypes


class Finetune(Strategy):
    """No memory: the lower bound."""

    name = "finetune"


class Replay(Strategy):
    """Episodic memory (K-means prototypes per relation) replayed together with each new task."""

    name = "replay"

    def training_indices(self, engine: Engine) -> torch.Tensor:
        return torch.cat([engine.data.train_indices(engine.current), engine.memory.indices()])

    def after_task(self, engine: Engine) -> None:
        update_memory(engine)


class Joint(Strategy):
    """All training data of every relation seen so far: the upper bound."""

    name = "joint"

    def training_indices(self, engine: Engine) -> torch.Tensor:
        return engine.data.train_indices([r for task in engine.tasks for r in task])


def update_memory(engine: Engine) -> None:
    """Encode each new relation's training examples with the updated model; keep the K-means prototypes."""
    for relation in engine.current:
        indices = engine.data.train_indices([relation])
        keep = select_prototypes(engine.features(indices), engine.config.memory_size, engine.seed)
        engine.memory.add(relation, indices[torch.as_tensor(keep, dtype=torch.long)])


METHODS: dict[str, type[Strategy]] = {m.name: m for m in (Finetune, Replay, Joint)}


def make_strategy(name: str) -> Strategy:
    if name not in METHODS:
        raise CMLInputError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")
    return METHODS[name]()


def check_methods(names: list[str]) -> None:
    for name in names:
        make_strategy(name)
    if not names:
        raise CMLInputError("no method given: use --method with one or more of " + ", ".join(METHODS))
