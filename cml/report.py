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

Grid = list[list[list[dict]]]  # the result rows of one method: [order][seed][task]


def runs_of(grid: Grid) -> list[list[dict]]:
    """The rows of each run, order-major: run o * S + s is (order o, seed s)."""
    return [cell for per_seed in grid for cell in per_seed]


def accuracy_tensors(grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
    """acc [O*S, K, K] (NaN above the diagonal) and n [O*S, K], one run per (order, seed)."""
    runs = runs_of(grid)
    K = len(runs[0])
    acc = torch.full((len(runs), K, K), math.nan, dtype=torch.float64)
    for r, cell in enumerate(runs):
        for k, row in enumerate(cell):
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
    forgetting = metrics.forgetting(acc).view(O, S, K - 1) if K > 1 else None
    tau = metrics.curriculumness(difficulty) if K > 1 else torch.zeros(O, dtype=torch.float64)
    relations = experiment.dataset.relations
    relation_forgetting = torch.nanmean(metrics.unit_forgetting(relation_accuracy_tensor(grid, relations)), dim=0)
    relation_difficulty = torch.tensor(relation_difficulties(experiment.space, relations), dtype=torch.float64)
    forgettable = ~torch.isnan(relation_forgetting)
    sp = lambda values: dataclasses.asdict(metrics.spread(values))

    def over_runs(pick) -> dict | None:
        """Spread over runs of one number per run (None where a run has none)."""
        values = [[pick(cell) for cell in per_seed] for per_seed in grid]
        return None if any(v is None for row in values for v in row) else sp(torch.tensor(values, dtype=torch.float64))

    classifiers = [c for c in CLASSIFIERS if all(c in cell[-1].get("classifiers", {}) for cell in runs_of(grid))]
    return {
        "accuracy_matrices": [[[None if math.isnan(x) else x for x in r] for r in m] for m in acc.tolist()],
        "task_sizes": n.tolist(),
        "task_difficulty": difficulty.tolist(),
        "final_whole_accuracy_per_run": whole[:, :, -1].tolist(),
        "whole_accuracy_per_order": whole.mean(1).tolist(),
        "average_accuracy_per_order": average.mean(1).tolist(),
        "whole_accuracy_per_stage": [sp(whole[:, :, k]) for k in range(K)],
        "average_accuracy_per_stage": [sp(average[:, :, k]) for k in range(K)],
        "final_whole_accuracy": sp(whole[:, :, -1]),
        "old_accuracy_per_stage": [over_runs(lambda cell: cell[k].get("old_accuracy")) for k in range(K)],
        "new_accuracy_per_stage": [over_runs(lambda cell: cell[k].get("new_accuracy")) for k in range(K)],
        "final_by_classifier": {
            kind: {
                part: over_runs(lambda cell: cell[-1]["classifiers"][kind][part]) for part in ("whole", "old", "new")
            }
            for kind in classifiers
        },
        "final_average_accuracy": sp(average[:, :, -1]),
        "forgetting": sp(metrics.average_forgetting(acc).view(O, S)) if K > 1 else None,
        "forgetting_per_task": forgetting.mean(1).tolist() if K > 1 else [],
        "average_forgetting_rate": sp(metrics.average_forgetting_rate(acc).view(O, S)) if K > 1 else None,
        "backward_transfer": sp(metrics.backward_transfer(acc).view(O, S)) if K > 1 else None,
        "variance_parts": dataclasses.asdict(metrics.variance_parts(whole[:, :, -1])),
        "order_sensitivity": order_measures(unit, units, unit_difficulty, final),
        "rho_f": as_dict(metrics.correlation(difficulty[:, :-1], forgetting.mean(1))) if K > 2 else None,
        "relation_difficulty_forgetting": {
            "relations": [r for r, keep in zip(relations, forgettable.tolist()) if keep],
            "difficulty": relation_difficulty[forgettable].tolist(),
            "forgetting": relation_forgetting[forgettable].tolist(),
            "rho": as_dict(metrics.correlation(relation_difficulty[forgettable], relation_forgetting[forgettable])),
        },
        "order_curriculumness": tau.tolist(),
        "rho_o": as_dict(metrics.correlation(tau, whole[:, :, -1].mean(1))) if K > 1 else None,
        "seconds": sum(row["seconds"] for cell in runs_of(grid) for row in cell),
        "train_examples": sum(row.get("train_examples", 0) for cell in runs_of(grid) for row in cell),
    }


def comparisons(reports: dict[str, dict]) -> list[dict]:
    """Every pair of methods, paired over the same runs (order, seed) on final whole accuracy."""
    names = list(reports)
    final = {m: torch.tensor(r["final_whole_accuracy_per_run"], dtype=torch.float64) for m, r in reports.items()}
    return [
        {"a": a, "b": b, **dataclasses.asdict(metrics.paired_comparison(final[a], final[b]))}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]


def pm(s: dict | None, scale: float = 100) -> str:
    """mean ± error bound in %; no bound where there is one run."""
    if s is None:
        return "-"
    bound = "" if s["error_bound"] is None else f" ± {scale * s['error_bound']:.1f}"
    return f"{scale * s['mean']:.1f}{bound}"


def num(x: float | None, scale: float = 1, digits: int = 2) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def p_value(p: float | None) -> str:
    return "-" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def correlation_cell(c: dict | None) -> str:
    """rho [95% CI] (p)."""
    return "-" if c is None else f"{c['rho']:+.2f} {interval(c)} (p {p_value(c['p_value'])})"


def interval(c: dict) -> str:
    return "[-]" if c["ci_low"] is None else f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"


def correlation_verdict(method: str, name: str, c: dict | None, what: str) -> str:
    """One sentence a reader can quote: is the correlation distinguishable from zero?"""
    if c is None:
        return f"- {method}, {name} ({what}): not defined here (fewer than 3 points, or one side constant)."
    verdict = (
        "distinguishable from zero at the 5% level"
        if c["p_value"] < 0.05
        else "not distinguishable from zero (p ≥ 0.05): no evidence of a relation either way"
    )
    return (
        f"- {method}, {name} ({what}) = {c['rho']:+.2f}, 95% CI {interval(c)}, "
        f"permutation p {p_value(c['p_value'])}, {c['n']} points: {verdict}."
    )


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header), *map(line, rows)]


