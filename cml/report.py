"""The run report rendered from `cml.summary`'s plain data: report.json, report.md (tables) and
PNG plots. Nothing here computes a number; it formats and draws."""

from __future__ import annotations

import json
from pathlib import Path

from cml.config import RunConfig
from cml.experiment import Experiment
from cml.files import write_text_atomically
from cml.summary import summarize


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


def markdown(report: dict, plots: bool = True) -> str:
    """The report as Markdown; `plots`: link the PNG plots drawn beside it."""
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
        (
            f"{d['relations']} relations in {d['tasks']} tasks, {d['orders']} orders x {len(seeds)} seed(s) "
            f"({', '.join(map(str, seeds))}); accuracy in %, {bounds}; std and range over all runs."
            + (
                " One task: nothing learned before it can be forgotten, so forgetting (F, AFR, BWT) and its "
                "sources are not defined (-), and W is the accuracy of learning every relation at once."
                if d["tasks"] == 1
                else ""
            )
        ),
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
                    f"{m['train_examples_per_second']:.0f}",
                ]
                for name, m in methods.items()
            ],
        ),
        *orders_and_seeds(methods, len(seeds)),
        *paired_comparisons(report["comparisons"]),
        "",
        "## Classifiers",
        "",
        (
            "Final accuracy of each test-time classifier on the same features: whole, old relations (earlier tasks), "
            "new relations (the last task). The method's own classifier gives the numbers above."
        ),
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
            (
                f"Final: A {pm(m['final_average_accuracy'])}, F {pm(m['forgetting'])}, "
                f"AFR {pm(m['average_forgetting_rate'])}, BWT {pm(m['backward_transfer'])}, "
                f"OS {pct(o['mean'])}, AOPD {pct(o['aopd'])}, MOPD {pct(o['mopd'])} (over each {o['unit']}'s final accuracy)."
            ),
        ]
    lines += order_sensitivity(methods)
    lines += forgetting_sources(methods)
    lines += ["", "## Where the time went", "", "In this invocation (a resumed run counts only what it ran).", ""]
    if report.get("wall"):
        w = report["wall"]
        against = (
            f", against {w['estimated_seconds']:.0f} s estimated before the cells ran"
            if w["estimated_seconds"] is not None
            else " (no cell was left to run)"
        )
        lines += [f"Wall time {w['seconds']:.0f} s{against}.", ""]
    lines += table(
        ["phase", "seconds", "examples", "examples/s"],
        [
            [phase, f"{t['seconds']:.1f}", t["examples"] or "-", num(t["examples_per_second"], digits=0)]
            for phase, t in report["timings"].items()
        ],
    )
    lines += ["", "## Definitions", "", DEFINITIONS, ""]
    if plots:
        lines += [f"![{title}]({file})\n" for file, title in PLOTS.items()]
    return "\n".join(lines)


