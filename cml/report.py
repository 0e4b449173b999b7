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
from cml.prototypes import CLASSIFIERS


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


def final_by_unit(
    rows: dict, method: str, experiment: Experiment
) -> tuple[str, list[list[str]], list[float], torch.Tensor]:
    """Final accuracies [O, units] over the unit all orders share, with each unit's difficulty.

    The unit is the task when every order holds the same tasks (clustered split), else the
    relation: random splits cut different tasks per order, so "task j" means nothing across
    orders. A task's difficulty is d(T) among the tasks; a relation's is d(r | every other relation).
    """
    orders, space = experiment.orders, experiment.space
    K = len(orders[0].tasks)
    task_sets = [[frozenset(t) for t in order.tasks] for order in orders]
    final = [rows[(method, o, K - 1)] for o in range(len(orders))]
    if all(set(ts) == set(task_sets[0]) for ts in task_sets):
        units = task_sets[0]
        values = [[row["task_accuracy"][ts.index(u)] for u in units] for row, ts in zip(final, task_sets)]
        tasks = [sorted(u) for u in units]
        return "task", tasks, space.task_difficulty(tasks), torch.tensor(values, dtype=torch.float64)
    relations = sorted(final[0]["relation_accuracy"])
    values = [[row["relation_accuracy"][r] for r in relations] for row in final]
    difficulty = [space.relation_difficulty(r, [b for b in relations if b != r]) for r in relations]
    return "relation", [[r] for r in relations], difficulty, torch.tensor(values, dtype=torch.float64)


def method_report(rows: dict, method: str, experiment: Experiment) -> dict:
    O, K = len(experiment.orders), len(experiment.orders[0].tasks)
    acc, n = accuracy_tensors(rows, method, O, K)
    whole, average = metrics.whole_accuracy(acc, n), metrics.average_accuracy(acc)
    unit, units, unit_difficulty, final = final_by_unit(rows, method, experiment)
    os_units = metrics.order_sensitivity(final) if O > 1 else torch.zeros(final.shape[1], dtype=torch.float64)
    difficulty = torch.tensor([experiment.difficulties(o) for o in experiment.orders], dtype=torch.float64)
    forgetting = metrics.forgetting(acc) if K > 1 else torch.zeros(O, 0, dtype=torch.float64)
    tau = metrics.curriculumness(difficulty) if K > 1 else torch.zeros(O, dtype=torch.float64)
    sp = lambda v: dataclasses.asdict(metrics.spread(v))
    stage_rows = [[rows[(method, o, k)] for o in range(O)] for k in range(K)]

    def over_orders(values: list) -> dict | None:
        """Spread over orders of one number per order (None where a row has none)."""
        return None if any(v is None for v in values) else sp(torch.tensor(values, dtype=torch.float64))

    classifiers = [c for c in CLASSIFIERS if all(c in r.get("classifiers", {}) for r in stage_rows[-1])]
    return {
        "accuracy_matrices": [[[None if math.isnan(x) else x for x in r] for r in m] for m in acc.tolist()],
        "task_sizes": n.tolist(),
        "task_difficulty": difficulty.tolist(),
        "whole_accuracy_per_order": whole.tolist(),
        "average_accuracy_per_order": average.tolist(),
        "whole_accuracy_per_stage": [sp(whole[:, k]) for k in range(K)],
        "average_accuracy_per_stage": [sp(average[:, k]) for k in range(K)],
        "final_whole_accuracy": sp(whole[:, -1]),
        "old_accuracy_per_stage": [over_orders([r.get("old_accuracy") for r in stage]) for stage in stage_rows],
        "new_accuracy_per_stage": [over_orders([r.get("new_accuracy") for r in stage]) for stage in stage_rows],
        "final_by_classifier": {
            kind: {part: over_orders([r["classifiers"][kind][part] for r in stage_rows[-1]]) for part in ("whole", "old", "new")}
            for kind in classifiers
        },
        "final_average_accuracy": sp(average[:, -1]),
        "forgetting": sp(metrics.average_forgetting(acc)) if K > 1 else None,
        "forgetting_per_task": forgetting.tolist(),
        "average_forgetting_rate": sp(metrics.average_forgetting_rate(acc)) if K > 1 else None,
        "backward_transfer": sp(metrics.backward_transfer(acc)) if K > 1 else None,
        "order_sensitivity": {
            "unit": unit,
            "per_unit": {" ".join(u): v for u, v in zip(units, os_units.tolist())},
            "mean": float(os_units.mean()),
            "difficulty_weighted": metrics.difficulty_weighted_os(os_units, torch.tensor(unit_difficulty)),
        },
        "difficulty_forgetting_spearman": metrics.spearman(difficulty[:, :-1].flatten(), forgetting.flatten())
        if K > 2
        else None,
        "order_curriculumness": tau.tolist(),
        "curriculumness_accuracy_spearman": metrics.spearman(tau, whole[:, -1]) if O > 2 else None,
        "seconds": sum(rows[(method, o, k)]["seconds"] for o in range(O) for k in range(K)),
        "train_examples": sum(rows[(method, o, k)].get("train_examples", 0) for o in range(O) for k in range(K)),
    }


