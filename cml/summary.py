"""From the rows of a run to plain data: every number the report shows (report.json), computed
here once; cml/report.py only renders it (docs/method.md, "Metrics")."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from cml import metrics
from cml.config import RunConfig
from cml.experiment import Experiment
from cml.prototypes import CLASSIFIERS

Grid = list[list[list[dict]]]  # the result rows of one method: [order][seed][task]


def runs_of(grid: Grid) -> list[list[dict]]:
    """The rows of each run, order-major: run o * S + s is (order o, seed s)."""
    return [cell for per_seed in grid for cell in per_seed]


def accuracy_tensors(grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """acc [O*S, K, K] (NaN above the diagonal, and on the rows of tasks not evaluated:
    `--eval-every`) and n [O*S, K], one run per (order, seed)."""
    runs = runs_of(grid)
    K = len(runs[0])
    acc = torch.full((len(runs), K, K), math.nan, dtype=torch.float64)
    for r, cell in enumerate(runs):
        for k, row in enumerate(cell):
            if row["task_accuracy"] is not None:
                acc[r, k, : k + 1] = torch.tensor(row["task_accuracy"], dtype=torch.float64)
    n = torch.tensor([cell[-1]["task_size"] for cell in runs])
    return acc, n


def relation_accuracy_tensor(grid: Grid, relations: list[str]) -> torch.Tensor:
    """acc [O*S, K, R]: each relation's accuracy after each task, NaN before it is learned."""
    runs = runs_of(grid)
    acc = torch.full((len(runs), len(runs[0]), len(relations)), math.nan, dtype=torch.float64)
    for r, cell in enumerate(runs):
        for k, row in enumerate(cell):
            for i, relation in enumerate(relations):
                value = row["relation_accuracy"].get(relation)
                acc[r, k, i] = math.nan if value is None else value
    return acc


def final_by_unit(grid: Grid, experiment: Experiment) -> tuple[str, list[list[str]], list[float], torch.Tensor]:
    """Final accuracies [O, S, units] over the unit all orders share, with each unit's difficulty.

    The unit is the task when every order holds the same tasks (clustered split), else the
    relation: random splits cut different tasks per order, so "task j" means nothing across
    orders. A task's difficulty is d(T) among the tasks; a relation's is d(r | every other relation).
    """
    orders, space = experiment.orders, experiment.space
    task_sets = [[frozenset(t) for t in order.tasks] for order in orders]
    final = [[cell[-1] for cell in per_seed] for per_seed in grid]
    if all(set(ts) == set(task_sets[0]) for ts in task_sets):
        units = task_sets[0]
        values = [
            [[row["task_accuracy"][ts.index(u)] for u in units] for row in rows] for rows, ts in zip(final, task_sets)
        ]
        tasks = [sorted(u) for u in units]
        return "task", tasks, space.task_difficulty(tasks), torch.tensor(values, dtype=torch.float64)
    relations = sorted(final[0][0]["relation_accuracy"])
    values = [[[row["relation_accuracy"][r] for r in relations] for row in rows] for rows in final]
    return (
        "relation",
        [[r] for r in relations],
        relation_difficulties(space, relations),
        torch.tensor(values, dtype=torch.float64),
    )


def relation_difficulties(space, relations: list[str]) -> list[float]:
    return [space.relation_difficulty(r, [b for b in relations if b != r]) for r in relations]


