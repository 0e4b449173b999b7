"""Head-cell search: genotype files, discretisation, relaxations, the supernet / discrete-cell
agreement, and the search end to end (CLI and as the learner's head)."""

import itertools
import json
import math
from dataclasses import replace

import pytest
import torch

from cml.cli import main
from cml.config import load_config
from cml.encoder import build_encoder, load_tokenizer
from cml.errors import CMLInputError
from cml.nas.cell import DiscreteCell, SuperCell, discretize
from cml.nas.genotype import Edge, Genotype
from cml.nas.relax import Relaxation
from cml.nas.search import DartsSearch, Features, SearchConfig, SearchModel, search
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
    g = discretize(probs.log(), cell)
    assert g.nodes == ((Edge(0, "glu"), Edge(1, "linear")), (Edge(0, "skip"), Edge(2, "layernorm_linear")))


def discrete_with_weights_of(cell: SuperCell, genotype: Genotype, in_dim: int) -> DiscreteCell:
    """`genotype`'s discrete cell holding the supernet's weights of its inputs and kept ops."""
    discrete = DiscreteCell(genotype, in_dim)
    discrete.inputs.load_state_dict(cell.inputs.state_dict())
    for k, node in enumerate(genotype.nodes):
        for e, edge in enumerate(node):
            op = cell.mixed[cell.row[(edge.source, k + 2)]][cell.ops.index(edge.op)]
            discrete.node_ops[k][e].load_state_dict(op.state_dict())
    return discrete


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
    discrete = discrete_with_weights_of(cell, genotype, in_dim=10)
    mixing = torch.zeros(len(cell.edges), len(cell.ops))
    for k, node in enumerate(genotype.nodes):
        for edge in node:
            mixing[cell.row[(edge.source, k + 2)], cell.ops.index(edge.op)] = 1.0
    x = torch.randn(5, 10)
    assert torch.allclose(cell(x, mixing), discrete(x), atol=1e-6)
    assert discrete(x).shape == (5, discrete.out_dim) == (5, 18)


def test_temperature_schedules():
    sparse = Relaxation("sparse", total_steps=11, tau0=1.0, tau_min=0.01)
    assert sparse.temperature(0) == pytest.approx(1.0)
    assert sparse.temperature(5) == pytest.approx(0.1)  # tau0 (tau_min / tau0)^(1/2)
    assert sparse.temperature(10) == pytest.approx(0.01)
    snas = Relaxation("snas", total_steps=11, tau0=2.0, tau_min=0.5)
    assert [snas.temperature(t) for t in (0, 5, 10)] == pytest.approx([2.0, 1.25, 0.5])
    published = {name: Relaxation(name, total_steps=11) for name in ("softmax", "snas", "gdas", "sparse", "mixed")}
    ends = [t for r in published.values() for t in (r.temperature(0), r.temperature(10))]
    assert ends == pytest.approx([1.0, 1.0, 1.0, 0.05, 10.0, 0.1, 1.0, 0.05, 0.01, 0.001])
    alpha = torch.tensor([[2.0, 0.0, -1.0]])
    assert torch.allclose(Relaxation("softmax").mixing(0, alpha.shape)(alpha), alpha.softmax(-1))
    for name in ("snas", "gdas", "sparse"):
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


