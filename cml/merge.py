"""One report over runs made separately (`run_cml.py report DIR [DIR ...] --output OUT`): the
report one command with all their methods would have written, since a cell's numbers depend only
on its method, order, seed and the run's settings.

Runs merge only where pairing their cells means something: the same data, split, orders, seeds
and budget (every setting but the methods and where or how the cells ran). Runs that read their
data from different directories merge where the directories give the same examples and orders.
OUT is a run directory of its own (config.yaml, results.jsonl, the report), so that `--resume
OUT` and a later merge read it like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cml.cache import fingerprint
from cml.config import RunConfig, first_difference, load_config
from cml.data import resolve_data_dir
from cml.errors import CMLInputError
from cml.experiment import Experiment, build_experiment
from cml.files import write_text_atomically
from cml.report import write_report
from cml.runner import CONFIG_FILE, RESULTS_FILE, check_writable, read_results, unfinished

# settings that may differ between merged runs: which methods they hold, and where they ran (a
# data directory of its own is checked for the same data)
FREE = ("output", "train.methods", "device", "executor", "search", "data.data_dir")


def merge_runs(run_dirs: list[Path], output: Path) -> dict:
    """Write the merged run to `output` and return its report."""
    if len(run_dirs) < 2:
        raise CMLInputError("report: name two or more run directories to merge")
    if output.resolve() in [d.resolve() for d in run_dirs] or (output / RESULTS_FILE).exists():
        raise CMLInputError(f"holds a run already ({RESULTS_FILE}); pick another --output", output)
    check_writable(output)
    configs = [load_config(_config_path(d)) for d in run_dirs]
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        differs = first_difference(configs[0].to_dict(), config.to_dict(), FREE)
        if differs:
            key, first, other = differs
            raise CMLInputError(
                f"cannot merge: {run_dirs[0]} ran with {key}={first!r}, {run_dir} with {key}={other!r}", run_dir
            )
    merged: RunConfig = configs[0]
    merged.train.methods = list(dict.fromkeys(m for c in configs for m in c.train.methods))
    merged.output = str(output)
    rows: dict = {}
    for run_dir in run_dirs:
        for key, row in read_results(run_dir).items():
            if key in rows and _numbers(rows[key]) != _numbers(row):
                raise CMLInputError(
                    "cannot merge: {} order {} seed {} task {} is in two runs with different results".format(*key),
                    run_dir,
                )
            rows.setdefault(key, row)
    experiment = build_experiment(merged)
    here = resolve_data_dir(merged.data.dataset, merged.data.data_dir)
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        there = resolve_data_dir(config.data.dataset, config.data.data_dir)
        if there == here:
            continue
        if not there.exists():  # never fetched here just to compare
            raise CMLInputError(f"cannot merge: its data ({there}) is not here to check that it is {here}'s", run_dir)
        if _data(build_experiment(config)) != _data(experiment):
            raise CMLInputError(
                f"cannot merge: {run_dirs[0]} and {run_dir} ran on different data: {here} and {there} give "
                "other examples or orders",
                run_dir,
            )
    missing = unfinished(merged, experiment, rows)
    if missing:
        raise CMLInputError(
            f"cannot merge unfinished runs: {missing[0].name} has tasks without results (finish it with --resume)",
            run_dirs[0],
        )
    output.mkdir(parents=True, exist_ok=True)
    header = f"# settings: merged from {', '.join(map(str, run_dirs))}\n"
    write_text_atomically(output / CONFIG_FILE, header + yaml.safe_dump(merged.to_dict(), sort_keys=False))
    write_text_atomically(output / RESULTS_FILE, "".join(_line(rows[k]) for k in sorted(rows)))
    return write_report(output, merged, experiment, rows, timings={})


def _config_path(run_dir: Path) -> Path:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        raise CMLInputError(f"no {CONFIG_FILE}: not a run directory", run_dir)
    return path


def _data(experiment: Experiment) -> str:
    """What a cell's numbers depend on in the data: its examples and task orders."""
    ds = experiment.dataset
    return fingerprint(ds.train, ds.val, ds.test, [o.tasks for o in experiment.orders])


def _numbers(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "seconds"}


def _line(row: dict) -> str:
    return json.dumps(row) + "\n"
