import json

import pytest

from cml.cli import main
from cml.data import load_dataset
from cml.data.fewrel import load_fewrel_dir
from cml.data.tacred import load_tacred_dir
from tests.conftest import shared


def fewrel_item(tokens, h, t, hid=None, tid=None):
    return {"tokens": tokens, "h": ["head", hid, [h]], "t": ["tail", tid, [t]]}


def write_fewrel(path, n_relations=3, n_per=10, bad=None, prefix="P"):
    data = {}
    for r in range(n_relations):
        data[f"{prefix}{r}"] = [
            fewrel_item(["w", "x", "y", "z", str(i)], [0], [2, 3], f"Q{i}", f"Q{i + 1}") for i in range(n_per)
        ]
    if bad:
        data["P0"][1] = bad
    path.write_text(json.dumps(data))
    return path


def test_demo_is_deterministic_typed_and_confusable(demo):
    again = load_dataset("demo")
    assert again.train == demo.train and again.test == demo.test
    assert demo.counts() == (800, 200, 400) and len(demo.relations) == 20
    signatures = {}
    for ex in demo.train:
        assert ex.head_type and ex.tail_type
        assert ex.head_text in ex.head_id and ex.tail_text in ex.tail_id
        signatures.setdefault(ex.relation, set()).add((ex.head_type, ex.tail_type))
    assert all(len(s) == 1 for s in signatures.values())
    shared_signature = [s for s in signatures.values() if s == {("person", "city")}]
    assert len(shared_signature) >= 3  # born_in, died_in, lives_in are confusable


def test_fewrel_presplit_counts_and_orders():
    ds = load_dataset("fewrel", shared("fewrel"))
    assert len(ds.relations) == 80
    assert ds.counts() == (33600, 11200, 11200)
    assert len(ds.task_orders) == 5 and all(len(o) == 10 and all(len(t) == 8 for t in o) for o in ds.task_orders)


def test_raw_loader_keeps_wikidata_ids():
    ds = load_dataset(str(shared("fewrel-raw", "val_wiki.json")))
    assert len(ds.relations) == 16
    assert ds.counts() == (16 * 420, 16 * 140, 16 * 140)
    assert all(ex.head_id.startswith("Q") and ex.tail_id.startswith("Q") for ex in ds.train)
    assert ds.relation_names["P177"] == "crosses"


def test_raw_directory_split_is_seeded(tmp_path):
    write_fewrel(tmp_path / "train_wiki.json", n_relations=2)
    (tmp_path / "val_wiki.json").write_text(
        json.dumps({"P9": json.loads((tmp_path / "train_wiki.json").read_text())["P0"]})
    )
    a, b, c = (load_fewrel_dir(tmp_path, seed=s) for s in (1, 1, 2))
    assert a.counts() == (18, 6, 6) and a.relations == ["P0", "P1", "P9"]
    assert a.train == b.train and a.train != c.train


@pytest.mark.parametrize(
    "bad, message",
    [
        (fewrel_item(["a", "b"], [0], [5]), "out of range"),
        ({"tokens": ["a", "b"], "h": ["a", None, [[]]], "t": ["b", None, [[1]]]}, "empty"),
        ({"tokens": ["a"]}, "expected keys"),
    ],
)
def test_bad_records_name_file_and_example(tmp_path, capsys, bad, message):
    path = write_fewrel(tmp_path / "data.json", bad=bad)
    assert main(["--dataset", str(path), "--plan-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "example 1" in err and message in err


def _malformed(d):
    (d / "train.json").write_text('{"P1": [')
    (d / "val.json").write_text("{}")
    (d / "test.json").write_text("{}")
    return d


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d, "no FewRel files"),
        (_malformed, "train.json: malformed JSON at line 1"),
        (lambda d: write_fewrel(d / "x.json", n_per=2), "x.json: relation P0 has 2 examples, too few"),
    ],
)
def test_bad_files_give_exit_code_2(tmp_path, capsys, setup, message):
    target = setup(tmp_path)
    assert main(["--dataset", str(target), "--plan-only"]) == 2
    assert message in capsys.readouterr().err


def test_order_with_unknown_relation(tmp_path, capsys):
    for name in ("train.json", "val.json", "test.json"):
        write_fewrel(tmp_path / name)
    (tmp_path / "task_orders.json").write_text(json.dumps([[["P0", "P1"], ["P7"]]]))
    assert main(["--dataset", str(tmp_path), "--plan-only"]) == 2
    err = capsys.readouterr().err
    assert "task_orders.json" in err and "'P7'" in err