def pm(s: dict | None, scale: float = 100) -> str:
    """mean ± error bound in %; no bound where there is one order."""
    if s is None:
        return "-"
    bound = "" if math.isnan(s["error_bound"]) else f" ± {scale * s['error_bound']:.1f}"
    return f"{scale * s['mean']:.1f}{bound}"


def markdown(report: dict) -> str:
    lines = [f"# Continual relation extraction report: {report['dataset']['name']}", ""]
    d = report["dataset"]
    lines += [
        (
            f"{d['relations']} relations in {d['tasks']} tasks, {d['orders']} orders; "
            "accuracy in %, mean ± error bound (t_0.975 · s / √O) over orders."
        ),
        "",
    ]
    lines += [
        "## Comparison",
        "",
        "| method | final W | std | range | final A | F | AFR | BWT | OS | time (s) | train ex/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        w = m["final_whole_accuracy"]
        lines.append(
            f"| {name} | {pm(w)} | {100 * w['std']:.1f} | {100 * w['min']:.1f}–{100 * w['max']:.1f} | "
            f"{pm(m['final_average_accuracy'])} | {pm(m['forgetting'])} | {pm(m['average_forgetting_rate'])} | "
            f"{pm(m['backward_transfer'])} | {100 * m['order_sensitivity']['mean']:.1f} | {m['seconds']:.0f} | "
            f"{m['train_examples'] / max(m['seconds'], 1e-9):.0f} |"
        )
    lines += [
        "",
        "## Classifiers",
        "",
        "Final accuracy of each test-time classifier on the same features: whole, old relations (earlier tasks), "
        "new relations (the last task). The method's own classifier gives the numbers above.",
        "",
        "| method | classifier | final W | old | new |",
        "|---|---|---|---|---|",
    ]
    for name, m in report["methods"].items():
        for kind, parts in m["final_by_classifier"].items():
            lines.append(f"| {name} | {kind} | {pm(parts['whole'])} | {pm(parts['old'])} | {pm(parts['new'])} |")
    for name, m in report["methods"].items():
        lines += ["", f"## {name}", "", "| stage | W_k | A_k | old | new |", "|---|---|---|---|---|"]
        per_stage = zip(
            m["whole_accuracy_per_stage"],
            m["average_accuracy_per_stage"],
            m["old_accuracy_per_stage"],
            m["new_accuracy_per_stage"],
        )
        for k, (w, a, old, new) in enumerate(per_stage):
            lines.append(f"| {k + 1} | {pm(w)} | {pm(a)} | {pm(old)} | {pm(new)} |")
        lines += [
            "",
            (
                f"Final: A {pm(m['final_average_accuracy'])}, F {pm(m['forgetting'])}, "
                f"AFR {pm(m['average_forgetting_rate'])}, BWT {pm(m['backward_transfer'])}, "
                f"OS {100 * m['order_sensitivity']['mean']:.1f} (std over orders of each {m['order_sensitivity']['unit']}'s final accuracy, averaged)."
            ),
        ]
    lines += [
        "",
        "## Order sensitivity and difficulty",
        "",
        "| method | OS | OS_d | rho_f | rho_o | tau_o per order |",
        "|---|---|---|---|---|---|",
    ]
    fmt = lambda x: "-" if x is None or math.isnan(x) else f"{x:.2f}"
    for name, m in report["methods"].items():
        o = m["order_sensitivity"]
        taus = ", ".join(f"{t:+.2f}" for t in m["order_curriculumness"])
        lines.append(
            f"| {name} | {100 * o['mean']:.1f} | {100 * o['difficulty_weighted']:.1f} | "
            f"{fmt(m['difficulty_forgetting_spearman'])} | {fmt(m['curriculumness_accuracy_spearman'])} | {taus} |"
        )
    lines += ["", "## Where the time went", "", "In this invocation (a resumed run counts only what it ran).", ""]
    lines += ["| phase | seconds | examples | examples/s |", "|---|---|---|---|"]
    for phase, t in sorted(report["timings"].items(), key=lambda item: -item[1]["seconds"]):
        rate = f"{t['examples'] / t['seconds']:.0f}" if t["examples"] and t["seconds"] else "-"
        lines.append(f"| {phase} | {t['seconds']:.1f} | {t['examples'] or '-'} | {rate} |")
    lines += [
        "",
        "## Definitions",
        "",
        (
            "a[k][j]: accuracy on the task at position j after training task k. "
            "W_k: accuracy on all seen relations' test examples after task k. A_k: mean of the per-task accuracies. "
            "F: mean over tasks j < K of max_{l<K} a[l][j] − a[K][j]. AFR: mean of (a[j][j] − a[K][j]) / a[j][j]. "
            "BWT: mean of a[K][j] − a[j][j]. OS: mean over units of the std over orders of the unit's final accuracy; "
            "the unit is the task when every order holds the same tasks, otherwise the relation. "
            "Task difficulty d(T_i): mean over the other tasks T_j of the mean type-distribution similarity between "
            "their relations (higher = more confusable); a relation's difficulty d(r | R) is its mean similarity to the "
            "other relations. OS_d: OS weighted by the units' difficulty, sum d_j OS_j / sum d_j. "
            "rho_f: Spearman correlation of task difficulty and forgetting f_j, pooled over orders. "
            "tau_o: Kendall correlation of task position and difficulty within order o (+1 = easy to hard). "
            "rho_o: Spearman correlation across orders of tau_o and the final W_K."
        ),
        "",
        "![accuracy by stage](accuracy_by_stage.png)",
        "",
        "![final accuracy matrix](accuracy_matrix.png)",
        "",
        "![difficulty and forgetting](difficulty_forgetting.png)",
        "",
        "![curriculum-ness of the order and final accuracy](order_curriculumness.png)",
        "",
    ]
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
    ax.set_xticks(stages)
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

    forgetting = {
        n: (np.array(m["task_difficulty"])[:, :-1].flatten(), np.array(m["forgetting_per_task"]).flatten() * 100)
        for n, m in methods.items()
    }
    _scatter(
        plt,
        run_dir / "difficulty_forgetting.png",
        forgetting,
        "task difficulty d(T)",
        "forgetting f_j (%)",
        "Are harder tasks forgotten more?",
    )
    easy_first = {
        n: (np.array(m["order_curriculumness"]), np.array(m["whole_accuracy_per_order"])[:, -1] * 100)
        for n, m in methods.items()
    }
    _scatter(
        plt,
        run_dir / "order_curriculumness.png",
        easy_first,
        "tau_o: Kendall(position, difficulty); +1 = easy first",
        "final whole accuracy W_K (%)",
        "Does an easy-first order help?",
    )


def _scatter(plt, path: Path, series: dict, xlabel: str, ylabel: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        ax.scatter(x, y, label=name, alpha=0.7, s=20)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: Path, config: RunConfig, experiment: Experiment, rows: dict, timings: dict) -> dict:
    """`timings`: seconds and examples per phase of this invocation (`PhaseTimer.summary`)."""
    ds = experiment.dataset
    report = {
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "relations": len(ds.relations),
            "tasks": len(experiment.orders[0].tasks),
            "orders": len(experiment.orders),
        },
        "orders": [{"origin": o.origin, "tasks": o.tasks} for o in experiment.orders],
        "config": config.to_dict(),
        "methods": {m: method_report(rows, m, experiment) for m in config.train.methods},
        "timings": timings,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    (run_dir / "report.md").write_text(markdown(report))
    plot(report, run_dir)
    return report