def orders_and_seeds(methods: dict, n_seeds: int) -> list[str]:
    lines = ["", "## Orders and seeds", ""]
    if n_seeds < 2:
        return lines + [
            (
                "One seed per order: the spread over orders mixes the order's effect with seed noise. "
                "`--seeds 2` or more separates them."
            )
        ]

    def variance_cells(v: dict) -> list[str]:
        p = v["p_value"]
        effect = "-" if p is None else ("yes (p < 0.05)" if p < 0.05 else "not distinguishable from seed noise")
        stds = (v["order_means_std"], v["seed_std"], v["order_std"])
        return [*(num(x, 100) for x in stds), num(v["f_statistic"]), p_value(p), effect]

    return lines + [
        (
            "Final W split into the part of the order and the part of the seed (one-way ANOVA, orders as groups). "
            "The F test asks whether orders differ more than their seeds alone would make them."
        ),
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
        (
            "Final W of two methods on the same runs (order, seed): mean difference a − b with its 95% t interval, "
            "the paired t test and the Wilcoxon signed-rank test. Where the orders have several seeds, also over "
            "the order means (each order's seeds averaged): an order's runs share the order, so this is the "
            "stricter test."
        ),
        "",
        *table(
            ["a − b", "over", "pairs", "difference", "95% CI", "t test p", "Wilcoxon p"],
            [
                [
                    f"{c['a']} − {c['b']}",
                    c["over"],
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


def named(relation: str, name: str | None) -> str:
    return relation if not name or name == relation else f"{relation} ({name})"


def forgetting_sources(methods: dict) -> list[str]:
    lines = [
        "",
        "## Where forgetting comes from",
        "",
        (
            "The errors on old relations after the last task, summed over runs (true old relation -> predicted "
            "relation), beside the two relations' type similarity and the share of those errors in which the "
            "predicted relation arrived after the true one. threat(r): r's mean type similarity to the relations "
            "that arrive after it, against r's forgetting (the mean over the order's seeds), over every (order, "
            "relation) with a later task."
        ),
    ]
    verdicts = []
    for name, m in methods.items():
        f = m["forgetting_sources"]
        if not f["confusions"]:
            continue
        lines += [
            "",
            f"### {name}",
            "",
            (
                f"{f['old_errors']} errors on old relations; mean similarity of the confused pairs "
                f"{num(f['similarity_of_confused'])} against {num(f['similarity_of_all_pairs'])} over all pairs."
            ),
            "",
            *table(
                ["true (old)", "predicted", "errors", "similarity", "predicted arrived later"],
                [
                    [
                        named(c["true"], c["true_name"]),
                        named(c["predicted"], c["predicted_name"]),
                        c["count"],
                        num(c["similarity"]),
                        f"{100 * c['predicted_later']:.0f}%",
                    ]
                    for c in f["confusions"]
                ],
            ),
        ]
        verdicts.append(
            correlation_verdict(
                name, "rho", f["threat_forgetting"]["rho"], "a relation's threat against its forgetting"
            )
        )
    return lines + (["", *verdicts] if verdicts else [])


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
        band = {k: 100 * np.array(v, dtype=float) for k, v in m["whole_accuracy_by_stage_over_orders"].items()}
        stages = np.arange(1, len(band["mean"]) + 1)
        shown = ~np.isnan(band["mean"])  # the stages evaluated (--eval-every)
        ax.plot(stages[shown], band["mean"][shown], marker="o", label=name)
        ax.fill_between(stages[shown], band["min"][shown], band["max"][shown], alpha=0.2)
    ax.set(xlabel="tasks seen", ylabel="whole accuracy W_k (%)", title="Accuracy by stage (band: range over orders)")
    ax.set_xticks(stages)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_by_stage.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.4), squeeze=False)
    for ax, (name, m) in zip(axes[0], methods.items()):
        mat = 100 * np.array(m["mean_accuracy_matrix"], dtype=float)
        im = ax.imshow(np.ma.masked_invalid(mat), vmin=0, vmax=100, cmap="viridis")
        ax.set(title=name, xlabel="task j (position)", ylabel="after task k")
        k = mat.shape[0]
        ax.set_xticks(range(k), range(1, k + 1))
        ax.set_yticks(range(k), range(1, k + 1))
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%), mean over orders")
    fig.savefig(run_dir / "accuracy_matrix.png", dpi=120)
    plt.close(fig)

    points = lambda key, x, y: {n: (m[key][x], 100 * np.array(m[key][y], dtype=float)) for n, m in methods.items()}
    _scatter(
        plt,
        run_dir / "difficulty_forgetting.png",
        points("task_difficulty_forgetting", "difficulty", "forgetting"),
        "task difficulty d(T)",
        "forgetting f_j (%)",
        "Are harder tasks forgotten more?",
    )
    _scatter(
        plt,
        run_dir / "relation_difficulty_forgetting.png",
        points("relation_difficulty_forgetting", "difficulty", "forgetting"),
        "relation difficulty d(r | R)",
        "forgetting of the relation (%), mean over runs",
        "Are harder relations forgotten more?",
    )
    _scatter(
        plt,
        run_dir / "order_curriculumness.png",
        {
            n: (m["order_curriculumness"], 100 * np.array(m["final_whole_accuracy_per_order"]))
            for n, m in methods.items()
        },
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


def write_report(
    run_dir: Path, config: RunConfig, experiment: Experiment, rows: dict, timings: dict, wall: dict | None = None
) -> dict:
    """report.json, report.md and (`plots: png`) the plots of a run; returns the report's data."""
    report = summarize(config, experiment, rows, timings, wall)
    plots = config.plots == "png"
    write_text_atomically(run_dir / "report.json", json.dumps(report, indent=1))
    write_text_atomically(run_dir / "report.md", markdown(report, plots))
    if plots:
        plot(report, run_dir)
    else:  # an earlier report's plots (a resumed run) would no longer match this one
        for name in PLOTS:
            (run_dir / name).unlink(missing_ok=True)
    return report
