import itertools
import types

import numpy as np
import pytest
import torch
from torch import nn

from cml.config import CMLConfig
from cml.meta import reptile, step_size
from cml.plugins import MetaStep, Plugin, RestoreOldRows
from cml.stages import Train
from cml.timing import PhaseTimer
from tests.test_engine import make_engine, small_config


def test_reptile_is_a_pure_interpolation():
    before = {"w": torch.tensor([[0.0, 2.0], [4.0, 6.0]]), "b": torch.tensor([1.0])}
    after = {"w": torch.tensor([[2.0, 2.0], [0.0, 10.0]]), "b": torch.tensor([3.0])}
    copies = {n: t.clone() for n, t in {**before, **{f"a{n}": t for n, t in after.items()}}.items()}
    out = reptile(before, after, 0.25, keep_after={"w": torch.tensor([1])})
    torch.testing.assert_close(out["w"], torch.tensor([[0.5, 2.0], [0.0, 10.0]]))  # row 1 kept from `after`
    torch.testing.assert_close(out["b"], torch.tensor([1.5]))
    for n, t in before.items():  # inputs untouched
        assert torch.equal(t, copies[n]) and torch.equal(after[n], copies[f"a{n}"])


@pytest.mark.parametrize("schedule, eps", [("fixed", 0.5), ("linear", 0.5 * (1 - 2 / 5)), ("sqrt", 0.5 * 0.6**0.5)])
def test_step_size_schedules(schedule, eps):
    assert step_size(0.5, schedule, 2, 5) == pytest.approx(eps)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3, 3)
        self.classifier = nn.Linear(3, 4, bias=False)  # one row per relation a, b, c, d


def toy_engine(tasks):
    model = Toy()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = {"a": 0, "b": 1, "c": 2, "d": 3}
    return types.SimpleNamespace(
        model=model,
        tasks=tasks,
        start=start,
        current_ids=torch.tensor([ids[r] for r in tasks[-1]]),
        old_ids=torch.tensor([ids[r] for task in tasks[:-1] for r in task], dtype=torch.long),
        device=torch.device("cpu"),
        context=types.SimpleNamespace(options=CMLConfig(meta_schedule="linear"), n_tasks=5),
        timer=PhaseTimer(),
    )


def test_meta_step_after_learning_keeps_the_new_relations_rows():
    engine = toy_engine([["a"], ["b"], ["c", "d"]])  # third task: k = 2; rows 2 and 3 are new
    before = {n: t.clone() for n, t in engine.start.items()}
    with torch.no_grad():  # stands in for the learn stage
        for p in engine.model.parameters():
            p.add_(torch.randn_like(p))
    after = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    MetaStep(0.5).after_stage(engine, Train("consolidate", "memory"))  # not the learn stage: no step
    torch.testing.assert_close(engine.model.body.weight.detach(), after["body.weight"])
    MetaStep(0.5).after_stage(engine, Train("learn", "task"))
    eps = 0.5 * (1 - 2 / 5)
    for n, p in engine.model.named_parameters():
        expected = before[n] + eps * (after[n] - before[n])
        if n == "classifier.weight":
            expected[2:] = after[n][2:]
        torch.testing.assert_close(p.detach(), expected)


def test_no_meta_step_on_the_first_task():
    engine = toy_engine([["a"]])
    with torch.no_grad():
        engine.model.body.weight.add_(1.0)
    trained = engine.model.body.weight.detach().clone()
    MetaStep(0.5).after_stage(engine, Train("learn", "task"))
    torch.testing.assert_close(engine.model.body.weight.detach(), trained)


def test_meta_eps_option_overrides_the_methods_step_size():
    engine = toy_engine([["a"], ["b"]])
    engine.context.options = CMLConfig(meta_eps=0.25)
    before = engine.model.body.weight.detach().clone()
    with torch.no_grad():
        engine.model.body.weight.add_(1.0)
    MetaStep(0.9).after_stage(engine, Train("learn", "task"))
    torch.testing.assert_close(engine.model.body.weight.detach(), before + 0.25)


def test_restoring_the_old_rows_after_learning_undoes_only_their_change():
    engine = toy_engine([["a"], ["b"], ["c", "d"]])  # rows 0 and 1 are old, 2 and 3 new
    with torch.no_grad():  # stands in for the learn stage
        for p in engine.model.parameters():
            p.add_(torch.randn_like(p))
    after = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    RestoreOldRows().after_stage(engine, Train("consolidate", "memory"))  # not the learn stage
    torch.testing.assert_close(engine.model.classifier.weight.detach(), after["classifier.weight"])
    RestoreOldRows().after_stage(engine, Train("learn", "task"))
    expected = torch.cat([engine.start["classifier.weight"][:2], after["classifier.weight"][2:]])
    torch.testing.assert_close(engine.model.classifier.weight.detach(), expected)
    torch.testing.assert_close(engine.model.body.weight.detach(), after["body.weight"])  # only the rows


