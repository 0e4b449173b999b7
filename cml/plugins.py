"""Plugins: parts of a method that act at the engine's hook points rather than as a stage.

The engine calls the hooks of every plugin, for each task, in this order (tested):

    before_task
    for each stage of the method that runs on this task: before_stage, (the stage, with
        after_step after each of a training stage's optimiser steps), after_stage
    after_task
    (evaluation) after_eval

At `before_task` the engine has already recorded the task and, where a part needs it, the
trainable weights at the start of the task (`engine.start`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cml.meta import reptile, step_size

if TYPE_CHECKING:
    from cml.engine import Engine, TaskResult
    from cml.stages import Stage


class Plugin:
    """No-op hooks; a plugin overrides the ones it needs. `needs_start`: it reads `engine.start`."""

    needs_start = False

    def before_task(self, engine: Engine) -> None:
        pass

    def before_stage(self, engine: Engine, stage: Stage) -> None:
        pass

    def after_step(self, engine: Engine, stage: Stage, loss: float) -> None:
        pass

    def after_stage(self, engine: Engine, stage: Stage) -> None:
        pass

    def after_task(self, engine: Engine) -> None:
        pass

    def after_eval(self, engine: Engine, result: TaskResult) -> None:
        pass


class AfterStage(Plugin):
    """A part that acts on the weights right after the stage named `after`, from the second task
    on, against the weights from the start of the task (`engine.start`): `act` says how."""

    needs_start = True

    def __init__(self, after: str = "learn"):
        self.after = after

    def after_stage(self, engine: Engine, stage: Stage) -> None:
        if stage.name == self.after and len(engine.tasks) > 1:
            self.act(engine)

    def act(self, engine: Engine) -> None:
        raise NotImplementedError


class MetaStep(AfterStage):
    """CML's Reptile step right after the stage named `after` (from the second task on): the
    weights move from where the task started only eps_k of the way to where that stage took them,
    except the classifier rows of the relations that arrived with this task. `eps` is the
    method's own step size; `--meta-eps` overrides it for every method."""

    def __init__(self, eps: float, after: str = "learn"):
        super().__init__(after)
        self.eps = eps

    def act(self, engine: Engine) -> None:
        options = engine.context.options
        eps = self.eps if options.meta_eps is None else options.meta_eps
        eps = step_size(eps, options.meta_schedule, len(engine.tasks) - 1, engine.context.n_tasks)
        params = dict(engine.model.named_parameters())
        with engine.timer("meta step"), torch.no_grad():
            end = {n: params[n].detach() for n in engine.start}
            moved = reptile(engine.start, end, eps, {"classifier.weight": engine.current_ids.to(engine.device)})
            for name, value in moved.items():
                params[name].copy_(value)


class ResetClassifier(Plugin):
    """New random classifier rows at the start of every task (CEAR)."""

    def before_task(self, engine: Engine) -> None:
        engine.model.reset_classifier(torch.Generator().manual_seed(engine.seed))


class RestoreOldRows(AfterStage):
    """CDec's restoration (Xia et al. 2023): after the stage named `after`, from the second task on,
    the old relations' classifier rows go back to their weights from the start of the task. The
    learn stage still reads them as negatives, but its push of them away from the new relations'
    sentences, learnt from the task's data alone, is undone before the consolidation re-balances
    them on the memory."""

    def act(self, engine: Engine) -> None:
        old = engine.old_ids
        with torch.no_grad():
            engine.model.classifier.weight[old] = engine.start["classifier.weight"][old]
