"""How well each one-shot estimator ranks head cells (README, "Head-cell search": "How well the
supernet ranks cells").

A pool of random valid cells of the discretised space, each trained stand-alone from scratch
with two seeds on frozen FewRel features; the seed-to-seed Kendall tau is the noise ceiling.
Each estimator scores every cell of the pool: SPOS (uniform single-path training, the cell's
validation accuracy with the weights it inherits), gradual modification, SPOS with the
node-state alignment loss, and DARTS's alpha (the sum of log softmax(alpha / tau) over the
cell's edge-op choices). Reported: Kendall tau of each against the mean stand-alone accuracy,
with its p-value and a bootstrap 95% interval over the cells. Then the interference
diagnostic: the gradient cosine of one shared op under two children against the number of
ops they differ in.

The stand-alone results are kept in the output file as they come, so a run that stops goes on
where it was when started again.

python benchmarks/ranking.py --data-dir ../shared/data/fewrel --output results/ranking
    [--max-per-relation 100] [--tasks 1] [--pool 40] [--epochs 30] [--one-shot-steps 2000]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _machine import header, peak_memory
from scipy.stats import kendalltau
from scipy.stats import t as t_dist
from torch import nn
from tqdm import tqdm

from cml.config import load_config
from cml.device import resolve_device
from cml.experiment import build_experiment
from cml.head_search import task_features
from cml.model import make_head
from cml.nas.cell import DiscreteCell, one_hot_mixing
from cml.nas.genotype import Edge, Genotype
from cml.nas.oneshot import OneShot, differing_ops, neighbour, random_cell
from cml.nas.search import SearchConfig, SearchModel, search, train_head

args = argparse.ArgumentParser()
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--output", default="results/ranking")
args.add_argument("--max-per-relation", type=int, default=100)
args.add_argument("--tasks", type=int, default=1, help="the search task: the relations of order 0's first K tasks")
args.add_argument("--pool", type=int, default=40)
args.add_argument("--epochs", type=int, default=30)
args.add_argument("--one-shot-steps", type=int, default=2000)
args.add_argument("--alignment", type=float, default=1.0)
args.add_argument("--pairs", type=int, default=20, help="child pairs per distance in the interference diagnostic")
args.add_argument("--seed", type=int, default=0)
args.add_argument("--head-seeds", type=int, default=3)
a = args.parse_args()
header()
out = Path(a.output)
out.mkdir(parents=True, exist_ok=True)
began = time.perf_counter()

config = load_config("configs/fewrel.yaml", {"data": {"data_dir": a.data_dir, "max_per_relation": a.max_per_relation}})
experiment = build_experiment(config)
relations = [r for task in experiment.orders[0].tasks[: a.tasks] for r in task]
data = task_features(config, relations, experiment.dataset, resolve_device("cpu"))
in_dim = data["train"].x.shape[1]
search_config = SearchConfig()  # the README's supernet: 4 nodes of width 128, 2 inputs each
shape = SearchModel(in_dim, len(relations), search_config.width, search_config.nodes).cell
print(f"task: {len(relations)} relations, {len(data['train'].y)} train / {len(data['val'].y)} val, {in_dim}-d features")

# -- the pool, trained stand-alone (kept as it comes)
state_file = out / "ranking.json"
state = json.loads(state_file.read_text()) if state_file.exists() else {}
pool_setup = {k: vars(a)[k] for k in ("data_dir", "max_per_relation", "tasks", "pool", "epochs", "seed")}
if state.get("setup") not in (None, pool_setup):
    raise SystemExit(f"{state_file} holds a pool trained with other settings: {state['setup']}")
state["setup"] = pool_setup
generator = torch.Generator().manual_seed(a.seed)
pool: list[Genotype] = []
while len(pool) < a.pool:
    cell = random_cell(shape, search_config.keep, generator)
    if cell not in pool:
        pool.append(cell)
standalone = state.setdefault("standalone", {})


def trained_alone(cell: Genotype, seed: int) -> float:
    torch.manual_seed(seed)
    return train_head(DiscreteCell(cell, in_dim), data, a.epochs, seed)["val_accuracy"]


for k, cell in enumerate(tqdm(pool, desc="pool, stand-alone")):
    key = json.dumps(cell.to_dict(), sort_keys=True)
    for seed in ("0", "1"):
        if seed not in standalone.setdefault(key, {}):
            standalone[key][seed] = trained_alone(cell, int(seed))
            state_file.write_text(json.dumps(state, indent=1) + "\n")
keys = [json.dumps(c.to_dict(), sort_keys=True) for c in pool]
acc = np.array([[standalone[k]["0"], standalone[k]["1"]] for k in keys])
truth = acc.mean(1)


def tau_with_interval(scores) -> dict:
    """Kendall tau against the stand-alone accuracy, its p-value, and a bootstrap interval."""
    scores = np.asarray(scores)
    tau, p = kendalltau(scores, truth)
    rng = np.random.default_rng(a.seed)
    boot = []
    for _ in range(1000):
        idx = rng.integers(0, len(truth), len(truth))
        t, _ = kendalltau(scores[idx], truth[idx])
        if not np.isnan(t):
            boot.append(t)
    return {
        "tau": float(tau),
        "p": float(p),
        "interval": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
    }


ceiling_tau, ceiling_p = kendalltau(acc[:, 0], acc[:, 1])
report = {
    "pool": len(pool),
    "accuracy": {"min": float(truth.min()), "median": float(np.median(truth)), "max": float(truth.max())},
    "seed_std": float(np.abs(acc[:, 0] - acc[:, 1]).mean() / np.sqrt(2)),
    "noise_ceiling": {"tau": float(ceiling_tau), "p": float(ceiling_p)},
    "estimators": {},
}


# -- the estimators
def one_shot(**options) -> OneShot:
    torch.manual_seed(a.seed)
    trainer = OneShot(
        SearchModel(in_dim, len(relations), search_config.width, search_config.nodes), seed=a.seed, **options
    )
    stream = data["train"].stream(search_config.batch_size, torch.Generator().manual_seed(a.seed))
    for _ in tqdm(range(a.one_shot_steps), desc=f"one-shot {options}"):
        trainer.step(stream)
    return trainer


trainers = {}
for name, options in (
    ("SPOS", {}),
    ("gradual modification", {"sampling": "gradual"}),
    ("SPOS + alignment", {"alignment": a.alignment}),
):
    trainers[name] = one_shot(**options)
    report["estimators"][name] = tau_with_interval([trainers[name].score(c, data["val"]) for c in pool])
    print(name, report["estimators"][name], flush=True)

darts = search(data, SearchConfig(method="darts1"), a.seed)
log_p = darts.probabilities.clamp_min(1e-30).log()
cell_rows = {edge: r for r, edge in enumerate(darts.edges)}
report["estimators"]["DARTS alpha (darts1)"] = tau_with_interval(
    [
        sum(
            float(log_p[cell_rows[(e.source, k + 2)], darts.ops.index(e.op)])
            for k, node in enumerate(c.nodes)
            for e in node
        )
        for c in pool
    ]
)


# -- heads against a control: cells picked on validation, scored on test over seeds
order = np.argsort(truth)
builders = {name: (lambda kind=name: make_head(kind, in_dim, in_dim // 2)) for name in ("projection", "linear", "mlp")}
for name, cell in (
    ("searched cell (darts1)", darts.genotype),
    ("best random cell (by val)", pool[order[-1]]),
    ("median random cell (by val)", pool[order[len(pool) // 2]]),
):
    builders[name] = lambda cell=cell: DiscreteCell(cell, in_dim)
heads = {}
for name, build in builders.items():
    tests = []
    for seed in range(a.head_seeds):
        torch.manual_seed(seed)
        tests.append(train_head(build(), data, a.epochs, seed)["test_accuracy"])
    half = t_dist.ppf(0.975, len(tests) - 1) * np.std(tests, ddof=1) / np.sqrt(len(tests))
    heads[name] = {"test": tests, "mean": float(np.mean(tests)), "half_interval": float(half)}
report["heads"] = heads


# -- interference: one shared op (node 2's edge from node 0, always kept) under two children
SHARED = Edge(0, "linear")  # into node 2, whose two inputs are always nodes 0 and 1


def with_shared_op(cell: Genotype) -> Genotype:
    first = tuple(SHARED if e.source == SHARED.source else e for e in cell.nodes[0])
    return Genotype((first, *cell.nodes[1:]), cell.width)


def away(cell: Genotype, distance: int, rng: torch.Generator) -> Genotype | None:
    """A cell `distance` op choices from `cell` that keeps the shared op, by gradual steps."""
    other = cell
    for _ in range(50):
        step = neighbour(other, shape, rng)
        if SHARED not in step.nodes[0]:
            continue
        other = step
        if differing_ops(cell, other) == distance:
            return other
        if differing_ops(cell, other) > distance:
            other = cell
    return None


trainer = trainers["SPOS"]
model, row = trainer.model, trainer.model.cell.row[(0, 2)]
shared = trainer.model.cell.mixed[row][trainer.model.cell.ops.index(SHARED.op)]
x, y = data["val"].x[:256], data["val"].y[:256]


def shared_gradient(cell: Genotype) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x, one_hot_mixing(cell, model.cell), sparse=True), y).backward()
    return torch.cat([p.grad.flatten() for p in shared.parameters()])


rng = torch.Generator().manual_seed(a.seed + 7)
interference = {}
max_distance = sum(len(node) for node in pool[0].nodes) - 1
for distance in range(1, max_distance + 1):
    cosines = []
    while len(cosines) < a.pairs:
        base = with_shared_op(random_cell(shape, search_config.keep, rng))
        other = away(base, distance, rng)
        if other is not None:
            cosines.append(float(nn.functional.cosine_similarity(shared_gradient(base), shared_gradient(other), dim=0)))
    interference[distance] = {"mean": statistics.mean(cosines), "std": statistics.stdev(cosines)}
report["interference"] = interference
report["seconds"] = round(time.perf_counter() - began, 1)
state["report"] = report
state_file.write_text(json.dumps(state, indent=1) + "\n")

summary = (
    f"Pool of {len(pool)} random cells, stand-alone validation accuracy {100 * truth.min():.1f}-"
    f"{100 * truth.max():.1f} (median {100 * np.median(truth):.1f}), seed-to-seed std {100 * report['seed_std']:.1f}; "
    f"noise ceiling (Kendall tau seed 0 vs seed 1) {ceiling_tau:.2f} (p {ceiling_p:.2g})."
)
lines = [
    summary,
    "",
    "| estimator | Kendall tau | 95% interval | p |",
    "|---|---|---|---|",
]
for name, r in report["estimators"].items():
    lines.append(f"| {name} | {r['tau']:.2f} | {r['interval'][0]:.2f} to {r['interval'][1]:.2f} | {r['p']:.2g} |")
lines += ["", f"| head (test accuracy, {a.head_seeds} seeds) | mean ± 95% interval | per seed |", "|---|---|---|"]
lines += [
    f"| {name} | {100 * h['mean']:.1f} ± {100 * h['half_interval']:.1f} | {', '.join(f'{100 * v:.1f}' for v in h['test'])} |"
    for name, h in heads.items()
]
lines += ["", "| ops the two children differ in | gradient cosine of the shared op (mean ± std) |", "|---|---|"]
lines += [f"| {d} | {v['mean']:.2f} ± {v['std']:.2f} |" for d, v in interference.items()]
(out / "ranking.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3.5))
d = list(interference)
ax.errorbar(d, [interference[k]["mean"] for k in d], [interference[k]["std"] for k in d], marker="o", capsize=3)
ax.set_xlabel("ops the two children differ in")
ax.set_ylabel("cosine of the shared op's gradients")
ax.set_title("interference between children (SPOS supernet)")
fig.tight_layout()
fig.savefig(out / "interference.png", dpi=120)
print(f"{report['seconds']} s; {peak_memory()}")
