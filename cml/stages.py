"""The stages a task runs, in the order its method lists them (docs/method.md, "The per-task loop").

- `Train`: epochs of optimiser steps over one data source (the task, the task and the memory, the
  memory of every seen relation, or all data seen), with its own fresh optimiser, batch order and
  weighted loss terms. A method's first `Train` is its "learn" stage; CRL / CEAR / cml add a
  "consolidate" stage on the memory from the second task on.
- `SelectMemory`: K-means memory of the new relations on h, and their static prototypes from the
  same pass.
- `RefreshPrototypes`: the dynamic prototypes of every seen relation, over its memory, with the
  model as it is now.

Stages are frozen declarations; what they change lives on the engine (model, memory, prototypes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from cml import losses
from cml.augment import augment, hybrid_entities
from cml.config import LossConfig, choices
from cml.errors import CMLInputError, DivergedError
from cml.memory import allocate, select_prototypes
from cml.model import Output
from cml.prototypes import class_means
from cml.tokens import EncodedSplit

if TYPE_CHECKING:
    from cml.engine import Engine, MethodContext
    from cml.relations import RelationSpace

DATA_SOURCES = ("task", "task+memory", "task+threatened", "memory", "seen")
ORDERS = ("shuffle", "curriculum", "curriculum-mix")


def chosen(context: MethodContext, option: str, own):
    """A part's setting: the `cml:` option of that name where the run sets it, else the stage's own."""
    value = getattr(context.options, option)
    return own if value is None else value


def threat_weights(difficulty: torch.Tensor, is_old: torch.Tensor) -> torch.Tensor:
    """Replay weights of consolidation items, from each item's relation's difficulty across the
    line between old and new: an old relation's with respect to the current task (how much the
    task threatens it), a new relation's with respect to the old relations (how much it threatens
    them). Each side is scaled to a mean weight of 1, so old and new keep their share of the
    replay and within each side the relations on the contested boundary are replayed more."""
    weights = torch.ones(len(difficulty), dtype=torch.float64)
    d = difficulty.double()
    if is_old.any() and (~is_old).any():
        for side in (is_old, ~is_old):
            weights[side] = d[side] / d[side].mean().clamp(min=1e-12)
    return weights


@dataclass
class Bank:
    """CRL's feature bank: the detached z of every item of a stage, each slot overwritten with the
    item's new z after every step it is in (no momentum encoder)."""

    z: torch.Tensor  # [N, Z]
    labels: torch.Tensor  # [N]

    def update(self, positions: torch.Tensor, z: torch.Tensor) -> None:
        self.z[positions] = z.detach().to(self.z.dtype)


@dataclass
class StageData:
    """What one training stage's steps read: the items, and what its loss terms need."""

    split: EncodedSplit
    items: torch.Tensor  # indices into `split`
    position: torch.Tensor  # split index -> position in `items` (-1 elsewhere)
    seen: torch.Tensor  # bool [R]: the relations seen so far, this task's included
    old: torch.Tensor  # ids of the relations seen before this task
    prototypes: dict[str, torch.Tensor]  # space -> [R, D], fixed for the stage ({} when no term uses them)
    bank: Bank | None
    bank_sample: int | None  # anchors against this many random bank entries per step (None: all)
    teacher: Output | None  # the model from the start of the task on every item (rows follow `items`)
    margins: torch.Tensor | None = None  # [R, R] type margins of the ce and proto terms (None: none)
    spare: torch.Tensor | None = None  # [S, H] rows of the stage's own classes (reversed, hybrid), ids R.. R+S-1
    classes: torch.Tensor | None = None  # bool [R]: the relations the ce term's softmax is over (None: the seen)

    @property
    def parameters(self) -> list[torch.Tensor]:
        """What the stage trains beside the model: the spare rows, where it has them."""
        return [] if self.spare is None else [self.spare]


def with_spare_rows(logits: torch.Tensor, h: torch.Tensor, spare: torch.Tensor | None) -> torch.Tensor:
    """The logits over the relations, then over the stage's own classes (h against the spare rows)."""
    return logits if spare is None else torch.cat([logits.float(), h.float() @ spare.T], 1)


