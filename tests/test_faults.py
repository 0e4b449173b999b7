"""SIGKILL at random points of a real run (a subprocess), then --resume: the rows and the report
are those of the uninterrupted run (benchmarks/fault_injection.py runs many more such trials)."""

import importlib.util
import random
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"
spec = importlib.util.spec_from_file_location("fault_injection", SCRIPT)
faults = importlib.util.module_from_spec(spec)
spec.loader.exec_module(faults)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    faults.finish([*faults.RUN, "--output", str(work / "reference")], work / "cache")
    return work


def test_a_run_killed_at_a_random_point_resumes_to_the_same_rows_and_report(work):
    delay = random.Random(0).uniform(1.0, 8.0)
    identical, at = faults.kill_trial(work, work / "cache", delay)
    assert identical, f"killed after {delay:.1f} s ({at})"


def test_a_removed_checkpoint_restarts_its_cell_and_says_so(work):
    identical, said = faults.damage_trial(work, work / "cache", "removed checkpoint")
    assert identical and "but no checkpoint: it starts again from the initial weights" in said
