"""Data as CRE researchers have it on disk: a pre-split directory without val.json, the split files
of RP-CRE / CRL and of CEAR, and FewRel-shaped datasets saved with Hugging Face `datasets`.
Each format is written here, small, in that format."""

import json
import random

import pytest

from cml.cli import main
from cml.data import load_dataset
from cml.errors import CMLInputError
from tests.conftest import shared

# The relations of FewRel in the label order of RP-CRE / CRL (their id2rel.json): with it, their
# seeded procedure must give the standard task orders that ../shared/data/fewrel ships.
FEWREL_ID2REL = [
    "P931",
    "P4552",
    "P140",
    "P1923",
    "P150",
    "P6",
    "P27",
    "P449",
    "P1435",
    "P175",
    "P1344",
    "P39",
    "P527",
    "P740",
    "P706",
    "P84",
    "P495",
    "P123",
    "P57",
    "P22",
    "P178",
    "P241",
    "P403",
    "P1411",
    "P135",
    "P991",
    "P156",
    "P176",
    "P31",
    "P1877",
    "P102",
    "P1408",
    "P159",
    "P3373",
    "P1303",
    "P17",
    "P106",
    "P551",
    "P937",
    "P355",
    "P710",
    "P137",
    "P674",
    "P466",
    "P136",
    "P306",
    "P127",
    "P400",
    "P974",
    "P1346",
    "P460",
    "P86",
    "P118",
    "P264",
    "P750",
    "P58",
    "P3450",
    "P105",
    "P276",
    "P101",
    "P407",
    "P1001",
    "P800",
    "P131",
    "P177",
    "P364",
    "P2094",
    "P361",
    "P641",
    "P59",
    "P413",
    "P206",
    "P412",
    "P155",
    "P26",
    "P410",
    "P25",
    "P463",
    "P40",
    "P921",
]


