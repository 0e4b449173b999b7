"""The one continual-learning loop: each task runs its method's stages, with hooks for plugins.

Per task the engine records the new relations, keeps the trainable weights at the start of the
task where a part needs them (the meta step, the distillation teacher), then calls, in order:

    before_task
    for each stage of the method that runs on this task: before_stage, stage.run, after_stage
    after_task
    evaluation on every relation seen so far (class-incremental), then after_eval

The method (`cml/methods.py`) is a declaration: its stages, classifier and plugins. Everything a
task changes lives here: the model, the memory, the prototypes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch
from torch import nn
from torch.func import functional_call

from cml.config import CMLConfig, RunConfig
from cml.curriculum import CurriculumScheduler
from cml.device import autocast, eval_batch_size, to_device
from cml.frozen import frozen_states
from cml.memory import EpisodicMemory
from cml.meta import path_gradient
from cml.model import Z_DIM, Output, RelationModel
from cml.plugins import Plugin
from cml.prototypes import Prototypes, predictions
from cml.relations import RelationSpace
from cml.stages import Bank, StageData
from cml.timing import EVALUATION_PHASE, TRAIN_PHASE, PhaseTimer
from cml.tokens import EncodedSplit


@dataclass
class EncodedData:
    """A dataset tokenised once; shared by every order and method of a run. `evaluation` is the
    split results are measured on (test, or val for choosing settings)."""

    train: EncodedSplit
    evaluation: EncodedSplit
    relations: list[str]
    pad_id: int = 0
    markers: tuple[int, int, int, int] = (0, 0, 0, 0)  # ids of [E11], [E12], [E21], [E22]
    # every training sentence with head and tail swapped (ACA's reversed classes), its frozen-layer
    # states made and cached like the training split's; None where no method of the run reverses
    reversed_train: EncodedSplit | None = None

    def __post_init__(self) -> None:
        self.label_of = {r: i for i, r in enumerate(self.relations)}

    def to(self, device: torch.device) -> EncodedData:
        moved = self.reversed_train.to(device) if self.reversed_train is not None else None
        return replace(self, train=self.train.to(device), evaluation=self.evaluation.to(device), reversed_train=moved)

    def ids(self, relations: list[str]) -> torch.Tensor:
        return torch.tensor([self.label_of[r] for r in relations], dtype=torch.long)

    def train_indices(self, relations: list[str]) -> torch.Tensor:
        return torch.isin(self.train.labels, self.ids(relations)).nonzero().flatten()

    def evaluation_indices(self, relations: list[str]) -> torch.Tensor:
        return torch.isin(self.evaluation.labels, self.ids(relations)).nonzero().flatten()


@dataclass
class TaskResult:
    """What evaluation after one task records, for the method's classifier."""

    task_accuracy: list[float] | None  # a[k][j] for the tasks j <= k, in arrival order; None: not evaluated
    task_size: list[int] | None  # n_j
    relation_accuracy: dict[str, float] = field(default_factory=dict)
    old_accuracy: float | None = None  # over the relations of earlier tasks (None on the first task)
    new_accuracy: float | None = None  # over the relations of this task
    classifiers: dict[str, dict[str, float | None]] = field(default_factory=dict)  # every classifier: whole/old/new
    # the method's errors on old relations: true relation -> {predicted relation: test examples}
    confusions: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict) -> TaskResult:
        """The result a row of results.jsonl records (rows written before a field existed lack it)."""
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})

    @property
    def evaluated(self) -> bool:
        return self.task_accuracy is not None

    @property
    def whole_accuracy(self) -> float:
        """W_k: accuracy over every test example seen so far (NaN where the task was not evaluated)."""
        if not self.evaluated:
            return math.nan
        return sum(a * n for a, n in zip(self.task_accuracy, self.task_size)) / sum(self.task_size)


@dataclass
class MethodContext:
    """What methods need beyond the engine: relation similarities, CML's options, the order's
    length, and the relations that hold in both directions."""

    space: RelationSpace
    options: CMLConfig
    n_tasks: int
    symmetric: frozenset[str] = frozenset()


