"""FewRel in its JSON format: pre-split directories, the raw distribution, single files.

FewRel JSON is `{relation: [{"tokens": [...], "h": [mention, entity_id, [[positions]]], "t": ...}]}`.
A mention may occur several times; the first occurrence is the marked one (as in FewRel's own
tooling).
"""

from __future__ import annotations

import random
from pathlib import Path

from cml.data.io import read_by_relation, read_json
from cml.data.records import RelationDataset, RelationExample
from cml.errors import CMLInputError

PRESPLIT_FILES = ("train.json", "test.json")  # and val.json where there is a validation split
VAL_FILE = "val.json"
RAW_FILES = ("train_wiki.json", "val_wiki.json")
SPLIT_RATIOS = (0.6, 0.2, 0.2)  # 420 / 140 / 140 of FewRel's 700 per relation


def _span(entity: object, where: str, path: Path) -> tuple[str | None, tuple[int, int]]:
    if not (isinstance(entity, list) and len(entity) == 3 and isinstance(entity[2], list) and entity[2]):
        raise CMLInputError(f"{where}: entity must be [mention, id, [[positions], ...]]", path)
    positions = entity[2][0]
    if not isinstance(positions, list) or not positions or not all(isinstance(p, int) for p in positions):
        raise CMLInputError(f"{where}: entity span is empty or not a list of token positions", path)
    entity_id = entity[1] if isinstance(entity[1], str) else None
    return entity_id, (min(positions), max(positions) + 1)


def read_fewrel_file(path: str | Path) -> dict[str, list[RelationExample]]:
    """Parse and check one FewRel-format file; relations keep the file's order."""
    path = Path(path)
    out: dict[str, list[RelationExample]] = {}
    for relation, records in read_by_relation(path, ("tokens", "h", "t")).items():
        examples = []
        for where, item in records:
            head_id, head = _span(item["h"], where, path)
            tail_id, tail = _span(item["t"], where, path)
            ex = RelationExample(tuple(item["tokens"]), head, tail, relation, head_id, tail_id)
            ex.check(path, where)
            examples.append(ex)
        out[relation] = examples
    return out


def split_by_ratio(
    per_relation: dict[str, list[RelationExample]], seed: int, source: str | Path, ratios=SPLIT_RATIOS
) -> tuple[list[RelationExample], list[RelationExample], list[RelationExample]]:
    """Seeded per-relation train/val/test split; each relation's shuffle depends only on (seed, relation)."""
    train, val, test = [], [], []
    for relation, examples in per_relation.items():
        n = len(examples)
        n_val, n_test = round(n * ratios[1]), round(n * ratios[2])
        if n_val < 1 or n_test < 1 or n - n_val - n_test < 1:
            raise CMLInputError(
                f"relation {relation} has {n} examples, too few for a "
                f"{'/'.join(str(r) for r in ratios)} train/val/test split (needs at least one in each)",
                source,
            )
        shuffled = list(examples)
        random.Random(f"{seed}:{relation}").shuffle(shuffled)
        n_train = n - n_val - n_test
        train += shuffled[:n_train]
        val += shuffled[n_train : n_train + n_val]
        test += shuffled[n_train + n_val :]
    return train, val, test


def read_task_orders(path: Path, relations: list[str]) -> list[list[list[str]]]:
    """Task orders: a list of orders, each a list of tasks, each a list of relation ids."""
    return check_task_orders(read_json(path), relations, path)


def check_task_orders(orders, relations: list[str], path: Path) -> list[list[list[str]]]:
    """`orders` if it is a list of orders of tasks of known relations, none named twice in an order."""
    known = set(relations)
    if not isinstance(orders, list) or not all(isinstance(o, list) for o in orders):
        raise CMLInputError("expected a list of orders, each a list of tasks (lists of relation ids)", path)
    for i, order in enumerate(orders):
        seen: set[str] = set()
        for task in order:
            if not isinstance(task, list):
                raise CMLInputError(f"order {i}: each task must be a list of relation ids", path)
            for r in task:
                if r not in known:
                    raise CMLInputError(f"order {i} names unknown relation {r!r}", path)
                if r in seen:
                    raise CMLInputError(f"order {i} names relation {r!r} twice", path)
                seen.add(r)
    return orders


def relation_names(directory: Path) -> dict[str, str]:
    path = directory / "pid2name.json"
    if not path.exists():
        return {}
    return {pid: v[0] for pid, v in read_json(path).items() if isinstance(v, list) and v}


def _with_orders(ds: RelationDataset, directory: Path) -> RelationDataset:
    orders_path = directory / "task_orders.json"
    if orders_path.exists():
        ds.task_orders = read_task_orders(orders_path, ds.relations)
    ds.relation_names = relation_names(directory)
    return ds


def load_fewrel_dir(directory: str | Path, seed: int = 0, name: str = "fewrel") -> RelationDataset:
    """A pre-split directory (train.json, test.json, and val.json where there is a validation
    split) or the raw release (train_wiki + val_wiki)."""
    directory = Path(directory)
    if all((directory / f).exists() for f in PRESPLIT_FILES):
        files = ("train.json", VAL_FILE, "test.json")
        splits = [read_fewrel_file(directory / f) if (directory / f).exists() else {} for f in files]
        relations = list(splits[0])
        for f, split in zip(files[1:], splits[1:]):
            unknown = set(split) - set(relations)
            if unknown:
                raise CMLInputError(f"relations not in train.json: {sorted(unknown)[:5]}", directory / f)
        train, val, test = ([ex for r in relations for ex in split.get(r, [])] for split in splits)
        ds = RelationDataset(name, train, val, test, relations, source=str(directory))
        return _with_orders(ds, directory)
    raw = [directory / f for f in RAW_FILES if (directory / f).exists()]
    if not raw:
        raise CMLInputError(
            f"no FewRel files: expected {', '.join(PRESPLIT_FILES)} (pre-split, with {VAL_FILE} if there is a "
            f"validation split) or {', '.join(RAW_FILES)} (raw)",
            directory,
        )
    per_relation: dict[str, list[RelationExample]] = {}
    for path in raw:
        per_relation.update(read_fewrel_file(path))
    train, val, test = split_by_ratio(per_relation, seed, directory)
    source = f"{directory} (raw FewRel, cut 0.6/0.2/0.2 per relation with the run's seed: not the standard continual-RE split)"
    ds = RelationDataset(name, train, val, test, list(per_relation), source=source)
    return _with_orders(ds, directory)


def load_fewrel_file(path: str | Path, seed: int = 0) -> RelationDataset:
    """Any single file in FewRel format, split per relation with the seeded 0.6/0.2/0.2 ratio."""
    path = Path(path)
    per_relation = read_fewrel_file(path)
    train, val, test = split_by_ratio(per_relation, seed, path)
    ds = RelationDataset(path.stem, train, val, test, list(per_relation), source=str(path))
    ds.relation_names = relation_names(path.parent)
    return ds
