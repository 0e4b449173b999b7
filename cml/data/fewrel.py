"""FewRel in its JSON format: pre-split directories, the raw distribution, single files, download.

FewRel JSON is `{relation: [{"tokens": [...], "h": [mention, entity_id, [[positions]]], "t": ...}]}`.
A mention may occur several times; the first occurrence is the marked one (as in FewRel's own
tooling).
"""

from __future__ import annotations

import os
import random
import urllib.error
from pathlib import Path

import torch

from cml.data.io import read_by_relation, read_json
from cml.data.records import RelationDataset, RelationExample
from cml.errors import CMLInputError

PRESPLIT_FILES = ("train.json", "test.json")  # and val.json where there is a validation split
VAL_FILE = "val.json"
RAW_FILES = ("train_wiki.json", "val_wiki.json")
SPLIT_RATIOS = (0.6, 0.2, 0.2)  # 420 / 140 / 140 of FewRel's 700 per relation
FEWREL_URL = "https://github.com/thunlp/FewRel/raw/master/data"
# sha256 of the official release files. train_wiki.json's digest could not be taken on the
# offline machine this was written on; its content is checked instead (64 relations x 700).
CHECKSUMS: dict[str, str | None] = {
    "train_wiki.json": None,
    "val_wiki.json": "76bb44c2485b6faed358a3ce040eadafcc8a8835245cd7e6afc1bef672d4a0bf",
    "pid2name.json": "eeedd25512a8e4c2bc06b78009836d27de81807bcba6ed929debd5cd713c07ea",
}
EXPECTED_RELATIONS = {"train_wiki.json": 64, "val_wiki.json": 16}


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


def _relation_names(directory: Path) -> dict[str, str]:
    path = directory / "pid2name.json"
    if not path.exists():
        return {}
    return {pid: v[0] for pid, v in read_json(path).items() if isinstance(v, list) and v}


def _with_orders(ds: RelationDataset, directory: Path) -> RelationDataset:
    orders_path = directory / "task_orders.json"
    if orders_path.exists():
        ds.task_orders = read_task_orders(orders_path, ds.relations)
    ds.relation_names = _relation_names(directory)
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
    ds = RelationDataset(name, train, val, test, list(per_relation), source=str(directory))
    return _with_orders(ds, directory)


def load_fewrel_file(path: str | Path, seed: int = 0) -> RelationDataset:
    """Any single file in FewRel format, split per relation with the seeded 0.6/0.2/0.2 ratio."""
    path = Path(path)
    per_relation = read_fewrel_file(path)
    train, val, test = split_by_ratio(per_relation, seed, path)
    ds = RelationDataset(path.stem, train, val, test, list(per_relation), source=str(path))
    ds.relation_names = _relation_names(path.parent)
    return ds


def download_fewrel(directory: str | Path, base_url: str | None = None) -> None:
    """Fetch the official FewRel 1.0 release files into `directory`, checking each one."""
    directory = Path(directory)
    base_url = base_url or os.environ.get("CML_FEWREL_URL", FEWREL_URL)
    directory.mkdir(parents=True, exist_ok=True)
    for fname in (*RAW_FILES, "pid2name.json"):
        target = directory / fname
        if target.exists():
            continue
        url = f"{base_url}/{fname}"
        partial = target.with_suffix(".part")
        try:  # torch.hub shows progress, checks the sha256 and leaves nothing behind on failure
            torch.hub.download_url_to_file(url, str(partial), hash_prefix=CHECKSUMS.get(fname), progress=True)
        except (urllib.error.URLError, OSError) as e:
            raise CMLInputError(
                f"could not download {url} ({getattr(e, 'reason', e)}). Without network, put "
                f"{', '.join(RAW_FILES)} (and optionally pid2name.json) from the FewRel release "
                f"(https://github.com/thunlp/FewRel/tree/master/data) in this directory, or point "
                f"--data-dir at a directory holding them or a pre-split train/val/test.json",
                directory,
            ) from None
        except RuntimeError as e:  # the hash
            raise CMLInputError(f"checksum mismatch for {fname} downloaded from {url} ({e})", directory) from None
        if fname in EXPECTED_RELATIONS:
            n = len(read_fewrel_file(partial))
            if n != EXPECTED_RELATIONS[fname]:
                partial.unlink()
                raise CMLInputError(
                    f"{fname} from {url} has {n} relations, expected {EXPECTED_RELATIONS[fname]}; file removed",
                    directory,
                )
        partial.rename(target)
