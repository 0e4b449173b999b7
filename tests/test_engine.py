import json

import pytest
import torch

from cml.cells import LOGS
from cml.cli import main
from cml.config import RunConfig
from cml.engine import Engine
from cml.experiment import build_experiment
from cml.report import PLOTS
from cml.runner import RESULTS_FILE, run


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def small_config(output, methods=("finetune", "replay", "joint"), orders=2) -> RunConfig:
    config = RunConfig(output=str(output), seed=3)
    config.data.max_per_relation = 8
    config.data.orders = orders
    config.encoder.name = "tiny"
    config.train.methods = list(methods)
    config.train.epochs = 1
    config.train.consolidate_epochs = 1  # the two-stage methods' second stage, at its default 10, is most of a run
    config.train.batch_size = 8
    config.train.memory_size = 3
    config.train.head_lr = 1e-2
    config.encoder.freeze_layers = 1
    config.plots = "none"  # about a second a run; the tests of the plots ask for them
    return config


def grid_config(output, executor: str) -> RunConfig:
    """Two methods over two orders, one thread per cell: a cell's thread count decides its numbers on a CPU."""
    config = small_config(output, methods=("replay", "cml"))
    config.executor.name = executor
    config.executor.cpus_per_cell = 1
    return config


def local_grid_run(tmp_path_factory):
    """`grid_config` run undisturbed, one cell after another: (its directory, its report)."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    config = grid_config(run_dir, "local")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        return run_dir, run(config, build_experiment(config), progress=False)


def interrupt_at(task: int, config: RunConfig, experiment, monkeypatch) -> None:
    """Run `config` and stop it (KeyboardInterrupt) as its `task`-th task starts, counting from 1
    over the cells in the order they run; the engine is as it was afterwards."""
    original, calls = Engine.run_task, {"n": 0}

    def stop(self, relations):
        calls["n"] += 1
        if calls["n"] == task:
            raise KeyboardInterrupt
        return original(self, relations)

    monkeypatch.setattr(Engine, "run_task", stop)
    with pytest.raises(KeyboardInterrupt):
        run(config, experiment, progress=False)
    monkeypatch.setattr(Engine, "run_task", original)


def rows_without_time(run_dir):
    rows = [json.loads(line) for line in (run_dir / RESULTS_FILE).read_text().splitlines()]
    latest = {
        (r["method"], r["order"], r["seed"], r["task"]): {k: v for k, v in r.items() if k != "seconds"} for r in rows
    }
    return [latest[k] for k in sorted(latest)]


def numbers(report: dict) -> dict:
    """The report without what says where and how fast it ran."""
    speed = ("seconds", "train_examples_per_second")
    methods = {m: {k: v for k, v in r.items() if k not in speed} for m, r in report["methods"].items()}
    config = {k: v for k, v in report["config"].items() if k not in ("output", "executor")}
    return {**report, "methods": methods, "config": config, "timings": None, "wall": None}


def log_lines(run_dir, cell: str) -> list[str]:
    return (run_dir / LOGS / f"{cell}.log").read_text().splitlines()


def test_run_writes_report_and_keeps_class_incremental_protocol(tmp_path):
    config = small_config(tmp_path / "run")
    config.plots = "png"
    report = run(config, build_experiment(config), progress=False)
    for name in ("report.json", "report.md", "config.yaml", *PLOTS):
        assert (tmp_path / "run" / name).exists()
    assert all(f"]({name})" in (tmp_path / "run" / "report.md").read_text() for name in PLOTS)
    assert not list((tmp_path / "run" / "checkpoints").iterdir())  # finished orders keep no checkpoint
    rows = rows_without_time(tmp_path / "run")
    assert len(rows) == 3 * 2 * 5
    for row in rows:
        assert len(row["task_accuracy"]) == row["task"] + 1
        assert all(size == 4 * 20 for size in row["task_size"])  # 4 relations x 20 test examples
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| method | final W |" in md and "## replay" in md
    assert set(report["methods"]) == {"finetune", "replay", "joint"}


def test_eval_every_k_skips_evaluation_and_changes_nothing_else(tmp_path):
    """--eval-every 2 over 5 tasks evaluates after tasks 2, 4 and 5 (the last always); those rows
    equal a run that evaluates every task, the others carry no accuracy, and the report reads
    what was evaluated."""
    every = small_config(tmp_path / "every", methods=("replay",), orders=1)
    experiment = build_experiment(every)
    run(every, experiment, progress=False)
    sparse = small_config(tmp_path / "sparse", methods=("replay",), orders=1)
    sparse.train.eval_every = 2
    report = run(sparse, experiment, progress=False)["methods"]["replay"]
    full, cut = rows_without_time(tmp_path / "every"), rows_without_time(tmp_path / "sparse")
    drop = lambda row: {k: v for k, v in row.items() if k != "train_examples"}
    for k, (a, b) in enumerate(zip(full, cut)):
        if k in (1, 3, 4):
            assert drop(a) == drop(b)
        else:
            assert b["task_accuracy"] is None and b["relation_accuracy"] == {} and b["new_accuracy"] is None
            assert b["relations"] == a["relations"] and b["train_examples"] == a["train_examples"]
    stages = report["whole_accuracy_per_stage"]
    assert [s is None for s in stages] == [True, False, True, False, False]
    assert report["final_whole_accuracy"]["mean"] == pytest.approx(
        sum(x * n for x, n in zip(full[-1]["task_accuracy"], full[-1]["task_size"])) / sum(full[-1]["task_size"])
    )
    assert report["forgetting"] is not None and None not in report["forgetting_per_task"][0]


def test_a_run_evaluated_only_after_its_last_task_has_no_forgetting_and_says_so(tmp_path):
    """With one evaluated stage there is no earlier accuracy to forget from: F, AFR and BWT are
    none in report.json and "-" in report.md, never NaN."""
    config = small_config(tmp_path / "run", methods=("replay",), orders=1)
    config.train.eval_every = 5
    report = run(config, build_experiment(config), progress=False)["methods"]["replay"]
    assert report["forgetting"] is None and report["average_forgetting_rate"] is None
    assert report["backward_transfer"] is None and report["final_whole_accuracy"]["mean"] > 0
    assert "nan" not in (tmp_path / "run" / "report.md").read_text().lower()


EVERY_PART = {
    "memory_allocation": "difficulty",
    "replay_weighting": "threat",
    "prototype_drift": "compensated",
    "type_margin": 1.0,
}


@pytest.mark.parametrize("method, parts", [("replay", {}), ("cml", {}), ("cml", {**EVERY_PART, "meta_batches": 2})])
def test_same_seed_same_numbers_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, method, parts):
    """cml carries everything a task leaves behind: memory (with its shares), static and dynamic
    prototypes and the anchors of drift compensation, the classifier rows, and draws augmentation,
    threat replay and curriculum batches from its seeds."""

    def configured(output):
        config = small_config(output, methods=(method,))
        for key, value in parts.items():
            setattr(config.cml, key, value)
        return config

    config = configured(tmp_path / "full")
    experiment = build_experiment(config)
    run(config, experiment, progress=False)

    interrupted = configured(tmp_path / "cut")
    interrupt_at(7, interrupted, experiment, monkeypatch)  # order 1, task 2
    assert (tmp_path / "cut" / "checkpoints" / f"{method}-order1-seed{interrupted.seed}.pt").exists()
    assert len(rows_without_time(tmp_path / "cut")) == 6
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    assert rows_without_time(tmp_path / "cut") == rows_without_time(tmp_path / "full")


def test_a_method_gives_the_same_numbers_whatever_runs_before_it(tmp_path):
    alone = small_config(tmp_path / "alone", methods=("replay",), orders=1)
    run(alone, build_experiment(alone), progress=False)
    after = small_config(tmp_path / "after", methods=("cml", "replay"), orders=1)
    run(after, build_experiment(after), progress=False)
    replay_after = [r for r in rows_without_time(tmp_path / "after") if r["method"] == "replay"]
    assert replay_after == rows_without_time(tmp_path / "alone")


def make_engine(config: RunConfig, method: str, plugins=()):
    """An engine over the small config's data, and the experiment behind it."""
    from cml.methods import METHODS
    from cml.runner import build_learner, resolved

    config, device = resolved(config)
    experiment = build_experiment(config)
    model, data, context = build_learner(config, experiment, device)
    engine = Engine(model, data, config, METHODS[method], context, device, progress=False, plugins=plugins)
    return engine, experiment