def _loss_ce(out: Output, y: torch.Tensor, d: StageData, teacher: Output | None, c: LossConfig) -> torch.Tensor:
    logits = out.logits if d.classes is None else out.logits.masked_fill(~d.classes, torch.finfo(out.logits.dtype).min)
    return losses.cross_entropy(with_spare_rows(logits, out.h, d.spare), y, d.margins)


def _loss_supcon(out, y, d, teacher, c):
    bank = d.bank
    if d.bank_sample is not None and d.bank_sample < len(bank.labels):
        pick = torch.randperm(len(bank.labels), device=bank.labels.device)[: d.bank_sample]
        return losses.bank_contrastive(out.z, y, bank.z[pick], bank.labels[pick], c.tau)
    return losses.bank_contrastive(out.z, y, bank.z, bank.labels, c.tau)


def _loss_proto(out, y, d, teacher, c):
    return losses.prototype_contrastive(out.z, y, d.prototypes["z"], d.seen, c.tau, d.margins)


def _loss_margin(out, y, d, teacher, c):
    return losses.hard_margin(out.z, y, d.prototypes["z"], d.seen, c.margin_value)


def _loss_rkd(out, y, d, teacher, c):
    centroids = class_means(d.bank.z, d.bank.labels, d.old)
    return losses.relational_distillation(out.z, y, d.old, d.prototypes["h"][d.old], centroids, c.kappa)


def _loss_fkd(out, y, d, teacher, c):
    """Focal distillation of the linear head over the old relations; analogy by cos(h, p_h) / tau2."""
    with torch.no_grad():
        analogy = F.normalize(out.h.float(), dim=-1) @ F.normalize(d.prototypes["h"][d.old], dim=-1).T / c.analogy_tau
        true = out.logits.float().softmax(-1).gather(1, y[:, None]).squeeze(1)
    return losses.focal_distillation(out.logits[:, d.old], teacher.logits[:, d.old], analogy, true, c.gamma)


def _loss_fkd_z(out, y, d, teacher, c):
    """Focal distillation of the prototype scores in z over the old relations."""
    z_old = d.prototypes["z"][d.old]
    with torch.no_grad():
        analogy = out.z @ z_old.T / (c.tau * c.analogy_tau)
        sharp = losses.masked_similarity(out.z, d.prototypes["z"], d.seen) / (c.tau * c.analogy_tau)
        true = sharp.softmax(-1).gather(1, y[:, None]).squeeze(1)
    return losses.focal_distillation(out.z @ z_old.T / c.tau, teacher.z @ z_old.T / c.tau, analogy, true, c.gamma)


@dataclass(frozen=True)
class Term:
    """A loss term as a stage uses it: its function of (output, labels, stage data, teacher output,
    loss config), and what it reads besides the batch. Its weight is the `loss:` option of its name."""

    fn: Callable[[Output, torch.Tensor, StageData, Output | None, LossConfig], torch.Tensor]
    teacher: bool = False  # the model from the start of the task, on the same items
    prototypes: str | None = None  # whose prototypes it reads (fixed for the stage): "seen" or "old" relations
    bank: bool = False  # a feature bank over the stage's items


def type_margins(engine: Engine, scale: float) -> torch.Tensor:
    """Pair margins from the relation space: `scale` x sim(y, r) between every two relations of the
    dataset (0 on the diagonal), so an item must beat the relations whose entity types are like its
    own (the analogous ones, which the report shows it is lost to) by more than the others."""
    margins = scale * torch.as_tensor(engine.context.space.pairwise(engine.data.relations), dtype=torch.float32)
    return margins.fill_diagonal_(0.0).to(engine.device)


MARGIN_TERMS = ("ce", "proto")  # the terms that read `StageData.margins`

