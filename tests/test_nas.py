"""Head-cell search: genotype files, discretisation, relaxations, the supernet / discrete-cell
agreement, and the search end to end (CLI and as the learner's head)."""

import json

import pytest
import torch

from cml.cli import main
from cml.config import load_config
from cml.encoder import build_encoder, load_tokenizer
from cml.errors import CMLInputError
from cml.nas.cell import DiscreteCell, SuperCell, discretize
from cml.nas.genotype import Edge, Genotype
from cml.nas.relax import Relaxation
from cml.nas.search import Features, SearchConfig, search
from cml.runner import build_model


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def genotype_file(tmp_path, nodes, width=8):
    path = tmp_path / "genotype.json"
    path.write_text(json.dumps({"width": width, "nodes": nodes}))
    return path


def test_genotype_round_trips_through_its_file(tmp_path):
    g = Genotype(((Edge(0, "linear"), Edge(1, "skip")), (Edge(2, "glu"), Edge(0, "linear_tanh"))), 16)
    g.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == g
    assert g.histogram() == {"linear": 1, "skip": 1, "glu": 1, "linear_tanh": 1}


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([{"node": 2, "edges": [{"from": 0, "op": "conv3x3"}]}], "node 2: unknown op 'conv3x3'"),
        ([{"node": 2, "edges": [{"from": 0, "op": "none"}]}], "unknown op 'none'"),
        ([{"node": 2, "edges": [{"from": 3, "op": "linear"}]}], "node 2: edge from node 3, which is not before it"),
        ([{"node": 2, "edges": [{"from": 2, "op": "linear"}]}], "edge from node 2, which is not before it"),
        ([{"node": 3, "edges": [{"from": 0, "op": "linear"}]}], "entry 0 of nodes must be node 2"),
        ([{"node": 2, "edges": []}], "node 2 has no edges"),
    ],
)
def test_bad_genotype_is_a_clear_error_naming_the_file(tmp_path, nodes, message):
    path = genotype_file(tmp_path, nodes)
    with pytest.raises(CMLInputError, match=message) as error:
        Genotype.load(path)
    assert str(path) in str(error.value)


