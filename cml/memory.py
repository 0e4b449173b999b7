"""Episodic memory: per relation, the training examples nearest the centroids of a K-means."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans


def select_prototypes(features: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Indices (into `features`) of the example nearest each of `m` K-means centroids.

    With fewer than `m` examples all are kept. Two centroids can share a nearest example; it is
    kept once, so a relation may keep slightly fewer than `m`.
    """
    n = len(features)
    if n <= m:
        return np.arange(n)
    features = np.asarray(features, dtype=np.float64)
    centroids = KMeans(n_clusters=m, n_init=1, random_state=seed).fit(features).cluster_centers_
    distances = ((features[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return np.unique(distances.argmin(0))


class EpisodicMemory:
    """Training-set indices kept per relation."""

    def __init__(self) -> None:
        self.slots: dict[str, torch.Tensor] = {}

    def add(self, relation: str, indices: torch.Tensor) -> None:
        self.slots[relation] = indices

    def indices(self, relations=None) -> torch.Tensor:
        keep = [self.slots[r] for r in (relations if relations is not None else self.slots) if r in self.slots]
        return torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)

    def __len__(self) -> int:
        return sum(len(v) for v in self.slots.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.slots)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.slots = dict(state)


def allocate(weights: np.ndarray, budget: int, caps: np.ndarray, low: int = 1) -> np.ndarray:
    """Integer memory shares, one per relation, in proportion to `weights`, each between `low` and
    its cap, summing to `budget` (or to the caps' sum where they cannot hold it).

    Capped proportional allocation: every relation first gets `low`; the rest is shared out in
    proportion to the weights, a relation whose share would pass its cap is held at the cap and its
    surplus goes to the others (repeated until no share passes its cap), and the fractional parts
    are rounded by largest remainder (ties to the lower index). A relation that can hold no more
    than it has (an old one whose data is gone) has its current size as cap.
    """
    weights, caps = np.asarray(weights, dtype=np.float64), np.asarray(caps, dtype=np.int64)
    floor = np.minimum(caps, low)
    rest, room = budget - int(floor.sum()), caps - floor
    if rest <= 0 or room.sum() <= rest:
        return floor + (room if rest > 0 else 0)
    share = np.zeros(len(weights))
    free = room > 0
    while True:
        left = rest - share[~free].sum()
        w = np.where(free, weights, 0.0)
        share = np.where(free, left * w / w.sum() if w.sum() > 0 else left / free.sum(), share)
        over = free & (share > room)
        if not over.any():
            break
        share[over], free = room[over], free & ~over
    whole = np.floor(share + 1e-9).astype(np.int64)
    remainder = share - whole
    for i in np.argsort(-remainder, kind="stable")[: rest - int(whole.sum())]:
        whole[i] += 1
    return floor + whole