TERMS: dict[str, Term] = {
    "ce": Term(_loss_ce),
    "supcon": Term(_loss_supcon, bank=True),
    "proto": Term(_loss_proto, prototypes="seen"),
    "margin": Term(_loss_margin, prototypes="seen"),
    "rkd": Term(_loss_rkd, prototypes="old", bank=True),
    "fkd": Term(_loss_fkd, teacher=True, prototypes="old"),
    "fkd_z": Term(_loss_fkd_z, teacher=True, prototypes="seen"),
}


@dataclass(frozen=True)
class Train:
    """A training stage. `first_task` is the 0-based position of the first task it runs on."""

    name: str
    data: str
    losses: tuple[str, ...] = ("ce",)
    order: str = "shuffle"  # shuffle (length-grouped), curriculum, or curriculum-mix (CML 2021)
    augment: bool = False  # augment the memory (train.augment says how)
    sample_bank: bool = False  # CRL's stage 1: anchors against loss.bank_sample random bank entries
    epochs_option: str = "epochs"  # the train: option that gives its epochs
    first_task: int = 0
    # the consolidation's own parts (a stage on the memory; `cml.replay_weighting`,
    # `cml.meta_batches` and `cml.type_margin` set them for every such stage):
    replay: str = "uniform"  # uniform, or threat: items drawn by their relation's similarity to the task
    meta_batches: int = 1  # sub-batches of a first-order MER step (1: a plain optimiser step)
    type_margin: float = 0.0  # scale of the type margins of its ce and proto terms (0: none)
    # a learn stage on the task (`cml.reverse_similarity` and `cml.hybrid_pairs` set them for every
    # such stage): the type similarity to its own reversal at which a relation gets a reversed class
    # (None: none), and how the task's relations are paired into hybrid classes (none, aca, analogous).
    # A stage on the memory may declare reversed classes too (for the seen relations' memory);
    # `cml.reverse_similarity` then sets its threshold, and gives none to a memory stage without them.
    reverse: float | None = None
    hybrid: str = "none"
    softmax: str = "seen"  # its cross-entropy over the seen relations, or the task's own classes (`cml.learn_softmax`)

    def __post_init__(self) -> None:
        assert self.data in DATA_SOURCES and self.order in ORDERS, self
        assert all(t in TERMS for t in self.losses), self.losses
        assert self.replay in choices("cml.replay_weighting") and self.meta_batches >= 1, self
        assert self.type_margin >= 0, self
        assert self.data == "memory" or (self.replay, self.meta_batches, self.type_margin) == ("uniform", 1, 0.0), self
        assert self.hybrid in choices("cml.hybrid_pairs"), self.hybrid
        assert self.softmax in choices("cml.learn_softmax") and (self.softmax == "seen" or self.data == "task"), self
        assert self.hybrid == "none" or self.data == "task", self
        assert self.reverse is None or (
            self.data in ("task", "memory") and not self.augment and not any(TERMS[t].prototypes for t in self.losses)
        ), self

    def own(self, engine: Engine, option: str, value):
        """A consolidation part's setting (`chosen`); other stages keep their declaration."""
        return chosen(engine.context, option, value) if self.data == "memory" else value

    @property
    def needs_teacher(self) -> bool:
        return any(TERMS[t].teacher for t in self.losses)

    def runs(self, engine: Engine) -> bool:
        return len(engine.tasks) > self.first_task

    def weights(self, loss: LossConfig) -> dict[str, float]:
        """The stage's loss terms with a non-zero weight (`loss:` options), at least one."""
        weights = {t: getattr(loss, t) for t in self.losses}
        weights = {t: w for t, w in weights.items() if w}
        if not weights:
            flags = ", ".join("--loss-" + t.replace("_", "-") for t in self.losses)
            raise CMLInputError(f"the {self.name} stage has no loss term left: {flags} all 0")
        return weights

    def run(self, engine: Engine) -> None:
        epochs = getattr(engine.config.train, self.epochs_option)
        weights = self.weights(engine.config.loss)
        data = self.stage_data(engine, tuple(weights))

        def loss(out: Output, labels: torch.Tensor, teacher: Output | None) -> torch.Tensor:
            return sum(w * TERMS[t].fn(out, labels, data, teacher, engine.config.loss) for t, w in weights.items())

        optimizer = engine.optimizer()
        if data.spare is not None:
            optimizer.add_param_group({"params": data.parameters, "lr": engine.config.train.head_lr})
        engine.model.train()
        meta = self.own(engine, "meta_batches", self.meta_batches)
        for epoch in range(epochs):
            with engine.timer("batch planning"):
                batches = self.batches(engine, data, epoch)
            bar = tqdm(batches, desc=f"    {self.name} {epoch + 1}/{epochs}", leave=False, disable=not engine.progress)
            for step, batch in enumerate(bar, 1):
                value = engine.train_step(data, batch, optimizer, loss, meta)
                if not math.isfinite(value):
                    raise DivergedError(f"{self.name} stage, epoch {epoch + 1}, step {step}: the loss is {value}")
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                for plugin in engine.plugins:
                    plugin.after_step(engine, self, value)

    def stage_data(self, engine: Engine, active: tuple[str, ...]) -> StageData:
        """The items and what the `active` loss terms read (a term weighted 0 costs no pass)."""
        split, spare = engine.data.train, None
        if self.data == "task":
            items = engine.data.train_indices(engine.current)
        elif self.data == "task+memory":
            items = torch.cat([engine.data.train_indices(engine.current), engine.memory.indices()])
        elif self.data == "task+threatened":
            items = torch.cat([engine.data.train_indices(engine.current), engine.memory.indices(threatened(engine))])
        elif self.data == "seen":
            items = engine.data.train_indices(engine.seen_relations)
        else:
            items = engine.memory.indices(engine.seen_relations)
            kind = engine.config.train.augment
            if self.augment and kind != "none":
                with engine.timer("memory augmentation", len(items)):
                    generator = torch.Generator().manual_seed(engine.seed)
                    split = augment(
                        split, items, kind, engine.data.markers, engine.config.train.augment_max_length, generator
                    )
                    split = engine.with_frozen_states(split)
                items = torch.arange(len(split))
        relations = self.reversed_relations(
            engine.current if self.data == "task" else engine.seen_relations, engine.context
        )
        pairs = self.hybrid_pairs(engine.current, engine.context)
        if relations or pairs:
            with engine.timer("adversarial classes", len(items)):
                split, spare = stage_classes(engine, items, relations, pairs)
            items = torch.arange(len(split))
        position = torch.full((len(split),), -1, dtype=torch.long)
        position[items] = torch.arange(len(items))
        terms = [TERMS[t] for t in active]
        needs = {t.prototypes for t in terms} - {None}
        prototypes = engine.stage_prototypes(self.name, "seen" if "seen" in needs else "old") if needs else {}
        bank = engine.bank(split, items) if any(t.bank for t in terms) else None
        sample = engine.config.loss.bank_sample if self.sample_bank else None
        teacher = engine.teacher(split, items) if any(t.teacher for t in terms) else None
        scale = self.own(engine, "type_margin", self.type_margin)
        margins = type_margins(engine, scale) if scale and set(active) & set(MARGIN_TERMS) else None
        classes = None
        if self.data == "task" and chosen(engine.context, "learn_softmax", self.softmax) == "task":
            classes = torch.zeros_like(engine.seen)
            classes[engine.current_ids.to(classes.device)] = True
        return StageData(
            split,
            items,
            position,
            engine.seen,
            engine.old_ids,
            prototypes,
            bank,
            sample,
            teacher,
            margins,
            spare,
            classes,
        )

    def reversed_relations(self, relations: list[str], context: MethodContext) -> list[str]:
        """The `relations` (the task's, or the seen ones for a stage on the memory) that get a
        reversed class in this stage: those at least `reverse` type-similar to their own reversal,
        where the entity types cannot tell the direction (child, follows), so the encoder must learn
        it from the sentence."""
        threshold = None
        if self.data == "task" or (self.data == "memory" and self.reverse is not None):
            threshold = chosen(context, "reverse_similarity", self.reverse)
        if threshold is None:
            return []
        space = context.space
        return [r for r in relations if space.reversal[space.index[r]] >= threshold]

    def hybrid_pairs(self, task: list[str], context: MethodContext) -> list[tuple[str, str]]:
        """The pairs of `task`'s relations that each get a hybrid class in this stage (`pairing`)."""
        return pairing(task, context.space, chosen(context, "hybrid_pairs", self.hybrid)) if self.data == "task" else []

    def batches(self, engine: Engine, data: StageData, epoch: int) -> list[torch.Tensor]:
        """Lists of split indices, one per optimiser step."""
        size, window = engine.config.train.batch_size, engine.config.train.length_window
        items = self.epoch_items(engine, data, epoch)
        if self.order == "shuffle":
            return data.split.length_grouped(items, size, window)
        if self.order == "curriculum":
            scores = engine.difficulty_of_items(data.split.labels[items])
            return [items[torch.tensor(b)] for b in engine.curriculum(scores, size, epoch)]
        return _curriculum_mix(engine, data, size, window, epoch)

    def epoch_items(self, engine: Engine, data: StageData, epoch: int) -> torch.Tensor:
        """The items of one epoch: every item once, or (threat replay) as many draws with
        replacement, each item drawn with its `threat_weights`; the batch order then arranges them."""
        if self.own(engine, "replay_weighting", self.replay) == "uniform":
            return data.items
        labels = data.split.labels[data.items]
        is_old = torch.isin(labels, data.old.cpu())
        old = [engine.data.relations[i] for i in data.old.tolist()]
        to_task = torch.tensor(engine.difficulty_of_items(labels))
        to_old = torch.tensor(engine.difficulty_of_items(labels, old)) if old else to_task
        weights = threat_weights(torch.where(is_old, to_task, to_old), is_old)
        generator = torch.Generator().manual_seed(engine.seed + 7919 * (epoch + 1))
        return data.items[torch.multinomial(weights, len(weights), replacement=True, generator=generator)]


