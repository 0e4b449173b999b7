"""Final W of a method in run directories that a merged report refuses to pair (they differ in
the head, the encoder budget, or their `--seed`), paired over their shared (order, seed) cells:
each cell's figures, the mean difference A − B with its 95% t interval, the paired t test and
the Wilcoxon signed-rank test (cml.metrics.paired_comparison, as the report's own pairs). B may
be several runs and another method (`--method-b`, an ablation). A run's `--seed` is more than
its first cell's seed: it also seeds the induced entity types (the relation space) and the
random parts of the model and data, so a cell of seed 2022 from a `--seed 2022` run is not the
seed-2022 cell of a `--seed 2021 --seeds 2` run; a pair across such runs says so.

python benchmarks/paired_runs.py RUN_A RUN_B [RUN_B ...] [--method cml] [--method-b cml-no-reversed]
"""

import argparse
from pathlib import Path

import torch

from cml.config import load_config
from cml.metrics import paired_comparison
from cml.runner import CONFIG_FILE, read_results

args = argparse.ArgumentParser()
args.add_argument("a", type=Path)
args.add_argument("b", type=Path, nargs="+")
args.add_argument("--method", default="cml")
args.add_argument("--method-b", help="B's method (default: --method)")
a = args.parse_args()


def final_w(run_dir: Path, method: str) -> dict[tuple[int, int], float]:
    """(order, seed) -> final whole accuracy in %: the last task's row, weighted by task size."""
    rows = {key: row for key, row in read_results(run_dir).items() if key[0] == method}
    last = {(order, seed): max(k for m, o, s, k in rows if (o, s) == (order, seed)) for _, order, seed, _ in rows}
    out = {}
    for (order, seed), task in last.items():
        row = rows[(method, order, seed, task)]
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
apart = sorted({base[k] for k in cells} - {seed_a})
if apart:
    print(f"note: B's cells of --seed {apart} pair with A's of --seed {seed_a}: their relation spaces differ too\n")
print(f"| order | seed | {name_a} | {name_b} | difference |\n|---|---|---|---|---|")
for order, seed in cells:
    x, y = first[(order, seed)], second[(order, seed)]
    print(f"| {order} | {seed} | {x:.1f} | {y:.1f} | {x - y:+.1f} |")
c = paired_comparison(torch.tensor([first[k] for k in cells]), torch.tensor([second[k] for k in cells]))
interval = f"{c.ci_low:+.2f} to {c.ci_high:+.2f}" if c.ci_low is not None else "undefined"
p = lambda value: "undefined" if value is None else f"{value:.2g}"  # one cell: no test
print(
    f"\n{name_a} − {name_b} over {c.n} cells: {c.mean_difference:+.2f} (95% {interval}), "
    f"paired t p {p(c.t_p_value)}, Wilcoxon p {p(c.wilcoxon_p_value)}"
)
