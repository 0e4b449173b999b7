"""Relation prototypes and the classifiers that read them at test time.

Per relation two means are kept, in both spaces (h and z):
- static: over all of the relation's training data, with the model of the task it arrived in
  (set by memory selection when the relation arrives; only CRL's second selection recomputes it);
- dynamic: over the relation's memory, with the model as it is now (refreshed after every task:
  it follows the drift of the features).
A prototype mixes them, (1 - beta) static + beta dynamic (CEAR); beta = 1 is the memory-only mean
of CRL. z prototypes are renormalised to unit length.

The static mean goes stale as the encoder drifts. With drift compensation (semantic drift
compensation, Yu et al. 2020, with the relation's own memory as the direct estimate) the features
of every memory item are kept from when they were last measured (`anchors`), and each refresh
moves a relation's static mean by the mean drift of its memory items since then.

Classifiers (`CLASSIFIERS`): `linear` (argmax of the linear head), `ncm` (nearest prototype, by
cosine or squared Euclidean distance, in h or z), and `ensemble`,
alpha softmax(linear) + (1 - alpha) softmax(ncm scores) (CEAR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cml.config import choices
from cml.model import Output

CLASSIFIERS = tuple(c for c in choices("train.classifier") if c != "auto")


@dataclass
class Prototypes:
    """Static and dynamic means per relation (rows follow the dataset's relation ids)."""

    static: dict[str, torch.Tensor]  # space -> [R, D]
    dynamic: dict[str, torch.Tensor]
    has_static: torch.Tensor  # bool [R]
    has_dynamic: torch.Tensor
    # drift compensation: the features of memory items when last measured; "items" sorted training indices
    anchors: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def empty(cls, n_relations: int, dims: dict[str, int]) -> Prototypes:
        zeros = lambda: {s: torch.zeros(n_relations, d) for s, d in dims.items()}
        none = lambda: torch.zeros(n_relations, dtype=torch.bool)
        return cls(zeros(), zeros(), none(), none())

    def set(self, kind: str, relations: torch.Tensor, means: dict[str, torch.Tensor]) -> None:
        """Store `means` (space -> [len(relations), D]) as the `kind` ("static" or "dynamic") means."""
        target = self.static if kind == "static" else self.dynamic
        for space, value in means.items():
            target[space][relations] = value.float().cpu()
        (self.has_static if kind == "static" else self.has_dynamic)[relations] = True

    def mixed(self, space: str, beta: float) -> torch.Tensor:
        """[R, D]: (1 - beta) static + beta dynamic where a relation has both, else whichever it has."""
        both = (self.has_static & self.has_dynamic)[:, None]
        only_dynamic = (~self.has_static & self.has_dynamic)[:, None]
        static, dynamic = self.static[space], self.dynamic[space]
        out = torch.where(both, (1 - beta) * static + beta * dynamic, torch.where(only_dynamic, dynamic, static))
        return F.normalize(out, dim=-1) if space == "z" else out

    def covers(self, relations: torch.Tensor) -> bool:
        return bool((self.has_static | self.has_dynamic)[relations].all())

    def anchor(self, items: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        """Remember `features` (space -> [len(items), D]) as the anchors of these memory items,
        replacing what was kept for them."""
        if self.anchors:
            keep = ~torch.isin(self.anchors["items"], items)
            items = torch.cat([self.anchors["items"][keep], items])
            features = {s: torch.cat([self.anchors[s][keep], v.float().cpu()]) for s, v in features.items()}
        order = items.argsort()
        self.anchors = {"items": items[order], **{s: v.float().cpu()[order] for s, v in features.items()}}

    def compensate(
        self, items: torch.Tensor, labels: torch.Tensor, relations: torch.Tensor, now: dict[str, torch.Tensor]
    ) -> None:
        """Move the static means of `relations` by the mean drift of their memory items (`items`,
        with `labels`) from their anchors to `now` (space -> [len(items), D]); `now` becomes the
        anchors of exactly these items."""
        stored = self.anchors.get("items", torch.zeros(0, dtype=torch.long))
        rows = torch.searchsorted(stored, items).clamp(max=max(len(stored) - 1, 0))
        if len(stored) == 0 or not bool((stored[rows] == items).all()):
            raise RuntimeError("drift compensation: a memory item has no anchor (it was never measured)")
        for space, value in now.items():
            drift = class_means(value.float().cpu() - self.anchors[space][rows], labels, relations)
            self.static[space][relations] += torch.where(self.has_static[relations, None], drift, 0.0)
        self.anchors = {}
        self.anchor(items, now)

    def state_dict(self) -> dict:
        return {
            "static": self.static,
            "dynamic": self.dynamic,
            "has_static": self.has_static,
            "has_dynamic": self.has_dynamic,
            "anchors": self.anchors,
        }

    def load_state_dict(self, state: dict) -> None:
        self.static, self.dynamic = dict(state["static"]), dict(state["dynamic"])
        self.has_static, self.has_dynamic = state["has_static"], state["has_dynamic"]
        self.anchors = dict(state.get("anchors", {}))


def class_means(values: torch.Tensor, labels: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
    """[len(relations), D]: the mean of the rows of `values` labelled with each relation."""
    onehot = (labels[None, :] == relations[:, None]).to(values.dtype)
    return onehot @ values / onehot.sum(1, keepdim=True).clamp(min=1)


@dataclass(frozen=True)
class NearestPrototype:
    """Where and how a method's nearest-prototype classifier measures: CRL uses squared Euclidean
    distance in h; CEAR cosine in z (`tau` scales the cosines into logits for the ensemble)."""

    space: str = "z"
    metric: str = "cosine"

    def scores(self, out: Output, prototypes: torch.Tensor, seen: torch.Tensor, tau: float) -> torch.Tensor:
        """[B, R] logits, higher = nearer; -inf for relations not seen."""
        x = getattr(out, self.space).float()
        p = prototypes.to(x.device)
        if self.metric == "cosine":
            scores = F.normalize(x, dim=-1) @ F.normalize(p, dim=-1).T / tau
        else:
            scores = -torch.cdist(x, p).square()
        return scores.masked_fill(~seen.to(x.device), -torch.inf)


def predictions(
    out: Output,
    seen: torch.Tensor,
    prototypes: torch.Tensor | None,
    ncm: NearestPrototype,
    alpha: float,
    tau: float,
) -> dict[str, torch.Tensor]:
    """The predicted relation id of every example under each classifier there is: `linear` always,
    `ncm` and `ensemble` when there are prototypes (methods with memory)."""
    linear = out.logits.float().masked_fill(~seen.to(out.logits.device), -torch.inf)
    preds = {"linear": linear.argmax(-1)}
    if prototypes is not None:
        near = ncm.scores(out, prototypes, seen, tau)
        preds["ncm"] = near.argmax(-1)
        preds["ensemble"] = (alpha * linear.softmax(-1) + (1 - alpha) * near.softmax(-1)).argmax(-1)
    return preds
