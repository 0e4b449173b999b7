"""Single-path one-shot training (SPOS), gradual modification and the alignment loss, against
brute-force counts and hand computations."""

import copy
import itertools
from collections import Counter

import pytest
import torch
from torch import nn

from cml.nas.cell import SuperCell, one_hot_mixing
from cml.nas.genotype import Edge, Genotype
from cml.nas.oneshot import OneShot, differing_ops, neighbour, random_cell
from cml.nas.supernet import Features, SearchModel


def test_random_cells_are_valid_and_uniform_over_the_discretised_space():
    cell = SuperCell(in_dim=4, width=3, n_nodes=3)
    generator = torch.Generator().manual_seed(0)
    ops, sources = Counter(), Counter()
    draws = 7000
    for _ in range(draws):
        g = random_cell(cell, 2, generator)
        for k, node in enumerate(g.nodes):
            assert len({e.source for e in node}) == 2 and all(e.source < k + 2 for e in node)
            assert all(e.op != "none" for e in node)
            ops.update(e.op for e in node)
        sources[tuple(e.source for e in g.nodes[2])] += 1  # node 4: 2 of 4 earlier nodes, 6 sets
    real = [o for o in cell.ops if o != "none"]
    assert set(ops) == set(real)
    assert all(abs(n / (draws * 6) - 1 / len(real)) < 0.01 for n in ops.values())
    assert set(sources) == set(itertools.combinations(range(4), 2))
    assert all(abs(n / draws - 1 / 6) < 0.02 for n in sources.values())


def test_differing_ops_counts_the_choices_one_cell_lacks():
    a = Genotype(((Edge(0, "linear"), Edge(1, "glu")), (Edge(0, "skip"), Edge(2, "linear"))), 3)
    b = Genotype(((Edge(0, "linear"), Edge(1, "skip")), (Edge(1, "skip"), Edge(2, "linear"))), 3)
    assert differing_ops(a, a) == 0 and differing_ops(a, b) == 2 == differing_ops(b, a)


def test_a_gradual_step_changes_exactly_one_edge_and_reaches_new_sources():
    cell = SuperCell(in_dim=4, width=3, n_nodes=3)
    generator = torch.Generator().manual_seed(1)
    g = random_cell(cell, 2, generator)
    seen_sources = {tuple(e.source for node in g.nodes for e in node)}
    for _ in range(300):
        nxt = neighbour(g, cell, generator)
        assert differing_ops(g, nxt) == 1 and differing_ops(nxt, g) == 1
        assert all(len({e.source for e in node}) == len(node) == 2 for node in nxt.nodes)
        g = nxt
        seen_sources.add(tuple(e.source for node in g.nodes for e in node))
    assert len(seen_sources) > 5  # the topology moves too, not only the ops


def test_a_sparse_forward_is_the_dense_one_running_only_the_kept_ops():
    torch.manual_seed(0)
    cell = SuperCell(in_dim=8, width=5, n_nodes=3)
    g = random_cell(cell, 2, torch.Generator().manual_seed(2))
    mixing, x = one_hot_mixing(g, cell), torch.randn(6, 8)
    calls = []
    for r, ops in enumerate(cell.mixed):
        for o, op in enumerate(ops):
            op.register_forward_hook(lambda *_, r=r, o=o: calls.append((r, o)))
    sparse = cell(x, mixing, sparse=True)
    assert sorted(calls) == sorted(map(tuple, mixing.nonzero().tolist()))
    assert torch.allclose(sparse, cell(x, mixing), atol=1e-6)


def test_a_one_shot_step_trains_only_the_child_and_adds_the_alignment_loss():
    torch.manual_seed(0)
    model = SearchModel(8, 3, 5, 2)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    trainer = OneShot(model, alignment=0.5, seed=4)
    child = random_cell(model.cell, 2, torch.Generator().manual_seed(4))  # the trainer's first draw
    before = copy.deepcopy(model)
    with torch.no_grad():
        states = before.cell(x, one_hot_mixing(child, before.cell))
        real = torch.tensor([o != "none" for o in before.cell.ops], dtype=torch.float)
        teacher = before.cell(x, (real / real.sum()).expand(len(before.cell.edges), -1))
        expected = nn.functional.cross_entropy(before.classifier(states), y) + 0.5 * ((states - teacher) ** 2).mean()
    assert trainer.step(iter([(x, y)])) == pytest.approx(float(expected))
    assert trainer.current == child
    kept = {
        (model.cell.row[(e.source, k + 2)], model.cell.ops.index(e.op))
        for k, node in enumerate(child.nodes)
        for e in node
    }
    for r, ops in enumerate(model.cell.mixed):
        for o, op in enumerate(ops):
            moved = any(not torch.equal(p, q) for p, q in zip(op.parameters(), before.cell.mixed[r][o].parameters()))
            assert moved == ((r, o) in kept and any(True for _ in op.parameters())), (r, o)


def test_one_shot_training_makes_the_cells_it_trains_score_far_above_chance():
    """Uniform sampling trains the whole space, so any cell scores; gradual modification walks a
    neighbourhood in 150 steps, so the cell it ends on does."""
    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 8, generator=g)
    y = torch.arange(3).repeat_interleave(60)
    train = Features(centres[y] + torch.randn(180, 8, generator=g), y)
    val = Features(centres[y] + torch.randn(180, 8, generator=g), y)
    for sampling in ("uniform", "gradual"):
        torch.manual_seed(0)
        trainer = OneShot(SearchModel(8, 3, 8, 2), sampling=sampling, seed=0)
        stream = train.stream(32, torch.Generator().manual_seed(0))
        for _ in range(150):
            trainer.step(stream)
        if sampling == "uniform":
            cells = [random_cell(trainer.model.cell, 2, torch.Generator().manual_seed(s)) for s in range(5)]
        else:
            cells = [trainer.current]
        scores = [trainer.score(c, val) for c in cells]
        assert min(scores) > 0.8, (sampling, scores)
