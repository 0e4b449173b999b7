import types

import numpy as np
import pytest
import torch
from torch import nn

from cml.config import CMLConfig
from cml.methods import CML, MethodContext
from cml.relations import RelationSpace
from tests.test_engine import make_engine, small_config


def context(**options):
    space = RelationSpace(["a", "b"], np.zeros((2, 2)), np.eye(2))
    return MethodContext(space, CMLConfig(**options), n_tasks=5)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 3)
        self.classifier = nn.Linear(3, 4)  # one row per relation a, b, c, d
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)


def toy_engine(tasks):
    data = types.SimpleNamespace(label_of={"a": 0, "b": 1, "c": 2, "d": 3})
    return types.SimpleNamespace(model=Toy(), tasks=tasks, current=tasks[-1], data=data)


@pytest.mark.parametrize(
    "schedule, eps", [("fixed", 0.5), ("linear", 0.5 * (1 - 2 / 5)), ("sqrt", 0.5 * (1 - 2 / 5) ** 0.5)]
)
def test_reptile_step_interpolates_from_the_task_start(schedule, eps):
    engine = toy_engine([["a"], ["b"], ["c", "d"]])  # third task: k = 2; rows 2 and 3 are new
    model = engine.model
    strategy = CML(context(meta_eps=0.5, meta_schedule=schedule))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.before_task(engine)
    with torch.no_grad():  # stands in for the inner training
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.after_training(engine)
    for n, p in model.named_parameters():
        expected = after[n] if n == "frozen" else before[n] + eps * (after[n] - before[n])
        if n.startswith("classifier."):
            expected[2:] = after[n][2:]  # the new relations' rows keep what training gave them
        torch.testing.assert_close(p.detach(), expected)


def test_no_meta_step_on_the_first_task():
    engine = toy_engine([["a"]])
    strategy = CML(context())
    strategy.before_task(engine)
    with torch.no_grad():
        engine.model.body.weight.add_(1.0)
    trained = engine.model.body.weight.detach().clone()
    strategy.after_training(engine)
    torch.testing.assert_close(engine.model.body.weight.detach(), trained)


def test_memory_is_replayed_from_easy_to_hard(tmp_path):
    config = small_config(tmp_path, methods=("cml",))
    config.cml.start_fraction = 0.1
    engine, experiment = make_engine(config, "cml")
    data = engine.data
    tasks = experiment.orders[0].tasks
    for task in tasks[:3]:
        engine.run_task(task)
    engine.tasks.append(tasks[3])
    strategy = engine.strategy
    indices = strategy.training_indices(engine)
    batches = list(strategy.batches(engine, indices, epoch=0))
    assert sorted(torch.cat(batches).tolist()) == sorted(indices.tolist())
    current = {data.label_of[r] for r in tasks[3]}
    difficulty = [
        [
            experiment.space.relation_difficulty(data.relations[int(label)], tasks[3])
            for label in data.train.labels[b]
            if int(label) not in current
        ]
        for b in batches
    ]
    assert sum(len(d) for d in difficulty) == len(engine.memory)  # each memory item once, spread over the batches
    half = len(batches) // 2
    early = np.mean([x for d in difficulty[:half] for x in d])
    late = np.mean([x for d in difficulty[half:] for x in d])
    assert early < late
    assert max(difficulty[0]) <= np.quantile([x for d in difficulty for x in d], 0.5)
