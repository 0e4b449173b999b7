"""The run's estimate (cml/estimate.py): its count of what each cell pushes through the encoder
against what the engine's timer counts in a real run, and the plan that prints it."""

import pytest

from cml.cli import main
from cml.estimate import Rates, Workload, cell_workload
from cml.experiment import build_experiment
from cml.methods import METHODS
from cml.runner import build_learner, resolved, run
from cml.timing import FORWARD_PHASES, TRAIN_PHASE, PhaseTimer
from tests.test_engine import small_config


@pytest.mark.parametrize(
    "method, every",
    [(m, 1) for m in ("finetune", "joint", "replay", "crl", "cear", "cml", "cml-2021")]
    + [("replay", 3), ("cml+focus", 1), ("cml-no-reversed", 1), ("cml+hybrid", 1), ("cml+directions", 1)],
)
def test_the_count_is_what_a_run_pushes_through_the_encoder(method, every, tmp_path):
    config = small_config(tmp_path / "run", methods=(method,), orders=1)
    config.train.consolidate_epochs = 2
    config.train.eval_every = every  # evaluated after tasks 3 and 5 only
    experiment = build_experiment(config)
    timer = PhaseTimer()
    run(config, experiment, progress=False, timer=timer)
    resolved_config, device = resolved(config)
    _, data, context = build_learner(resolved_config, experiment, device)
    counted = cell_workload(METHODS[method], experiment.orders[0].tasks, data, resolved_config, context)
    assert counted.train == timer.examples[TRAIN_PHASE] > 0
    assert counted.forward == sum(timer.examples[p] for p in FORWARD_PHASES)


def test_the_time_is_the_work_at_the_measured_rates():
    rates = Rates(train=0.01, forward=0.002)
    assert rates.seconds(Workload(100, 1000) + Workload(50, 0)) == pytest.approx(150 * 0.01 + 1000 * 0.002)


def test_the_plan_prints_the_estimate(tmp_path, capsys):
    args = ["--encoder", "tiny", "--max-per-relation", "6", "--orders", "2", "--method", "replay,cear"]
    assert main([*args, "--output", str(tmp_path / "run"), "--plan-only"]) == 0
    out = capsys.readouterr().out
    assert "settings: the built-in defaults" in out and "methods: replay, cear" in out
    line = next(line for line in out.splitlines() if line.startswith("estimate: "))
    assert "estimate: 4 cells" in line and "examples/s per cell (measured just now)" in line
    assert not (tmp_path / "run").exists()  # a plan writes nothing