def pct(x: float | None) -> str:
    return num(x, 100, 1)


def markdown(report: dict) -> str:
    d, methods, seeds = report["dataset"], report["methods"], report["seeds"]
    if d["orders"] * len(seeds) == 1:
        bounds = "one run, so no error bounds"
    elif d["orders"] == 1:
        bounds = "mean ± error bound (t_0.975 · s / √S) over the seeds"
    else:
        averaged = f", each order's {len(seeds)} seeds averaged first" if len(seeds) > 1 else ""
        bounds = f"mean ± error bound (t_0.975 · s / √O) over the orders{averaged}"
    lines = [
        f"# Continual relation extraction report: {d['name']}",
        "",
        f"{d['relations']} relations in {d['tasks']} tasks, {d['orders']} orders x {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}); accuracy in %, {bounds}; std and range over all runs.",
        "",
        "## Comparison",
        "",
        *table(
            ["method", "final W", "std", "range", "final A", "F", "AFR", "BWT", "OS", "time (s)", "train ex/s"],
            [
                [
                    name,
                    pm(m["final_whole_accuracy"]),
                    pct(m["final_whole_accuracy"]["std"]),
                    f"{pct(m['final_whole_accuracy']['min'])}–{pct(m['final_whole_accuracy']['max'])}",
                    pm(m["final_average_accuracy"]),
                    pm(m["forgetting"]),
                    pm(m["average_forgetting_rate"]),
                    pm(m["backward_transfer"]),
                    pct(m["order_sensitivity"]["mean"]),
                    f"{m['seconds']:.0f}",
                    f"{m['train_examples'] / max(m['seconds'], 1e-9):.0f}",
                ]
                for name, m in methods.items()
            ],
        ),
        *orders_and_seeds(methods, len(seeds)),
        *paired_comparisons(report["comparisons"]),
        "",
        "## Classifiers",
        "",
        "Final accuracy of each test-time classifier on the same features: whole, old relations (earlier tasks), "
        "new relations (the last task). The method's own classifier gives the numbers above.",
        "",
        *table(
            ["method", "classifier", "final W", "old", "new"],
            [
                [name, kind, pm(parts["whole"]), pm(parts["old"]), pm(parts["new"])]
                for name, m in methods.items()
                for kind, parts in m["final_by_classifier"].items()
            ],
        ),
    ]
    for name, m in methods.items():
        stages = zip(
            m["whole_accuracy_per_stage"],
            m["average_accuracy_per_stage"],
            m["old_accuracy_per_stage"],
            m["new_accuracy_per_stage"],
        )
        o = m["order_sensitivity"]
        lines += [
            "",
            f"## {name}",
            "",
            *table(["stage", "W_k", "A_k", "old", "new"], [[k + 1, *map(pm, stage)] for k, stage in enumerate(stages)]),
            "",
            f"Final: A {pm(m['final_average_accuracy'])}, F {pm(m['forgetting'])}, "
            f"AFR {pm(m['average_forgetting_rate'])}, BWT {pm(m['backward_transfer'])}, "
            f"OS {pct(o['mean'])}, AOPD {pct(o['aopd'])}, MOPD {pct(o['mopd'])} (over each {o['unit']}'s final accuracy).",
        ]
    lines += order_sensitivity(methods)
    lines += ["", "## Where the time went", "", "In this invocation (a resumed run counts only what it ran).", ""]
    phases = sorted(report["timings"].items(), key=lambda item: -item[1]["seconds"])
    lines += table(
        ["phase", "seconds", "examples", "examples/s"],
        [
            [
                phase,
                f"{t['seconds']:.1f}",
                t["examples"] or "-",
                f"{t['examples'] / t['seconds']:.0f}" if t["examples"] and t["seconds"] else "-",
            ]
            for phase, t in phases
        ],
    )
    lines += ["", "## Definitions", "", DEFINITIONS, ""]
    lines += [f"![{title}]({file})\n" for file, title in PLOTS.items()]
    return "\n".join(lines)


