"""From a config to what every method runs on: the dataset (capped), the relation space
(similarities and difficulties) and the task orders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cml.config import RunConfig
from cml.data import RelationDataset, load_dataset
from cml.data.checks import check_dataset
from cml.errors import CMLInputError
from cml.relations import RelationSpace
from cml.tasks import TaskOrder, make_orders, resolve_protocol

DEFAULT_TASKS = {"demo": 5}


@dataclass
class Experiment:
    dataset: RelationDataset
    orders: list[TaskOrder]
    space: RelationSpace
    type_source: str

    def difficulties(self, order: TaskOrder) -> list[float]:
        """d(T) of each task of an order, with respect to the other tasks of that order."""
        return self.space.task_difficulty(order.tasks)

    def plan(self) -> str:
        """The task plan printed at the start of a run."""
        ds = self.dataset
        n_train, n_val, n_test = ds.counts()
        lines = [
            (
                f"dataset {ds.name} ({ds.source}): {len(ds.relations)} relations, {n_train:,} train / "
                f"{f'{n_val:,} val' if n_val else 'no validation split'} / {n_test:,} test; "
                f"entity types: {self.type_source}"
            ),
        ]
        for i, order in enumerate(self.orders):
            lines.append(f"order {i} ({order.origin}):")
            for k, (task, d) in enumerate(zip(order.tasks, self.difficulties(order))):
                lines.append(f"  task {k} (difficulty {d:.3f}): {', '.join(ds.display_name(r) for r in task)}")
        return "\n".join(lines)


def relation_space(config: RunConfig, dataset: RelationDataset) -> tuple[RelationSpace, str]:
    """Similarities from the preferred type source: a KG map, the dataset's types, or induced types."""
    from cml import relations as rel

    source = config.cml.types
    if source == "auto":
        source = "dataset" if all(ex.head_type and ex.tail_type for ex in dataset.train) else "induced"
    if source == "dataset":
        types, label = rel.dataset_types(dataset), "carried by the dataset"
    elif source == "induced":
        from cml.cache import cache_dir, fingerprint, memo
        from cml.encoder import load_backbone, load_tokenizer

        def induce():
            tokenizer = load_tokenizer(config.encoder.name)
            backbone = load_backbone(config.encoder.name, tokenizer, config.seed, config.encoder.marker_init)
            return rel.induced_types(dataset, tokenizer, backbone, config.cml.n_types, config.seed)

        key = fingerprint(config.encoder.name, config.cml.n_types, config.seed, dataset.train)
        types = memo(cache_dir() / f"types-{key}.pt", induce)
        label = f"induced ({config.cml.n_types} K-means clusters of {config.encoder.name} mention encodings)"
    else:
        types, label = rel.kg_types(dataset, source), f"knowledge-graph type map {source}"
    return rel.build_space(dataset, types, config.cml.similarity, config.cml.tau), label


def curriculum_orders(space: RelationSpace, base: TaskOrder) -> list[TaskOrder]:
    """The tasks of `base` sorted by difficulty, easy to hard and hard to easy."""
    d = space.task_difficulty(base.tasks)
    rank = list(np.argsort(d, kind="stable"))
    return [
        TaskOrder([base.tasks[i] for i in rank], "easy to hard (tasks of order 0)"),
        TaskOrder([base.tasks[i] for i in rank[::-1]], "hard to easy (tasks of order 0)"),
    ]


def build_experiment(config: RunConfig) -> Experiment:
    data = config.data
    dataset = load_dataset(data.dataset, data.data_dir, seed=config.seed).cap_train(data.max_per_relation)
    check_dataset(dataset)
    if not getattr(dataset, data.eval_split):
        raise CMLInputError(
            f"--eval-split {data.eval_split}: the dataset has no {data.eval_split} split", dataset.source
        )
    protocol = resolve_protocol(dataset, data.order_protocol, data.task_split)
    from_file = len(dataset.task_orders[0]) if protocol == "file" else None
    n_tasks = data.n_tasks or from_file or DEFAULT_TASKS.get(dataset.name, 10)
    space, type_source = relation_space(config, dataset)
    orders = make_orders(dataset, data.orders, n_tasks, data.task_split, space.vectors, protocol)
    if data.curriculum_orders:
        orders += curriculum_orders(space, orders[0])
    return Experiment(dataset, orders, space, type_source)
