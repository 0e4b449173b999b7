"""The parts that put CML's difficulty where forgetting happens: memory shared out by difficulty,
threat-weighted replay, drift-compensated prototypes, the first-order MER step, and the report of
where forgetting comes from. Each against a hand computation or an independent one."""

import itertools
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cml.memory import allocate, select_prototypes
from cml.meta import path_gradient
from cml.methods import CML_PARTS
from cml.metrics import unit_forgetting
from cml.plugins import Plugin
from cml.prototypes import Prototypes
from cml.relations import RelationSpace
from cml.stages import SelectMemory, Train, threat_weights
from cml.summary import forgetting_sources, relation_accuracy_tensor
from tests.test_engine import make_engine, small_config


def with_part(part: str, on: bool = True) -> str:
    """The method that is cml with `part` on (or off): cml itself, or its one-part variant."""
    if CML_PARTS[part][0] == on:
        return "cml"
    return f"cml+{part}" if on else f"cml-no-{part}"


# --- memory shares -------------------------------------------------------------------------------


def test_allocation_by_hand():
    # 4 x 1 first; the other 16 in proportion 1:2:3:4 = 1.6, 3.2, 4.8, 6.4; floors 14, the two largest
    # remainders (.8, .6) get one more
    assert allocate(np.array([1, 2, 3, 4]), 20, np.array([99] * 4)).tolist() == [3, 4, 6, 7]
    # the second relation can hold one more than `low` at most; its surplus goes to the others in
    # proportion 1:3:4 of 15 = 1.875, 5.625, 7.5
    assert allocate(np.array([1, 2, 3, 4]), 20, np.array([10, 2, 10, 10])).tolist() == [3, 2, 7, 8]
    # caps that cannot hold the budget: everyone at the cap
    assert allocate(np.array([1, 1]), 10, np.array([3, 4])).tolist() == [3, 4]


