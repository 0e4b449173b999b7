"""Your own dataset under a name of its own, then a run on it:

    python examples/register_dataset.py --dataset mydata --data-dir DIR --method cml,replay ...

DIR holds train.json, val.json and test.json, each a list of records
`{"tokens": [...], "h": [start, end], "t": [start, end], "relation": "..."}` (spans are token
positions, end excluded). Every flag of run_cml.py works here.
"""

import sys
from pathlib import Path

from cml.cli import main
from cml.data import RelationDataset, RelationExample, register
from cml.data.io import read_json


@register("mydata")
def load_mydata(directory: Path, seed: int) -> RelationDataset:
    """The data directory and the run's seed (unused here: the files are already split)."""
    splits = {}
    for name in ("train", "val", "test"):
        path = directory / f"{name}.json"
        splits[name] = []
        for i, r in enumerate(read_json(path)):
            example = RelationExample(tuple(r["tokens"]), tuple(r["h"]), tuple(r["t"]), r["relation"])
            example.check(path, f"example {i}")  # an empty or out-of-range span is a one-line error
            splits[name].append(example)
    relations = sorted({ex.relation for ex in splits["train"]})
    return RelationDataset("mydata", splits["train"], splits["val"], splits["test"], relations)


if __name__ == "__main__":
    sys.exit(main())
