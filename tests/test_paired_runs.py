"""benchmarks/paired_runs.py: a method's final W in one run against another method's in runs of
one seed each, paired by (order, seed), against the runs' own reports and scipy's paired t test."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from cml.experiment import build_experiment
from cml.runner import run
from tests.test_engine import small_config

ROOT = Path(__file__).resolve().parents[1]


def final_w(run_dir: Path, method: str) -> list[list[float]]:
    """[order][seed index] final whole accuracy in %, as the run's report gives it."""
    report = json.loads((run_dir / "report.json").read_text())
    return [[100 * w for w in order] for order in report["methods"][method]["final_whole_accuracy_per_run"]]


def paired(tmp_path: Path) -> str:
    """The script's output for replay in run a against finetune in runs b3 and b4."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paired_runs.py"), str(tmp_path / "a"), str(tmp_path / "b3"),
         str(tmp_path / "b4"), "--method", "replay", "--method-b", "finetune"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip


def test_an_ablation_pairs_over_runs_of_one_seed_each(tmp_path):
    runs = {"a": ("replay", 3, 2), "b3": ("finetune", 3, 1), "b4": ("finetune", 4, 1)}  # method, seed, seeds
    for name, (method, seed, seeds) in runs.items():
        config = small_config(tmp_path / name, methods=(method,), orders=2)
        config.seed, config.seeds = seed, seeds
        run(config, build_experiment(config), progress=False)
    for name in runs:  # the script reads the runs' own files, never their data
        config = tmp_path / name / "config.yaml"
        config.write_text(config.read_text().replace("dataset: demo", f"dataset: {tmp_path / 'gone'}"))
        assert "gone" in config.read_text()
    out = paired(tmp_path)
    assert "hold other tasks" not in out  # the demo's orders do not depend on the seed
    a, b3, b4 = (
        final_w(tmp_path / "a", "replay"),
        final_w(tmp_path / "b3", "finetune"),
        final_w(tmp_path / "b4", "finetune"),
    )
    expected = {(o, 3): (a[o][0], b3[o][0]) for o in range(2)} | {(o, 4): (a[o][1], b4[o][0]) for o in range(2)}
    table = {
        (int(m[1]), int(m[2])): (float(m[3]), float(m[4]))
        for m in re.finditer(r"^\| (\d) \| (\d) \| ([\d.]+) \| ([\d.]+) \|", out, re.MULTILINE)
    }
    assert table.keys() == expected.keys()
    for key, (x, y) in expected.items():
        assert table[key] == pytest.approx((round(x, 1), round(y, 1)), abs=0.051)
    assert "note: B's cells of --seed [4] pair with A's of --seed 3" in out  # b4 has a relation space of its own
    xs, ys = zip(*(expected[k] for k in sorted(expected)))
    mean = sum(x - y for x, y in zip(xs, ys)) / len(xs)
    summary = re.search(r"over 4 cells: ([+-][\d.]+) .*paired t p ([\d.e+-]+)", out)
    assert float(summary[1]) == pytest.approx(mean, abs=0.006)
    assert float(summary[2]) == pytest.approx(stats.ttest_rel(xs, ys).pvalue, rel=0.06)
    # the stricter pairing: each order's two seeds averaged first
    means = [[sum(expected[o, s][i] for s in (3, 4)) / 2 for o in range(2)] for i in (0, 1)]
    by_order = re.search(r"over 2 order means \(its seeds averaged\): ([+-][\d.]+) .*paired t p ([\d.e+-]+)", out)
    assert float(by_order[1]) == pytest.approx(sum(x - y for x, y in zip(*means)) / 2, abs=0.006)
    assert float(by_order[2]) == pytest.approx(stats.ttest_rel(*means).pvalue, rel=0.06)

    # a cell cut short (its last task's row gone) is left out and said, never paired on its latest row
    results = tmp_path / "b3" / "results.jsonl"
    lines = results.read_text().splitlines(True)
    last = max(json.loads(line)["task"] for line in lines)
    cut = lambda row: (row["order"], row["task"]) == (1, last)
    results.write_text("".join(line for line in lines if not cut(json.loads(line))))
    out = paired(tmp_path)
    assert "left out, not finished: finetune-order1-seed3" in out
    assert {(int(m[1]), int(m[2])) for m in re.finditer(r"^\| (\d) \| (\d) \|", out, re.MULTILINE)} == set(expected) - {
        (1, 3)
    }
    assert "over 3 cells" in out

    # the same order index holding another stream (as --order-protocol or --tasks would give) is said
    report = tmp_path / "b4" / "report.json"
    content = json.loads(report.read_text())
    content["orders"][1]["tasks"].reverse()
    report.write_text(json.dumps(content))
    assert f"note: {tmp_path / 'b4'}'s orders [1] hold other tasks than {tmp_path / 'a'}'s" in paired(tmp_path)