def brute_force(weights, budget, caps, low=1):
    """Every integer vector with low <= n_i <= cap_i summing to the budget; the one nearest the
    capped proportional shares (found by bisection on the scale, independently of `allocate`),
    ties to the larger count at the lower index, as largest remainder gives."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        quota = np.clip(low + mid * weights, low, caps)
        lo, hi = (mid, hi) if quota.sum() < budget else (lo, mid)
    quota = np.clip(low + lo * weights, low, caps)
    best = None
    for n in itertools.product(*[range(low, c + 1) for c in caps]):
        if sum(n) == budget:
            key = (np.abs(np.array(n) - quota).max(), [-x for x in n])
            best = min(best or (key, n), (key, n))
    return list(best[1])


@pytest.mark.parametrize("seed", range(6))
def test_allocation_sums_to_the_budget_and_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.1, 1.0, size=4)
    caps = rng.integers(1, 8, size=4)
    budget = int(rng.integers(4, caps.sum() + 1))
    shares = allocate(weights, budget, caps)
    assert shares.sum() == budget and (shares >= 1).all() and (shares <= caps).all()
    assert shares.tolist() == brute_force(weights, budget, caps)


def test_uniform_allocation_is_todays_selection(tmp_path):
    """With the allocation off, every relation's memory is the K-means of that relation alone,
    `--memory-size` clusters (a first task has no consolidation and no meta step, so the model
    after it is the one the memory was selected with)."""
    method = with_part("allocation", on=False)
    engine, experiment = make_engine(small_config(tmp_path, methods=(method,)), method)
    engine.run_task(experiment.orders[0].tasks[0])
    indices = engine.data.train_indices(engine.current)
    out = engine.encode(engine.data.train, indices, "memory forward")
    labels = engine.data.train.labels[indices]
    for relation in engine.current:
        mine = (labels == engine.data.label_of[relation]).nonzero().flatten()
        keep = select_prototypes(out.h[mine].numpy(), engine.config.train.memory_size, engine.seed)
        assert engine.memory.slots[relation].tolist() == indices[mine[torch.as_tensor(keep)]].tolist()


def test_difficulty_allocation_shares_the_same_budget_by_difficulty(tmp_path, monkeypatch):
    method = with_part("allocation")
    config = small_config(tmp_path, methods=(method,))
    config.data.max_per_relation = 12
    engine, experiment = make_engine(config, method)
    assert engine.method.stages[1].allocation == "difficulty"
    given = []
    original = SelectMemory.shares
    monkeypatch.setattr(SelectMemory, "shares", lambda self, *a: given.append(original(self, *a)) or given[-1])
    space, m = experiment.space, config.train.memory_size
    for task in experiment.orders[0].tasks[:3]:
        engine.run_task(task)
        shares, seen = given[-1], engine.seen_relations
        assert sorted(shares) == sorted(seen) and sum(shares.values()) == m * len(seen)
        for relation in seen:  # what each relation holds fits its share (K-means may merge two)
            assert 1 <= len(engine.memory.slots[relation]) <= shares[relation]
        # among the new relations (whose data is all there, far above their share) the more similar
        # to the others get no fewer slots
        d = {r: space.relation_difficulty(r, [b for b in seen if b != r]) for r in engine.current}
        for a, b in itertools.permutations(engine.current, 2):
            if d[a] > d[b] + 1e-9:
                assert shares[a] >= shares[b]
    assert len({tuple(sorted(s.values())) for s in given}) > 1 and len(set(given[-1].values())) > 1  # not uniform


# --- threat-weighted replay ------------------------------------------------------------------------


def test_threat_weights_by_hand():
    # old items: 0.2, 0.4, 0.6 over their mean 0.4; new items: 0.9, 0.3 over their mean 0.6
    weights = threat_weights(torch.tensor([0.2, 0.4, 0.9, 0.6, 0.3]), torch.tensor([True, True, False, True, False]))
    torch.testing.assert_close(weights, torch.tensor([0.5, 1.0, 1.5, 1.5, 0.5], dtype=torch.float64))
    assert threat_weights(torch.tensor([0.3, 0.7]), torch.tensor([False, False])).tolist() == [1.0, 1.0]


def test_threat_replay_draws_old_relations_by_their_similarity_to_the_task(tmp_path):
    from tests.test_cml import at_the_fourth_task

    engine, experiment, tasks = at_the_fourth_task(tmp_path, with_part("threat"))
    engine.method.stages[1].run(engine)
    consolidate = engine.method.stages[2]
    assert consolidate.replay == "threat"
    data = consolidate.stage_data(engine, consolidate.losses)
    items = consolidate.epoch_items(engine, data, epoch=0)
    assert len(items) == len(data.items) and torch.isin(items, data.items).all()
    assert items.tolist() == consolidate.epoch_items(engine, data, epoch=0).tolist()  # seeded
    # the weights the draws follow, by hand from the relation space: an old relation's similarity
    # to the task, a new one's to the old relations, each side over its mean
    labels = data.split.labels[data.items]
    names = [engine.data.relations[int(y)] for y in labels]
    old = [r for task in tasks[:3] for r in task]
    space = experiment.space
    d = [space.relation_difficulty(r, tasks[3]) if r in old else space.relation_difficulty(r, old) for r in names]
    mean = {side: np.mean([x for x, r in zip(d, names) if (r in old) == side]) for side in (True, False)}
    expected = [x / mean[r in old] for x, r in zip(d, names)]
    # over many epochs an item is drawn in proportion to its weight
    counts = torch.zeros(len(engine.data.train.labels))
    for epoch in range(300):
        counts += torch.bincount(consolidate.epoch_items(engine, data, epoch), minlength=len(counts))
    frequency = counts[data.items] / counts[data.items].sum()
    np.testing.assert_allclose(frequency.numpy(), np.array(expected) / sum(expected), atol=0.01)
    uniform = Train("consolidate", "memory", first_task=1)
    assert uniform.epoch_items(engine, data, 0).tolist() == data.items.tolist()


# --- type margins ----------------------------------------------------------------------------------


def test_type_margins_follow_the_relation_space(tmp_path):
    """The consolidation's margins are the scale times the relation space's similarity of every two
    relations, none on the diagonal; the learn stage and a margin of 0 get none."""
    from cml.methods import TYPE_MARGIN
    from tests.test_cml import at_the_fourth_task

    engine, experiment, _ = at_the_fourth_task(tmp_path, with_part("margins"))
    engine.method.stages[1].run(engine)
    learn, consolidate = engine.method.stages[0], engine.method.stages[2]
    assert consolidate.type_margin == TYPE_MARGIN > 0
    margins = consolidate.stage_data(engine, consolidate.losses).margins
    relations, space = engine.data.relations, experiment.space
    for a, b in itertools.product(range(len(relations)), repeat=2):
        sim = space.similarity[space.relations.index(relations[a]), space.relations.index(relations[b])]
        assert float(margins[a, b]) == pytest.approx(0.0 if a == b else TYPE_MARGIN * sim, rel=1e-6)
    assert learn.stage_data(engine, learn.losses).margins is None
    engine.context.options.type_margin = 0.0  # the option switches it off for every consolidation
    assert consolidate.stage_data(engine, consolidate.losses).margins is None


# --- the threatened memory in the learn stage ---------------------------------------------------------


@pytest.mark.parametrize("k", [0, 2, 100])
def test_learn_stage_takes_the_memory_of_the_most_threatened_old_relations(tmp_path, k):
    """cml+focus learns on the task and the memory of the k old relations with the highest type
    similarity to any relation of the task (by brute force over the relation space)."""
    from tests.test_cml import at_the_fourth_task

    engine, experiment, tasks = at_the_fourth_task(tmp_path, with_part("focus"))
    engine.context.options.threatened = k
    learn = engine.method.stages[0]
    assert learn.data == "task+threatened"
    space, old = experiment.space, [r for task in tasks[:3] for r in task]
    threat = {r: max(space.similarity[space.index[r], space.index[t]] for t in tasks[3]) for r in old}
    expected = sorted(old, key=lambda r: -threat[r])[:k]
    items = learn.stage_data(engine, learn.losses).items
    task_items = engine.data.train_indices(tasks[3])
    assert sorted(items.tolist()) == sorted(task_items.tolist() + engine.memory.indices(expected).tolist())


# --- first-order MER -------------------------------------------------------------------------------


def quadratic(weights, batch):
    a, c = batch
    d = weights["w"] - c
    return 0.5 * d @ a @ d, None


def test_path_gradient_by_hand():
    """theta0 = (1, 2); L1 = 1/2 t.A1.t with A1 = diag(2, 1); L2 = 1/2 (t - c).A2.(t - c) with
    A2 = [[1, 1], [1, 3]], c = (1, 0); lr 0.1.
    g1 = A1 theta0 = (2, 2); theta1 = (0.8, 1.8); g2 = A2 (-0.2, 1.8) = (1.6, 5.2); mean (1.8, 3.6)."""
    a1, a2 = torch.diag(torch.tensor([2.0, 1.0])), torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    batches = [(a1, torch.zeros(2)), (a2, torch.tensor([1.0, 0.0]))]
    theta = {"w": torch.tensor([1.0, 2.0])}
    grad, values, _ = path_gradient(quadratic, theta, batches, lr=0.1)
    torch.testing.assert_close(grad["w"], torch.tensor([1.8, 3.6]))
    assert values == pytest.approx([0.5 * (2 * 1 + 4), 0.5 * (-0.2 * (-0.2 + 1.8) + 1.8 * (-0.2 + 5.4))])
    assert theta["w"].tolist() == [1.0, 2.0]  # the input is not moved
    one, _, _ = path_gradient(quadratic, theta, batches[1:], lr=0.1)
    torch.testing.assert_close(one["w"], a2 @ (theta["w"] - batches[1][1]))  # one batch: its plain gradient
    # with lr 0 the path is the mean gradient at theta0; the difference is the interference term -lr/2 H2 g1
    zero, _, _ = path_gradient(quadratic, theta, batches, lr=0.0)
    torch.testing.assert_close(zero["w"], (a1 @ theta["w"] + a2 @ (theta["w"] - batches[1][1])) / 2)
    torch.testing.assert_close(grad["w"] - zero["w"], -0.1 / 2 * a2 @ (a1 @ theta["w"]))


def test_mer_step_of_the_engine_walks_the_model_without_copies(tmp_path):
    """With the inner rate 0 and no dropout, the MER step's gradient over two halves is the batch's
    own gradient: the same step as a plain one, through `functional_call` on the same module (fp32:
    the halves are padded to their own lengths, which bf16 would round differently)."""
    config = small_config(tmp_path, methods=("cml",))
    config.cml.meta_lr = 0.0
    config.train.precision = "fp32"
    engine, experiment = make_engine(config, "cml")
    engine.run_task(experiment.orders[0].tasks[0])
    learn = engine.method.stages[0]
    data = learn.stage_data(engine, ("ce",))
    batch = data.items[:8]
    loss = lambda out, labels, teacher: F.cross_entropy(out.logits.float(), labels)
    start = {n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad}
    moved = []
    for meta in (1, 2):
        engine.model.load_state_dict(start, strict=False)
        engine.model.eval()
        optimizer = torch.optim.SGD(engine.trainable, lr=1.0)
        engine.train_step(data, batch, optimizer, loss, meta_batches=meta)
        moved.append({n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad})
    for name in start:
        torch.testing.assert_close(moved[0][name], moved[1][name], rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(moved[0][n], start[n]) for n in start)


# --- drift compensation ------------------------------------------------------------------------


def test_drift_compensation_against_a_loop():
    rng = torch.Generator().manual_seed(0)
    protos = Prototypes.empty(3, {"h": 2, "z": 2})
    static = {"h": torch.randn(2, 2, generator=rng), "z": torch.randn(2, 2, generator=rng)}
    protos.set("static", torch.tensor([0, 2]), static)
    items, labels = torch.tensor([9, 4, 7, 1, 5]), torch.tensor([0, 0, 2, 2, 1])
    before = {s: torch.randn(5, 2, generator=rng) for s in ("h", "z")}
    protos.anchor(items[:3], {s: v[:3] for s, v in before.items()})
    protos.anchor(items[3:], {s: v[3:] for s, v in before.items()})
    now = {s: torch.randn(5, 2, generator=rng) for s in ("h", "z")}
    protos.compensate(items, labels, torch.tensor([0, 1, 2]), now)
    for space in ("h", "z"):
        for r, row in ((0, 0), (2, 1)):
            drift = [now[space][i] - before[space][i] for i in range(5) if labels[i] == r]
            torch.testing.assert_close(protos.static[space][r], static[space][row] + sum(drift) / len(drift))
        assert protos.static[space][1].tolist() == [0.0, 0.0]  # no static mean: nothing to move
    assert protos.anchors["items"].tolist() == sorted(items.tolist())
    torch.testing.assert_close(protos.anchors["h"][protos.anchors["items"].tolist().index(7)], now["h"][2])
    with pytest.raises(RuntimeError, match="no anchor"):
        protos.compensate(torch.tensor([3]), torch.tensor([0]), torch.tensor([0]), {"h": torch.zeros(1, 2)})


def test_compensated_static_prototype_follows_its_memory(tmp_path):
    """After a refresh, a relation's static mean has moved by exactly the change of its memory
    mean since selection (the memory stays, so the mean drift is the drift of the mean)."""
    method = with_part("drift")
    config = small_config(tmp_path, methods=(method,))
    config.train.consolidate_epochs = 2
    config.train.lr = 1e-3  # features that move
    config.train.precision = "fp32"  # the check's encodings batch differently from the refresh's
    engine, experiment = make_engine(config, method)
    tasks = experiment.orders[0].tasks
    engine.run_task(tasks[0])
    static = {s: engine.prototypes.static[s].clone() for s in ("h", "z")}
    ids = engine.data.ids(tasks[0])
    items = engine.memory.indices(tasks[0])
    labels = engine.data.train.labels[items]
    before = engine.encode(engine.data.train, items, "memory forward")
    engine.run_task(tasks[1])
    # the second task's selection may have shrunk a first-task relation; measure on what it kept
    kept = engine.memory.indices(tasks[0])
    mask = torch.isin(items, kept)
    after = engine.encode(engine.data.train, kept, "memory forward")
    from cml.prototypes import class_means

    for space in ("h", "z"):
        drift = class_means(getattr(after, space) - getattr(before, space)[mask], labels[mask], ids)
        assert drift.abs().max() > 0.05  # the features did move
        torch.testing.assert_close(engine.prototypes.static[space][ids], static[space][ids] + drift, atol=1e-4, rtol=0)


# --- where forgetting comes from ---------------------------------------------------------------------


def test_forgetting_sources_by_hand():
    relations = ["a", "b", "c"]
    similarity = np.array([[1.0, 0.8, 0.2], [0.8, 1.0, 0.5], [0.2, 0.5, 1.0]])
    experiment = types.SimpleNamespace(
        space=RelationSpace(relations, np.zeros((3, 2)), similarity),
        dataset=types.SimpleNamespace(relations=relations),
    )

    def cell(order, accuracy, confusions):
        return [
            {"relations": [r], "relation_accuracy": acc, "confusions": conf if k == 2 else {}}
            for k, (r, acc, conf) in enumerate(zip(order, accuracy, [None, None, confusions]))
        ]

    run0 = cell(
        ["a", "b", "c"],
        [{"a": 0.9}, {"a": 0.7, "b": 0.8}, {"a": 0.5, "b": 0.6, "c": 0.9}],
        {"a": {"b": 3, "c": 1}, "b": {"c": 2}},
    )
    run1 = cell(
        ["c", "a", "b"],
        [{"c": 1.0}, {"c": 0.9, "a": 0.9}, {"c": 0.7, "a": 0.8, "b": 0.9}],
        {"a": {"b": 2}, "c": {"a": 1}},
    )
    grid = [[run0], [run1]]
    sources = forgetting_sources(grid, experiment, unit_forgetting(relation_accuracy_tensor(grid, relations)))
    got = {
        (c["true"], c["predicted"]): (c["count"], c["similarity"], c["predicted_later"]) for c in sources["confusions"]
    }
    assert got == {
        ("a", "b"): (5, 0.8, 1.0),  # b after a in both orders
        ("b", "c"): (2, 0.5, 1.0),
        ("a", "c"): (1, 0.2, 1.0),
        ("c", "a"): (1, 0.2, 1.0),
    }
    assert [c["true"] + c["predicted"] for c in sources["confusions"]][:2] == ["ab", "bc"]
    assert sources["old_errors"] == 9
    assert sources["similarity_of_confused"] == pytest.approx((5 * 0.8 + 2 * 0.5 + 0.2 + 0.2) / 9)
    # threat: run 0: a -> mean(0.8, 0.2), b -> 0.5; run 1: c -> mean(0.2, 0.5), a -> 0.8
    # forgetting: run 0: a 0.9 - 0.5, b 0.8 - 0.6; run 1: c 1.0 - 0.7, a 0.9 - 0.8
    tf = sources["threat_forgetting"]
    assert tf["threat"] == pytest.approx([0.5, 0.5, 0.8, 0.35])
    assert tf["forgetting"] == pytest.approx([0.4, 0.2, 0.1, 0.3])
    assert tf["rho"]["n"] == 4

    # a second seed of each order: the errors add up, while each (order, relation) stays one point,
    # its threat once and its forgetting the mean over the seeds
    run0b = cell(["a", "b", "c"], [{"a": 0.9}, {"a": 0.8, "b": 0.8}, {"a": 0.7, "b": 0.8, "c": 0.9}], {"a": {"b": 1}})
    run1b = cell(["c", "a", "b"], [{"c": 1.0}, {"c": 0.9, "a": 0.9}, {"c": 0.9, "a": 0.9, "b": 0.9}], {})
    grid = [[run0, run0b], [run1, run1b]]
    sources = forgetting_sources(grid, experiment, unit_forgetting(relation_accuracy_tensor(grid, relations)))
    assert sources["old_errors"] == 10 and sources["confusions"][0]["count"] == 6
    tf = sources["threat_forgetting"]
    assert tf["threat"] == pytest.approx([0.5, 0.5, 0.8, 0.35])
    assert tf["forgetting"] == pytest.approx([(0.4 + 0.2) / 2, (0.2 + 0.0) / 2, (0.1 + 0.0) / 2, (0.3 + 0.1) / 2])
    assert tf["rho"]["n"] == 4


def test_confusions_count_every_error_on_old_relations(tmp_path):
    from cml.experiment import build_experiment
    from cml.runner import run
    from tests.test_engine import rows_without_time

    config = small_config(tmp_path / "run", methods=("replay",), orders=1)
    run(config, build_experiment(config), progress=False)
    last = rows_without_time(tmp_path / "run")[-1]
    old = [r for task in last["task_size"][:-1] for r in [task]]
    old_examples = sum(old)
    errors = sum(sum(p.values()) for p in last["confusions"].values())
    assert errors == round((1 - last["old_accuracy"]) * old_examples)
    new = set(last["relations"])
    assert not new & set(last["confusions"])  # only old relations' errors


# --- reversed classes ------------------------------------------------------------------------------


def test_reversing_swaps_the_markers_and_twice_gives_the_sentence_back(tmp_path):
    from cml.augment import reverse_entities

    engine, _ = make_engine(small_config(tmp_path, methods=("cml",)), "cml")
    split, markers = engine.data.train, engine.data.markers
    pick = torch.tensor([0, 5, 17])
    once = reverse_entities(split, pick, torch.tensor([7, 8, 9]), markers)
    swap = {markers[0]: markers[2], markers[2]: markers[0], markers[1]: markers[3], markers[3]: markers[1]}
    for row, i in enumerate(pick.tolist()):
        original = split.ids[split.offsets[i] : split.offsets[i + 1]].tolist()
        flipped = once.ids[once.offsets[row] : once.offsets[row + 1]].tolist()
        assert flipped == [swap.get(t, t) for t in original]
        assert flipped[once.head_pos[row]] == markers[0] and flipped[once.tail_pos[row]] == markers[2]
    assert once.labels.tolist() == [7, 8, 9] and once.hidden is None
    twice = reverse_entities(once, torch.arange(3), once.labels, markers)
    back = split.subset(pick)
    assert torch.equal(twice.ids, back.ids) and torch.equal(twice.offsets, back.offsets)
    assert torch.equal(twice.head_pos, back.head_pos) and torch.equal(twice.tail_pos, back.tail_pos)


def test_subset_and_concatenation_keep_the_batches(tmp_path):
    from cml.tokens import EncodedSplit

    engine, _ = make_engine(small_config(tmp_path), "replay")
    split = engine.data.train
    a, b = torch.tensor([3, 1]), torch.tensor([8, 2, 9])
    joined = EncodedSplit.concatenate([split.subset(a), split.subset(b)])
    assert joined.hidden is not None  # the small config freezes a layer: states travel with the words
    for key, value in joined.batch(torch.arange(5)).items():
        assert torch.equal(value, split.batch(torch.cat([a, b]))[key]), key


def test_the_learn_stage_adds_a_reversed_class_per_directed_relation(tmp_path):
    """cml: the relations of the task at least as similar to their own reversal as the threshold
    (by the relation space) get their sentences again with head and tail swapped; a symmetric
    one's keep its label, every other one's get a class R + j and a spare row."""
    from cml.augment import reverse_entities
    from cml.frozen import frozen_states
    from cml.methods import REVERSE_SIMILARITY

    config = small_config(tmp_path, methods=("cml",))
    engine, experiment = make_engine(config, "cml")
    space, symmetric = experiment.space, experiment.dataset.symmetric
    task = next(t for t in experiment.orders[0].tasks if set(t) & symmetric and not set(t) <= symmetric)
    engine.tasks.append(task)
    engine.seen[engine.current_ids] = True
    # the demo's types are one per entity: a relation between two persons is 1.0 like its reversal,
    # any other 0.135; the threshold is lowered below that to reverse both kinds
    assert engine.method.stages[0].reverse == REVERSE_SIMILARITY
    engine.context.options.reverse_similarity = threshold = 0.1  # cml's own, 0, would take every one
    chosen = [r for r in task if space.reversal[space.index[r]] >= threshold]
    directed = [r for r in chosen if r not in symmetric]
    assert set(chosen) & symmetric and directed
    learn = engine.method.stages[0]
    data = learn.stage_data(engine, ("ce",))
    items, train, n_relations = engine.data.train_indices(task), engine.data.train, len(engine.data.relations)
    source = items[torch.isin(train.labels[items], engine.data.ids(chosen))]
    expected = [
        int(y)
        if engine.data.relations[int(y)] in symmetric
        else n_relations + directed.index(engine.data.relations[int(y)])
        for y in train.labels[source]
    ]
    assert data.items.tolist() == list(range(len(items) + len(source)))
    assert data.split.labels.tolist() == train.labels[items].tolist() + expected
    assert data.spare.shape == (len(directed), engine.model.classifier.in_features) and data.spare.requires_grad
    flipped = reverse_entities(train, source, torch.tensor(expected), engine.data.markers)
    reversed_part = data.split.subset(torch.arange(len(items), len(data.split)))
    assert torch.equal(reversed_part.ids, flipped.ids) and torch.equal(reversed_part.head_pos, flipped.head_pos)
    # the states: those of the whole training split reversed, run like the training split (fp32)
    everything = reverse_entities(train, torch.arange(len(train)), train.labels, engine.data.markers)
    everything.hidden = frozen_states(engine.model.encoder, everything, engine.data.pad_id)
    assert torch.equal(reversed_part.hidden, everything.subset(source).hidden)
    assert torch.equal(data.split.subset(torch.arange(len(items))).hidden, train.subset(items).hidden)


def test_the_reversed_training_sentences_are_made_only_for_a_run_that_reverses(tmp_path):
    from cml.augment import reverse_entities

    engine, _ = make_engine(small_config(tmp_path, methods=("replay",)), "replay")
    assert engine.data.reversed_train is None  # no method reverses: no second copy of the states
    engine, _ = make_engine(small_config(tmp_path, methods=("replay", "cml")), "cml")
    train, flipped = engine.data.train, engine.data.reversed_train
    every = reverse_entities(train, torch.arange(len(train)), train.labels, engine.data.markers)
    assert torch.equal(flipped.ids, every.ids) and torch.equal(flipped.labels, train.labels)
    assert flipped.hidden is not None and len(flipped.hidden) == len(train.hidden)


def test_the_directions_stage_adds_the_memorys_reversed_sentences_before_the_consolidation(tmp_path):
    """cml+directions: after the memory is selected and before the consolidation, a cross-entropy
    stage on the memory of every seen relation and, for each reversed one (cml's threshold, 0:
    every relation), the same sentences with head and tail swapped, as the learn stage has them: a
    symmetric relation's keep its label, every other one's get a class R + j and a spare row."""
    from tests.test_cml import at_the_fourth_task

    engine, experiment, _ = at_the_fourth_task(tmp_path, with_part("directions"))
    names = [s.name for s in engine.method.stages]
    assert names.index("select memory") < names.index("directions") < names.index("consolidate")
    stage = engine.method.stages[names.index("directions")]
    assert (stage.data, stage.losses, stage.first_task) == ("memory", ("ce",), 1)
    seen, symmetric = engine.seen_relations, experiment.dataset.symmetric
    directed = [r for r in seen if r not in symmetric]
    data = stage.stage_data(engine, ("ce",))
    items, train, n_relations = engine.memory.indices(seen), engine.data.train, len(engine.data.relations)
    expected = [
        int(y)
        if engine.data.relations[int(y)] in symmetric
        else n_relations + directed.index(engine.data.relations[int(y)])
        for y in train.labels[items]
    ]
    assert data.split.labels.tolist() == train.labels[items].tolist() + expected
    assert data.items.tolist() == list(range(2 * len(items)))
    assert data.spare.shape == (len(directed), engine.model.classifier.in_features)
    flipped = data.split.subset(torch.arange(len(items), 2 * len(items)))
    assert torch.equal(flipped.ids, engine.data.reversed_train.subset(items).ids)
    assert torch.equal(flipped.hidden, engine.data.reversed_train.subset(items).hidden)
    # the option sets its threshold; a consolidation, which declares none, never reverses
    engine.context.options.reverse_similarity = 1.5
    assert stage.stage_data(engine, ("ce",)).spare is None
    assert engine.method.stages[names.index("consolidate")].reversed_relations(seen, engine.context) == []


def test_cross_entropy_over_the_spare_rows_by_hand():
    from cml.stages import TERMS

    logits = torch.tensor([[2.0, -1.0, torch.finfo(torch.float32).min], [0.5, 0.0, torch.finfo(torch.float32).min]])
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    spare = torch.tensor([[1.0, 1.0], [0.5, -1.0]])
    labels = torch.tensor([3, 1])  # a reversed class (R = 3, spare row 0) and a relation
    # h @ spare.T: [[1, .5], [2, -2]], after the 3 relations (the third unseen: no mass)
    rows = [[2.0, -1.0, -np.inf, 1.0, 0.5], [0.5, 0.0, -np.inf, 2.0, -2.0]]
    by_hand = np.mean([np.log(np.sum(np.exp(r))) - r[y] for r, y in zip(rows, [3, 1])])
    out = types.SimpleNamespace(logits=logits, h=h)
    data = types.SimpleNamespace(spare=spare, margins=None, classes=None)
    assert float(TERMS["ce"].fn(out, labels, data, None, None)) == pytest.approx(by_hand, rel=1e-6)


# --- the learn stage's softmax over the task's own classes (ER-ACE) -------------------------------


def test_cross_entropy_over_the_tasks_classes_by_hand_gives_the_old_relations_no_gradient():
    from cml.stages import TERMS

    low = torch.finfo(torch.float32).min
    logits = torch.tensor([[2.0, -1.0, 0.5, low], [3.0, 0.0, 1.0, low]], requires_grad=True)
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    spare = torch.tensor([[1.0, 1.0]])  # one reversed class, id 4
    classes = torch.tensor([False, True, True, False])  # relation 0 old, 1 and 2 the task's, 3 unseen
    labels = torch.tensor([1, 4])
    rows = [[-1.0, 0.5, 1.0], [0.0, 1.0, 2.0]]  # the task's two relations, then h @ spare.T
    by_hand = np.mean([np.log(np.sum(np.exp(r))) - r[y] for r, y in zip(rows, [0, 2])])
    out = types.SimpleNamespace(logits=logits, h=h)
    data = types.SimpleNamespace(spare=spare, margins=None, classes=classes)
    loss = TERMS["ce"].fn(out, labels, data, None, None)
    assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert torch.equal(logits.grad[:, 0], torch.zeros(2)) and logits.grad[:, 1:3].abs().min() > 0
    data.classes = None  # the softmax over the seen relations: relation 0 counts
    assert float(TERMS["ce"].fn(out, labels, data, None, None).detach()) > by_hand


def test_the_asymmetric_part_sets_the_learn_stages_softmax_to_the_task_and_nothing_else(tmp_path):
    config = small_config(tmp_path, methods=("cml+asymmetric",))
    engine, experiment = make_engine(config, "cml+asymmetric")
    first, second = experiment.orders[0].tasks[:2]
    engine.run_task(first)  # its memory, for the consolidation
    engine.tasks.append(second)
    engine.seen[engine.current_ids] = True
    learn, consolidate = engine.method.stages[0], engine.method.stages[2]
    classes = learn.stage_data(engine, ("ce",)).classes
    assert [engine.data.relations[i] for i in classes.nonzero().flatten().tolist()] == sorted(
        second, key=engine.data.relations.index
    )
    assert consolidate.stage_data(engine, ("ce",)).classes is None  # old against new stays there
    engine.context.options.learn_softmax = "seen"  # the option overrides the method's own
    assert learn.stage_data(engine, ("ce",)).classes is None
    plain, _ = make_engine(small_config(tmp_path / "cml", methods=("cml",)), "cml")
    plain.tasks.append(first)
    plain.seen[plain.current_ids] = True
    assert plain.method.stages[0].stage_data(plain, ("ce",)).classes is None


def test_learn_softmax_task_changes_a_run_and_is_refused_where_no_learn_stage_has_a_cross_entropy(tmp_path, capsys):
    from cml.cli import main
    from cml.experiment import build_experiment
    from cml.runner import run
    from tests.test_engine import rows_without_time

    numbers = {}
    for softmax in (None, "task"):
        config = small_config(tmp_path / str(softmax), methods=("cml",), orders=1)
        config.cml.learn_softmax = softmax
        run(config, build_experiment(config), progress=False)
        numbers[softmax] = rows_without_time(tmp_path / str(softmax))
    assert [r["task_accuracy"] for r in numbers[None] if r["task"] == 0] == [
        r["task_accuracy"] for r in numbers["task"] if r["task"] == 0
    ]  # the first task has no old relation to leave out
    assert numbers[None] != numbers["task"]
    out = tmp_path / "never"
    args = ["--method", "cml,crl", "--learn-softmax", "task", "--encoder", "tiny", "--output", str(out)]
    assert main(args) == 2
    assert (
        "--learn-softmax task: crl has no cross-entropy in a learn stage on the task alone" in capsys.readouterr().err
    )
    assert not out.exists()


def test_a_threshold_above_one_reverses_nothing(tmp_path):
    """`--reverse-similarity` above 1: the learn stage is the plain task with no spare row; the
    run's numbers then differ from cml's own (the option is not ignored)."""
    from cml.experiment import build_experiment
    from cml.runner import run
    from tests.test_engine import rows_without_time

    engine, experiment = make_engine(small_config(tmp_path / "engine", methods=("cml",)), "cml")
    engine.context.options.reverse_similarity = 1.5
    engine.tasks.append(experiment.orders[0].tasks[0])
    engine.seen[engine.current_ids] = True
    data = engine.method.stages[0].stage_data(engine, ("ce",))
    assert data.spare is None and data.split is engine.data.train
    assert data.items.tolist() == engine.data.train_indices(engine.current).tolist()
    numbers = {}
    for threshold in (None, 1.5):
        config = small_config(tmp_path / str(threshold), methods=("cml",), orders=1)
        config.cml.reverse_similarity = threshold
        run(config, build_experiment(config), progress=False)
        numbers[threshold] = rows_without_time(tmp_path / str(threshold))
    assert numbers[None] != numbers[1.5]


def test_a_hybrid_joins_one_sentences_head_to_anothers_tail_by_hand():
    from cml.augment import hybrid_entities
    from cml.tokens import EncodedSplit

    markers, cls, sep = (1, 2, 3, 4), 101, 102  # [E11] [E12] [E21] [E22]
    sentences = [
        [cls, *range(10, 17), 1, 50, 51, 2, *range(20, 27), 3, 60, 4, 30, sep],
        [cls, 1, 70, 2, 40, 41, 3, 80, 81, 4, *range(90, 98), sep],
        [cls, 1, 50, 2, 20, 21, 3, 60, 4, sep],  # the head's context stops at the tail marker
    ]
    lengths = torch.tensor([len(s) for s in sentences])
    split = EncodedSplit(
        ids=torch.tensor([t for s in sentences for t in s], dtype=torch.int32),
        offsets=torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]),
        head_pos=torch.tensor([s.index(1) for s in sentences]),
        tail_pos=torch.tensor([s.index(3) for s in sentences]),
        labels=torch.tensor([0, 1, 2]),
    )
    out = hybrid_entities(split, torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([7, 8]), markers)
    # 5 words each side of the head (those before [E11], then up to 5 after [E12] and before [E21]);
    # from the second, the words after its [E12] (2 of them, not 5), its tail, 5 words after it
    expected = [
        [cls, 12, 13, 14, 15, 16, 1, 50, 51, 2, 20, 21, 22, 23, 24, 40, 41, 3, 80, 81, 4, 90, 91, 92, 93, 94, sep],
        [cls, 1, 50, 2, 20, 21, 40, 41, 3, 80, 81, 4, 90, 91, 92, 93, 94, sep],
    ]
    got = [out.ids[out.offsets[i] : out.offsets[i + 1]].tolist() for i in range(2)]
    assert got == expected
    assert out.head_pos.tolist() == [6, 1] and out.tail_pos.tolist() == [17, 8] and out.labels.tolist() == [7, 8]


def test_pairing_by_hand():
    from cml.stages import pairing

    # ab .9, ac .8, cd .7, bc .3, ad .2, bd .1
    sim = np.array([[1, 0.9, 0.8, 0.2], [0.9, 1, 0.3, 0.1], [0.8, 0.3, 1, 0.7], [0.2, 0.1, 0.7, 1]])
    space = RelationSpace(list("abcd"), np.zeros((4, 2)), sim)
    assert pairing(list("abcd"), space, "aca") == [("a", "c"), ("b", "d")]  # first half with second half
    assert pairing(list("abcd"), space, "analogous") == [("a", "b"), ("c", "d")]  # .9, then the best of the rest
    assert pairing(list("dcba"), space, "analogous") == [("b", "a"), ("d", "c")]  # the task's order does not matter
    assert pairing(list("abc"), space, "analogous") == [("a", "b")] and pairing(list("abc"), space, "aca") == [
        ("a", "b")
    ]
    assert pairing(list("abcd"), space, "none") == []


def test_the_learn_stage_adds_a_hybrid_class_per_pair(tmp_path):
    """Hybrid classes after the reversed ones: pair p's hybrids are the i-th sentences of its two
    relations (both with the head first), labelled R + (reversed classes) + p, with their own
    frozen-layer states and a spare row per class."""
    from cml.augment import hybrid_entities
    from cml.frozen import frozen_states
    from cml.stages import pairing

    engine, experiment = make_engine(small_config(tmp_path, methods=("cml",)), "cml")
    task = next(t for t in experiment.orders[0].tasks if set(t) - experiment.dataset.symmetric)
    engine.tasks.append(task)
    engine.seen[engine.current_ids] = True
    engine.context.options.hybrid_pairs = "analogous"
    learn = engine.method.stages[0]
    train, n_relations = engine.data.train, len(engine.data.relations)
    directed = [r for r in learn.reversed_relations(task, engine.context) if r not in experiment.dataset.symmetric]
    pairs = pairing(task, experiment.space, "analogous")
    assert learn.hybrid_pairs(task, engine.context) == pairs and len(pairs) == len(task) // 2
    items = engine.data.train_indices(task)
    first, second, labels = [], [], []
    for p, (a, b) in enumerate(pairs):
        of = {r: [int(i) for i in items if engine.data.relations[int(train.labels[i])] == r] for r in (a, b)}
        for i, j in zip(of[a], of[b]):
            if train.head_pos[i] < train.tail_pos[i] and train.head_pos[j] < train.tail_pos[j]:
                first, second, labels = first + [i], second + [j], labels + [n_relations + len(directed) + p]
    assert labels
    data = learn.stage_data(engine, ("ce",))
    assert data.split.labels[-len(labels) :].tolist() == labels
    reversed_sentences = len(engine.data.train_indices(learn.reversed_relations(task, engine.context)))
    assert len(data.split) == len(items) + reversed_sentences + len(labels)
    assert data.spare.shape == (len(directed) + len(pairs), engine.model.classifier.in_features)
    hybrids = hybrid_entities(
        train, torch.tensor(first), torch.tensor(second), torch.tensor(labels), engine.data.markers
    )
    tail = data.split.subset(torch.arange(len(data.split) - len(labels), len(data.split)))
    assert torch.equal(tail.ids, hybrids.ids) and torch.equal(tail.head_pos, hybrids.head_pos)
    states = frozen_states(engine.model.encoder, hybrids, engine.data.pad_id, precision=engine.autocast)
    assert torch.equal(tail.hidden, states)


def test_the_spare_rows_train_with_the_stage(tmp_path, monkeypatch):
    engine, experiment = make_engine(small_config(tmp_path, methods=("cml",)), "cml")
    learn, seen = engine.method.stages[0], {}
    original = Train.stage_data

    def keep(self, engine, active):
        seen["data"] = original(self, engine, active)
        seen["before"] = seen["data"].spare.detach().clone()
        return seen["data"]

    monkeypatch.setattr(Train, "stage_data", keep)
    engine.tasks.append(next(t for t in experiment.orders[0].tasks if set(t) - experiment.dataset.symmetric))
    engine.seen[engine.current_ids] = True
    learn.run(engine)
    assert not torch.equal(seen["data"].spare.detach(), seen["before"])


def test_cml_restore_gives_the_consolidation_the_old_rows_from_the_start_of_the_task(tmp_path):
    """cml+restore: after the learn stage of a later task the old relations' rows are those of the
    task's start, the new relations' rows are trained; cml itself keeps what the stage made."""

    class AfterLearn(Plugin):  # runs after the method's own plugins
        def __init__(self):
            self.rows = []

        def after_stage(self, engine, stage):
            if stage.name == "learn" and len(engine.tasks) == 2:
                weight = engine.model.classifier.weight.detach()
                start = engine.start["classifier.weight"]
                old, new = engine.old_ids, engine.current_ids
                self.rows.append((torch.equal(weight[old], start[old]), torch.equal(weight[new], start[new])))

    for method, restored in (("cml+restore", True), ("cml", False)):
        config = small_config(tmp_path / method, methods=(method,))
        after = AfterLearn()
        engine, experiment = make_engine(config, method, plugins=(after,))
        for task in experiment.orders[0].tasks[:2]:
            engine.run_task(task)
        assert after.rows == [(restored, False)]