def pairing(task: list[str], space: RelationSpace, kind: str) -> list[tuple[str, str]]:
    """Disjoint pairs of `task`'s relations for hybrid classes. aca: the first half with the
    second half, in the task's order (ACA's). analogous: the most type-similar pair first, then the
    most similar of the rest, and so on, so the hybrids are made of relations whose entity types
    cannot tell them apart (residence and work location) and the stage must read both contexts. none: []."""
    if kind == "none":
        return []
    half = len(task) // 2
    if kind == "aca":
        return list(zip(task[:half], task[half : 2 * half]))
    sim = space.pairwise(task, task)
    ranked = sorted(((i, j) for i in range(len(task)) for j in range(i + 1, len(task))), key=lambda p: (-sim[p], p))
    used: set[int] = set()
    pairs = []
    for i, j in ranked:
        if i not in used and j not in used:
            pairs.append((task[i], task[j]))
            used |= {i, j}
    return pairs


def hybrid_sources(
    split: EncodedSplit, items: torch.Tensor, pairs: list[tuple[str, str]], label_of: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sentences of each pair's hybrids, as ACA makes them: for pair p = (a, b), the i-th of
    a's and of b's sentences among `items`, for i below the smaller of their counts, where both
    have the head before the tail (the others are left out). Returns (a's, b's, p) per hybrid."""
    empty = torch.empty(0, dtype=torch.long)
    first, second, pair = [empty], [empty], [empty]
    for p, (a, b) in enumerate(pairs):
        of_a, of_b = (items[split.labels[items] == label_of[r]] for r in (a, b))
        n = min(len(of_a), len(of_b))
        of_a, of_b = of_a[:n], of_b[:n]
        keep = (split.head_pos[of_a] < split.tail_pos[of_a]) & (split.head_pos[of_b] < split.tail_pos[of_b])
        first.append(of_a[keep])
        second.append(of_b[keep])
        pair.append(torch.full((int(keep.sum()),), p, dtype=torch.long))
    return torch.cat(first), torch.cat(second), torch.cat(pair)


def stage_classes(
    engine: Engine, items: torch.Tensor, relations: list[str], pairs: list[tuple[str, str]]
) -> tuple[EncodedSplit, torch.Tensor | None]:
    """The stage's sentences `items` (the task's, or the memory's), then ACA's adversarial classes
    (Wang et al. 2022): those of `relations` with head and tail swapped (reversed classes), then
    one hybrid class per pair (a, b), its i-th sentence joining the head of a's i-th sentence to
    the tail of b's. A symmetric relation's reversed sentences keep its label (spouse(a, b) is
    spouse(b, a)); every other reversed relation and every pair is a class of its own for the
    stage, with ids R, R + 1, ... (reversed first) and a spare classifier row each, drawn from the
    task's seed (returned; None where there is none). The reversed sentences come from the run's
    (`EncodedData.reversed_train`, made once with their states); the hybrids get their
    frozen-layer states here."""
    train, ids, markers = engine.data.train, engine.data.label_of, engine.data.markers
    directed = [r for r in relations if r not in engine.context.symmetric]
    parts = [train.subset(items)]
    if relations:
        label = {ids[r]: ids[r] if r not in directed else len(ids) + directed.index(r) for r in relations}
        source = items[torch.isin(train.labels[items], engine.data.ids(relations))]
        labels = torch.tensor([label[int(y)] for y in train.labels[source]])
        parts.append(replace(engine.data.reversed_train.subset(source), labels=labels))
    if pairs:
        first, second, pair = hybrid_sources(train, items, pairs, ids)
        labels = len(ids) + len(directed) + pair
        parts.append(engine.with_frozen_states(hybrid_entities(train, first, second, labels, markers)))
    split = EncodedSplit.concatenate(parts)
    if not directed and not pairs:
        return split, None
    width = engine.model.classifier.in_features
    generator = torch.Generator().manual_seed(engine.seed + 104729)
    rows = torch.empty(len(directed) + len(pairs), width).uniform_(-(width**-0.5), width**-0.5, generator=generator)
    return split, rows.to(engine.device).requires_grad_()


def threatened(engine: Engine) -> list[str]:
    """The `cml.threatened` old relations the current task threatens most: those with the highest
    type similarity to any of its relations (child is threatened by father, not by an average)."""
    old = [r for r in engine.seen_relations if r not in engine.current]
    threat = engine.context.space.pairwise(old, engine.current).max(1) if old else []
    ranked = sorted(range(len(old)), key=lambda i: -threat[i])
    return [old[i] for i in sorted(ranked[: engine.context.options.threatened])]


def _curriculum_mix(engine: Engine, data: StageData, size: int, window: int, epoch: int) -> list[torch.Tensor]:
    """CML (2021): each batch of the task is extended by a chunk of memory, chunks released from
    easy to hard (by each memory relation's difficulty with respect to the current task)."""
    labels = data.split.labels[data.items]
    is_task = torch.isin(labels, engine.current_ids)
    task, memory = data.items[is_task], data.items[~is_task]
    task_batches = data.split.length_grouped(task, size, window)
    if len(memory) == 0:
        return task_batches
    scores = engine.difficulty_of_items(data.split.labels[memory])
    chunks = [
        memory[torch.tensor(b)] for b in engine.curriculum(scores, math.ceil(len(memory) / len(task_batches)), epoch)
    ]
    return [torch.cat([b, chunks[i]]) if i < len(chunks) else b for i, b in enumerate(task_batches)]


def _encode_training(engine: Engine, indices: torch.Tensor) -> tuple[Output, torch.Tensor]:
    """h, z and logits of training examples with the model as it is now, and their labels."""
    return engine.encode(engine.data.train, indices, "memory forward"), engine.data.train.labels[indices]


def _means(out: Output, labels: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The prototype of each relation in `ids`, in both spaces: the mean of its h and of its z."""
    return {"h": class_means(out.h, labels, ids), "z": class_means(out.z, labels, ids)}


def _nearest_centroids(engine: Engine, h: torch.Tensor, n: int) -> torch.Tensor:
    """Positions (in `h`) of the examples nearest the centroids of an n-means over them."""
    with engine.timer("memory K-means"):
        return torch.as_tensor(select_prototypes(h.numpy(), n, engine.seed), dtype=torch.long)


@dataclass(frozen=True)
class SelectMemory:
    """K-means memory for the relations of the current task, on h, and their static prototypes
    (means of h and z over all their training data) from the same pass.

    `allocation` says how many slots each relation gets. uniform: `train.memory_size` each.
    difficulty: the same total, `train.memory_size` x the seen relations, shared in proportion to
    each seen relation's difficulty among them (`d(r | seen - r)` in the relation space: a relation
    like many others gets more, an isolated one fewer), at least one each, re-balanced every task.
    An old relation's data is gone, so its share can only shrink: it then keeps the exemplars
    nearest the centroids of a K-means over its memory, with the model as it is now."""

    name: str = "select memory"
    first_task: int = 0
    allocation: str = "uniform"

    def __post_init__(self) -> None:
        assert self.allocation in choices("cml.memory_allocation"), self

    def runs(self, engine: Engine) -> bool:
        return len(engine.tasks) > self.first_task

    def run(self, engine: Engine) -> None:
        indices = engine.data.train_indices(engine.current)
        out, labels = _encode_training(engine, indices)
        shares = self.shares(engine, labels)
        for relation in engine.current:
            mine = (labels == engine.data.label_of[relation]).nonzero().flatten()
            keep = mine[_nearest_centroids(engine, out.h[mine], shares[relation])]
            engine.memory.add(relation, indices[keep])
            engine.prototypes.anchor(indices[keep], {"h": out.h[keep], "z": out.z[keep]})
        engine.prototypes.set("static", engine.current_ids, _means(out, labels, engine.current_ids))
        shrink = [r for r, n in shares.items() if r not in engine.current and n < len(engine.memory.slots[r])]
        if shrink:
            items = engine.memory.indices(shrink)
            kept, _ = _encode_training(engine, items)
            for relation in shrink:
                mine = torch.isin(items, engine.memory.slots[relation]).nonzero().flatten()
                engine.memory.add(relation, items[mine[_nearest_centroids(engine, kept.h[mine], shares[relation])]])

    def shares(self, engine: Engine, labels: torch.Tensor) -> dict[str, int]:
        """Memory slots of every seen relation (`labels`: those of the current task's training data)."""
        m, seen = engine.config.train.memory_size, engine.seen_relations
        if chosen(engine.context, "memory_allocation", self.allocation) == "uniform":
            return dict.fromkeys(seen, m)
        space = engine.context.space
        weights = [space.relation_difficulty(r, [b for b in seen if b != r] or [r]) for r in seen]
        caps = [
            int((labels == engine.data.label_of[r]).sum()) if r in engine.current else len(engine.memory.slots[r])
            for r in seen
        ]
        return dict(zip(seen, allocate(np.array(weights), m * len(seen), np.array(caps)).tolist()))


@dataclass(frozen=True)
class RefreshPrototypes:
    """Dynamic prototypes of every seen relation: means of h and z over its memory, current model.
    `drift` compensated: the same pass moves each static prototype by the mean drift of the
    relation's memory since it was last measured (`Prototypes.compensate`)."""

    name: str = "refresh prototypes"
    first_task: int = 0
    drift: str = "fixed"

    def __post_init__(self) -> None:
        assert self.drift in choices("cml.prototype_drift"), self

    def runs(self, engine: Engine) -> bool:
        return len(engine.tasks) > self.first_task

    def run(self, engine: Engine) -> None:
        items = engine.memory.indices(engine.seen_relations)
        out, labels = _encode_training(engine, items)
        engine.prototypes.set("dynamic", engine.seen_ids, _means(out, labels, engine.seen_ids))
        if chosen(engine.context, "prototype_drift", self.drift) == "compensated":
            engine.prototypes.compensate(items, labels, engine.seen_ids, {"h": out.h, "z": out.z})


Stage = Train | SelectMemory | RefreshPrototypes
