"""`run_cml.py report DIR DIR --output OUT`: runs made separately give the report one command with
all their methods gives; runs that cannot be paired are refused, naming the setting."""

import json

from cml.cli import main
from cml.experiment import build_experiment
from cml.runner import RESULTS_FILE, run
from tests.test_engine import cache_dir, rows_without_time, small_config  # noqa: F401 (cache_dir: autouse fixture)


def numbers(run_dir) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    speed = ("seconds", "train_examples_per_second")
    methods = {m: {k: v for k, v in r.items() if k not in speed} for m, r in report["methods"].items()}
    config = {k: v for k, v in report["config"].items() if k != "output"}
    return {**report, "methods": methods, "config": config, "timings": None, "wall": None}


def test_separate_runs_merge_into_the_report_of_one_run(tmp_path, capsys):
    for name, methods in (("replay", ("replay",)), ("finetune", ("finetune",)), ("both", ("replay", "finetune"))):
        config = small_config(tmp_path / name, methods=methods)
        run(config, build_experiment(config), progress=False)
    out = tmp_path / "merged"
    assert main(["report", str(tmp_path / "replay"), str(tmp_path / "finetune"), "--output", str(out)]) == 0
    assert "finetune: final whole accuracy" in capsys.readouterr().out
    assert rows_without_time(out) == rows_without_time(tmp_path / "both")
    assert numbers(out) == numbers(tmp_path / "both")
    assert (out / "config.yaml").read_text().startswith("# settings: merged from ")


def test_runs_that_cannot_be_paired_are_refused_naming_the_setting(tmp_path, capsys):
    a = small_config(tmp_path / "a", methods=("finetune",), orders=1)
    b = small_config(tmp_path / "b", methods=("replay",), orders=1)
    b.train.epochs = 2
    for config in (a, b):
        run(config, build_experiment(config), progress=False)
    out = tmp_path / "merged"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"error: {tmp_path / 'b'}: cannot merge: {tmp_path / 'a'} ran with train.epochs=1, {tmp_path / 'b'} with train.epochs=2"
    )
    assert not out.exists()

    (tmp_path / "a" / RESULTS_FILE).write_text(
        "".join((tmp_path / "a" / RESULTS_FILE).read_text().splitlines(True)[:-1])
    )
    b.train.epochs, b.output = 1, str(tmp_path / "c")
    run(b, build_experiment(b), progress=False)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--output", str(out)]) == 2
    assert "cannot merge unfinished runs: finetune-order0-seed3 has tasks without results" in capsys.readouterr().err
    assert not out.exists()


def test_runs_from_other_data_directories_merge_only_where_they_hold_the_same_data(tmp_path, monkeypatch, capsys):
    from cml.data import DATASETS, register
    from cml.data.demo import make_demo

    monkeypatch.setattr("cml.data.DATASETS", dict(DATASETS))

    @register("copies")  # a directory with a file `other` holds other test examples
    def load_copies(directory, seed):
        return make_demo(n_train=8, n_val=2, n_test=4 if (directory / "other").exists() else 3)

    for name in "abc":
        (tmp_path / f"data-{name}").mkdir()
    (tmp_path / "data-c" / "other").touch()
    for name, methods in (("a", ("finetune",)), ("b", ("replay",)), ("c", ("replay",))):
        config = small_config(tmp_path / name, methods=methods, orders=1)
        config.data.dataset, config.data.data_dir = "copies", str(tmp_path / f"data-{name}")
        run(config, build_experiment(config), progress=False)
    out = tmp_path / "merged"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(out)]) == 0
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--output", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert (
        f"cannot merge: {tmp_path / 'a'} and {tmp_path / 'c'} ran on different data: {tmp_path / 'data-a'} and " in err
    )
    (tmp_path / "data-b").rename(tmp_path / "data-b-moved")  # b's data is not here to compare
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "refused")]) == 2
    assert f"its data ({tmp_path / 'data-b'}) is not here to check that it is {tmp_path / 'data-a'}'s" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "refused").exists()