@pytest.mark.parametrize(
    "method, relaxation, steps",
    [("darts1", "softmax", 40), ("darts2", "snas", 40), ("idarts", "sparse", 40), ("darts1", "gdas", 100)],
)
def test_search_learns_the_task_and_moves_alpha(method, relaxation, steps):
    """Classes 10 noise widths apart: every head separates them, so the supernet must too (gdas,
    one sampled op per edge from tau 10 down, needs more steps to have trained every op it draws)."""
    data = {name: separable(seed, spread=30.0) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(
        method=method, relaxation=relaxation, nodes=2, width=8, steps=steps, batch_size=32, eval_every=steps // 4
    )
    result = search(data, config, seed=0, progress=False)
    assert [h["step"] for h in result.history] == [steps // 4 * k for k in (1, 2, 3, 4)]
    assert result.history[-1]["val_accuracy"] == 1.0
    assert result.probabilities.shape == (5, len(result.ops))
    assert not torch.allclose(result.probabilities, torch.full_like(result.probabilities, 1 / len(result.ops)))
    assert result.genotype == discretize(result.probabilities.log(), SuperCell(12, 8, 2))  # the cell of the final alpha
    last = result.history[-1]
    assert last["val_accuracy_discretised"] == last["val_accuracy"] - result.discretisation_gap
    if relaxation == "softmax":
        assert last["val_accuracy"] == last["val_accuracy_noise_free"]


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
    last = report["history"][-1]
    assert report["supernet"] == {
        "as_trained": last["val_accuracy"],
        "noise_free": last["val_accuracy_noise_free"],
        "discretised": last["val_accuracy_discretised"],
    }
    assert report["discretisation_gap"] == pytest.approx(last["val_accuracy"] - last["val_accuracy_discretised"])
    assert "discretisation gap" in (out / "search.md").read_text()
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

    run_args = [*args, "--orders", "1", "--epochs", "1", "--consolidate-epochs", "1", "--method", "cml"]
    run_args += ["--freeze-layers", "1", "--plots", "none"]
    assert main([*run_args, "--head", str(out / "genotype.json"), "--output", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["task_size"] for r in rows] == [[80] * (k + 1) for k in range(5)]  # class-incremental, 4 x 20 test
    config = load_config(tmp_path / "run" / "config.yaml")
    model = build_model(config, load_tokenizer("tiny"), n_relations=20)
    assert isinstance(model.head, DiscreteCell) and model.head.genotype == genotype


def test_same_seed_same_search():
    data = {"train": separable(0), "val": separable(1), "test": separable(2)}
    config = SearchConfig(method="darts2", relaxation="snas", nodes=2, width=8, steps=15, batch_size=32, eval_every=5)
    first, second = search(data, config, seed=4, progress=False), search(data, config, seed=4, progress=False)
    assert torch.equal(first.probabilities, second.probabilities) and first.history == second.history
    assert not torch.equal(first.probabilities, search(data, config, seed=5, progress=False).probabilities)


@pytest.mark.parametrize("name", ["sparse", "mixed"])
def test_sparse_noise_on_the_logits_stays_the_same_as_the_temperature_falls(name):
    """(alpha + n_t) / tau_t with std(n_t) = noise tau_t: the difference of two ops' log weights
    minus that of alpha has std sqrt(2) noise at every step (unannealed, it was sqrt(2) noise /
    tau_t, 8.5 at tau 0.05)."""
    relaxation = Relaxation(name, total_steps=11, noise=0.3, seed=0)
    alpha = torch.zeros(20000, 2)
    for step in (0, 5, 10):
        logs = relaxation.mixing(step, alpha.shape)(alpha).log()
        assert float((logs[:, 0] - logs[:, 1]).std()) == pytest.approx(2**0.5 * 0.3, rel=0.03)


def test_gdas_is_one_hot_forward_and_the_soft_sample_backward():
    alpha = torch.randn(6, 5, requires_grad=True)
    hard = Relaxation("gdas", total_steps=3, seed=7).mixing(1, alpha.shape)
    soft = Relaxation("snas", total_steps=3, tau0=10.0, tau_min=0.1, seed=7).mixing(1, alpha.shape)  # same draw
    assert set(hard(alpha).detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard(alpha).argmax(-1), soft(alpha).argmax(-1)) and torch.equal(
        hard(alpha).sum(-1), torch.ones(6)
    )
    c = torch.randn(6, 5)
    (g_hard,) = torch.autograd.grad((c * hard(alpha)).sum(), alpha)
    (g_soft,) = torch.autograd.grad((c * soft(alpha)).sum(), alpha)
    assert torch.allclose(g_hard, g_soft)


def test_the_genotype_is_read_at_the_temperature_the_supernet_trained_at():
    """Node 3 keeps 2 of its 3 edges by their strongest op. At tau 1: (0, 3) 0.51 and (1, 3) 0.45
    beat (2, 3) 0.39; at tau 0.05 (0, 3) and (2, 3) are about 1 and (1, 3), whose best op has a
    close second, 0.88."""
    cell = SuperCell(in_dim=4, width=3, n_nodes=2)
    alpha = torch.zeros(len(cell.edges), len(cell.ops))
    linear, glu = cell.ops.index("linear"), cell.ops.index("glu")
    alpha[cell.row[(0, 3)], linear] = 2.0
    alpha[cell.row[(1, 3)], linear], alpha[cell.row[(1, 3)], glu] = 3.0, 2.9
    alpha[cell.row[(2, 3)], linear] = 1.5
    relaxation = Relaxation("sparse", total_steps=11)
    sources = [[e.source for e in node] for node in discretize(alpha / relaxation.temperature(0), cell).nodes]
    assert sources[1] == [0, 1]
    sources = [[e.source for e in node] for node in discretize(alpha / relaxation.temperature(10), cell).nodes]
    assert sources[1] == [0, 2]

    data = {name: separable(seed) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(relaxation="sparse", method="darts1", nodes=2, width=8, steps=6, batch_size=32)
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config)
    stream = data["train"].stream(32, torch.Generator().manual_seed(0))
    for _ in range(6):
        searcher.step(stream, stream)
    tau = searcher.relaxation.temperature(5)
    assert tau == pytest.approx(0.05)
    assert torch.allclose(searcher.probabilities(), (searcher.arch.alpha.detach() / tau).softmax(-1))


def test_the_supernet_is_scored_as_trained_noise_free_and_cut_to_its_genotype():
    """The discretised score against the discrete cell built from the supernet's weights; the
    as-trained score against the noisy mixing drawn by hand, batch by batch, from the stream the
    search validates with."""
    data = {name: separable(seed) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(relaxation="sparse", method="darts1", nodes=2, width=8, steps=10, batch_size=32)
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config, seed=3)
    stream = data["train"].stream(32, torch.Generator().manual_seed(0))
    for _ in range(4):
        searcher.step(stream, stream)
    scores = searcher.val_accuracy(data["val"])

    model, alpha = searcher.model, searcher.arch.alpha.detach()
    genotype = searcher.get_final_architecture()
    discrete = discrete_with_weights_of(model.cell, genotype, in_dim=12)
    with torch.no_grad():
        cut = model.classifier(discrete(data["val"].x)).argmax(-1)
        noise = torch.Generator().manual_seed(3 + 1)
        mixing = searcher.relaxation.mixing(3, alpha.shape, generator=noise)(alpha)  # one batch: 120 < 1024
        trained = model(data["val"].x, mixing).argmax(-1)
        clean = model(data["val"].x, (alpha / searcher.relaxation.temperature(3)).softmax(-1)).argmax(-1)
    y = data["val"].y
    assert scores["discretised"] == pytest.approx(float((cut == y).double().mean()))
    assert scores["as_trained"] == pytest.approx(float((trained == y).double().mean()))
    assert scores["noise_free"] == pytest.approx(float((clean == y).double().mean()))


@pytest.mark.parametrize("method, inner, batches", [("darts1", None, 1), ("idarts", None, 5), ("darts2", 3, 3)])
def test_each_architecture_step_takes_its_weight_steps(method, inner, batches):
    """idarts takes 5 weight steps per architecture step by default, the others 1; each weight
    step after the first draws a new training batch."""
    data = separable(0)
    drawn = []

    def counted():
        for batch in data.stream(32, torch.Generator().manual_seed(0)):
            drawn.append(1)
            yield batch

    config = SearchConfig(method=method, inner_steps=inner, nodes=2, width=8, steps=2, batch_size=32)
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config)
    train, val = counted(), data.stream(32, torch.Generator().manual_seed(1))
    before = {n: p.detach().clone() for n, p in searcher.model.named_parameters()}
    searcher.step(train, val)
    assert len(drawn) == batches
    assert any(not torch.equal(before[n], p) for n, p in searcher.model.named_parameters())


def test_idarts_history_gives_the_eigenvalue_and_the_gamma_it_used():
    data = {name: separable(seed) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(method="idarts", nodes=2, width=8, steps=10, batch_size=32, eval_every=5)
    result = search(data, config, seed=0, progress=False)
    for h in result.history:
        assert h["lambda_max"] > 0 and h["gamma"] == pytest.approx(0.9 / h["lambda_max"], rel=1e-4)


@pytest.mark.parametrize("policy", ["edges", "pairs", "nodewise"])
@pytest.mark.parametrize("keep", [1, 2, 3])
def test_each_discretisation_policy_keeps_what_a_brute_force_search_keeps(policy, keep):
    """Per node, every subset of `keep` candidates (edges, or edge-op pairs) scored by brute
    force: the policy's choice is the subset with the largest total score."""
    cell = SuperCell(in_dim=4, width=3, n_nodes=3)
    logits = torch.randn(len(cell.edges), len(cell.ops), generator=torch.Generator().manual_seed(keep))
    usable = [o for o, name in enumerate(cell.ops) if name != "none"]
    probs = logits.softmax(-1)
    genotype = discretize(logits, cell, keep, policy)
    for k, node in enumerate(genotype.nodes):
        j = k + 2
        if policy == "pairs":
            candidates = [((i, o), float(probs[cell.row[(i, j)], o])) for i in range(j) for o in usable]
        else:
            score = probs if policy == "edges" else logits  # nodewise: a softmax over the node ranks as the logits
            candidates = []
            for i in range(j):
                o = max(usable, key=lambda o: float(score[cell.row[(i, j)], o]))
                candidates.append(((i, o), float(score[cell.row[(i, j)], o])))
        best = max(itertools.combinations(candidates, min(keep, len(candidates))), key=lambda c: sum(s for _, s in c))
        assert sorted((e.source, cell.ops.index(e.op)) for e in node) == sorted(c for c, _ in best)


def test_mixed_sparsity_draws_the_smaller_temperature_ever_more_often():
    relaxation = Relaxation("mixed", total_steps=1001, seed=3)
    taus = [relaxation.temperature(t) for t in range(1001)]
    assert set(taus) == {0.01, 0.001} and taus == [relaxation.temperature(t) for t in range(1001)]
    share = [sum(tau == 0.001 for tau in taus[k : k + 100]) / 100 for k in range(0, 1000, 100)]
    assert share[0] < 0.2 and share[-1] > 0.8 and sum(share[:5]) < sum(share[5:])
    assert abs(sum(tau == 0.001 for tau in taus) / 1001 - 0.5) < 0.05  # P(smaller) = t / T on average 1/2


@pytest.mark.parametrize("schedule, falls", [("constant", None), ("cosine", "w"), ("swap", "alpha")])
def test_learning_rate_schedules_and_their_swap(schedule, falls):
    """cosine: the weights' rate follows lr (1 + cos(pi t / T)) / 2 and alpha's stays; swap: the
    other way round."""
    data = separable(0)
    config = SearchConfig(method="darts1", lr_schedule=schedule, nodes=2, width=8, steps=4, batch_size=32)
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config)
    stream = data.stream(32, torch.Generator().manual_seed(0))
    rates = {"w": [], "alpha": []}
    for _ in range(4):
        rates["w"].append(searcher.w_optimizer.param_groups[0]["lr"])
        rates["alpha"].append(searcher.alpha_optimizer.param_groups[0]["lr"])
        searcher.step(stream, stream)
    base = {"w": config.w_lr, "alpha": config.alpha_lr}
    for name, seen in rates.items():
        expected = [base[name] * (1 + math.cos(math.pi * t / 4)) / 2 if name == falls else base[name] for t in range(4)]
        assert seen == pytest.approx(expected)


def test_warm_up_trains_the_weights_and_leaves_alpha():
    data = {name: separable(seed) for name, seed in (("train", 0), ("val", 1), ("test", 2))}
    config = SearchConfig(method="darts1", nodes=2, width=8, steps=1, warmup=30, batch_size=32)
    warmed = search(data, config, seed=0, progress=False)
    cold = search(data, replace(config, warmup=0), seed=0, progress=False)
    assert warmed.history[-1]["train_loss"] < cold.history[-1]["train_loss"]
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config)
    before = searcher.arch.alpha.detach().clone()
    searcher.weight_step(next(data["train"].stream(32, torch.Generator().manual_seed(0))))
    assert torch.equal(searcher.arch.alpha.detach(), before) and searcher.t == 0
