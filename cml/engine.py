"""The one continual-learning training loop. Methods are strategies that override its hooks.

Per task the engine calls, in order: `before_task`, `training_indices`, then for each epoch the
batches from `batches` (one optimiser step each), `after_training`, `after_task`, and finally
evaluates on the test sets of every relation seen so far (class-incremental).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cml.config import TrainConfig
from cml.device import autocast, eval_batch_size, to_device
from cml.encoder import EncodedSplit
from cml.memory import EpisodicMemory
from cml.model import RelationModel
from cml.timing import TRAIN_PHASE, PhaseTimer


@dataclass
class EncodedData:
    """A dataset tokenised once; shared by every order and method of a run."""

    train: EncodedSplit
    test: EncodedSplit
    relations: list[str]
    pad_id: int = 0

    def __post_init__(self) -> None:
        self.label_of = {r: i for i, r in enumerate(self.relations)}

    def to(self, device: torch.device) -> EncodedData:
        return EncodedData(self.train.to(device), self.test.to(device), self.relations, self.pad_id)

    def _where(self, split: EncodedSplit, relations: list[str]) -> torch.Tensor:
        labels = torch.tensor([self.label_of[r] for r in relations], dtype=torch.long)
        return torch.isin(split.labels, labels).nonzero().flatten()

    def train_indices(self, relations: list[str]) -> torch.Tensor:
        return self._where(self.train, relations)

    def test_indices(self, relations: list[str]) -> torch.Tensor:
        return self._where(self.test, relations)


@dataclass
class TaskResult:
    """What evaluation after one task records."""

    task_accuracy: list[float]  # a[k][j] for the tasks j <= k, in arrival order
    task_size: list[int]  # n_j
    relation_accuracy: dict[str, float] = field(default_factory=dict)

    @property
    def whole_accuracy(self) -> float:
        """W_k: accuracy over every test example seen so far."""
        return sum(a * n for a, n in zip(self.task_accuracy, self.task_size)) / sum(self.task_size)


class Strategy:
    """A method: the default hooks train on the current task's data alone (finetune)."""

    def before_task(self, engine: Engine) -> None:
        pass

    def training_indices(self, engine: Engine) -> torch.Tensor:
        return engine.data.train_indices(engine.current)

    def batches(self, engine: Engine, indices: torch.Tensor, epoch: int) -> Iterator[torch.Tensor]:
        yield from engine.length_grouped(indices)

    def after_training(self, engine: Engine) -> None:
        pass

    def after_task(self, engine: Engine) -> None:
        pass


class Engine:
    def __init__(
        self,
        model: RelationModel,
        data: EncodedData,
        config: TrainConfig,
        strategy: Strategy,
        device: torch.device,
        seed: int = 0,
        progress: bool = True,
        timer: PhaseTimer | None = None,
    ):
        """`config.precision` must be resolved (bf16 or fp32); `data` is best already on `device`."""
        self.model = model.to(device)
        self.data, self.config, self.strategy = data, config, strategy
        self.device, self.seed, self.progress = device, seed, progress
        self.timer = timer or PhaseTimer()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.eval_batch_size = eval_batch_size(config.eval_batch_size, device)
        self.memory = EpisodicMemory()
        self.tasks: list[list[str]] = []  # tasks seen, in arrival order
        self.seen = torch.zeros(len(data.relations), dtype=torch.bool, device=device)

    @property
    def current(self) -> list[str]:
        return self.tasks[-1]

    def autocast(self):
        return autocast(self.device, self.config.precision)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: to_device(v, self.device) for k, v in batch.items()}

    def length_grouped(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """Training batches of `indices` in random order, each of sentences of similar length."""
        return self.data.train.length_grouped(indices, self.config.batch_size, self.config.length_window)

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW, fused: one kernel for all parameters, about 6x faster than the per-tensor loop on a CPU."""
        encoder = [p for p in self.model.encoder.parameters() if p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
        return torch.optim.AdamW(
            [{"params": encoder, "lr": self.config.lr}, {"params": rest, "lr": self.config.head_lr}], fused=True
        )

    def train_step(self, indices: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        with self.timer("batch assembly"):
            batch = self.to_device(self.data.train.batch(indices, self.data.pad_id))
        with self.timer(TRAIN_PHASE, len(indices)):
            with self.autocast():
                logits = self.model(batch, self.seen)
            loss = nn.functional.cross_entropy(logits.float(), batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with self.timer("optimizer step"):
            nn.utils.clip_grad_norm_(self.trainable, 1.0)
            optimizer.step()
        return float(loss.detach())

    def run_task(self, relations: list[str]) -> TaskResult:
        self.tasks.append(list(relations))
        self.seen[[self.data.label_of[r] for r in relations]] = True
        s = self.strategy
        s.before_task(self)
        indices = s.training_indices(self)
        optimizer = self.optimizer()
        self.model.train()
        for epoch in range(self.config.epochs):
            with self.timer("batch planning"):
                batches = list(s.batches(self, indices, epoch))
            bar = tqdm(
                batches,
                desc=f"    epoch {epoch + 1}/{self.config.epochs}",
                leave=False,
                disable=not self.progress,
            )
            for batch in bar:
                bar.set_postfix(loss=f"{self.train_step(batch, optimizer):.3f}", refresh=False)
        with self.timer("after training (Reptile)"):
            s.after_training(self)
        s.after_task(self)
        return self.evaluate()

    @torch.no_grad()
    def _apply(self, split: EncodedSplit, indices: torch.Tensor, fn, phase: str) -> torch.Tensor:
        """`fn` over the examples `indices` in eval mode; rows follow `indices`."""
        self.model.eval()

        def on_device(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            with self.autocast():
                return fn(self.to_device(batch)).float().cpu()

        with self.timer(phase, len(indices)):
            return split.map(indices, on_device, self.eval_batch_size, self.data.pad_id)

    def features(self, indices: torch.Tensor) -> np.ndarray:
        """Relation representations of training examples, in the order of `indices`."""
        return self._apply(self.data.train, indices, self.model.features, "memory forward").numpy()

    def evaluate(self) -> TaskResult:
        relations = [r for task in self.tasks for r in task]
        indices = self.data.test_indices(relations)
        logits = self._apply(self.data.test, indices, lambda b: self.model(b, self.seen), "evaluation forward")
        labels = self.data.test.labels[indices]
        correct = (logits.argmax(-1) == labels).float()
        per_relation = {}
        for r in relations:
            mask = labels == self.data.label_of[r]
            per_relation[r] = round(float(correct[mask].mean()), 6)
        task_acc, task_size = [], []
        for task in self.tasks:
            mask = torch.isin(labels, torch.tensor([self.data.label_of[r] for r in task]))
            task_acc.append(round(float(correct[mask].mean()), 6))
            task_size.append(int(mask.sum()))
        return TaskResult(task_acc, task_size, per_relation)

    def state_dict(self) -> dict:
        """What a checkpoint needs: the weights that train (frozen ones never change), memory, tasks."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        weights = {n: t for n, t in self.model.state_dict().items() if n in trainable}
        return {"model": weights, "memory": self.memory.state_dict(), "tasks": self.tasks}

    def load_state_dict(self, state: dict) -> None:
        """Restore onto a model holding the run's initial weights."""
        missing = set(state["model"]) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"checkpoint holds weights the model lacks: {sorted(missing)[:3]}")
        self.model.load_state_dict(state["model"], strict=False)
        self.memory.load_state_dict(state["memory"])
        self.tasks = [list(t) for t in state["tasks"]]
        self.seen.zero_()
        self.seen[[self.data.label_of[r] for t in self.tasks for r in t]] = True