def test_replay_memory_holds_prototypes_of_seen_relations(tmp_path):
    engine, experiment = make_engine(small_config(tmp_path), "replay")
    data = engine.data
    tasks = experiment.orders[0].tasks
    engine.run_task(tasks[0])
    engine.run_task(tasks[1])
    assert sorted(engine.memory.slots) == sorted(tasks[0] + tasks[1])
    for relation, idx in engine.memory.slots.items():
        assert 1 <= len(idx) <= 3
        assert all(data.relations[int(label)] == relation for label in data.train.labels[idx])


def test_unknown_method_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--method", "replay,magic", "--output", str(out), "--encoder", "tiny"]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert not out.exists()


def test_resume_with_a_different_config_touches_nothing(tmp_path, capsys):
    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    run(config, build_experiment(config), progress=False)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    for plan in ([], ["--plan-only"]):  # the plan refuses what the run refuses
        assert main(["--resume", str(tmp_path / "run"), "--epochs", "3", *plan]) == 2
        err = capsys.readouterr().err
        assert "cannot resume" in err and "train.epochs=1" in err and "train.epochs=3" in err
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}


def test_a_resumed_run_may_grow_by_seeds_orders_and_methods_and_not_shrink(tmp_path, capsys):
    """The grown run holds the rows a run made that large from the start holds; dropping a seed,
    an order or a method, or adding orders after the curriculum orders, is refused untouched."""
    small = small_config(tmp_path / "grown", methods=("finetune",), orders=1)
    run(small, build_experiment(small), progress=False)
    first = rows_without_time(tmp_path / "grown")
    grow = ["--seeds", "2", "--orders", "2", "--method", "finetune,replay"]
    assert main(["--resume", str(tmp_path / "grown"), *grow]) == 0
    whole = small_config(tmp_path / "whole", methods=("finetune", "replay"), orders=2)
    whole.seeds = 2
    run(whole, build_experiment(whole), progress=False)
    grown = rows_without_time(tmp_path / "grown")
    assert grown == rows_without_time(tmp_path / "whole") and len(grown) == 8 * len(first)
    assert [r for r in grown if r["method"] == "finetune" and r["order"] == 0 and r["seed"] == 3] == first

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "grown").rglob("*")}
    for change, key in (
        (["--seeds", "1"], "seeds=2"),
        (["--orders", "1"], "data.orders=2"),
        (["--method", "replay"], "train.methods=['finetune', 'replay']"),
    ):
        assert main(["--resume", str(tmp_path / "grown"), *change]) == 2
        err = capsys.readouterr().err
        assert f"the run used {key}" in err and "not drop them" in err
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "grown").rglob("*")}

    curriculum = small_config(tmp_path / "curriculum", methods=("finetune",), orders=1)
    curriculum.data.curriculum_orders = True
    curriculum.train.epochs = 0
    run(curriculum, build_experiment(curriculum), progress=False)
    assert main(["--resume", str(tmp_path / "curriculum"), "--orders", "2"]) == 2
    assert "curriculum orders" in capsys.readouterr().err


