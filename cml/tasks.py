"""Cutting relations into tasks and arranging tasks into orders."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from cml.data.records import RelationDataset
from cml.errors import CMLInputError

STANDARD_SEED, SEED_STEP = 2021, 100  # order i shuffles with seed 2021 + 100 i (RP-CRE, CRL, CEAR)


@dataclass
class TaskOrder:
    """One order: tasks (lists of relation ids) in the sequence they arrive."""

    tasks: list[list[str]]
    origin: str  # where the order came from, shown in the task plan


def _cut(relations: list[str], n_tasks: int) -> list[list[str]]:
    return [list(map(str, part)) for part in np.array_split(np.array(relations, dtype=object), n_tasks)]


def random_order(relations: list[str], n_tasks: int, index: int) -> TaskOrder:
    shuffled = list(relations)
    seed = STANDARD_SEED + SEED_STEP * index
    random.Random(seed).shuffle(shuffled)
    return TaskOrder(_cut(shuffled, n_tasks), f"random, seed {seed}")


def balanced_clusters(vectors: np.ndarray, n_clusters: int, seed: int) -> list[list[int]]:
    """Equal-size groups of similar rows: K-means centroids, then greedy capacity-bounded assignment."""
    from sklearn.cluster import KMeans

    n = len(vectors)
    centroids = KMeans(n_clusters, n_init=10, random_state=seed).fit(vectors).cluster_centers_
    capacity = [len(part) for part in np.array_split(np.arange(n), n_clusters)]
    distances = ((vectors[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    groups: list[list[int]] = [[] for _ in range(n_clusters)]
    assigned = np.zeros(n, dtype=bool)
    for flat in np.argsort(distances, axis=None, kind="stable"):
        row, col = divmod(int(flat), n_clusters)
        if not assigned[row] and len(groups[col]) < capacity[col]:
            groups[col].append(row)
            assigned[row] = True
    return groups


def resolve_protocol(dataset: RelationDataset, protocol: str | None, split: str = "random") -> str:
    """`file` when the dataset ships task orders (and the split is not clustered), else `random`."""
    if protocol is None:
        return "file" if dataset.task_orders and split != "clustered" else "random"
    if protocol == "file" and not dataset.task_orders:
        raise CMLInputError("--order-protocol file: the dataset has no task_orders.json")
    if protocol == "file" and split == "clustered":
        raise CMLInputError("--task-split clustered makes its own tasks: use --order-protocol random or cyclic")
    return protocol


def make_orders(
    dataset: RelationDataset,
    n_orders: int,
    n_tasks: int,
    split: str = "random",
    relation_vectors: np.ndarray | None = None,
    protocol: str | None = None,
) -> list[TaskOrder]:
    """`n_orders` task orders.

    Protocols: `file` takes the dataset's own orders (task_orders.json) first, then seeded random
    ones; `random` shuffles the relations with the standard seeds 2021 + 100 i; `cyclic` cuts one
    random split (seed 2021) and order i starts at its task i (cyclic shifts, as the CML paper).
    `split="clustered"` puts similar relations (by `relation_vectors`, one row per relation) into
    the same task; its orders then differ only in the sequence of those tasks (shuffled, or cyclic).
    """
    if n_orders < 1:
        raise CMLInputError(f"--orders must be at least 1, got {n_orders}")
    if not 1 <= n_tasks <= len(dataset.relations):
        raise CMLInputError(f"cannot cut {len(dataset.relations)} relations into {n_tasks} tasks")
    if split not in ("random", "clustered"):
        raise CMLInputError(f"unknown task split {split!r}: use random or clustered")
    protocol = resolve_protocol(dataset, protocol, split)
    if protocol == "file":
        file_tasks = len(dataset.task_orders[0])
        if n_tasks != file_tasks:
            raise CMLInputError(
                f"--tasks {n_tasks} conflicts with task_orders.json ({file_tasks} tasks): "
                "drop --tasks, or use --order-protocol random or cyclic"
            )
        given = [TaskOrder(tasks, "the dataset's own") for tasks in dataset.task_orders][:n_orders]
        return given + [random_order(dataset.relations, n_tasks, i) for i in range(len(given), n_orders)]
    if split == "clustered":
        groups = balanced_clusters(relation_vectors, n_tasks, STANDARD_SEED)
        base = TaskOrder([[dataset.relations[i] for i in g] for g in groups], "clustered")
    else:
        base = random_order(dataset.relations, n_tasks, 0)
    if protocol == "cyclic":
        return [
            TaskOrder(base.tasks[i % n_tasks :] + base.tasks[: i % n_tasks], f"{base.origin}, cyclic shift {i}")
            for i in range(n_orders)
        ]
    if split == "clustered":
        orders = []
        for i in range(n_orders):
            seed = STANDARD_SEED + SEED_STEP * i
            shuffled = list(base.tasks)
            random.Random(seed).shuffle(shuffled)
            orders.append(TaskOrder(shuffled, f"clustered, seed {seed}"))
        return orders
    return [random_order(dataset.relations, n_tasks, i) for i in range(n_orders)]
