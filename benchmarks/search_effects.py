"""What the head search's estimators and relaxations do to the supernet, on FewRel's task 0
(frozen MiniLM features, 100 training examples per relation; the README's search protocol):

- per hypergradient estimator: the cosine of its hypergradient with the first-order one and
  the size of the difference, over the search (an implicit gradient that matches first order
  at cosine 1 is first-order DARTS with a different step size);
- per relaxation: at the end, the supernet's validation accuracy as trained (its noise drawn
  afresh), without noise, and cut to its genotype with its own weights (the discretisation
  gap), and the share of edges where a training draw's op is argmax alpha.

It only uses what the search has had from the start, so the same file measures an older
commit for before-and-after figures (there `step` took two batches, not two streams).

python benchmarks/search_effects.py --data-dir ../shared/data/fewrel [--steps 300] [--seed 2021]
"""

import argparse
import inspect
import statistics

import torch
from _machine import header

from cml.config import load_config
from cml.device import resolve_device
from cml.experiment import build_experiment
from cml.head_search import task_features
from cml.nas.hypergrad import first_order
from cml.nas.search import DartsSearch, SearchConfig, SearchModel, accuracy

args = argparse.ArgumentParser()
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--steps", type=int, default=300)
args.add_argument("--seed", type=int, default=2021)
args.add_argument("--estimators", default="darts2,idarts")
args.add_argument("--relaxations", default="softmax,snas,gdas,sparse")
a = args.parse_args()
header()

config = load_config("configs/fewrel.yaml", {"data": {"data_dir": a.data_dir, "max_per_relation": 100}})
experiment = build_experiment(config)
data = task_features(config, experiment.orders[0].tasks[0], experiment.dataset, resolve_device("cpu"))
n_classes, in_dim = int(data["train"].y.max()) + 1, data["train"].x.shape[1]
print(f"features: {in_dim}-d, {n_classes} relations, {len(data['train'].y)} train / {len(data['val'].y)} val")


def searcher_for(**options) -> DartsSearch:
    search_config = SearchConfig(steps=a.steps, **options)
    torch.manual_seed(a.seed)
    return DartsSearch(SearchModel(in_dim, n_classes, search_config.width, search_config.nodes), search_config, a.seed)


def run(searcher: DartsSearch) -> None:
    generator = torch.Generator().manual_seed(a.seed)
    train, val = data["train"].stream(64, generator), data["val"].stream(64, generator)
    takes_streams = "tuple" not in str(
        inspect.signature(searcher.step).parameters["train"].annotation
    )  # before: a batch
    for _ in range(a.steps):
        if takes_streams:
            searcher.step(train, val)
        else:
            searcher.step(next(train), next(val))


def estimator_row(method: str) -> str:
    searcher = searcher_for(method=method)
    estimator, cosines, ratios = searcher.estimator, [], []

    def recorded(train_loss, val_loss, w, alpha):
        g, g1 = estimator(train_loss, val_loss, w, alpha), first_order(train_loss, val_loss, w, alpha)
        cosines.append(float(torch.nn.functional.cosine_similarity(g.flatten(), g1.flatten(), dim=0)))
        ratios.append(float((g - g1).norm() / g1.norm().clamp_min(1e-30)))
        return g

    searcher.estimator = recorded
    run(searcher)
    return (
        f"| {method} | {statistics.mean(cosines):.4f} | {min(cosines):.4f} | {cosines[-1]:.4f} "
        f"| {statistics.mean(ratios):.3f} |"
    )


def relaxation_row(name: str) -> str:
    searcher = searcher_for(method="darts1", relaxation=name)
    run(searcher)
    model, cell, relaxation = searcher.model, searcher.model.cell, searcher.relaxation
    alpha, step = searcher.arch.alpha.detach(), searcher.t - 1
    model.eval()

    def score(mixing: torch.Tensor) -> float:
        return accuracy(lambda x: model(x, mixing), data["val"])

    draws = [relaxation.mixing(step, alpha.shape)(alpha) for _ in range(20)]  # the search is over: its stream is free
    trained = statistics.mean(score(m) for m in draws)
    clean = score(relaxation.mixing(step, alpha.shape, noisy=False)(alpha))
    cut = torch.zeros_like(alpha)
    for k, node in enumerate(searcher.get_final_architecture().nodes):
        for edge in node:
            cut[cell.row[(edge.source, k + 2)], cell.ops.index(edge.op)] = 1.0
    discretised = score(cut)
    agree = statistics.mean(float((m.argmax(-1) == alpha.argmax(-1)).float().mean()) for m in draws)
    return (
        f"| {name} | {100 * trained:.1f} | {100 * clean:.1f} | {100 * discretised:.1f} "
        f"| {100 * (trained - discretised):+.1f} | {100 * agree:.0f}% |"
    )


print("\n| estimator | cosine with first order: mean | min | last | abs(difference) / abs(first order): mean |")
print("|---|---|---|---|---|")
for method in a.estimators.split(","):
    print(estimator_row(method), flush=True)
print(
    "\n| relaxation (darts1) | supernet as trained | noise-free | cut to the genotype | gap | draws at argmax alpha |"
)
print("|---|---|---|---|---|---|")
for name in a.relaxations.split(","):
    print(relaxation_row(name), flush=True)
