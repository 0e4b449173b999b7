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


@pytest.mark.parametrize(
    "schedule, eps", [("fixed", 0.5), ("linear", 0.5 * (1 - 2 / 5)), ("sqrt", 0.5 * (1 - 2 / 5) ** 0.5)]
)
def test_reptile_step_interpolates_from_the_task_start(schedule, eps):
    model = nn.Linear(3, 2)
    frozen = nn.Parameter(torch.ones(2), requires_grad=False)
    model.register_parameter("frozen", frozen)
    engine = types.SimpleNamespace(model=model, tasks=[["a"], ["b"], ["c"]])  # third task: k = 2
    strategy = CML(context(meta_eps=0.5, meta_schedule=schedule))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.before_task(engine)
    with torch.no_grad():  # stands in for the inner training
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.after_training(engine)
    for n, p in model.named_parameters():
        expected = before[n] + eps * (after[n] - before[n]) if n != "frozen" else after[n]
        torch.testing.assert_close(p.detach(), expected)


def test_no_meta_step_on_the_first_task():
    model = nn.Linear(3, 2)
    engine = types.SimpleNamespace(model=model, tasks=[["a"]])
    strategy = CML(context())
    strategy.before_task(engine)
    with torch.no_grad():
        model.weight.add_(1.0)
    trained = model.weight.detach().clone()
    strategy.after_training(engine)
    torch.testing.assert_close(model.weight.detach(), trained)


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
