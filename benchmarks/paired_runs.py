"""Final W of a method in run directories that a merged report refuses to pair (they differ in
the head, the encoder budget, or their `--seed`), paired over their shared (order, seed) cells:
each cell's figures, then the mean difference A − B with its 95% t interval, the paired t test
and the Wilcoxon signed-rank test (cml.metrics.paired_comparison, as the report's own pairs) over
the cells and, where an order has several seeds, over the order means (stricter: an order's
seeds share the order). B may be several runs and another method (`--method-b`, an ablation).
A run's `--seed` is more than its first cell's seed: it also seeds the induced entity types (the
relation space) and the random parts of the model and data, so a cell of seed 2022 from a
`--seed 2022` run is not the seed-2022 cell of a `--seed 2021 --seeds 2` run; a pair across such
runs says so, as it says an order index that holds other tasks in A and B. A cell that has
begun but not reached its last task is left out, with a note. The cells and orders are read from
the runs' own files (results.jsonl, report.json), so the committed runs pair without their data.

python benchmarks/paired_runs.py RUN_A RUN_B [RUN_B ...] [--method cml] [--method-b cml-no-reversed]
"""

import argparse
import json
from pathlib import Path

import torch

from cml.cells import Cell
from cml.config import load_config
from cml.experiment import build_experiment
from cml.metrics import paired_comparison
from cml.runner import CONFIG_FILE, read_results

args = argparse.ArgumentParser()
args.add_argument("a", type=Path)
args.add_argument("b", type=Path, nargs="+")
args.add_argument("--method", default="cml")
args.add_argument("--method-b", help="B's method (default: --method)")
a = args.parse_args()


def orders_of(run_dir: Path) -> list[list[list[str]]]:
    """Each order's tasks: from the run's report where it has one (written as each invocation ends),
    so that pairing the committed runs needs neither their data nor the encoder; else from the data."""
    report = run_dir / "report.json"
    if report.exists():
        return [order["tasks"] for order in json.loads(report.read_text())["orders"]]
    return [order.tasks for order in build_experiment(load_config(run_dir / CONFIG_FILE)).orders]


def final_w(run_dir: Path, method: str) -> dict[tuple[int, int], float]:
    """(order, seed) -> final whole accuracy in %: the last task's row, weighted by task size, for
    the cells of `method` that have reached their last task. A cell that has begun but not ended
    (a run in flight, or interrupted) is left out and said: its latest row is not a final W."""
    rows = read_results(run_dir)
    tasks = len(orders_of(run_dir)[0])
    begun = {(o, s) for m, o, s, _ in rows if m == method}
    cut = sorted(c for c in begun if any((method, *c, k) not in rows for k in range(tasks)))
    if cut:
        print(f"note: {run_dir}: left out, not finished: {', '.join(Cell(method, *c).name for c in cut)}\n")
    out = {}
    for order, seed in sorted(begun - set(cut)):
        row = rows[(method, order, seed, tasks - 1)]
        weighted = sum(n * acc for n, acc in zip(row["task_size"], row["task_accuracy"]))
        out[(order, seed)] = 100 * weighted / sum(row["task_size"])
    return out


method_b = a.method_b or a.method
first, second, base = final_w(a.a, a.method), {}, {}
for run_dir in a.b:
    cells_b = final_w(run_dir, method_b)
    second.update(cells_b)
    base |= dict.fromkeys(cells_b, load_config(run_dir / CONFIG_FILE).seed)
cells = sorted(set(first) & set(second))
name_a, name_b = f"{a.method} ({a.a.name})", f"{method_b} ({', '.join(d.name for d in a.b)})"
if not cells:
    raise SystemExit(f"no (order, seed) cell in both {name_a} and {name_b}")
seed_a = load_config(a.a / CONFIG_FILE).seed
orders_a = orders_of(a.a)
for run_dir in a.b:  # the same order index may hold another stream (--order-protocol, --tasks, ...)
    orders_b = orders_of(run_dir)
    other = sorted({o for o, _ in cells if o < min(len(orders_a), len(orders_b)) and orders_a[o] != orders_b[o]})
    if other:
        print(f"note: {run_dir}'s orders {other} hold other tasks than {a.a}'s: their pairs compare other streams\n")
apart = sorted({base[k] for k in cells} - {seed_a})
if apart:
    print(f"note: B's cells of --seed {apart} pair with A's of --seed {seed_a}: their relation spaces differ too\n")
print(f"| order | seed | {name_a} | {name_b} | difference |\n|---|---|---|---|---|")
for order, seed in cells:
    x, y = first[(order, seed)], second[(order, seed)]
    print(f"| {order} | {seed} | {x:.1f} | {y:.1f} | {x - y:+.1f} |")
p = lambda value: "undefined" if value is None else f"{value:.2g}"  # one pair: no test


def say(pairs: list[tuple[float, float]], unit: str) -> None:
    c = paired_comparison(*torch.tensor(pairs, dtype=torch.float64).T)
    interval = f"{c.ci_low:+.2f} to {c.ci_high:+.2f}" if c.ci_low is not None else "undefined"
    print(
        f"{name_a} − {name_b} over {c.n} {unit}: {c.mean_difference:+.2f} (95% {interval}), "
        f"paired t p {p(c.t_p_value)}, Wilcoxon p {p(c.wilcoxon_p_value)}"
    )


print()
say([(first[k], second[k]) for k in cells], "cells")
orders = sorted({o for o, _ in cells})
if 1 < len(orders) < len(cells):  # an order's seeds share the order: the stricter test pairs order means
    mean = lambda w, o: sum(w[k] for k in cells if k[0] == o) / sum(k[0] == o for k in cells)
    say([(mean(first, o), mean(second, o)) for o in orders], "order means (its seeds averaged)")
