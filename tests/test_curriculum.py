"""Properties of the reusable curriculum scheduler."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cml.curriculum import CurriculumScheduler

difficulties = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60)
options = {
    "batch_size": st.integers(1, 16),
    "pacing": st.sampled_from(["linear", "root", "step"]),
    "start_fraction": st.floats(0.05, 1.0),
    "direction": st.sampled_from(["easy_first", "hard_first"]),
    "seed": st.integers(0, 1000),
}


@settings(max_examples=200, deadline=None)
@given(d=difficulties, **options)
def test_every_item_exactly_once_per_epoch(d, batch_size, pacing, start_fraction, direction, seed):
    sched = CurriculumScheduler(d, batch_size, pacing, start_fraction, direction, seed=seed)
    for _ in range(2):
        batches = list(sched)
        assert len(batches) == len(sched)
        assert all(1 <= len(b) <= batch_size for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(d)))


@settings(max_examples=200, deadline=None)
@given(d=difficulties, **options)
def test_availability_is_monotone_and_complete(d, batch_size, pacing, start_fraction, direction, seed):
    sched = CurriculumScheduler(d, batch_size, pacing, start_fraction, direction, seed=seed)
    available = [sched.available(t) for t in range(len(sched))]
    assert available == sorted(available)
    assert available[-1] == len(d)
    assert all(a >= min(len(d), (t + 1) * batch_size) for t, a in enumerate(available))


@settings(max_examples=200, deadline=None)
@given(d=difficulties, **options)
def test_nothing_is_yielded_before_everything_easier_is_available(
    d, batch_size, pacing, start_fraction, direction, seed
):
    sched = CurriculumScheduler(d, batch_size, pacing, start_fraction, direction, seed=seed)
    key = sorted(d) if direction == "easy_first" else sorted(d, reverse=True)
    for t, batch in enumerate(sched):
        threshold = key[sched.available(t) - 1]  # the hardest difficulty released so far
        for i in batch:
            assert d[i] <= threshold if direction == "easy_first" else d[i] >= threshold


def test_easy_items_come_first_and_seed_fixes_the_batches():
    d = [i / 99 for i in range(100)]
    batches = list(CurriculumScheduler(d, 10, "linear", start_fraction=0.1, seed=1))
    assert max(d[i] for i in batches[0]) < 0.1  # only the easiest 10% at the start
    means = [sum(d[i] for i in b) / len(b) for b in batches]
    assert means[0] < means[4] < means[-1]
    assert batches == list(CurriculumScheduler(d, 10, "linear", start_fraction=0.1, seed=1))
    reverse = list(CurriculumScheduler(d, 10, "linear", start_fraction=0.1, direction="hard_first", seed=1))
    assert min(d[i] for i in reverse[0]) > 0.9


def test_pacing_shapes():
    d = list(range(100))
    linear = CurriculumScheduler(d, 1, "linear", start_fraction=0.2)
    root = CurriculumScheduler(d, 1, "root", start_fraction=0.2)
    assert linear.available(0) == 20 and root.available(0) == 20
    # t = 30 of 99: linear .2 + .8 * 30/99 = .4424 -> 45; root sqrt(.04 + .96 * 30/99) = .5752 -> 58
    assert (linear.available(30), root.available(30)) == (45, 58)
    # 20 steps, two plateaus: half the ranking for steps 0-9 (2 t / 19 < 1), all of it from step 10
    step = CurriculumScheduler(d, 5, "step", start_fraction=0.5, n_steps=2)
    assert [step.available(t) for t in range(20)] == [50] * 10 + [100] * 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="pacing"):
        CurriculumScheduler([0.1], 1, pacing="cubic")
    with pytest.raises(ValueError, match="direction"):
        CurriculumScheduler([0.1], 1, direction="sideways")
