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
