"""Relation representations from the distribution of head (domain) and tail (range) entity types,
relation similarity, and task / relation difficulty (docs/method.md, "Relation space and difficulty").

v_r = [P_h(type | r) ; P_t(type | r)], additively smoothed. Types come from, in order of
preference, a knowledge-graph type map (entity id -> types), the types the dataset carries, or
types induced by clustering pre-trained mention encodings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cml.data.io import read_json
from cml.data.records import RelationDataset
from cml.errors import CMLInputError

# Per training example, the head's and the tail's types, each a list (an entity may have several).
ExampleTypes = list[tuple[list[str], list[str]]]


def dataset_types(dataset: RelationDataset) -> ExampleTypes:
    if any(ex.head_type is None or ex.tail_type is None for ex in dataset.train):
        raise CMLInputError(
            f"dataset {dataset.name} does not carry entity types on every training example", dataset.source
        )
    return [([ex.head_type], [ex.tail_type]) for ex in dataset.train]


def kg_types(dataset: RelationDataset, path: str | Path) -> ExampleTypes:
    """Types from a JSON map {entity id: [type, ...]}; every entity of the training set must be in it."""
    type_map = read_json(path)
    if not isinstance(type_map, dict):
        raise CMLInputError("expected a JSON object {entity id: [types]}", path)
    out = []
    for i, ex in enumerate(dataset.train):
        pair = []
        for entity in (ex.head_id, ex.tail_id):
            types = type_map.get(entity) if entity is not None else None
            if not types:
                raise CMLInputError(
                    f"no types for entity {entity!r} (training example {i}, relation {ex.relation})", path
                )
            pair.append([types] if isinstance(types, str) else list(types))
        out.append((pair[0], pair[1]))
    return out


def type_distributions(
    dataset: RelationDataset, types: ExampleTypes, smoothing: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """P_h and P_t, each [relations, types]; an entity with k types gives 1/k to each."""
    names = sorted({t for head, tail in types for t in head + tail})
    col = {t: i for i, t in enumerate(names)}
    row = dataset.label_of
    counts = np.zeros((2, len(dataset.relations), len(names)))
    for ex, (head, tail) in zip(dataset.train, types):
        for side, entity_types in ((0, head), (1, tail)):
            for t in entity_types:
                counts[side, row[ex.relation], col[t]] += 1 / len(entity_types)
    counts += smoothing
    dist = counts / counts.sum(-1, keepdims=True)
    return dist[0], dist[1]


def _symmetric_kl(p: np.ndarray) -> np.ndarray:
    """KL(p_a || p_b) + KL(p_b || p_a) for every pair of rows: sum (p_a - p_b)(log p_a - log p_b)."""
    logp = np.log(p)
    return (p * logp).sum(1)[:, None] + (p * logp).sum(1)[None, :] - p @ logp.T - (p @ logp.T).T


def _median_tau(d: np.ndarray) -> float:
    """The median off-diagonal divergence (1 where there is none), the kl similarity's default scale."""
    off = d[~np.eye(len(d), dtype=bool)]
    return float(np.median(off)) if off.size and np.median(off) > 0 else 1.0


