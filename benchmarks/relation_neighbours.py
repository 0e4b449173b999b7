"""Print each chosen relation's nearest relations by domain/range type similarity.

    python benchmarks/relation_neighbours.py --dataset fewrel --data-dir ../shared/data/fewrel \
        --names ../shared/data/fewrel-raw/pid2name.json P26 P40 P22

Uses the same relation space as a run (types: the dataset's, else induced from MiniLM mention
encodings; cached under data/cache).
"""

import argparse
import json
import time
from pathlib import Path

from _machine import header

from cml.config import RunConfig
from cml.data import load_dataset
from cml.experiment import relation_space

args = argparse.ArgumentParser()
args.add_argument("relations", nargs="+")
args.add_argument("--dataset", default="fewrel")
args.add_argument("--data-dir")
args.add_argument("--names", help="pid2name.json for relation names")
args.add_argument("--types", default="auto")
args.add_argument("--similarity", default="kl")
args.add_argument("-k", type=int, default=5)
a = args.parse_args()
header()
config = RunConfig()
config.data.dataset, config.data.data_dir = a.dataset, a.data_dir
config.cml.types, config.cml.similarity = a.types, a.similarity
dataset = load_dataset(a.dataset, a.data_dir)
names = {k: v[0] for k, v in json.loads(Path(a.names).read_text()).items()} if a.names else dataset.relation_names
start = time.perf_counter()
space, source = relation_space(config, dataset)
print(f"types: {source} ({time.perf_counter() - start:.0f} s)")
label = lambda r: f"{r} {names.get(r, '')}".strip()
print(f"| relation | {' | '.join(f'#{i + 1}' for i in range(a.k))} |")
print("|---" * (a.k + 1) + "|")
for relation in a.relations:
    cells = [f"{label(r)} ({s:.2f})" for r, s in space.nearest(relation, a.k)]
    print(f"| {label(relation)} | {' | '.join(cells)} |")
