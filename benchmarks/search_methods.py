"""The search's methods end to end on FewRel's task 0 (frozen MiniLM features, 100 training
examples per relation; the README's search protocol): per configuration and seed, the steps it
ran (the selective stop may end it early), its time, the supernet as trained and cut to its
genotype at the end (the discretisation gap), and the cut cell trained stand-alone from scratch
(`train_head`, the report's head comparison) on validation and test.

python benchmarks/search_methods.py --data-dir ../shared/data/fewrel [--steps 300] [--seeds 2021,2022]
"""

import argparse
import json
import statistics
from pathlib import Path

from _machine import header

from cml.config import load_config
from cml.device import resolve_device
from cml.experiment import build_experiment
from cml.head_search import task_features
from cml.model import make_head
from cml.nas.search import SearchConfig, search, train_head

CONFIGS = {
    "darts1 softmax": {"method": "darts1"},
    "darts1 sparse": {"method": "darts1", "relaxation": "sparse"},
    "darts1 adaptive": {"method": "darts1", "relaxation": "adaptive"},
    "darts1 softmax + selective stop 3": {"method": "darts1", "stop_patience": 3},
    "darts1 sparse + selective stop 3": {"method": "darts1", "relaxation": "sparse", "stop_patience": 3},
    "spos uniform": {"method": "spos"},
    "spos gradual": {"method": "spos", "sampling": "gradual"},
    "spos uniform + alignment 1": {"method": "spos", "alignment": 1.0},
}

args = argparse.ArgumentParser()
args.add_argument("--data-dir", default="../shared/data/fewrel")
args.add_argument("--steps", type=int, default=300)
args.add_argument("--seeds", default="2021,2022")
args.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
args.add_argument("--output", default="results/search-methods")
a = args.parse_args()
header()

config = load_config("configs/fewrel.yaml", {"data": {"data_dir": a.data_dir, "max_per_relation": 100}})
experiment = build_experiment(config)
data = task_features(config, experiment.orders[0].tasks[0], experiment.dataset, resolve_device("cpu"))
in_dim = data["train"].x.shape[1]
print(f"features: {in_dim}-d, {len(data['train'].y)} train / {len(data['val'].y)} val / {len(data['test'].y)} test")

rows = {}
for name in a.configs.split(","):
    for seed in map(int, a.seeds.split(",")):
        result = search(data, SearchConfig(steps=a.steps, **CONFIGS[name]), seed, progress=False)
        path = Path(a.output) / f"{name.replace(' ', '_').replace(',', '')}-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        result.genotype.save(path)
        head = train_head(make_head(str(path), in_dim, in_dim // 2), data, 30, seed)
        last = result.history[-1]
        rows.setdefault(name, []).append(
            {
                "seed": seed,
                "steps": last["step"],
                "seconds": result.seconds,
                "as_trained": last["val_accuracy"],
                "cut": last["val_accuracy_discretised"],
                "cell_val": head["val_accuracy"],
                "cell_test": head["test_accuracy"],
            }
        )
        print(name, json.dumps(rows[name][-1]), flush=True)


def mean(runs: list[dict], key: str, scale: float = 100.0) -> str:
    values = [scale * r[key] for r in runs]
    return f"{statistics.mean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")


print("\n| configuration | steps | search s | supernet as trained | cut to the genotype | gap | cell val | cell test |")
print("|---|---|---|---|---|---|---|---|")
for name, runs in rows.items():
    gap = [100 * (r["as_trained"] - r["cut"]) for r in runs]
    print(
        f"| {name} | {mean(runs, 'steps', 1)} | {mean(runs, 'seconds', 1)} | {mean(runs, 'as_trained')} "
        f"| {mean(runs, 'cut')} | {statistics.mean(gap):+.1f} | {mean(runs, 'cell_val')} | {mean(runs, 'cell_test')} |"
    )
(Path(a.output) / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