def relation_similarity(
    p_h: np.ndarray, p_t: np.ndarray, kind: str = "kl", tau: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """sim(r, r') = exp(-D / tau) with D the symmetrised KL of domains plus that of ranges; or the
    cosine of v_r. `tau` defaults to the median off-diagonal D, which makes the scale data-free.
    Also each relation's similarity to its own reversal (domain and range swapped), on the same
    scale: high where the entity types cannot tell which argument is which (child, follows)."""
    if kind == "cosine":
        v, flipped = np.concatenate([p_h, p_t], axis=1), np.concatenate([p_t, p_h], axis=1)
        norm = np.linalg.norm(v, axis=1, keepdims=True)  # the reversal's too: the same entries
        return (v / norm) @ (v / norm).T, (v * flipped).sum(1) / norm[:, 0] ** 2
    if kind != "kl":
        raise CMLInputError(f"unknown similarity {kind!r}: use kl or cosine")
    d = np.maximum(_symmetric_kl(p_h) + _symmetric_kl(p_t), 0.0)
    np.fill_diagonal(d, 0.0)
    tau = _median_tau(d) if tau is None else tau
    # D(r, reversed r) = KL-sym(P_h(r), P_t(r)) + KL-sym(P_t(r), P_h(r)) = 2 KL-sym(P_h(r), P_t(r))
    to_reversal = np.maximum(2 * np.sum((p_h - p_t) * (np.log(p_h) - np.log(p_t)), axis=1), 0.0)
    return np.exp(-d / tau), np.exp(-to_reversal / tau)


@dataclass
class RelationSpace:
    """Similarities between the relations of a dataset, indexed by relation id."""

    relations: list[str]
    vectors: np.ndarray  # [R, 2T]: v_r = [P_h ; P_t]
    similarity: np.ndarray  # [R, R]
    reversal: np.ndarray | None = None  # [R]: sim(r, r with domain and range swapped)

    def __post_init__(self) -> None:
        self.index = {r: i for i, r in enumerate(self.relations)}

    def _ix(self, relations: list[str]) -> list[int]:
        return [self.index[r] for r in relations]

    def task_similarity(self, a: list[str], b: list[str]) -> float:
        """S(T_a, T_b): mean similarity over pairs of their relations."""
        return float(self.similarity[np.ix_(self._ix(a), self._ix(b))].mean())

    def task_difficulty(self, tasks: list[list[str]]) -> list[float]:
        """d(T_i) = mean over j != i of S(T_i, T_j): how confusable a task is with the others."""
        k = len(tasks)
        if k < 2:
            return [0.0] * k
        return [
            float(np.mean([self.task_similarity(tasks[i], tasks[j]) for j in range(k) if j != i])) for i in range(k)
        ]

    def relation_difficulty(self, relation: str, others: list[str]) -> float:
        """d(r | R) = mean over b in R of sim(r, b)."""
        return float(self.similarity[self.index[relation], self._ix(others)].mean())

    def pairwise(self, rows: list[str], columns: list[str] | None = None) -> np.ndarray:
        """sim(a, b) for a in `rows` and b in `columns` (default: `rows`), in their order."""
        return self.similarity[np.ix_(self._ix(rows), self._ix(rows if columns is None else columns))]

    def nearest(self, relation: str, k: int = 5) -> list[tuple[str, float]]:
        row = self.similarity[self.index[relation]]
        order = [i for i in np.argsort(-row, kind="stable") if i != self.index[relation]][:k]
        return [(self.relations[i], float(row[i])) for i in order]


def build_space(
    dataset: RelationDataset, types: ExampleTypes, kind: str = "kl", tau: float | None = None
) -> RelationSpace:
    p_h, p_t = type_distributions(dataset, types)
    similarity, reversal = relation_similarity(p_h, p_t, kind, tau)
    return RelationSpace(dataset.relations, np.concatenate([p_h, p_t], axis=1), similarity, reversal)


def induced_types(
    dataset: RelationDataset,
    tokenizer,
    backbone,
    n_types: int = 32,
    seed: int = 0,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> ExampleTypes:
    """Types as K-means clusters of every head and tail mention, encoded alone by the pre-trained
    encoder (mean of its word-piece states). Works for any dataset."""
    from sklearn.cluster import KMeans
    from tqdm import tqdm

    mentions = [m for ex in dataset.train for m in (ex.head_text, ex.tail_text)]
    unique = sorted(set(mentions))
    ids = tokenizer(unique, truncation=True, max_length=32)["input_ids"]
    by_length = sorted(range(len(unique)), key=lambda i: len(ids[i]))  # batches with little padding
    x = np.zeros((len(unique), backbone.config.hidden_size), dtype=np.float32)
    backbone.eval().to(device)
    with torch.no_grad():
        for start in tqdm(range(0, len(unique), batch_size), desc="encoding mentions", leave=False):
            rows = by_length[start : start + batch_size]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(device)
            states = backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            inner = enc["attention_mask"].clone()
            inner[:, 0] = 0  # leave out [CLS] and [SEP]: the mention's own word pieces only
            inner[torch.arange(len(inner)), enc["attention_mask"].sum(1) - 1] = 0
            inner = inner.clamp(min=0).unsqueeze(-1).float()
            x[rows] = ((states * inner).sum(1) / inner.sum(1).clamp(min=1)).float().cpu().numpy()
    labels = KMeans(n_clusters=min(n_types, len(unique)), n_init=3, random_state=seed).fit_predict(x)
    cluster = {m: f"t{label}" for m, label in zip(unique, labels)}
    return [([cluster[ex.head_text]], [cluster[ex.tail_text]]) for ex in dataset.train]
