"""Time one head-search step (architecture + weight update) for each hypergradient estimator,
on a supernet the size of a MiniLM search (768-d entity states, 8 classes, batch 64).

python benchmarks/search_step.py [--steps 20] [--threads N]
"""

import argparse
import time
from itertools import repeat

import torch
from _machine import header

from cml.config import SearchConfig
from cml.nas.search import DartsSearch, SearchModel

args = argparse.ArgumentParser()
args.add_argument("--steps", type=int, default=20)
args.add_argument("--threads", type=int, default=None)
args.add_argument("--in-dim", type=int, default=768)
a = args.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
header()
print(f"threads: {torch.get_num_threads()}")
g = torch.Generator().manual_seed(0)
batch = (torch.randn(64, a.in_dim, generator=g), torch.randint(0, 8, (64,), generator=g))
print("| estimator | s / step | steps / s |")
print("|---|---|---|")
for method in ("darts1", "darts2", "idarts"):
    config = SearchConfig(method=method, steps=a.steps)
    searcher = DartsSearch(SearchModel(a.in_dim, 8, config.width, config.nodes), config)
    searcher.step(repeat(batch), repeat(batch))  # warm-up
    start = time.perf_counter()
    for _ in range(a.steps):
        searcher.step(repeat(batch), repeat(batch))
    per_step = (time.perf_counter() - start) / a.steps
    name = f"{method} (K = {config.neumann_terms})" if method == "idarts" else method
    print(f"| {name} | {per_step:.3f} | {1 / per_step:.1f} |")
