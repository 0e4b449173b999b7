"""The standard split's download (cml/data/download.py), against files served on loopback: each
file checked against its sha256, nothing left behind by a failure, an offline error that says
what to put where, and a downloaded split whose tasks and orders are those of ../shared's."""

import hashlib
import http.server
import json
import threading
from functools import partial

import pytest

import cml.data
from cml.cli import main
from cml.data import load_dataset
from cml.data.cre import BERT_UNCASED_MARKERS
from cml.data.download import Release, fetch
from cml.data.records import MARKERS
from cml.errors import CMLInputError
from tests.conftest import shared

MARKER_IDS = {name: i for i, name in BERT_UNCASED_MARKERS.items()}


@pytest.fixture
def loopback(tmp_path, monkeypatch):
    """A directory served over HTTP on 127.0.0.1 and set as $CML_MIRROR."""
    root = tmp_path / "mirror"
    root.mkdir()
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("CML_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    yield root
    server.shutdown()
    server.server_close()


def publish(root, repo: str, files: dict[str, bytes], what: str = "test files", digests=None) -> Release:
    """Files laid out as the raw GitHub host serves them, and their release (with their true
    digests unless `digests` are given)."""
    digests = digests or {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}
    release = Release(repo, "0" * 40, "data", digests, what)
    for name, content in files.items():
        path = root / repo / release.commit / release.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return release


def cear_files(ds, tokenizer) -> dict[str, bytes]:
    """A dataset in CEAR's published layout: task_order.json and Exp0/task_k_{split}.json holding
    bert-base-uncased word-piece ids with the entity markers."""
    words = sorted({w for split in (ds.train, ds.val, ds.test) for ex in split for w in ex.tokens})
    pieces = dict(zip(words, tokenizer(words, add_special_tokens=False)["input_ids"]))
    label = ds.label_of

    def ids(ex) -> list[int]:
        marks = {ex.head[0]: ["[E11]"], ex.tail[0]: ["[E21]"]}
        ends = {ex.head[1]: "[E12]", ex.tail[1]: "[E22]"}
        out = [101]
        for i, w in enumerate([*ex.tokens, None]):
            if i in ends:
                out.append(MARKER_IDS[ends[i]])
            out += [MARKER_IDS[m] for m in marks.get(i, [])]
            if w is not None:
                out += pieces[w]
        return [*out, 102, 0, 0]

    orders = ds.task_orders
    files = {"task_order.json": json.dumps([{f"T{k + 1}": t for k, t in enumerate(o)} for o in orders]).encode()}
    for k, task in enumerate(orders[0]):
        for split in ("train", "val", "test"):
            data = {r: [] for r in task}
            for ex in getattr(ds, split):
                if ex.relation in data:
                    data[ex.relation].append({"relation": label[ex.relation], "tokens": ids(ex)})
            files[f"Exp0/task_{k}_{split}.json"] = json.dumps(data).encode()
    return files


def small_cear(tokenizer) -> dict[str, bytes]:
    from cml.data.records import RelationDataset, RelationExample

    examples = [
        RelationExample(("she", "visited", "the", "unaffable", str(i), "."), (0, 1), (3, 4), r)
        for r in ("P1", "P2", "P3", "P4")
        for i in range(6)
    ]
    ds = RelationDataset("small", examples, examples[::3], examples[1::3], ["P1", "P2", "P3", "P4"])
    ds.task_orders = [[["P1", "P2"], ["P3", "P4"]], [["P3", "P4"], ["P1", "P2"]]]
    return cear_files(ds, tokenizer)


def test_fetch_checks_every_file_and_leaves_nothing_behind(loopback, tmp_path):
    files = {"a.json": b'{"x": 1}', "sub/b.json": b"[1, 2, 3]"}
    release = publish(loopback, "o/r", files)
    target = tmp_path / "got"
    fetch((release,), target)
    assert {n: (target / n).read_bytes() for n in files} == files

    (loopback / "o/r" / release.commit / "data" / "sub/b.json").write_bytes(b"[1, 2, 4]")  # a corrupted mirror
    again = tmp_path / "again"
    with pytest.raises(CMLInputError, match="checksum mismatch for sub/b.json"):
        fetch((release,), again)
    assert sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()) == ["a.json"]

    fetch((release,), target)  # files already there are not fetched again (the mirror is now wrong)
    assert (target / "sub/b.json").read_bytes() == files["sub/b.json"]


def test_offline_error_names_the_files_the_directory_and_the_source(loopback, tmp_path, monkeypatch):
    release = publish(loopback, "o/r", {"task_order.json": b"[]"}, "the orders")
    monkeypatch.setenv("CML_MIRROR", (tmp_path / "nowhere").as_uri())
    with pytest.raises(CMLInputError) as caught:
        fetch((release,), tmp_path / "data")
    message = str(caught.value)
    assert str(tmp_path / "data") in message and "put these files in this directory: task_order.json" in message
    assert f"https://github.com/o/r/tree/{release.commit}/data" in message
    assert not (tmp_path / "data").exists()  # nothing written, not even the directory


@pytest.fixture
def standard(monkeypatch, loopback):
    """Swap the pinned standard split for files published on loopback."""

    def use(files: dict[str, bytes], digests=None) -> Release:
        release = publish(loopback, "o/cear", files, digests=digests)
        monkeypatch.setattr(cml.data, "CEAR_FEWREL", release)
        monkeypatch.setattr(cml.data, "STANDARD_FEWREL", (release,))
        return release

    return use


def test_fewrel_by_name_downloads_the_standard_split_where_it_is_missing(standard, tmp_path, capsys):
    from cml.encoder import load_tokenizer

    files = small_cear(load_tokenizer("minilm"))
    release = standard(files)
    target = tmp_path / "fewrel"
    args = [
        "--dataset",
        "fewrel",
        "--data-dir",
        str(target),
        "--encoder",
        "tiny",
        "--freeze-layers",
        "1",
        "--plan-only",
    ]
    assert main(args) == 0
    assert "CEAR format" in capsys.readouterr().out
    assert all((target / n).read_bytes() == b for n, b in files.items())

    standard(dict(files, **{"Exp0/task_1_test.json": b"{}"}), digests=release.files)  # a corrupted mirror
    assert main([*args[:3], str(tmp_path / "again"), *args[4:]]) == 2
    assert "checksum mismatch for Exp0/task_1_test.json" in capsys.readouterr().err
    assert not (tmp_path / "again" / "Exp0" / "task_1_test.json").exists()


def test_the_downloaded_split_has_the_tasks_and_orders_of_the_shared_one(standard, tmp_path):
    from cml.encoder import load_tokenizer

    reference = load_dataset("fewrel", shared("fewrel"))
    standard(cear_files(reference, load_tokenizer("minilm")))
    got = load_dataset("fewrel", tmp_path / "fewrel")
    assert got.task_orders == reference.task_orders and sorted(got.relations) == sorted(reference.relations)
    for split in ("train", "val", "test"):
        key = lambda ex: (ex.relation, ex.tokens, ex.head, ex.tail)
        assert sorted(map(key, getattr(got, split))) == sorted(map(key, getattr(reference, split)))
    assert not any(m in ex.tokens for ex in got.train for m in MARKERS)