def forgetting_sources(grid: Grid, experiment: Experiment, per_run: torch.Tensor, top: int = 15) -> dict:
    """Where forgetting comes from, per method (docs/method.md, "Metrics").

    - confusions: the errors on old relations after the last task, summed over runs: true old
      relation -> predicted relation, with the pair's type similarity and the share of those errors
      in which the predicted relation arrived after the true one (a later relation taking it over);
    - threat against forgetting: per order and relation (those of the last task have nothing after
      them), threat(r) = mean similarity of r to the relations that arrive after it in that order,
      against r's forgetting in that order, averaged over its seeds (`per_run`, [runs, relations]:
      `metrics.unit_forgetting`); the Spearman rho over the (order, relation) points. The seeds of
      an order share its threats, so pooling them would count each threat once per seed and make
      the interval and the permutation p too confident (as the task-level rho averages seeds).
    """
    space, relations = experiment.space, experiment.dataset.relations
    names = getattr(experiment.dataset, "relation_names", {})
    sim = lambda a, b: float(space.similarity[space.index[a], space.index[b]])
    counts: dict[tuple[str, str], int] = {}
    later: dict[tuple[str, str], int] = {}
    threat, forgetting = [], []
    per_order = torch.nanmean(per_run.view(len(grid), len(grid[0]), -1), 1)  # [orders, relations]: seeds averaged
    for o, per_seed in enumerate(grid):
        arrival = {rel: k for k, row in enumerate(per_seed[0]) for rel in row["relations"]}
        for cell in per_seed:
            for true, predicted in cell[-1].get("confusions", {}).items():
                for pred, count in predicted.items():
                    counts[true, pred] = counts.get((true, pred), 0) + count
                    later[true, pred] = later.get((true, pred), 0) + count * (arrival.get(pred, -1) > arrival[true])
        for i, rel in enumerate(relations):
            after = [b for b, k in arrival.items() if k > arrival.get(rel, len(per_seed[0]))]
            if rel in arrival and after and not math.isnan(per_order[o, i]):
                threat.append(space.relation_difficulty(rel, after))
                forgetting.append(float(per_order[o, i]))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "confusions": [
            {
                "true": true,
                "predicted": pred,
                "true_name": names.get(true),
                "predicted_name": names.get(pred),
                "count": count,
                "similarity": sim(true, pred),
                "predicted_later": later[true, pred] / count,
            }
            for (true, pred), count in ranked[:top]
        ],
        "old_errors": sum(counts.values()),
        "similarity_of_confused": (
            sum(c * sim(t, p) for (t, p), c in counts.items()) / sum(counts.values()) if counts else None
        ),
        "similarity_of_all_pairs": float(space.similarity[~np.eye(len(relations), dtype=bool)].mean()),
        "threat_forgetting": {
            "threat": threat,
            "forgetting": forgetting,
            "rho": as_dict(metrics.correlation(threat, forgetting)),
        },
    }


def nan_to_none(matrix: list[list[float]]) -> list[list[float | None]]:
    """A matrix for JSON: NaN (no value, e.g. a task not yet seen) as null."""
    return [nulls(row) for row in matrix]


def nulls(values: list[float]) -> list[float | None]:
    """A list for JSON: NaN (no value, e.g. a stage not evaluated: `--eval-every`) as null."""
    return [None if math.isnan(x) else x for x in values]


def as_dict(value) -> dict | None:
    return None if value is None else dataclasses.asdict(value)


def order_measures(unit: str, units: list[list[str]], difficulty: list[float], final: torch.Tensor) -> dict:
    """OS, OS_d, OPD, AOPD and MOPD over the units' final accuracies [O, S, units], seeds
    averaged (what the order alone does); none of them exists for one order."""
    names = [" ".join(u) for u in units]
    keys = ("per_unit", "mean", "difficulty_weighted", "opd_per_unit", "aopd", "mopd")
    if len(final) < 2:
        return {"unit": unit, **dict.fromkeys(keys)}
    final = final.mean(1)
    os_units, opd = metrics.order_sensitivity(final), metrics.order_performance_difference(final)
    values = (
        dict(zip(names, os_units.tolist())),
        float(os_units.mean()),
        metrics.difficulty_weighted_os(os_units, torch.tensor(difficulty, dtype=torch.float64)),
        dict(zip(names, opd.tolist())),
        float(opd.mean()),
        float(opd.max()),
    )
    return {"unit": unit, **dict(zip(keys, values))}


