"""cml from Python (a notebook, a sweep script): the command line's config, validation and runner,
with the results handed back as plain data.

    import cml
    results = cml.run({"data": {"dataset": "demo", "orders": 2}, "train": {"methods": ["replay", "cml"]}})
    results.frame()            # one row per (method, order, seed, task), as a pandas DataFrame
    results.report["methods"]  # the report's numbers, as report.json holds them

Without `output` nothing of the run is kept (it runs in a temporary directory; the data caches
under data/cache are kept as for any run); with it, the run directory is the command line's,
and `load_results` reads it, or any other, back.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cml.config import RunConfig, load_config
from cml.errors import CMLInputError
from cml.experiment import build_experiment
from cml.runner import RESULTS_FILE, read_results
from cml.runner import run as run_grid

ROW_COLUMNS = ("method", "order", "seed", "task", "whole_accuracy", "old_accuracy", "new_accuracy", "seconds")


@dataclass
class Results:
    rows: list[dict]  # one per finished task, as results.jsonl holds them, in (method, order, seed, task) order
    report: dict  # report.json
    run_dir: Path | None  # where the run is kept; None when nothing was

    def frame(self):
        """The rows as a pandas DataFrame: one per (method, order, seed, task), with the whole,
        old and new accuracy after that task (the per-task and per-relation detail stays in `rows`)."""
        try:
            import pandas as pd
        except ImportError:
            raise CMLInputError("Results.frame needs pandas: pip install pandas (or read Results.rows)") from None
        from cml.engine import TaskResult

        records = [
            {
                **{k: row[k] for k in ("method", "order", "seed", "task")},
                "whole_accuracy": TaskResult.from_row(row).whole_accuracy,
                "old_accuracy": row.get("old_accuracy"),
                "new_accuracy": row.get("new_accuracy"),
                "seconds": row.get("seconds"),
            }
            for row in self.rows
        ]
        return pd.DataFrame.from_records(records, columns=list(ROW_COLUMNS))


def run(
    config: RunConfig | dict[str, Any] | str | Path, output: str | Path | None = None, progress: bool = False
) -> Results:
    """Run every cell of `config`: a RunConfig, a dict shaped as a YAML config file, or the path of
    one. It is validated as the command line validates it (unknown keys, types, domains, choices,
    methods), before anything runs. `output`: the run directory to keep (else none is kept)."""
    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = RunConfig.from_dict(config, "config dict").check("config dict")
    elif not isinstance(config, RunConfig):
        raise CMLInputError(f"run: expected a RunConfig, a dict or a config file, not {type(config).__name__}")
    if output is not None:
        config.output = str(output)
        run_grid(config, build_experiment(config), progress=progress)
        return load_results(output)
    with tempfile.TemporaryDirectory(prefix="cml-run-") as tmp:
        config.output = str(Path(tmp) / "run")
        run_grid(config, build_experiment(config), progress=progress)
        return Results(**{**vars(load_results(config.output)), "run_dir": None})


def load_results(run_dir: str | Path) -> Results:
    """A run directory's rows and report (a finished run, or a merged one)."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).exists():
        raise CMLInputError(f"no {RESULTS_FILE}: not a run directory", run_dir)
    report_path = run_dir / "report.json"
    if not report_path.exists():
        raise CMLInputError("no report.json: the run is not finished (continue it with --resume)", run_dir)
    rows = read_results(run_dir)
    return Results([rows[k] for k in sorted(rows)], json.loads(report_path.read_text()), run_dir)
