"""Experiment trackers (`--log-to tensorboard,mlflow,wandb`): what a run records anyway, streamed
to the trackers researchers follow their runs in, each in its library's own local mode.

Every cell logs as its own run, named for the cell, in one group named for the run directory: its
config as parameters, each training step's loss per stage, and after each task the whole, old and
new accuracy and each classifier's, then its phase timings. The driver logs the report's files
and plots as a run of their own at the end. TensorBoard writes event files under
`RUN_DIR/tensorboard/`; MLflow a file store (`mlruns/` in the current directory, or
`--mlflow-uri`); W&B runs offline under `RUN_DIR/wandb/` unless the user is logged in.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cml.config import RunConfig, flatten
from cml.plugins import Plugin

if TYPE_CHECKING:
    from cml.engine import Engine, TaskResult
    from cml.stages import Stage


class Tracker(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None: ...
    def files(self, paths: list[Path]) -> None: ...
    def close(self) -> None: ...


class TensorBoard:
    def __init__(self, run_dir: Path, name: str, params: dict[str, str]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard" / name))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def files(self, paths: list[Path]) -> None:
        import matplotlib.image

        for path in paths:
            if path.suffix == ".png":
                self.writer.add_image(path.stem, matplotlib.image.imread(path)[..., :3], dataformats="HWC")
            else:
                self.writer.add_text(path.name, path.read_text())

    def close(self) -> None:
        self.writer.close()


class MLflow:
    def __init__(self, uri: str, group: str, name: str, params: dict[str, str]):
        from mlflow.entities import Param

        self.client = mlflow_client(uri)
        self.run_id = self.client.create_run(mlflow_experiment(self.client, group), run_name=name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, v[:500]) for k, v in params.items()])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k.replace("/", "."), v, now, step) for k, v in values.items()]
        )

    def files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandB:
    def __init__(self, run_dir: Path, group: str, name: str, params: dict[str, str]):
        import wandb

        online = bool(os.environ.get("WANDB_API_KEY") or getattr(wandb.api, "api_key", None))
        self.run = wandb.init(
            project="cml",
            group=group,
            name=name,
            dir=str(run_dir),
            config=params,
            mode="online" if online else "offline",
            reinit="create_new",
        )

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({**values, "step": step})  # W&B's own step must only grow: ours is a field

    def files(self, paths: list[Path]) -> None:
        import wandb

        self.run.log({p.stem: wandb.Image(str(p)) for p in paths if p.suffix == ".png"})
        for path in paths:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self) -> None:
        self.run.finish()


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith("file:"):  # MLflow 3 keeps its file store in maintenance and asks for this opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(uri)


def mlflow_experiment(client, group: str) -> str:
    """The id of the experiment `group`, created where it does not exist; where another process
    creates it between the lookup and the creation and MLflow refuses the second, the lookup
    then finds it."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(group)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(group)
    except MlflowException:
        found = client.get_experiment_by_name(group)
        if found is None:
            raise
        return found.experiment_id


def group_of(run_dir: Path) -> str:
    """The trackers' group of a run's cells and report: the run directory's name."""
    return run_dir.resolve().name


def prepare_trackers(config: RunConfig, run_dir: Path) -> None:
    """What the cells' tracker runs share, made once by the driver before any cell starts: the
    MLflow experiment of the run's group. Cells on Ray start side by side, and MLflow's file
    store can make two experiments of one name when two processes create it at the same moment
    (its check and its creation are not one step), so a cell's run could land in a twin."""
    if "mlflow" in config.log_to:
        mlflow_experiment(mlflow_client(config.mlflow_uri), group_of(run_dir))


def open_trackers(config: RunConfig, run_dir: Path, name: str) -> list[Tracker]:
    """A tracker run called `name` for each of `config.log_to`, grouped under the run directory's
    name, with the config as its parameters (none at all without --log-to)."""
    if not config.log_to:
        return []
    group, params = group_of(run_dir), {k: str(v) for k, v in flatten(config.to_dict()).items()}
    made = {
        "tensorboard": lambda: TensorBoard(run_dir, name, params),
        "mlflow": lambda: MLflow(config.mlflow_uri, group, name, params),
        "wandb": lambda: WandB(run_dir, group, name, params),
    }
    return [made[n]() for n in config.log_to]


class Tracking(Plugin):
    """A cell's hooks into its trackers: each step's loss, each task's accuracies."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers, self.step = trackers, 0

    def _log(self, values: dict[str, float], step: int) -> None:
        """Names as every tracker takes them (letters, digits, _ - . / and spaces; `+` is not)."""
        values = {re.sub(r"[^\w\-. /]", "_", k): float(v) for k, v in values.items()}
        for tracker in self.trackers:
            tracker.scalars(values, step)

    def after_step(self, engine: Engine, stage: Stage, loss: float) -> None:
        self.step += 1
        self._log({f"loss/{stage.name}": loss}, self.step)

    def after_eval(self, engine: Engine, result: TaskResult) -> None:
        values = {"accuracy/whole": result.whole_accuracy}
        values |= {
            f"accuracy/{k}": v for k, v in (("old", result.old_accuracy), ("new", result.new_accuracy)) if v is not None
        }
        values |= {f"accuracy/{c}": r["whole"] for c, r in result.classifiers.items()}
        self._log(values, len(engine.tasks))

    def close(self, timings: dict[str, dict[str, float]]) -> None:
        self._log({f"seconds/{phase}": t["seconds"] for phase, t in timings.items()}, 0)
        for tracker in self.trackers:
            tracker.close()
