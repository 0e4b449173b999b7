"""What a dataset a user brings may hold that no loader's format rule catches, checked once the
splits are cut: no relations, a relation without training data (an error), and what the run can
go on with but the user should know (one warning line each): a relation with a single training
example, examples that repeat across splits (test leakage), head and tail spans that overlap."""

from __future__ import annotations

from collections import Counter

from cml.data.records import RelationDataset, RelationExample
from cml.errors import CMLInputError, warn


def _key(ex: RelationExample) -> tuple:
    return ex.tokens, ex.head, ex.tail


def check_dataset(ds: RelationDataset) -> None:
    source = ds.source or ds.name
    if not ds.relations:
        raise CMLInputError("the dataset has no relations", source)
    per_relation = Counter(ex.relation for ex in ds.train)
    empty = [r for r in ds.relations if per_relation[r] == 0]
    if empty:
        raise CMLInputError(
            f"relation {empty[0]!r} has no training examples"
            + (f" ({len(empty)} relations have none)" if len(empty) > 1 else ""),
            source,
        )
    single = [r for r in ds.relations if per_relation[r] == 1]
    if single:
        warn(
            f"{len(single)} relation(s) have a single training example ({', '.join(single[:3])}"
            f"{', ...' if len(single) > 3 else ''}): their memory and prototypes are that one sentence",
            source,
        )
    train = {_key(ex) for ex in ds.train}
    for name, split in (("validation", ds.val), ("test", ds.test)):
        repeated = sum(_key(ex) in train for ex in split)
        if repeated:
            warn(
                f"{repeated} of {len(split):,} {name} examples repeat a training example (the same sentence and "
                "entities): test leakage, their accuracy is partly memorised",
                source,
            )
    overlapping = sum(
        ex.head[0] < ex.tail[1] and ex.tail[0] < ex.head[1] for split in (ds.train, ds.val, ds.test) for ex in split
    )
    if overlapping:
        warn(f"{overlapping} examples have head and tail spans that overlap: their entity markers nest", source)
