import random

import pytest

from cml.data import load_dataset
from cml.errors import CMLInputError
from cml.relations import build_space, dataset_types
from cml.tasks import make_orders
from tests.conftest import shared


def test_random_orders_use_standard_seeds(demo):
    orders = make_orders(demo, 3, 5)
    for i, order in enumerate(orders):
        expected = list(demo.relations)
        random.Random(2021 + 100 * i).shuffle(expected)
        assert [r for task in order.tasks for r in task] == expected
        assert [len(t) for t in order.tasks] == [4] * 5
    assert orders[0].tasks != orders[1].tasks


def test_dataset_orders_come_first_then_seeded_ones():
    ds = load_dataset("fewrel", shared("fewrel"))
    orders = make_orders(ds, 6, 10)
    assert [o.tasks for o in orders[:5]] == ds.task_orders
    assert orders[5].origin == "random, seed 2521"
    assert sorted(r for t in orders[5].tasks for r in t) == sorted(ds.relations)


def test_clustered_tasks_group_relations_by_type_signature(demo):
    orders = make_orders(demo, 2, 5, split="clustered", relation_vectors=build_space(demo, dataset_types(demo)).vectors)
    signature = {ex.relation: (ex.head_type, ex.tail_type) for ex in demo.train}
    tasks = orders[0].tasks
    assert sorted(map(sorted, tasks)) == sorted(map(sorted, orders[1].tasks))
    assert all(len(t) == 4 for t in tasks)
    # the three person -> city relations land in one task, as do the three person -> person ones
    for sig in (("person", "city"), ("person", "person")):
        members = {r for r, s in signature.items() if s == sig}
        assert any(members <= set(t) for t in tasks), (sig, tasks)


def test_cyclic_orders_shift_one_split(demo):
    orders = make_orders(demo, 3, 5, protocol="cyclic")
    base = orders[0].tasks
    assert base == make_orders(demo, 1, 5)[0].tasks  # the split of seed 2021
    for i, order in enumerate(orders):
        assert order.tasks == base[i:] + base[:i]


def test_tasks_that_conflict_with_the_file_are_an_error_naming_both():
    ds = load_dataset("fewrel", shared("fewrel"))
    with pytest.raises(CMLInputError, match=r"--tasks 1 conflicts with task_orders.json \(10 tasks\)"):
        make_orders(ds, 5, 1)
    one = make_orders(ds, 1, 1, protocol="random")
    assert len(one[0].tasks) == 1 and sorted(one[0].tasks[0]) == sorted(ds.relations)
    with pytest.raises(CMLInputError, match="no task_orders.json"):
        make_orders(load_dataset("demo"), 1, 5, protocol="file")
