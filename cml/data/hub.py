"""FewRel-shaped datasets through Hugging Face `datasets`: `--dataset hf:ID`.

ID is a hub id (for FewRel itself: `hf:thunlp/few_rel:train_wiki+val_wiki`) or a directory that
`Dataset.save_to_disk` / `DatasetDict.save_to_disk` wrote. A third part chooses splits in the
`datasets` split syntax (`train_wiki+val_wiki`); without it every split is read.

FewRel-shaped means records with `relation`, `tokens`, and `head` / `tail` each holding
`indices` (lists of token positions; the first occurrence is the marked one, as in FewRel's own
JSON) and optionally `type` (FewRel: the entity's Wikidata id). Splits named train, validation
and test are used as they are; other splits are pooled and cut per relation 0.6 / 0.2 / 0.2
with the run's seed, as the raw FewRel release is.
"""

from __future__ import annotations

from pathlib import Path

from cml.data.fewrel import split_by_ratio
from cml.data.records import RelationDataset, RelationExample
from cml.errors import CMLInputError

PREFIX = "hf:"
SPLITS = ("train", "validation", "test")
COLUMNS = ("relation", "tokens", "head", "tail")


def _load(name: str, splits: str | None):
    """A DatasetDict (or one Dataset for chosen splits) from a saved directory or the hub."""
    import datasets

    if Path(name).is_dir():
        loaded = datasets.load_from_disk(name)
        if splits is None:
            return loaded
        if not isinstance(loaded, datasets.DatasetDict):
            raise CMLInputError(f"holds one split, not {splits!r}", name)
        missing = [s for s in splits.split("+") if s not in loaded]
        if missing:
            raise CMLInputError(f"no split {missing[0]!r} (has {', '.join(loaded)})", name)
        return datasets.concatenate_datasets([loaded[s] for s in splits.split("+")])
    try:
        return datasets.load_dataset(name, split=splits)
    except Exception as e:  # noqa: BLE001 (datasets raises many kinds for "not reachable" and "not found")
        raise CMLInputError(
            f"could not load {PREFIX}{name} from the Hugging Face hub ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Without network (or with HF_HUB_OFFLINE=1), "
            f"save it once where there is network (datasets.load_dataset({name!r}).save_to_disk(DIR)) "
            f"and use --dataset {PREFIX}DIR"
        ) from None


def _examples(records, source: str) -> list[RelationExample]:
    missing = [c for c in COLUMNS if c not in records.column_names]
    if missing:
        raise CMLInputError(
            f"not FewRel-shaped: no column {', '.join(missing)} (has {', '.join(records.column_names)})", source
        )
    out = []
    for i, item in enumerate(records):
        where = f"record {i}"
        spans = []
        for side in ("head", "tail"):
            entity = item[side]
            positions = entity.get("indices") if isinstance(entity, dict) else None
            if not positions or not positions[0]:
                raise CMLInputError(f"{where}: {side} has no token indices", source)
            spans.append((min(positions[0]), max(positions[0]) + 1))
        ex = RelationExample(
            tuple(item["tokens"]),
            spans[0],
            spans[1],
            str(item["relation"]),
            item["head"].get("type"),
            item["tail"].get("type"),
        )
        ex.check(source, where)
        out.append(ex)
    return out


def load_hub_dataset(spec: str, seed: int = 0) -> RelationDataset:
    """`spec` is `hf:ID` or `hf:ID:SPLITS`."""
    name, _, splits = spec[len(PREFIX) :].partition(":")
    if not name:
        raise CMLInputError(f"{spec!r}: name a dataset after {PREFIX}")
    loaded = _load(name, splits or None)
    source = f"{spec} (Hugging Face datasets)"
    if hasattr(loaded, "keys") and set(loaded.keys()) >= {"train", "test"} and set(loaded.keys()) <= set(SPLITS):
        train, test = _examples(loaded["train"], source), _examples(loaded["test"], source)
        val = _examples(loaded["validation"], source) if "validation" in loaded else []
        relations = list(dict.fromkeys(ex.relation for ex in train))
        unknown = {ex.relation for ex in val + test} - set(relations)
        if unknown:
            raise CMLInputError(f"relations not in the train split: {sorted(unknown)[:5]}", source)
    else:
        parts = [loaded[s] for s in loaded] if hasattr(loaded, "keys") else [loaded]
        per_relation: dict[str, list[RelationExample]] = {}
        for part in parts:
            for ex in _examples(part, source):
                per_relation.setdefault(ex.relation, []).append(ex)
        train, val, test = split_by_ratio(per_relation, seed, source)
        relations = list(per_relation)
    return RelationDataset(name.rstrip("/").split("/")[-1], train, val, test, relations, source=source)