def test_unknown_dataset_name(capsys):
    assert main(["--dataset", "no-such-dataset", "--plan-only"]) == 2
    assert "unknown dataset 'no-such-dataset'" in capsys.readouterr().err


def test_missing_config_file(capsys, tmp_path):
    assert main(["--config", str(tmp_path / "none.yaml"), "--plan-only"]) == 2
    assert "none.yaml: config file not found" in capsys.readouterr().err


def test_tacred_protocol(tmp_path):
    def item(rel, i):
        return {
            "id": f"{rel}{i}",
            "relation": rel,
            "token": ["-LRB-", "a", "b", "c", "-RRB-"],
            "subj_start": 1,
            "subj_end": 1,
            "obj_start": 2,
            "obj_end": 3,
            "subj_type": "PERSON",
            "obj_type": "CITY",
        }

    rows = [item("per:origin", i) for i in range(500)] + [item("no_relation", i) for i in range(9)]
    rows += [item("per:country_of_death", i) for i in range(9)] + [item("org:founded", i) for i in range(20)]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    (tmp_path / "dev.json").write_text("[]")
    (tmp_path / "test.json").write_text("[]")
    ds = load_tacred_dir(tmp_path)
    assert ds.relations == ["org:founded", "per:origin"]
    per = {r: (sum(e.relation == r for e in ds.train), sum(e.relation == r for e in ds.test)) for r in ds.relations}
    assert per == {"per:origin": (320, 41), "org:founded": (16, 4)}
    ex = ds.test[0]
    assert ex.tokens[0] == "(" and ex.head == (1, 2) and ex.tail == (2, 4) and ex.head_type == "PERSON"


def test_a_registered_dataset_loads_by_name_with_its_directory_and_seed(tmp_path, monkeypatch):
    from cml.data import DATASETS, register
    from cml.data.demo import make_demo

    monkeypatch.setattr("cml.data.DATASETS", dict(DATASETS))
    calls = []

    @register("mine")
    def load_mine(directory, seed):
        calls.append((directory, seed))
        return make_demo(n_train=5, n_val=2, n_test=3)

    ds = load_dataset("mine", tmp_path, seed=7)
    assert calls == [(tmp_path, 7)] and len(ds.train) == 5 * len(ds.relations)
    assert main(["--dataset", "mine", "--data-dir", str(tmp_path), "--encoder", "tiny", "--plan-only"]) == 0
    assert calls[-1] == (tmp_path, 2021)


def test_the_readme_dataset_example_registers_loads_and_runs(tmp_path, monkeypatch, capsys):
    """examples/register_dataset.py, as the README shows it: files of records -> `--dataset mydata`."""
    import importlib.util
    from pathlib import Path

    from cml.data import DATASETS
    from cml.data.demo import make_demo

    monkeypatch.setattr("cml.data.DATASETS", dict(DATASETS))
    path = Path(__file__).resolve().parents[1] / "examples" / "register_dataset.py"
    spec = importlib.util.spec_from_file_location("register_dataset", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    demo = make_demo(n_train=4, n_val=2, n_test=3)
    for name in ("train", "val", "test"):
        records = [
            {"tokens": list(e.tokens), "h": list(e.head), "t": list(e.tail), "relation": e.relation}
            for e in getattr(demo, name)
        ]
        (tmp_path / f"{name}.json").write_text(json.dumps(records))
    ds = load_dataset("mydata", tmp_path)
    assert ds.relations == sorted(demo.relations)
    assert [(e.tokens, e.head, e.tail, e.relation) for e in ds.test] == [
        (e.tokens, e.head, e.tail, e.relation) for e in demo.test
    ]
    argv = ["--dataset", "mydata", "--data-dir", str(tmp_path), "--encoder", "tiny", "--tasks", "5", "--plan-only"]
    assert main(argv) == 0
    assert "20 relations" in capsys.readouterr().out

    records = json.loads((tmp_path / "test.json").read_text())
    records[3]["h"] = [5, 5]
    (tmp_path / "test.json").write_text(json.dumps(records))
    assert main(argv) == 2
    assert "test.json: example 3: head entity span [5, 5) is empty" in capsys.readouterr().err