def test_a_run_made_before_an_option_existed_resumes_at_its_default(tmp_path):
    """A config.yaml without an option (written by an earlier version) resumes as if it held
    the option's default, and still refuses a command that sets it otherwise."""
    import yaml

    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    run(config, build_experiment(config), progress=False)
    saved = tmp_path / "run" / "config.yaml"
    older = yaml.safe_load(saved.read_text())
    del older["train"]["eval_every"], older["cml"]["threatened"]
    older["data"]["orders"] = 2  # and one more order to run
    saved.write_text(yaml.safe_dump(older))
    assert main(["--resume", str(tmp_path / "run"), "--eval-every", "2"]) == 2
    assert main(["--resume", str(tmp_path / "run")]) == 0
    rows = rows_without_time(tmp_path / "run")
    assert {r["order"] for r in rows} == {0, 1} and all(r["task_accuracy"] is not None for r in rows)


def test_a_run_resumes_only_in_the_precision_it_ran_in(tmp_path, capsys):
    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    config.train.precision = "fp32"
    run(config, build_experiment(config), progress=False)
    assert main(["--resume", str(tmp_path / "run"), "--precision", "bf16"]) == 2
    err = capsys.readouterr().err
    assert "train.precision='fp32'" in err and "train.precision='bf16'" in err


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    run(config, build_experiment(config), progress=False)
    assert main(["--output", str(tmp_path / "run"), "--encoder", "tiny"]) == 2
    assert "holds a run already" in capsys.readouterr().err