def method_report(grid: Grid, experiment: Experiment) -> dict:
    O, S, K = len(grid), len(grid[0]), len(grid[0][0])
    acc, n = accuracy_tensors(grid)
    whole = metrics.whole_accuracy(acc, n).view(O, S, K)
    average = metrics.average_accuracy(acc).view(O, S, K)
    unit, units, unit_difficulty, final = final_by_unit(grid, experiment)
    difficulty = torch.tensor([experiment.difficulties(o) for o in experiment.orders], dtype=torch.float64)
    evaluated = [not bool(torch.isnan(whole[:, :, k]).any()) for k in range(K)]  # in every run (--eval-every)
    per_order = whole.mean(1)  # [O, K], seeds averaged; NaN where not evaluated
    task_forgetting = metrics.forgetting(acc).view(O, S, K - 1).mean(1) if K > 1 else None  # [O, K - 1]
    tau = metrics.curriculumness(difficulty) if K > 1 else torch.zeros(O, dtype=torch.float64)
    relations = experiment.dataset.relations
    forgetting_per_run = metrics.unit_forgetting(relation_accuracy_tensor(grid, relations))
    relation_forgetting = torch.nanmean(forgetting_per_run, dim=0)
    relation_difficulty = torch.tensor(relation_difficulties(experiment.space, relations), dtype=torch.float64)
    forgettable = ~torch.isnan(relation_forgetting)
    # None where no run has the number (forgetting when only the last task is evaluated: `--eval-every`)
    sp = lambda values: None if values.isnan().all() else dataclasses.asdict(metrics.spread(values))

    def over_runs(task: int, *path: str) -> dict | None:
        """Spread over runs of the number at `path` in each run's row of `task` (None where a run has none)."""

        def pick(row: dict):
            for key in path:
                row = row.get(key) if row is not None else None
            return row

        values = [[pick(cell[task]) for cell in per_seed] for per_seed in grid]
        return None if any(v is None for row in values for v in row) else sp(torch.tensor(values, dtype=torch.float64))

    seconds = sum(row["seconds"] for cell in runs_of(grid) for row in cell)
    examples = sum(row.get("train_examples", 0) for cell in runs_of(grid) for row in cell)
    classifiers = [c for c in CLASSIFIERS if all(c in cell[-1].get("classifiers", {}) for cell in runs_of(grid))]
    return {
        "accuracy_matrices": [nan_to_none(m) for m in acc.tolist()],
        "task_sizes": n.tolist(),
        "task_difficulty": difficulty.tolist(),
        "final_whole_accuracy_per_run": whole[:, :, -1].tolist(),
        "whole_accuracy_per_order": nan_to_none(per_order.tolist()),
        "average_accuracy_per_order": nan_to_none(average.mean(1).tolist()),
        "whole_accuracy_per_stage": [sp(whole[:, :, k]) if evaluated[k] else None for k in range(K)],
        "average_accuracy_per_stage": [sp(average[:, :, k]) if evaluated[k] else None for k in range(K)],
        "final_whole_accuracy": sp(whole[:, :, -1]),
        "old_accuracy_per_stage": [over_runs(k, "old_accuracy") for k in range(K)],
        "new_accuracy_per_stage": [over_runs(k, "new_accuracy") for k in range(K)],
        "final_by_classifier": {
            kind: {part: over_runs(-1, "classifiers", kind, part) for part in ("whole", "old", "new")}
            for kind in classifiers
        },
        "final_average_accuracy": sp(average[:, :, -1]),
        "forgetting": sp(metrics.average_forgetting(acc).view(O, S)) if K > 1 else None,
        "forgetting_per_task": nan_to_none(task_forgetting.tolist()) if K > 1 else [],
        "average_forgetting_rate": sp(metrics.average_forgetting_rate(acc).view(O, S)) if K > 1 else None,
        "backward_transfer": sp(metrics.backward_transfer(acc).view(O, S)) if K > 1 else None,
        "variance_parts": dataclasses.asdict(metrics.variance_parts(whole[:, :, -1])),
        "order_sensitivity": order_measures(unit, units, unit_difficulty, final),
        "rho_f": as_dict(metrics.correlation(difficulty[:, :-1], task_forgetting)) if K > 2 else None,
        "relation_difficulty_forgetting": {
            "relations": [r for r, keep in zip(relations, forgettable.tolist()) if keep],
            "difficulty": relation_difficulty[forgettable].tolist(),
            "forgetting": relation_forgetting[forgettable].tolist(),
            "rho": as_dict(metrics.correlation(relation_difficulty[forgettable], relation_forgetting[forgettable])),
        },
        "forgetting_sources": forgetting_sources(grid, experiment, forgetting_per_run),
        "order_curriculumness": tau.tolist(),
        "rho_o": as_dict(metrics.correlation(tau, whole[:, :, -1].mean(1))) if K > 1 else None,
        "seconds": seconds,
        "train_examples": examples,
        "train_examples_per_second": examples / max(seconds, 1e-9),
        # what the plots draw
        "mean_accuracy_matrix": nan_to_none(torch.nanmean(acc, 0).tolist()),
        "whole_accuracy_by_stage_over_orders": {
            "mean": nulls(per_order.mean(0).tolist()),
            "min": nulls(per_order.min(0).values.tolist()),
            "max": nulls(per_order.max(0).values.tolist()),
        },
        "task_difficulty_forgetting": {
            "difficulty": difficulty[:, :-1].flatten().tolist(),
            "forgetting": nulls(task_forgetting.flatten().tolist()) if K > 1 else [],
        },
        "final_whole_accuracy_per_order": per_order[:, -1].tolist(),
    }