def test_presplit_directory_without_val_runs_end_to_end(tmp_path, capsys):
    source = shared("fewrel")
    train, test = (json.loads((source / f).read_text()) for f in ("train.json", "test.json"))
    relations = list(train)[:6]
    data = tmp_path / "cre-split"
    data.mkdir()
    (data / "train.json").write_text(json.dumps({r: train[r][:8] for r in relations}))
    (data / "test.json").write_text(json.dumps({r: test[r][:4] for r in relations}))
    (data / "task_orders.json").write_text(json.dumps([[relations[:3], relations[3:]], [relations[3:], relations[:3]]]))
    args = ["--dataset", str(data), "--encoder", "tiny", "--method", "replay", "--epochs", "1", "--freeze-layers", "1"]
    args += ["--orders", "2"]
    assert main([*args, "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "48 train / no validation split / 24 test" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["dataset"]["orders"] == 2 and report["dataset"]["tasks"] == 2
    assert main([*args, "--eval-split", "val", "--output", str(tmp_path / "val")]) == 2
    assert "no val split" in capsys.readouterr().err
    assert not (tmp_path / "val").exists()


def marked(i: int) -> dict:
    """A sentence with the markers among its tokens: head 'ann' (1 word), tail 'new york' (2)."""
    return {"tokens": ["[E11]", "ann", "[E12]", "left", "[E21]", "new", "york", "[E22]", "-lrb-", str(i), "-rrb-"]}


def global_random_cut(items: list, seed: int = 2021) -> list:
    """The papers' cut: the module-level random, reseeded before each relation, shuffles in place."""
    items = list(items)
    random.seed(seed)
    random.shuffle(items)
    return items


def test_rp_cre_crl_fewrel_format_gives_their_split_and_the_standard_orders(tmp_path):
    (tmp_path / "id2rel.json").write_text(json.dumps(FEWREL_ID2REL))
    counts = {r: 600 if r in ("P931", "P156") else 1 for r in FEWREL_ID2REL}
    data = {r: [{"relation": r, **marked(i)} for i in range(n)] for r, n in counts.items()}
    (tmp_path / "data_with_marker.json").write_text(json.dumps(data))
    ds = load_dataset(str(tmp_path))
    assert ds.task_orders == json.loads(shared("fewrel", "task_orders.json").read_text())
    ex = ds.train[0]
    assert ex.tokens[:4] == ("ann", "left", "new", "york") and ex.tokens[4] == "("
    assert ex.head == (0, 1) and ex.tail == (2, 4)
    suffix = lambda examples, r: [e.tokens[5] for e in examples if e.relation == r]
    expected = [item["tokens"][9] for item in global_random_cut(data["P156"])]
    assert suffix(ds.train, "P156") == expected[:420]
    assert suffix(ds.val, "P156") == expected[420:560]
    assert suffix(ds.test, "P156") == expected[560:]
    assert load_dataset(str(tmp_path / "data_with_marker.json")).counts() == ds.counts() == (2 * 420 + 78, 280, 80)


def test_rp_cre_crl_tacred_format_cuts_test_first_and_has_no_val(tmp_path):
    relations = ["org:founded_by", "per:title", "per:age", "org:website"]
    (tmp_path / "id2rel_tacred.json").write_text(json.dumps(relations))
    counts = {"org:founded_by": 30, "per:title": 400, "per:age": 250, "org:website": 7}
    data = {r: [{"relation": r, **marked(i)} for i in range(n)] for r, n in counts.items()}
    (tmp_path / "data_with_marker_tacred.json").write_text(json.dumps(data))
    ds = load_dataset(str(tmp_path))
    per = {r: (sum(e.relation == r for e in ds.train), sum(e.relation == r for e in ds.test)) for r in relations}
    # test: min(n // 5, 41); train: up to 320 of the rest
    assert per == {"org:founded_by": (24, 6), "per:title": (320, 41), "per:age": (209, 41), "org:website": (6, 1)}
    assert ds.val == []
    expected = [item["tokens"][9] for item in global_random_cut(data["per:title"])]
    assert [e.tokens[5] for e in ds.test if e.relation == "per:title"] == expected[:41]
    assert [e.tokens[5] for e in ds.train if e.relation == "per:title"] == expected[41:361]
    assert len(ds.task_orders) == 5 and all(len(o) == 1 and len(o[0]) == 4 for o in ds.task_orders)


def test_rp_cre_crl_format_errors_name_file_and_example(tmp_path):
    (tmp_path / "id2rel.json").write_text(json.dumps(["P1"]))
    (tmp_path / "data_with_marker.json").write_text(json.dumps({"P1": [{"tokens": ["[E11]", "a", "[E12]", "b"]}]}))
    with pytest.raises(
        CMLInputError, match=r"data_with_marker.json: relation P1, example 0: no \[E21\] \[E22\] marker"
    ):
        load_dataset(str(tmp_path))
    (tmp_path / "data_with_marker.json").write_text(json.dumps({"P2": [marked(0)]}))
    with pytest.raises(CMLInputError, match="relation 'P2' is not in id2rel.json"):
        load_dataset(str(tmp_path))


def write_cear(root, tokenizer, orders):
    """CEAR's layout: task_order.json and Exp0/task_k_{train,val,test}.json in bert-base-uncased ids."""
    words = ["she", "[E11]", "visited", "[E12]", "the", "[E21]", "unaffable", "[E22]", "."]
    ids = (
        [101]
        + [
            {"[E11]": 30522, "[E12]": 30523, "[E21]": 30524, "[E22]": 30525}.get(w)
            or tokenizer.convert_tokens_to_ids(p)
            for w in words
            for p in ([w] if w.startswith("[E") else tokenizer.tokenize(w))
        ]
        + [102, 0, 0, 0]
    )
    (root / "Exp0").mkdir(parents=True)
    (root / "task_order.json").write_text(json.dumps([{f"T{k + 1}": t for k, t in enumerate(o)} for o in orders]))
    for k, task in enumerate(orders[0]):
        for split, n in (("train", 5), ("val", 2), ("test", 3)):
            data = {r: [{"relation": j, "tokens": ids} for _ in range(n)] for j, r in enumerate(task)}
            (root / "Exp0" / f"task_{k}_{split}.json").write_text(json.dumps(data))


def test_cear_format_decodes_word_pieces_and_keeps_its_orders(tmp_path):
    from cml.encoder import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    assert len(tokenizer.tokenize("unaffable")) > 1  # the test needs a word of several pieces
    orders = [[["P1", "P2"], ["P3", "P4"]], [["P3", "P4"], ["P1", "P2"]], [["P2", "P4"], ["P1", "P3"]]]
    write_cear(tmp_path / "FewRel", tokenizer, orders)
    ds = load_dataset(str(tmp_path / "FewRel"))
    assert ds.task_orders == orders and ds.relations == ["P1", "P2", "P3", "P4"]
    assert ds.counts() == (20, 8, 12)
    ex = ds.test[0]
    assert ex.tokens == ("she", "visited", "the", "unaffable", ".")
    assert ex.head == (1, 2) and ex.tail == (3, 4)


def test_cear_orders_must_name_tasks_in_sequence(tmp_path):
    from cml.encoder import load_tokenizer

    write_cear(tmp_path / "d", load_tokenizer("minilm"), [[["P1"], ["P2"]]])
    (tmp_path / "d" / "task_order.json").write_text(json.dumps([{"T1": ["P1"], "T3": ["P2"]}]))
    with pytest.raises(CMLInputError, match=r"task_order.json: order 0: keys must be T1 .. T2"):
        load_dataset(str(tmp_path / "d"))


def hub_records(relations, n, offset=0):
    return {
        "relation": [r for r in relations for _ in range(n)],
        "tokens": [["a", "b", "c", "d", str(offset + i)] for _ in relations for i in range(n)],
        "head": [{"text": "a", "type": f"Q{i}", "indices": [[0]]} for _ in relations for i in range(n)],
        "tail": [{"text": "c d", "type": "Q9", "indices": [[2, 3]]} for _ in relations for i in range(n)],
    }


def test_hugging_face_dataset_saved_to_disk(tmp_path):
    import datasets

    named = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict(hub_records(["P1", "P2"], n))
            for s, n in (("train", 6), ("validation", 2), ("test", 3))
        }
    )
    named.save_to_disk(tmp_path / "named")
    ds = load_dataset(f"hf:{tmp_path / 'named'}")
    assert ds.counts() == (12, 4, 6) and ds.relations == ["P1", "P2"]
    assert ds.train[0].head == (0, 1) and ds.train[0].tail == (2, 4) and ds.train[0].head_id == "Q0"
    raw = datasets.DatasetDict(
        {
            "train_wiki": datasets.Dataset.from_dict(hub_records(["P1", "P2"], 10)),
            "val_wiki": datasets.Dataset.from_dict(hub_records(["P3"], 10)),
        }
    )
    raw.save_to_disk(tmp_path / "raw")
    pooled = load_dataset(f"hf:{tmp_path / 'raw'}", seed=1)
    assert pooled.relations == ["P1", "P2", "P3"] and pooled.counts() == (18, 6, 6)  # 0.6 / 0.2 / 0.2 per relation
    assert load_dataset(f"hf:{tmp_path / 'raw'}:train_wiki").relations == ["P1", "P2"]
    with pytest.raises(CMLInputError, match="no split 'test_wiki'"):
        load_dataset(f"hf:{tmp_path / 'raw'}:test_wiki")


def test_hugging_face_hub_offline_says_what_to_do(capsys, tmp_path):
    assert (
        main(["--dataset", "hf:thunlp/few_rel", "--encoder", "tiny", "--output", str(tmp_path / "run"), "--plan-only"])
        == 2
    )
    err = capsys.readouterr().err
    assert "could not load hf:thunlp/few_rel from the Hugging Face hub" in err and "save_to_disk" in err