def test_non_writable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--output", str(blocker / "run"), "--encoder", "tiny"]) == 2
    assert "output directory is not writable" in capsys.readouterr().err


def test_rows_count_training_examples_and_the_report_says_where_time_went(tmp_path):
    config = small_config(tmp_path / "run", methods=("finetune", "replay"), orders=1)
    experiment = build_experiment(config)
    report = run(config, experiment, progress=False)
    rows = {(r["method"], r["task"]): r for r in rows_without_time(tmp_path / "run")}
    per_relation = config.data.max_per_relation
    tasks = experiment.orders[0].tasks
    memory = 0
    for k, task in enumerate(tasks):
        assert rows[("finetune", k)]["train_examples"] == config.train.epochs * per_relation * len(task)
        assert rows[("replay", k)]["train_examples"] == config.train.epochs * (per_relation * len(task) + memory)
        memory += config.train.memory_size * len(task)
    timings = report["timings"]
    total = sum(r["train_examples"] for r in rows.values())
    assert timings["train forward+backward"]["examples"] == total
    assert timings["evaluation forward"]["examples"] == sum(sum(r["task_size"]) for r in rows.values())
    assert all(t["seconds"] >= 0 for t in timings.values())
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Where the time went" in md and "| train forward+backward |" in md
    assert report["config"]["train"]["precision"] in ("bf16", "fp32")  # resolved, never "auto"


def test_rows_and_report_give_old_and_new_accuracy_under_every_classifier(tmp_path):
    config = small_config(tmp_path / "run", methods=("finetune", "cear"), orders=1)
    report = run(config, build_experiment(config), progress=False)
    rows = {(r["method"], r["task"]): r for r in rows_without_time(tmp_path / "run")}
    assert rows[("cear", 0)]["old_accuracy"] is None  # nothing is old on the first task
    for (method, task), row in rows.items():
        kinds = {"linear"} if method == "finetune" else {"linear", "ncm", "ensemble"}
        assert set(row["classifiers"]) == kinds
        chosen = row["classifiers"]["linear" if method == "finetune" else "ensemble"]
        whole = sum(a * n for a, n in zip(row["task_accuracy"], row["task_size"])) / sum(row["task_size"])
        assert chosen["whole"] == pytest.approx(whole, abs=1e-6)
        new = sum(row["task_size"][:-1]), row["task_size"][-1]
        if task:
            assert whole == pytest.approx((chosen["old"] * new[0] + chosen["new"] * new[1]) / sum(new), abs=1e-5)
    assert set(report["methods"]["cear"]["final_by_classifier"]) == {"linear", "ncm", "ensemble"}
    md = (tmp_path / "run" / "report.md").read_text()
    assert "| cear | ensemble |" in md and "| stage | W_k | A_k | old | new |" in md


def test_settings_are_chosen_on_the_validation_split(tmp_path):
    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    config.data.eval_split = "val"
    run(config, build_experiment(config), progress=False)
    rows = rows_without_time(tmp_path / "run")
    assert all(size == 4 * 10 for row in rows for size in row["task_size"])  # 4 relations x 10 val examples


def test_a_prototype_classifier_for_a_method_without_memory_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--method", "finetune", "--classifier", "ncm", "--output", str(out), "--encoder", "tiny"]) == 2
    assert "needs prototypes, but finetune keeps no memory" in capsys.readouterr().err
    assert not out.exists()


def test_prototype_difficulty_for_a_curriculum_inside_the_learn_stage_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    flags = ["--method", "cml-2021", "--difficulty", "prototypes", "--output", str(out), "--encoder", "tiny"]
    assert main(flags) == 2
    assert "cml-2021 orders memory inside the learn stage" in capsys.readouterr().err
    assert not out.exists()