def comparisons(reports: dict[str, dict]) -> list[dict]:
    """Every pair of methods on final whole accuracy, paired over the same runs (order, seed) and,
    where the orders have several seeds, over the order means as well: an order's seeds share the
    order, so its runs are not independent pairs, and the order means (seeds averaged) give the
    stricter test."""
    names = list(reports)
    final = {m: torch.tensor(r["final_whole_accuracy_per_run"], dtype=torch.float64) for m, r in reports.items()}
    O, S = final[names[0]].shape
    units = {"runs": lambda w: w.flatten()} | ({"order means": lambda w: w.mean(1)} if O > 1 and S > 1 else {})
    return [
        {"a": a, "b": b, "over": unit, **dataclasses.asdict(metrics.paired_comparison(pick(final[a]), pick(final[b])))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        for unit, pick in units.items()
    ]


def summarize(config: RunConfig, experiment: Experiment, rows: dict, timings: dict, wall: dict | None = None) -> dict:
    """The whole report as plain data. `timings`: seconds and examples per phase of this
    invocation (`PhaseTimer.summary`); `wall`: its wall seconds and the estimate made before it."""
    ds = experiment.dataset
    seeds = config.run_seeds()
    K = len(experiment.orders[0].tasks)
    methods = {
        m: method_report(
            [[[rows[(m, o, seed, k)] for k in range(K)] for seed in seeds] for o in range(len(experiment.orders))],
            experiment,
        )
        for m in config.train.methods
    }
    return {
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "relations": len(ds.relations),
            "tasks": len(experiment.orders[0].tasks),
            "orders": len(experiment.orders),
        },
        "orders": [{"origin": o.origin, "tasks": o.tasks} for o in experiment.orders],
        "seeds": seeds,
        "config": config.to_dict(),
        "methods": methods,
        "comparisons": comparisons(methods) if len(experiment.orders) * len(seeds) > 1 else [],
        "wall": wall,
        "timings": {  # slowest phase first
            phase: {
                **t,
                "examples_per_second": t["examples"] / t["seconds"] if t["examples"] and t["seconds"] else None,
            }
            for phase, t in sorted(timings.items(), key=lambda item: -item[1]["seconds"])
        },
    }
