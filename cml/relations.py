"""Relation representations from the distribution of head (domain) and tail (range) entity types.

v_r = [P_h(type | r) ; P_t(type | r)], additively smoothed (METHOD.md section 3.1).
"""
from __future__ import annotations

import numpy as np

from cml.data.records import RelationDataset
from cml.errors import CMLInputError


def type_vectors(dataset: RelationDataset, smoothing: float = 1e-3) -> np.ndarray:
    """One row per relation (in `dataset.relations` order) from the types the dataset carries."""
    if any(ex.head_type is None or ex.tail_type is None for ex in dataset.train):
        raise CMLInputError(f"dataset {dataset.name} carries no entity types for every training example", dataset.source)
    types = sorted({t for ex in dataset.train for t in (ex.head_type, ex.tail_type)})
    col = {t: i for i, t in enumerate(types)}
    row = dataset.label_of
    counts = np.zeros((len(dataset.relations), 2, len(types)))
    for ex in dataset.train:
        counts[row[ex.relation], 0, col[ex.head_type]] += 1
        counts[row[ex.relation], 1, col[ex.tail_type]] += 1
    counts += smoothing
    return (counts / counts.sum(-1, keepdims=True)).reshape(len(dataset.relations), -1)
