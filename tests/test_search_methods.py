"""The search's entropy-adaptive temperature, its selective stop from the ops' output magnitudes,
single-path one-shot as a search method, and the options each applies to: against independent
computations (scipy's entropy, forward hooks, brute force over the pool) and hand-worked cases."""

import json
import math

import pytest
import torch
from scipy.stats import entropy

from cml.cli import main
from cml.nas.cell import SuperCell, one_hot_mixing
from cml.nas.oneshot import OneShot
from cml.nas.relax import Relaxation
from cml.nas.search import DartsSearch, SearchConfig, SelectiveStop, search
from cml.nas.supernet import Features, SearchModel, accuracy


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def separable(seed: int, n_per_class: int = 40, classes: int = 3, dim: int = 12, spread: float = 8.0) -> Features:
    g = torch.Generator().manual_seed(100)
    centres = spread * torch.randn(classes, dim, generator=g)
    g.manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return Features(centres[y] + torch.randn(len(y), dim, generator=g), y)


def data() -> dict[str, Features]:
    return {name: separable(seed) for name, seed in (("train", 0), ("val", 1), ("test", 2))}


def mean_normalised_entropy(logits: torch.Tensor) -> float:
    p = logits.double().softmax(-1).numpy()
    return float(entropy(p, axis=-1).mean() / math.log(p.shape[-1]))


def test_the_adaptive_temperature_puts_the_edges_at_the_scheduled_entropy():
    relaxation = Relaxation("adaptive", total_steps=11, entropy_end=0.1)
    alpha = 3 * torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    for step in range(11):
        relaxation.adapt(step, alpha)
        target = 1 + (0.1 - 1) * step / 10
        tau = relaxation.temperature(step)
        if 0.05 < tau < 1:
            assert mean_normalised_entropy(alpha / tau) == pytest.approx(target, abs=1e-6)
        else:  # clamped: the target lies beyond what [tau_min, tau0] can reach
            assert (tau == pytest.approx(1.0) and mean_normalised_entropy(alpha) <= target) or (
                tau == pytest.approx(0.05) and mean_normalised_entropy(alpha / 0.05) >= target
            )
    assert relaxation.temperature(0) == pytest.approx(1.0)  # a target of 1 is above any non-flat alpha
    assert relaxation.temperature(3) > relaxation.temperature(7)


def test_a_flatter_alpha_gets_a_smaller_temperature_for_the_same_target():
    """The point of adapting: the same sparsity needs a smaller tau where alpha is flatter."""
    alpha = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    taus = []
    for scale in (0.5, 2.0):
        relaxation = Relaxation("adaptive", total_steps=2, entropy_end=0.5)
        relaxation.adapt(0, scale * alpha)
        relaxation.adapt(1, scale * alpha)
        taus.append(relaxation.temperature(1))
    assert taus[0] == pytest.approx(taus[1] / 4, rel=1e-4)  # entropy depends on alpha / tau only
    with pytest.raises(ValueError, match="in order"):
        relaxation.adapt(3, alpha)


def test_the_op_magnitudes_are_the_weighted_outputs_rms_seen_by_hooks():
    torch.manual_seed(0)
    cell = SuperCell(in_dim=8, width=5, n_nodes=2)
    weights = torch.rand(len(cell.edges), len(cell.ops))
    x = torch.randn(30, 8)
    seen = {}
    hooks = [
        op.register_forward_hook(lambda m, i, out, key=(r, o): seen.__setitem__(key, out.detach()))
        for r, ops in enumerate(cell.mixed)
        for o, op in enumerate(ops)
    ]
    magnitudes = torch.zeros(len(cell.edges), len(cell.ops))
    cell(x, weights, magnitudes=magnitudes)
    for hook in hooks:
        hook.remove()
    for r in range(len(cell.edges)):
        for o, name in enumerate(cell.ops):
            expected = 0.0 if name == "none" else float((weights[r, o] * seen[(r, o)]).pow(2).mean().sqrt())
            assert float(magnitudes[r, o]) == pytest.approx(expected, rel=1e-5)


def test_selective_stop_by_hand():
    """Three edges, patience 2: edge 0 leads with op 1 throughout, edge 1 changes leader at the
    second check, edge 2 never holds its leader."""
    stop = SelectiveStop(patience=2)
    leaders = [[1, 0, 0], [1, 2, 1], [1, 2, 0], [1, 2, 1]]
    expected = [[False] * 3, [False] * 3, [True, False, False], [True, True, False]]
    for lead, stopped in zip(leaders, expected):
        stop.update(torch.nn.functional.one_hot(torch.tensor(lead), 3).float())
        assert stop.stopped.tolist() == stopped
    assert not stop.finished
    alpha, before = torch.zeros(3, 3), torch.ones(3, 3)
    stop.hold(alpha, before)
    assert alpha.tolist() == [[1.0] * 3, [1.0] * 3, [0.0] * 3]