class Engine:
    def __init__(
        self,
        model: RelationModel,
        data: EncodedData,
        config: RunConfig,
        method,  # cml.methods.Method
        context: MethodContext,
        device: torch.device,
        progress: bool = True,
        timer: PhaseTimer | None = None,
        plugins: tuple[Plugin, ...] = (),
    ):
        """`config.train.precision` must be resolved (bf16 or fp32); `data` is best already on `device`."""
        self.model = model.to(device)
        self.data, self.config, self.method, self.context = data, config, method, context
        self.device, self.progress = device, progress
        self.seed = 0  # the runner sets each task's seed before the task runs
        self.timer = timer or PhaseTimer()
        self.plugins = [*method.plugins, *plugins]
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.eval_batch_size = eval_batch_size(config.train.eval_batch_size, device)
        self.memory = EpisodicMemory()
        self.prototypes = Prototypes.empty(len(data.relations), {"h": model.head.out_dim, "z": Z_DIM})
        self.tasks: list[list[str]] = []  # tasks seen, in arrival order
        self.seen = torch.zeros(len(data.relations), dtype=torch.bool, device=device)
        self.start: dict[str, torch.Tensor] = {}  # trainable weights at the start of the task, where needed

    # --- what the stages and plugins read -------------------------------------------------------
    @property
    def current(self) -> list[str]:
        return self.tasks[-1]

    @property
    def seen_relations(self) -> list[str]:
        return [r for task in self.tasks for r in task]

    @property
    def current_ids(self) -> torch.Tensor:
        return self.data.ids(self.current)

    @property
    def seen_ids(self) -> torch.Tensor:
        return self.data.ids(self.seen_relations)

    @property
    def old_ids(self) -> torch.Tensor:
        """Ids of the relations of earlier tasks, on the device (they index logits)."""
        return self.data.ids([r for task in self.tasks[:-1] for r in task]).to(self.device)

    @property
    def beta(self) -> float:
        return self.config.train.beta if self.method.beta is None else self.method.beta

    @property
    def classifier(self) -> str:
        chosen = self.config.train.classifier
        return self.method.classifier if chosen == "auto" else chosen

    def autocast(self):
        return autocast(self.device, self.config.train.precision)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: to_device(v, self.device) for k, v in batch.items()}

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW, fused (one kernel for all parameters, about 6x faster than the per-tensor loop on
        a CPU): the encoder at `train.lr`, the h and z projections at `train.projection_lr`, the
        classifier at `train.head_lr`."""
        t = self.config.train
        projection_lr = t.lr if t.projection_lr is None else t.projection_lr
        rates = {"encoder": t.lr, "head": projection_lr, "projection": projection_lr, "classifier": t.head_lr}
        groups: dict[str, list[nn.Parameter]] = {part: [] for part in rates}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups[name.split(".")[0]].append(p)
        return torch.optim.AdamW([{"params": groups[g], "lr": rates[g]} for g in rates if groups[g]], fused=True)

    @torch.no_grad()
    def encode(
        self, split: EncodedSplit, indices: torch.Tensor, phase: str, weights: dict[str, torch.Tensor] | None = None
    ) -> Output:
        """h, z and logits of the examples `indices` in eval mode, as float on the CPU; rows follow
        `indices`. With `weights` (e.g. `self.start`, the distillation teacher) the same module runs
        with those weights (`torch.func.functional_call`): no copy of the model is kept."""
        self.model.eval()

        def on_device(batch: dict[str, torch.Tensor]) -> Output:
            batch = self.to_device(batch)
            with self.autocast():
                out = (
                    functional_call(self.model, weights, (batch, self.seen))
                    if weights
                    else self.model(batch, self.seen)
                )
            return Output(*(t.float().cpu() for t in out))

        with self.timer(phase, len(indices)):
            return split.map(indices, on_device, self.eval_batch_size, self.data.pad_id)

    def teacher(self, split: EncodedSplit, items: torch.Tensor) -> Output:
        """The model from the start of the task on a stage's items, once for the whole stage: it is
        frozen and runs without dropout, so its outputs are the same at every step."""
        return Output(*(t.to(self.device) for t in self.encode(split, items, "teacher forward", self.start)))

    def bank(self, split: EncodedSplit, items: torch.Tensor) -> Bank:
        out = self.encode(split, items, "bank forward")
        return Bank(out.z.to(self.device), split.labels[items].to(self.device))

    def stage_prototypes(self, stage: str, whose: str) -> dict[str, torch.Tensor]:
        """The prototypes a stage's losses read, fixed for the stage: mixed for the old relations,
        static for the new ones (whose memory has no dynamic mean yet). `whose` ("seen" or "old")
        says which relations must have one."""
        needed = self.seen_ids if whose == "seen" else self.old_ids.cpu()
        if not self.prototypes.covers(needed):
            raise RuntimeError(
                f"stage {stage!r} uses losses that need prototypes of the {whose} relations, before they have them"
            )
        return {s: self.prototypes.mixed(s, self.beta).to(self.device) for s in ("h", "z")}

    def with_frozen_states(self, split: EncodedSplit) -> EncodedSplit:
        """`split` (new sentences, e.g. augmented memory) on the device, with its frozen-layer states."""
        if self.model.encoder.frozen_layers > 0:
            split.hidden = frozen_states(
                self.model.encoder, split, self.data.pad_id, device=self.device, precision=self.autocast
            )
        return split.to(self.device)

    def difficulty_of_items(self, labels: torch.Tensor, against: list[str] | None = None) -> list[float]:
        """Each item's relation's difficulty with respect to `against` (default: the current task;
        for an item of that set itself, its other relations), from the relation space or the
        prototypes."""
        against = self.current if against is None else against
        by_prototypes = self.context.options.difficulty == "prototypes"
        if by_prototypes:
            p = nn.functional.normalize(self.prototypes.mixed("h", self.beta), dim=-1)
        scores: dict[int, float] = {}
        for rid in labels.unique().tolist():
            r = self.data.relations[rid]
            others = [c for c in against if c != r] or against
            if by_prototypes:
                scores[rid] = float((p[self.data.ids(others)] @ p[rid]).max())
            else:
                scores[rid] = self.context.space.relation_difficulty(r, others)
        return [scores[int(y)] for y in labels]

    def curriculum(self, difficulty: list[float], batch_size: int, epoch: int) -> list[list[int]]:
        """One epoch of CML's curriculum over items with these difficulties (positions in the list)."""
        o = self.context.options
        return list(
            CurriculumScheduler(difficulty, batch_size, o.pacing, o.start_fraction, o.direction, seed=self.seed + epoch)
        )

    # --- the loop ------------------------------------------------------------------------------
    def train_step(
        self,
        data: StageData,
        indices: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Output, torch.Tensor, Output | None], torch.Tensor],
        meta_batches: int = 1,
    ) -> float:
        """One optimiser step on the items `indices`: their loss's gradient, or with `meta_batches`
        > 1 the first-order MER gradient over that many random sub-batches (`meta.path_gradient`,
        inner rate `cml.meta_lr`); the loss is the mean over the sub-batches."""
        with self.timer("batch assembly"):
            parts = [indices] if meta_batches == 1 else indices[torch.randperm(len(indices))].chunk(meta_batches)
            pieces = []
            for part in parts:
                positions = data.position[part].to(self.device)
                teacher = Output(*(t[positions] for t in data.teacher)) if data.teacher is not None else None
                pieces.append((self.to_device(data.split.batch(part, self.data.pad_id)), positions, teacher))

        def piece_loss(weights: dict[str, torch.Tensor] | None, piece) -> tuple[torch.Tensor, torch.Tensor]:
            batch, _, teacher = piece
            with self.autocast():
                out = (
                    functional_call(self.model, weights, (batch, self.seen))
                    if weights
                    else self.model(batch, self.seen)
                )
            return loss_fn(out, batch["labels"], teacher), out.z.detach()

        with self.timer(TRAIN_PHASE, len(indices)):
            optimizer.zero_grad(set_to_none=True)
            if len(pieces) == 1:
                loss, z = piece_loss(None, pieces[0])
                loss.backward()
                values, zs = [float(loss.detach())], [z]
            else:
                params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
                grads, values, zs = path_gradient(piece_loss, params, pieces, self.context.options.meta_lr)
                for name, grad in grads.items():
                    params[name].grad = grad
        with self.timer("optimizer step"):
            nn.utils.clip_grad_norm_([*self.trainable, *data.parameters], 1.0)
            optimizer.step()
        if data.bank is not None:
            for (_, positions, _), z in zip(pieces, zs):
                data.bank.update(positions, z)
        return sum(values) / len(values)

    def run_task(self, relations: list[str]) -> TaskResult:
        self.tasks.append(list(relations))
        self.seen[self.current_ids.to(self.device)] = True
        self.start = (
            {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
            if self.method.needs_start
            else {}
        )
        for plugin in self.plugins:
            plugin.before_task(self)
        for stage in self.method.stages:
            if not stage.runs(self):
                continue
            for plugin in self.plugins:
                plugin.before_stage(self, stage)
            stage.run(self)
            for plugin in self.plugins:
                plugin.after_stage(self, stage)
        for plugin in self.plugins:
            plugin.after_task(self)
        self.start = {}
        if not self.evaluates_now:
            return TaskResult(None, None)
        result = self.evaluate()
        for plugin in self.plugins:
            plugin.after_eval(self, result)
        return result

    @property
    def evaluates_now(self) -> bool:
        """Whether the task just learned is evaluated: every `train.eval_every`-th, and the last."""
        k = len(self.tasks)
        return k % self.config.train.eval_every == 0 or k == self.context.n_tasks

    def evaluate(self) -> TaskResult:
        relations = self.seen_relations
        split = self.data.evaluation
        indices = self.data.evaluation_indices(relations)
        out = self.encode(split, indices, EVALUATION_PHASE)
        labels = split.labels[indices]
        seen = self.seen.cpu()
        prototypes = (
            self.prototypes.mixed(self.method.ncm.space, self.beta) if self.prototypes.covers(self.seen_ids) else None
        )
        cfg = self.config
        preds = predictions(out, seen, prototypes, self.method.ncm, cfg.train.alpha, cfg.loss.tau)
        is_new = torch.isin(labels, self.current_ids)
        rate = lambda correct, mask: round(float(correct[mask].float().mean()), 6) if mask.any() else None
        classifiers = {
            kind: {
                "whole": rate(p == labels, labels >= 0),
                "old": rate(p == labels, ~is_new),
                "new": rate(p == labels, is_new),
            }
            for kind, p in preds.items()
        }
        predicted = preds[self.classifier]
        correct = predicted == labels
        per_relation = {r: rate(correct, labels == self.data.label_of[r]) for r in relations}
        task_acc, task_size = [], []
        for task in self.tasks:
            mask = torch.isin(labels, self.data.ids(task))
            task_acc.append(rate(correct, mask))
            task_size.append(int(mask.sum()))
        confusions: dict[str, dict[str, int]] = {}
        wrong = ~correct & ~is_new
        pairs, counts = torch.stack([labels[wrong], predicted[wrong]]).unique(dim=1, return_counts=True)
        for (true, pred), count in zip(pairs.T.tolist(), counts.tolist()):
            confusions.setdefault(self.data.relations[true], {})[self.data.relations[pred]] = count
        return TaskResult(
            task_acc, task_size, per_relation, rate(correct, ~is_new), rate(correct, is_new), classifiers, confusions
        )

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint needs: the weights that train (frozen ones never change), memory,
        prototypes and the tasks seen."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        weights = {n: t for n, t in self.model.state_dict().items() if n in trainable}
        return {
            "model": weights,
            "memory": self.memory.state_dict(),
            "prototypes": self.prototypes.state_dict(),
            "tasks": self.tasks,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore onto a model holding the run's initial weights."""
        missing = set(state["model"]) - set(self.model.state_dict())
        if missing:
            raise KeyError(f"checkpoint holds weights the model lacks: {sorted(missing)[:3]}")
        self.model.load_state_dict(state["model"], strict=False)
        self.memory.load_state_dict(state["memory"])
        self.prototypes.load_state_dict(state["prototypes"])
        self.tasks = [list(t) for t in state["tasks"]]
        self.seen.zero_()
        self.seen[self.seen_ids.to(self.device)] = True