def test_bad_genotype_as_head_exits_2_with_one_line(tmp_path, capsys):
    path = genotype_file(tmp_path, [{"node": 2, "edges": [{"from": 5, "op": "linear"}]}])
    code = main(["--dataset", "demo", "--encoder", "tiny", "--head", str(path), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not before it" in err and str(path) in err


def test_discretize_keeps_the_two_strongest_edges_and_their_best_real_op():
    cell = SuperCell(in_dim=4, width=3, n_nodes=2)
    ops = list(cell.ops)
    probs = torch.full((len(cell.edges), len(ops)), 0.01)

    def put(i, j, op, p):
        probs[cell.row[(i, j)], ops.index(op)] = p

    put(0, 2, "none", 0.9)  # the strongest entry is `none`: ignored, the real op below counts
    put(0, 2, "glu", 0.05)
    put(1, 2, "linear", 0.5)
    put(0, 3, "skip", 0.6)
    put(1, 3, "linear_relu", 0.2)
    put(2, 3, "layernorm_linear", 0.7)
    g = discretize(probs, cell)
    assert g.nodes == ((Edge(0, "glu"), Edge(1, "linear")), (Edge(0, "skip"), Edge(2, "layernorm_linear")))


def test_supernet_with_one_hot_mixing_computes_the_discrete_cell():
    torch.manual_seed(0)
    cell = SuperCell(in_dim=10, width=6, n_nodes=3)
    genotype = Genotype(
        (
            (Edge(0, "linear_gelu"), Edge(1, "glu")),
            (Edge(0, "skip"), Edge(2, "layernorm_linear")),
            (Edge(3, "linear_tanh"), Edge(1, "linear")),
        ),
        6,
    )
    discrete = DiscreteCell(genotype, in_dim=10)
    discrete.inputs.load_state_dict(cell.inputs.state_dict())
    mixing = torch.zeros(len(cell.edges), len(cell.ops))
    for k, node in enumerate(genotype.nodes):
        for e, edge in enumerate(node):
            r, o = cell.row[(edge.source, k + 2)], cell.ops.index(edge.op)
            mixing[r, o] = 1.0
            discrete.node_ops[k][e].load_state_dict(cell.mixed[r][o].state_dict())
    x = torch.randn(5, 10)
    assert torch.allclose(cell(x, mixing), discrete(x), atol=1e-6)
    assert discrete(x).shape == (5, discrete.out_dim) == (5, 18)


def test_temperature_schedules():
    sparse = Relaxation("sparse", total_steps=11, tau0=1.0, tau_min=0.01)
    assert sparse.temperature(0) == pytest.approx(1.0)
    assert sparse.temperature(5) == pytest.approx(0.1)  # tau0 (tau_min / tau0)^(1/2)
    assert sparse.temperature(10) == pytest.approx(0.01)
    gumbel = Relaxation("gumbel", total_steps=11, tau0=2.0, tau_min=0.5)
    assert [gumbel.temperature(t) for t in (0, 5, 10)] == pytest.approx([2.0, 1.25, 0.5])
    alpha = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(Relaxation("softmax").mixing(0, alpha.shape)(alpha), alpha.softmax(-1))
    for name in ("gumbel", "sparse"):
        mix = Relaxation(name, total_steps=11, seed=1).mixing(3, alpha.shape)
        assert torch.equal(mix(alpha), mix(alpha))  # noise drawn once per step
        assert torch.allclose(mix(alpha).sum(-1), torch.ones(1))
    cold = Relaxation("sparse", total_steps=11, tau_min=0.01).mixing(10, alpha.shape, noisy=False)(alpha)
    assert torch.allclose(cold, (alpha / 0.01).softmax(-1))
    assert float(cold[0, 0]) > 0.99  # small temperature: close to the discrete choice


def separable(seed, n_per_class=40, classes=3, dim=12, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    centres = spread * torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return Features(centres[y] + torch.randn(len(y), dim, generator=g), y)


@pytest.mark.parametrize("method, relaxation", [("darts1", "softmax"), ("darts2", "gumbel"), ("idarts", "sparse")])
def test_search_learns_the_task_and_moves_alpha(method, relaxation):
    """Classes 10 noise widths apart: every head separates them, so the supernet must too."""
    data = {name: separable(seed, spread=30.0) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(
        method=method, relaxation=relaxation, nodes=2, width=8, steps=40, batch_size=32, eval_every=10
    )
    result = search(data, config, seed=0, progress=False)
    assert [h["step"] for h in result.history] == [10, 20, 30, 40] and result.history[-1]["val_accuracy"] == 1.0
    assert result.probabilities.shape == (5, len(result.ops))
    assert not torch.allclose(result.probabilities, torch.full_like(result.probabilities, 1 / len(result.ops)))
    assert result.genotype == discretize(result.probabilities, SuperCell(12, 8, 2))  # the cell of the final alpha


def test_search_stops_early_when_skip_edges_take_over():
    data = {"train": separable(0), "val": separable(1), "test": separable(2)}
    config = SearchConfig(nodes=2, width=8, steps=40, batch_size=32, eval_every=5, skip_limit=0)
    result = search(data, config, seed=0, progress=False)
    assert result.stopped_early and result.history[-1]["step"] == 5


def test_search_head_cli_writes_genotype_and_report_and_the_learner_uses_it(tmp_path):
    out = tmp_path / "search"
    args = ["--dataset", "demo", "--encoder", "tiny", "--max-per-relation", "12", "--seed", "3"]
    assert main([*args, "--search-head", "--nas-method", "darts1", "--search-steps", "20", "--output", str(out)]) == 0
    report = json.loads((out / "search.json").read_text())
    genotype = Genotype.load(out / "genotype.json")
    assert report["genotype"] == genotype.to_dict()
    assert report["examples"] == {"train": 4 * 12, "val": 4 * 10, "test": 4 * 20}  # task 0: 4 relations
    in_dim = 2 * build_encoder("tiny")[1].backbone.config.hidden_size  # [E11] and [E21] states
    width = in_dim // 2
    assert report["heads"]["linear"]["parameters"] == in_dim * width + width
    assert report["heads"]["mlp"]["parameters"] == (in_dim * width + width) + (width * width + width)
    assert report["heads"]["searched cell"]["parameters"] == sum(
        p.numel() for p in DiscreteCell(genotype, in_dim).parameters()
    )
    assert (out / "alpha_heatmap.png").stat().st_size > 0 and (out / "search_accuracy.png").stat().st_size > 0
    assert main([*args, "--search-head", "--output", str(out)]) == 2  # will not overwrite a search

    run_args = [*args, "--orders", "1", "--epochs", "1", "--method", "cml", "--freeze-layers", "1"]
    assert main([*run_args, "--head", str(out / "genotype.json"), "--output", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["task_size"] for r in rows] == [[80] * (k + 1) for k in range(5)]  # class-incremental, 4 x 20 test
    config = load_config(tmp_path / "run" / "config.yaml")
    model = build_model(config, load_tokenizer("tiny"), n_relations=20)
    assert isinstance(model.head, DiscreteCell) and model.head.genotype == genotype


def test_same_seed_same_search():
    data = {"train": separable(0), "val": separable(1), "test": separable(2)}
    config = SearchConfig(method="darts2", relaxation="gumbel", nodes=2, width=8, steps=15, batch_size=32, eval_every=5)
    first, second = search(data, config, seed=4, progress=False), search(data, config, seed=4, progress=False)
    assert torch.equal(first.probabilities, second.probabilities) and first.history == second.history
    assert not torch.equal(first.probabilities, search(data, config, seed=5, progress=False).probabilities)