def test_plots_none_writes_the_report_without_plots_and_a_resume_may_turn_them_on(tmp_path):
    config = small_config(tmp_path / "run", methods=("finetune",), orders=1)
    report = run(config, build_experiment(config), progress=False)
    assert not list((tmp_path / "run").glob("*.png"))
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Definitions" in md and ".png)" not in md  # no link to a plot that is not there
    config.plots = "png"  # not a number of the run: a resume may change it, and draws them
    assert run(config, build_experiment(config), resume=True, progress=False)["methods"] == report["methods"]
    assert {p.name for p in (tmp_path / "run").glob("*.png")} == set(PLOTS)
    config.plots = "none"  # and off again: the plots of the earlier report go with it
    run(config, build_experiment(config), resume=True, progress=False)
    assert not list((tmp_path / "run").glob("*.png"))


def test_a_stage_with_every_loss_weight_at_zero_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["--method", "crl", "--loss-supcon", "0", "--output", str(out), "--encoder", "tiny"]) == 2
    assert "the learn stage has no loss term left: --loss-supcon all 0" in capsys.readouterr().err
    assert not out.exists()


def test_seeds_repeat_every_order_and_the_report_separates_orders_from_seeds(tmp_path):
    one = small_config(tmp_path / "one", methods=("finetune", "replay"))
    run(one, build_experiment(one), progress=False)
    two = small_config(tmp_path / "two", methods=("finetune", "replay"))
    two.seeds, two.plots = 2, "png"
    report = run(two, build_experiment(two), progress=False)
    rows = rows_without_time(tmp_path / "two")
    assert {(r["method"], r["order"], r["seed"]) for r in rows} == {
        (m, o, s) for m in ("finetune", "replay") for o in (0, 1) for s in (3, 4)
    }
    assert [r for r in rows if r["seed"] == 3] == rows_without_time(
        tmp_path / "one"
    )  # the first seed is the run's seed
    final = lambda m, s: [r["task_accuracy"] for r in rows if (r["method"], r["seed"], r["task"]) == (m, s, 4)]
    assert final("replay", 3) != final("replay", 4)  # another seed, other numbers
    parts = report["methods"]["replay"]["variance_parts"]
    per_run = torch.tensor(report["methods"]["replay"]["final_whole_accuracy_per_run"])
    assert per_run.shape == (2, 2)
    assert parts["seed_std"] == pytest.approx(float(per_run.var(dim=1).mean()) ** 0.5)
    pair, means = report["comparisons"]
    assert (pair["a"], pair["b"], pair["over"], pair["n"]) == ("finetune", "replay", "runs", 4)
    assert (means["a"], means["b"], means["over"], means["n"]) == ("finetune", "replay", "order means", 2)
    finetune = torch.tensor(report["methods"]["finetune"]["final_whole_accuracy_per_run"])
    assert pair["mean_difference"] == pytest.approx(float((finetune - per_run).mean()))
    assert means["mean_difference"] == pytest.approx(pair["mean_difference"])  # equal seeds per order
    md = (tmp_path / "two" / "report.md").read_text()
    assert "## Orders and seeds" in md and "## Paired comparisons" in md
    assert "| finetune − replay | runs | 4 |" in md and "| finetune − replay | order means | 2 |" in md
    assert (tmp_path / "two" / "relation_difficulty_forgetting.png").exists()


def test_one_run_reports_no_nan_and_no_error_bounds(tmp_path):
    config = small_config(tmp_path / "run", methods=("replay",), orders=1)
    run(config, build_experiment(config), progress=False)
    md = (tmp_path / "run" / "report.md").read_text()
    assert "nan" not in md.lower() and "±" not in md.split("## Definitions")[0]
    assert "NaN" not in (tmp_path / "run" / "report.json").read_text()


@pytest.mark.parametrize("head", ["projection", "linear", "mlp"])
def test_new_layers_drawn_from_a_seed_match_a_model_built_under_it(tiny, head):
    from cml.encoder import RelationEncoder
    from cml.model import RelationModel

    _, encoder = tiny
    built = {}
    for seed in (5, 6):
        torch.manual_seed(seed)
        built[seed] = RelationModel(RelationEncoder(encoder.backbone), 7, head).state_dict()
    model = RelationModel(RelationEncoder(encoder.backbone), 7, head)
    model.reset_new_layers(5)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, built[5][name])
    model.reset_new_layers(6)
    assert not torch.equal(model.classifier.weight, built[5]["classifier.weight"])
    torch.testing.assert_close(model.classifier.weight, built[6]["classifier.weight"])