def orders_and_seeds(methods: dict, n_seeds: int) -> list[str]:
    lines = ["", "## Orders and seeds", ""]
    if n_seeds < 2:
        return lines + [
            "One seed per order: the spread over orders mixes the order's effect with seed noise. "
            "`--seeds 2` or more separates them."
        ]

    def variance_cells(v: dict) -> list[str]:
        p = v["p_value"]
        effect = "-" if p is None else ("yes (p < 0.05)" if p < 0.05 else "not distinguishable from seed noise")
        stds = (v["order_means_std"], v["seed_std"], v["order_std"])
        return [*(num(x, 100) for x in stds), num(v["f_statistic"]), p_value(p), effect]

    return lines + [
        "Final W split into the part of the order and the part of the seed (one-way ANOVA, orders as groups). "
        "The F test asks whether orders differ more than their seeds alone would make them.",
        "",
        *table(
            [
                "method",
                "std of order means",
                "seed std (within an order)",
                "order std (estimated)",
                "F",
                "p",
                "order effect",
            ],
            [[name, *variance_cells(m["variance_parts"])] for name, m in methods.items()],
        ),
    ]


def paired_comparisons(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []

    def difference_interval(c: dict) -> str:
        return "-" if c["ci_low"] is None else f"{100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f}"

    return [
        "",
        "## Paired comparisons",
        "",
        "Final W of two methods on the same runs (order, seed): mean difference a − b with its 95% t interval, "
        "the paired t test and the Wilcoxon signed-rank test.",
        "",
        *table(
            ["a − b", "runs", "difference", "95% CI", "t test p", "Wilcoxon p"],
            [
                [
                    f"{c['a']} − {c['b']}",
                    c["n"],
                    f"{100 * c['mean_difference']:+.1f}",
                    difference_interval(c),
                    p_value(c["t_p_value"]),
                    p_value(c["wilcoxon_p_value"]),
                ]
                for c in comparisons
            ],
        ),
    ]


def order_sensitivity(methods: dict) -> list[str]:
    rows, verdicts = [], []
    for name, m in methods.items():
        o, by_relation = m["order_sensitivity"], m["relation_difficulty_forgetting"]["rho"]
        taus = ", ".join(f"{t:+.2f}" for t in m["order_curriculumness"])
        rows.append(
            [
                name,
                pct(o["mean"]),
                pct(o["difficulty_weighted"]),
                pct(o["aopd"]),
                pct(o["mopd"]),
                correlation_cell(m["rho_f"]),
                correlation_cell(by_relation),
                correlation_cell(m["rho_o"]),
                taus,
            ]
        )
        verdicts += [
            correlation_verdict(name, "rho_f", m["rho_f"], "task difficulty against forgetting"),
            correlation_verdict(name, "rho_f per relation", by_relation, "relation difficulty against forgetting"),
            correlation_verdict(name, "rho_o", m["rho_o"], "easy-first-ness of the order against final W"),
        ]
    header = ["method", "OS", "OS_d", "AOPD", "MOPD", "rho_f (tasks)", "rho_f (relations)", "rho_o", "tau_o per order"]
    return [
        "",
        "## Order sensitivity and difficulty",
        "",
        "Correlations: Spearman's rho [95% bootstrap interval] (permutation p).",
        "",
        *table(header, rows),
        "",
        *verdicts,
    ]


DEFINITIONS = (
    "a[k][j]: accuracy on the task at position j after training task k. A run is one (order, seed). "
    "W_k: accuracy on all seen relations' test examples after task k. A_k: mean of the per-task accuracies. "
    "F: mean over tasks j < K of max_{l<K} a[l][j] − a[K][j]. AFR: mean of (a[j][j] − a[K][j]) / a[j][j]. "
    "BWT: mean of a[K][j] − a[j][j]. The order measures use each unit's final accuracy, seeds averaged; "
    "the unit is the task when every order holds the same tasks, otherwise the relation. "
    "OS: mean over units of the std over orders. OPD_j: max − min over orders of unit j's final accuracy; "
    "AOPD: mean of OPD_j; MOPD: max of OPD_j (Yoon et al., ICLR 2020). "
    "Task difficulty d(T_i): mean over the other tasks T_j of the mean type-distribution similarity between "
    "their relations (higher = more confusable); a relation's difficulty d(r | R) is its mean similarity to the "
    "other relations. OS_d: OS weighted by the units' difficulty, sum d_j OS_j / sum d_j. "
    "rho_f: Spearman correlation of task difficulty and forgetting f_j, pooled over orders (seeds averaged); "
    "per relation: of d(r | R) and the relation's forgetting averaged over runs. "
    "tau_o: Kendall correlation of task position and difficulty within order o (+1 = easy to hard). "
    "rho_o: Spearman correlation across orders of tau_o and the final W_K (seeds averaged). "
    "Seed std: pooled std over seeds within an order; order std: sqrt(max(0, var(order means) − seed var / S))."
)
PLOTS = {
    "accuracy_by_stage.png": "accuracy by stage",
    "accuracy_matrix.png": "final accuracy matrix",
    "difficulty_forgetting.png": "task difficulty and forgetting",
    "relation_difficulty_forgetting.png": "relation difficulty and forgetting",
    "order_curriculumness.png": "curriculum-ness of the order and final accuracy",
}


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
    _scatter(
        plt,
        run_dir / "relation_difficulty_forgetting.png",
        {
            n: (
                m["relation_difficulty_forgetting"]["difficulty"],
                np.array(m["relation_difficulty_forgetting"]["forgetting"]) * 100,
            )
            for n, m in methods.items()
        },
        "relation difficulty d(r | R)",
        "forgetting of the relation (%), mean over runs",
        "Are harder relations forgotten more?",
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
    seeds = config.run_seeds()
    K = len(experiment.orders[0].tasks)
    methods = {
        m: method_report(
            [[[rows[(m, o, seed, k)] for k in range(K)] for seed in seeds] for o in range(len(experiment.orders))],
            experiment,
        )
        for m in config.train.methods
    }
    report = {
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
        "timings": timings,
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    (run_dir / "report.md").write_text(markdown(report))
    plot(report, run_dir)
    return report