def test_stopped_edges_keep_their_alpha_and_the_search_ends_when_all_have_stopped():
    config = SearchConfig(method="darts1", nodes=2, width=8, steps=200, batch_size=32, eval_every=2, stop_patience=1)
    searcher = DartsSearch(SearchModel(12, 3, config.width, config.nodes), config)
    features = data()
    stream = features["train"].stream(32, torch.Generator().manual_seed(0))
    held = None
    for t in range(200):
        searcher.step(stream, stream)
        if held is not None:
            stopped, rows = held
            assert torch.equal(searcher.arch.alpha.detach()[stopped], rows)
        if (t + 1) % 2 == 0:
            entry = searcher.check(features["val"])
            assert len(entry["op_magnitude"]) == 5 and entry["stopped_edges"] == int(searcher.stop.stopped.sum())
            held = (searcher.stop.stopped.clone(), searcher.arch.alpha.detach()[searcher.stop.stopped].clone())
            if searcher.finished:
                break
    assert searcher.finished  # op leaders settle on this easy task
    result = search(features, config, seed=0, progress=False)
    assert result.stopped_early and result.history[-1]["stopped_edges"] == 5 and result.history[-1]["step"] < 200


def test_spos_search_picks_the_pools_best_cell_and_counts_what_it_trained():
    features = data()
    config = SearchConfig(method="spos", nodes=3, width=8, steps=60, batch_size=32, eval_every=20, candidates=12)
    result = search(features, config, seed=0, progress=False)
    assert result.table == "share of the steps each op trained on each edge"
    kept = sum(len(node) for node in result.genotype.nodes)  # every child keeps 2 + 2 + 2 edges
    assert kept == 6 and float(result.probabilities.sum()) == pytest.approx(6.0)
    assert float(result.probabilities[:, result.ops.index("none")].sum()) == 0.0

    # brute force: retrain the same supernet, then score every cell of the same pool by hand
    torch.manual_seed(0)
    trainer = OneShot(SearchModel(12, 3, 8, 3), keep=2, lr=config.w_lr, seed=0, candidates=12, val=features["val"])
    generator = torch.Generator().manual_seed(0)
    stream = features["train"].stream(32, generator)
    for _ in range(60):
        trainer.step(stream)
    model = trainer.model.eval()
    scores = [accuracy(lambda x, g=g: model(x, one_hot_mixing(g, model.cell)), features["val"]) for g in trainer.pool]
    assert result.genotype == trainer.pool[scores.index(max(scores))]
    last = result.history[-1]
    assert last["val_accuracy"] == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert last["val_accuracy_discretised"] == pytest.approx(max(scores), abs=1e-6)
    assert "val_accuracy_noise_free" not in last and max(scores) > 0.9


@pytest.mark.parametrize(
    "options, message",
    [
        ({"method": "spos", "relaxation": "sparse"}, "search.relaxation is 'sparse', but it applies to the DARTS"),
        ({"method": "darts1", "sampling": "gradual"}, "search.sampling is 'gradual', but it applies to spos only"),
        ({"method": "darts2", "neumann_terms": 3}, "search.neumann_terms is 3, but it applies to idarts only"),
        ({"relaxation": "sparse", "entropy_end": 0.2}, "applies to the adaptive relaxation only"),
        ({"method": "spos", "stop_patience": 3}, "search.stop_patience is 3"),
    ],
)
def test_an_option_the_method_does_not_use_is_refused(options, message):
    assert message in SearchConfig(**options).problem()
    assert SearchConfig(method="spos", sampling="gradual", alignment=0.5).problem() is None
    assert SearchConfig(method="idarts", relaxation="adaptive", entropy_end=0.2, stop_patience=2).problem() is None


def test_spos_from_the_command_line_and_a_refused_combination_writes_nothing(tmp_path, capsys):
    args = ["--dataset", "demo", "--encoder", "tiny", "--max-per-relation", "12", "--search-head"]
    out = tmp_path / "spos"
    assert main([*args, "--nas-method", "spos", "--search-steps", "20", "--output", str(out)]) == 0
    report = json.loads((out / "search.json").read_text())
    assert report["alpha"]["title"] == "share of the steps each op trained on each edge"
    assert set(report["supernet"]) == {"as_trained", "discretised"}
    assert "spos with uniform sampling" in (out / "search.md").read_text()
    bad = tmp_path / "bad"
    assert main([*args, "--nas-method", "spos", "--relaxation", "sparse", "--output", str(bad)]) == 2
    assert "search.relaxation" in capsys.readouterr().err and not bad.exists()
