"""TACRED in its original JSON format, cut with the standard continual-RE protocol.

Users bring TACRED (it is licensed by the LDC). The protocol of RP-CRE / CRL: drop `no_relation`
and `per:country_of_death` (40 relations remain); per relation, in file order over
train + dev + test, the first min(n // 5, 41) examples are test and up to 320 of the rest are
train; there is no validation split.
"""

from __future__ import annotations

from pathlib import Path

from cml.data.io import read_json
from cml.data.records import RelationDataset, RelationExample
from cml.errors import CMLInputError

FILES = ("train.json", "dev.json", "test.json")
DROPPED = ("no_relation", "per:country_of_death")
MAX_TRAIN, MAX_TEST = 320, 41
PTB_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
KEYS = ("token", "relation", "subj_start", "subj_end", "obj_start", "obj_end", "subj_type", "obj_type")


def cut(examples: list[RelationExample]) -> tuple[list[RelationExample], list[RelationExample]]:
    """RP-CRE / CRL's (train, test) of one relation's examples: the first min(n // 5, 41) are
    test, up to 320 of the rest train."""
    n_test = min(len(examples) // 5, MAX_TEST)
    return examples[n_test : n_test + MAX_TRAIN], examples[:n_test]


def read_tacred_file(path: Path) -> list[RelationExample]:
    data = read_json(path)
    if not isinstance(data, list):
        raise CMLInputError("expected a JSON list of TACRED examples", path)
    out = []
    for i, item in enumerate(data):
        where = f"example {i}" + (f" (id {item.get('id')})" if isinstance(item, dict) and "id" in item else "")
        if not isinstance(item, dict) or not all(k in item for k in KEYS):
            raise CMLInputError(f"{where}: expected keys {', '.join(KEYS)}", path)
        tokens = tuple(PTB_BRACKETS.get(t, t) for t in item["token"])
        # TACRED spans are inclusive [start, end].
        ex = RelationExample(
            tokens,
            (item["subj_start"], item["subj_end"] + 1),
            (item["obj_start"], item["obj_end"] + 1),
            item["relation"],
            head_type=item["subj_type"],
            tail_type=item["obj_type"],
        )
        ex.check(path, where)
        out.append(ex)
    return out


def load_tacred_dir(directory: str | Path) -> RelationDataset:
    directory = Path(directory)
    absent = [f for f in FILES if not (directory / f).exists()]
    if absent:
        raise CMLInputError(
            f"no TACRED here (missing {', '.join(absent)}). TACRED is licensed by the LDC and is not "
            f"downloaded: obtain it from https://catalog.ldc.upenn.edu/LDC2018T24 and put its JSON "
            f"{', '.join(FILES)} in this directory (cut here as RP-CRE and CRL cut it). The continual-RE "
            "split files that fit, for holders of the licence, also load here: CRL's "
            "data_with_marker_tacred.json with id2rel_tacred.json (https://github.com/thuiar/CRL, datasets/) "
            "or CEAR's data/tacred (task_order.json, Exp0/; https://github.com/nju-websoft/CEAR)",
            directory,
        )
    per_relation: dict[str, list[RelationExample]] = {}
    for fname in FILES:
        for ex in read_tacred_file(directory / fname):
            if ex.relation not in DROPPED:
                per_relation.setdefault(ex.relation, []).append(ex)
    train, test = [], []
    for relation, examples in per_relation.items():
        kept, tested = cut(examples)
        if not tested:
            raise CMLInputError(
                f"relation {relation} has {len(examples)} examples, too few for a test split", directory
            )
        train += kept
        test += tested
    relations = sorted(per_relation)
    return RelationDataset("tacred", train, [], test, relations, source=str(directory))