def test_no_rows_are_restored_on_the_first_task():
    engine = toy_engine([["a", "b"]])
    with torch.no_grad():
        engine.model.classifier.weight.add_(1.0)
    trained = engine.model.classifier.weight.detach().clone()
    RestoreOldRows().after_stage(engine, Train("learn", "task"))
    torch.testing.assert_close(engine.model.classifier.weight.detach(), trained)


class Recorder(Plugin):
    def __init__(self):
        self.calls = []

    def before_task(self, engine):
        self.calls.append(("before_task", len(engine.tasks)))

    def before_stage(self, engine, stage):
        self.calls.append(("before_stage", stage.name))

    def after_stage(self, engine, stage):
        self.calls.append(("after_stage", stage.name))

    def after_task(self, engine):
        self.calls.append(("after_task", len(engine.tasks)))

    def after_eval(self, engine, result):
        self.calls.append(("after_eval", len(result.task_accuracy)))


def test_hooks_are_called_in_the_documented_order(tmp_path):
    recorder = Recorder()
    config = small_config(tmp_path, methods=("cml",))
    engine, experiment = make_engine(config, "cml", plugins=(recorder,))
    for task in experiment.orders[0].tasks[:2]:
        engine.run_task(task)

    def stages(names):
        return [c for name in names for c in (("before_stage", name), ("after_stage", name))]

    first = ["learn", "select memory", "refresh prototypes"]
    later = ["learn", "select memory", "consolidate", "refresh prototypes"]  # consolidation from the second task
    assert recorder.calls == [
        ("before_task", 1),
        *stages(first),
        ("after_task", 1),
        ("after_eval", 1),
        ("before_task", 2),
        *stages(later),
        ("after_task", 2),
        ("after_eval", 2),
    ]


def difficulties(engine, experiment, batches, current):
    data = engine.data
    current_ids = {data.label_of[r] for r in current}
    return [
        [
            experiment.space.relation_difficulty(data.relations[int(y)], current)
            for y in data.train.labels[b]
            if int(y) not in current_ids
        ]
        for b in batches
    ]


def at_the_fourth_task(tmp_path, method):
    """An engine that has learnt three tasks and just received the fourth (no stage run yet)."""
    config = small_config(tmp_path, methods=(method,))
    config.cml.start_fraction = 0.1
    config.train.augment = "none"
    engine, experiment = make_engine(config, method)
    tasks = experiment.orders[0].tasks
    for task in tasks[:3]:
        engine.run_task(task)
    engine.tasks.append(tasks[3])
    engine.seen[engine.current_ids] = True
    return engine, experiment, tasks


def first_half_easier(per_batch: list[list[float]]) -> bool:
    half = len(per_batch) // 2
    return np.mean([x for d in per_batch[:half] for x in d]) < np.mean([x for d in per_batch[half:] for x in d])


def test_cml_2021_mixes_memory_into_the_task_batches_from_easy_to_hard(tmp_path):
    engine, experiment, tasks = at_the_fourth_task(tmp_path, "cml-2021")
    learn = engine.method.stages[0]
    data = learn.stage_data(engine, learn.losses)
    batches = learn.batches(engine, data, epoch=0)
    assert sorted(torch.cat(batches).tolist()) == sorted(data.items.tolist())
    per_batch = difficulties(engine, experiment, batches, tasks[3])
    assert sum(len(d) for d in per_batch) == len(engine.memory)  # each memory item once, spread over the batches
    assert first_half_easier(per_batch)
    assert max(per_batch[0]) <= np.quantile([x for d in per_batch for x in d], 0.5)


@pytest.mark.parametrize("threat", [True, False])
def test_cml_consolidates_on_the_memory_from_easy_to_hard(tmp_path, threat):
    from tests.test_forgetting_parts import with_part

    engine, *_ = at_the_fourth_task(tmp_path, with_part("threat", threat))
    engine.method.stages[1].run(engine)  # memory of the new relations
    consolidate = engine.method.stages[2]
    assert consolidate.name == "consolidate" and consolidate.order == "curriculum"
    data = consolidate.stage_data(engine, consolidate.losses)
    assert sorted(data.items.tolist()) == sorted(engine.memory.indices().tolist())  # every seen relation's memory
    batches = consolidate.batches(engine, data, epoch=0)
    drawn = consolidate.epoch_items(engine, data, epoch=0)  # every item once, or the threat draws
    assert sorted(torch.cat(batches).tolist()) == sorted(drawn.tolist())
    if consolidate.replay == "uniform":
        assert sorted(drawn.tolist()) == sorted(data.items.tolist())
    scores = engine.difficulty_of_items(torch.cat([engine.data.train.labels[b] for b in batches]))
    sizes = np.cumsum([0] + [len(b) for b in batches])
    assert first_half_easier([scores[a:b] for a, b in itertools.pairwise(sizes)])
