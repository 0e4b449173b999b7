"""Download the standard continual-RE split of FewRel as `--dataset fewrel` does (pinned commit,
every file's sha256 checked) and compare it with a reference copy: the same orders, and the same
examples (tokens, entity spans, relation) in every split.

python benchmarks/standard_split.py DIR [REFERENCE]

DIR is where the files go (what is already there is kept); REFERENCE defaults to
../shared/data/fewrel. `CML_MIRROR=http://127.0.0.1:PORT` fetches from a local mirror laid out
as raw.githubusercontent.com is (owner/name/commit/path).
"""

import sys
import time
from pathlib import Path

from cml.data import load_dataset
from cml.data.download import STANDARD_FEWREL, missing

target = Path(sys.argv[1])
reference = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared/data/fewrel"
absent = missing(STANDARD_FEWREL, target)
began = time.perf_counter()
got = load_dataset("fewrel", target)
print(f"{len(absent)} files fetched and checked, loaded in {time.perf_counter() - began:.1f} s: {got.source}")
ref = load_dataset("fewrel", reference)
print(f"orders identical to {reference}: {got.task_orders == ref.task_orders}")
for split in ("train", "val", "test"):
    key = lambda ex: (ex.relation, ex.tokens, ex.head, ex.tail)
    a, b = sorted(map(key, getattr(got, split))), sorted(map(key, getattr(ref, split)))
    print(f"{split}: {len(a):,} examples, identical: {a == b}")
