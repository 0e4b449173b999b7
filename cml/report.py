"""The run report: report.json (every number), report.md (tables) and PNG plots."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from cml import metrics
from cml.config import RunConfig
from cml.experiment import Experiment


def accuracy_tensors(rows: dict, method: str, n_orders: int, n_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """acc [O, K, K] (NaN above the diagonal) and n [O, K] from the result rows of one method."""
    acc = torch.full((n_orders, n_tasks, n_tasks), math.nan, dtype=torch.float64)
    n = torch.zeros(n_orders, n_tasks, dtype=torch.long)
    for o in range(n_orders):
        for k in range(n_tasks):
            row = rows[(method, o, k)]
            acc[o, k, : k + 1] = torch.tensor(row["task_accuracy"], dtype=torch.float64)
        n[o] = torch.tensor(rows[(method, o, n_tasks - 1)]["task_size"])
    return acc, n


def final_by_unit(rows: dict, method: str, experiment: Experiment) -> tuple[str, list[str], torch.Tensor]:
    """Final accuracies [O, units] over the unit all orders share: tasks if every order holds the
    same tasks (clustered split), else relations (random splits cut different tasks per order)."""
    orders = experiment.orders
    K = len(orders[0].tasks)
    task_sets = [[frozenset(t) for t in order.tasks] for order in orders]
    final = [rows[(method, o, K - 1)] for o in range(len(orders))]
    if all(set(ts) == set(task_sets[0]) for ts in task_sets):
        units = task_sets[0]
        values = [[row["task_accuracy"][ts.index(u)] for u in units] for row, ts in zip(final, task_sets)]
        return "task", [" ".join(sorted(u)) for u in units], torch.tensor(values, dtype=torch.float64)
    relations = sorted(final[0]["relation_accuracy"])
    values = [[row["relation_accuracy"][r] for r in relations] for row in final]
    return "relation", relations, torch.tensor(values, dtype=torch.float64)


def method_report(rows: dict, method: str, experiment: Experiment) -> dict:
    O, K = len(experiment.orders), len(experiment.orders[0].tasks)
    acc, n = accuracy_tensors(rows, method, O, K)
    whole, average = metrics.whole_accuracy(acc, n), metrics.average_accuracy(acc)
    unit, names, final = final_by_unit(rows, method, experiment)
    os_units = metrics.order_sensitivity(final) if O > 1 else torch.zeros(final.shape[1], dtype=torch.float64)
    sp = lambda v: dataclasses.asdict(metrics.spread(v))  # noqa: E731
    return {
        "accuracy_matrices": [[[None if math.isnan(x) else x for x in r] for r in m] for m in acc.tolist()],
        "task_sizes": n.tolist(),
        "whole_accuracy_per_order": whole.tolist(),
        "average_accuracy_per_order": average.tolist(),
        "whole_accuracy_per_stage": [sp(whole[:, k]) for k in range(K)],
        "average_accuracy_per_stage": [sp(average[:, k]) for k in range(K)],
        "final_whole_accuracy": sp(whole[:, -1]),
        "final_average_accuracy": sp(average[:, -1]),
        "forgetting": sp(metrics.average_forgetting(acc)) if K > 1 else None,
        "average_forgetting_rate": sp(metrics.average_forgetting_rate(acc)) if K > 1 else None,
        "backward_transfer": sp(metrics.backward_transfer(acc)) if K > 1 else None,
        "order_sensitivity": {"unit": unit, "per_unit": dict(zip(names, os_units.tolist())), "mean": float(os_units.mean())},
        "seconds": sum(rows[(method, o, k)]["seconds"] for o in range(O) for k in range(K)),
    }


def _pm(s: dict | None, scale: float = 100) -> str:
    if s is None:
        return "-"
    bound = "" if math.isnan(s["error_bound"]) else f" ± {scale * s['error_bound']:.1f}"
    return f"{scale * s['mean']:.1f}{bound}"


def markdown(report: dict) -> str:
    lines = [f"# Continual relation extraction report: {report['dataset']['name']}", ""]
    d = report["dataset"]
    lines += [f"{d['relations']} relations in {d['tasks']} tasks, {d['orders']} orders; "
              "accuracy in %, mean ± error bound (t_0.975 · s / √O) over orders.", ""]
    lines += ["## Comparison", "", "| method | final W | std | range | final A | F | AFR | BWT | OS | time (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        w = m["final_whole_accuracy"]
        lines.append(f"| {name} | {_pm(w)} | {100 * w['std']:.1f} | {100 * w['min']:.1f}–{100 * w['max']:.1f} | "
                     f"{_pm(m['final_average_accuracy'])} | {_pm(m['forgetting'])} | {_pm(m['average_forgetting_rate'])} | "
                     f"{_pm(m['backward_transfer'])} | {100 * m['order_sensitivity']['mean']:.1f} | {m['seconds']:.0f} |")
    for name, m in report["methods"].items():
        lines += ["", f"## {name}", "", "| stage | W_k | A_k |", "|---|---|---|"]
        for k, (w, a) in enumerate(zip(m["whole_accuracy_per_stage"], m["average_accuracy_per_stage"])):
            lines.append(f"| {k + 1} | {_pm(w)} | {_pm(a)} |")
        lines += ["", f"Final: A {_pm(m['final_average_accuracy'])}, F {_pm(m['forgetting'])}, "
                  f"AFR {_pm(m['average_forgetting_rate'])}, BWT {_pm(m['backward_transfer'])}, "
                  f"OS {100 * m['order_sensitivity']['mean']:.1f} (std over orders of each {m['order_sensitivity']['unit']}'s final accuracy, averaged)."]
    lines += ["", "## Definitions", "",
              "W_k: accuracy on all seen relations' test examples after task k. A_k: mean of the per-task accuracies. "
              "F: mean over tasks j < K of max_{l<K} a[l][j] − a[K][j]. AFR: mean of (a[j][j] − a[K][j]) / a[j][j]. "
              "BWT: mean of a[K][j] − a[j][j]. OS: mean over units of the std over orders of the unit's final accuracy; "
              "the unit is the task when every order holds the same tasks, otherwise the relation.",
              "", "![accuracy by stage](accuracy_by_stage.png)", "", "![final accuracy matrix](accuracy_matrix.png)", ""]
    return "\n".join(lines)


def plot(report: dict, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    methods = report["methods"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in methods.items():
        per_order = np.array(m["whole_accuracy_per_order"]) * 100
        stages = np.arange(1, per_order.shape[1] + 1)
        ax.plot(stages, per_order.mean(0), marker="o", label=name)
        ax.fill_between(stages, per_order.min(0), per_order.max(0), alpha=0.2)
    ax.set(xlabel="tasks seen", ylabel="whole accuracy W_k (%)", title="Accuracy by stage (band: range over orders)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_by_stage.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], methods.items()):
        mat = np.array(m["accuracy_matrices"], dtype=float).mean(0) * 100
        im = ax.imshow(np.ma.masked_invalid(mat), vmin=0, vmax=100, cmap="viridis")
        ax.set(title=name, xlabel="task j (position)", ylabel="after task k")
        k = mat.shape[0]
        ax.set_xticks(range(k), range(1, k + 1))
        ax.set_yticks(range(k), range(1, k + 1))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%), mean over orders")
    fig.savefig(run_dir / "accuracy_matrix.png", dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, config: RunConfig, experiment: Experiment, rows: dict) -> dict:
    ds = experiment.dataset
    report = {
        "dataset": {"name": ds.name, "source": ds.source, "relations": len(ds.relations),
                    "tasks": len(experiment.orders[0].tasks), "orders": len(experiment.orders)},
        "orders": [{"origin": o.origin, "tasks": o.tasks} for o in experiment.orders],
        "config": config.to_dict(),
        "methods": {m: method_report(rows, m, experiment) for m in config.train.methods},
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    (run_dir / "report.md").write_text(markdown(report))
    plot(report, run_dir)
    return report
