"""What a long run meets: a torn last line of results.jsonl, a bad line elsewhere, a corrupt
cache entry, a corrupt checkpoint, concurrent writers of one file, a one-task run. Each is
either recovered from, with one line that says so, or an input error that names the file."""

import json
import re

import pytest

from cml.cells import CHECKPOINTS
from cml.cli import main
from cml.experiment import build_experiment
from cml.files import write_atomically
from cml.runner import RESULTS_FILE, run
from tests.test_engine import cache_dir, interrupt_at, rows_without_time, small_config  # noqa: F401 (cache_dir: autouse fixture)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run every damaged copy is compared with."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CML_CACHE_DIR", str(root / "cache"))
        config = small_config(root / "run", methods=("replay",))
        run(config, build_experiment(config), progress=False)
    return root / "run"


def copy_of(run_dir, tmp_path):
    import shutil

    return shutil.copytree(run_dir, tmp_path / "run")


def test_a_torn_last_line_is_dropped_with_a_warning_and_its_task_runs_again(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    results = run_dir / RESULTS_FILE
    whole = results.read_bytes()
    results.write_bytes(whole[:-40])  # killed while the last row was being appended
    assert main(["--resume", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {results}: dropped a torn last line (line 10" in err
    assert rows_without_time(run_dir) == rows_without_time(finished)
    lines = results.read_text().splitlines()
    assert len(lines) == 10 and all(json.loads(line) for line in lines)  # nothing lost, nothing twice


def test_a_last_line_that_only_lacks_its_newline_is_kept(finished, tmp_path, capsys):
    run_dir = copy_of(finished, tmp_path)
    results = run_dir / RESULTS_FILE
    results.write_bytes(results.read_bytes().rstrip(b"\n"))
    assert main(["--resume", str(run_dir)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert results.read_bytes().endswith(b"}\n") and len(results.read_text().splitlines()) == 10


@pytest.mark.parametrize("bad", [b'{"method": "replay", "ord', b"\xff\xfe not text", b'["a", "list"]'])
def test_a_bad_line_before_the_last_is_an_error_naming_the_file_and_the_line(finished, tmp_path, capsys, bad):
    run_dir = copy_of(finished, tmp_path)
    results = run_dir / RESULTS_FILE
    lines = results.read_bytes().split(b"\n")
    lines[2] = bad
    results.write_bytes(b"\n".join(lines))
    before = results.read_bytes()
    assert main(["--resume", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {results}: line 3 is not a result row; remove it (its task then runs again)"
    )
    assert results.read_bytes() == before


def test_a_corrupt_cache_entry_is_said_computed_again_and_replaced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path / "cache"))
    config = small_config(tmp_path / "first", methods=("finetune",), orders=1)
    run(config, build_experiment(config), progress=False)
    entry = min((tmp_path / "cache").glob("tokens-*.pt"))
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 3])  # a copy cut short
    config.output = str(tmp_path / "second")
    run(config, build_experiment(config), progress=False)
    err = capsys.readouterr().err
    assert re.search(rf"warning: {re.escape(str(entry))}: unreadable cache entry \(\w+\): computing it again", err)
    assert entry.read_bytes() == good
    assert rows_without_time(tmp_path / "second") == rows_without_time(tmp_path / "first")


def test_a_corrupt_checkpoint_restarts_its_cell_from_the_initial_weights(finished, tmp_path, monkeypatch, capsys):
    config = small_config(tmp_path / "run", methods=("replay",))
    interrupt_at(8, config, build_experiment(config), monkeypatch)  # order 1, task 3
    (checkpoint,) = (tmp_path / "run" / CHECKPOINTS).glob("*.pt")
    checkpoint.write_bytes(b"not a checkpoint")
    assert main(["--resume", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {checkpoint}: unreadable checkpoint" in err and "starts again from the initial weights" in err
    assert rows_without_time(tmp_path / "run") == rows_without_time(finished)


def test_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    target, seen = tmp_path / "entry.pt", []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text(str(len(seen)))

    write_atomically(target, write)
    write_atomically(target, write)
    assert seen[0] != seen[1] and seen[0].parent == target.parent and not any(p.exists() for p in seen)
    assert target.read_text() == "2"

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomically(target, fail)
    assert target.read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["entry.pt"]


def test_a_one_task_run_reports_that_nothing_can_be_forgotten(tmp_path, capsys):
    argv = ["--dataset", "demo", "--tasks", "1", "--orders", "1", "--encoder", "tiny", "--method", "finetune"]
    assert main([*argv, "--max-per-relation", "6", "--output", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["methods"]["finetune"]["forgetting"] is None
    assert "One task: nothing learned before it can be forgotten" in (tmp_path / "run" / "report.md").read_text()


def presplit(root, train, test, val=None):
    """A pre-split FewRel directory from {relation: [(tokens, head positions, tail positions)]}."""
    root.mkdir()
    for name, split in (("train", train), ("test", test), ("val", val or test)):
        data = {
            r: [{"tokens": t, "h": ["h", None, [h]], "t": ["t", None, [tl]]} for t, h, tl in xs]
            for r, xs in split.items()
        }
        (root / f"{name}.json").write_text(json.dumps(data))
    return root


def sentence(i, n=6):
    return ([f"w{i}"] + [f"x{j}" for j in range(n - 1)], [0], [2])


def plan(path, capsys, *more):
    code = main(["--dataset", str(path), "--encoder", "tiny", "--plan-only", *more])
    captured = capsys.readouterr()
    return code, captured.err


def test_a_dataset_without_relations_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.json").write_text("{}")
    code, err = plan(tmp_path / "empty.json", capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'empty.json'}: the dataset has no relations"


def test_a_relation_without_training_examples_is_an_error_and_writes_nothing(tmp_path, capsys):
    root = presplit(tmp_path / "d", {"P1": [sentence(i) for i in range(4)], "P2": []}, {"P1": [sentence(9)]})
    out = tmp_path / "run"
    assert main(["--dataset", str(root), "--encoder", "tiny", "--output", str(out)]) == 2
    assert "relation 'P2' has no training examples" in capsys.readouterr().err and not out.exists()


def test_what_a_run_can_go_on_with_is_said_in_one_warning_each(tmp_path, capsys):
    train = {"P1": [sentence(i) for i in range(4)], "P2": [sentence(10)], "P3": [sentence(i) for i in range(20, 24)]}
    overlapping = (["a", "b", "c", "d"], [0, 1], [1, 2])
    test = {"P1": [sentence(0), sentence(5)], "P2": [sentence(11)], "P3": [overlapping]}
    code, err = plan(presplit(tmp_path / "d", train, test), capsys, "--tasks", "1")
    assert code == 0
    assert "1 relation(s) have a single training example (P2)" in err
    assert "1 of 4 test examples repeat a training example" in err and "test leakage" in err
    assert "2 examples have head and tail spans that overlap" in err  # the test and val copies


def test_sentences_over_the_maximum_length_are_counted_with_the_markers_they_lost(tmp_path, capsys):
    long_apart = ([f"w{j}" for j in range(40)], list(range(10)), list(range(28, 38)))  # entities far apart
    train = {"P1": [sentence(i) for i in range(3)] + [long_apart], "P2": [sentence(i) for i in range(10, 14)]}
    code, err = plan(
        presplit(tmp_path / "d", train, {"P1": [sentence(5)], "P2": [sentence(15)]}),
        capsys,
        "--tasks",
        "1",
        "--max-length",
        "32",
        "--freeze-layers",
        "1",
    )
    assert code == 0
    assert "1 of 8 training sentences are longer than --max-length 32 word pieces" in err
    assert "1 lost an entity's closing marker" in err


def test_a_file_that_is_not_utf8_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "bad.json").write_bytes(b'{"P1": [{"tokens": ["caf\xe9"]}]}')
    code, err = plan(tmp_path / "bad.json", capsys)
    assert code == 2 and f"error: {tmp_path / 'bad.json'}: not UTF-8 text" in err
