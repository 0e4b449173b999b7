"""From a config to what every method runs on: the dataset (capped) and its task orders."""
from __future__ import annotations

from dataclasses import dataclass

from cml.config import RunConfig
from cml.data import RelationDataset, load_dataset
from cml.tasks import TaskOrder, make_orders

DEFAULT_TASKS = {"demo": 5}


@dataclass
class Experiment:
    dataset: RelationDataset
    orders: list[TaskOrder]

    def plan(self) -> str:
        """The task plan printed at the start of a run."""
        ds = self.dataset
        n_train, n_val, n_test = ds.counts()
        lines = [
            f"dataset {ds.name} ({ds.source}): {len(ds.relations)} relations, "
            f"{n_train:,} train / {n_val:,} val / {n_test:,} test",
        ]
        for i, order in enumerate(self.orders):
            lines.append(f"order {i} ({order.origin}):")
            for k, task in enumerate(order.tasks):
                lines.append(f"  task {k}: {', '.join(ds.display_name(r) for r in task)}")
        return "\n".join(lines)


def build_experiment(config: RunConfig) -> Experiment:
    data = config.data
    dataset = load_dataset(data.dataset, data.data_dir, seed=config.seed).cap_train(data.max_per_relation)
    n_tasks = data.n_tasks or (len(dataset.task_orders[0]) if dataset.task_orders else DEFAULT_TASKS.get(dataset.name, 10))
    vectors = None
    if data.task_split == "clustered":
        from cml.relations import type_vectors

        vectors = type_vectors(dataset)
    return Experiment(dataset, make_orders(dataset, data.orders, n_tasks, data.task_split, vectors))
