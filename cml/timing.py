"""Where a run's time goes: wall seconds and examples per phase (training steps, evaluation,
memory selection, ...), summed over every task of every order and method. The report shows the
totals and `benchmarks/run_throughput.py` compares them with the encoder's ceiling."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

TRAIN_PHASE = "train forward+backward"
EVALUATION_PHASE = "evaluation forward"
# the phases that run the encoder forward only; with TRAIN_PHASE, all the encoder's work (the rest:
# optimiser step, K-means, Reptile, ... is overhead)
FORWARD_PHASES = (EVALUATION_PHASE, "memory forward", "teacher forward", "bank forward")


@dataclass
class PhaseTimer:
    """With `sync`, waits for the GPU at each phase boundary so that its work is charged to the
    phase that queued it (accurate, slightly slower); without it GPU phases look faster than they are."""

    sync: bool = False
    seconds: Counter = field(default_factory=Counter)
    examples: Counter = field(default_factory=Counter)

    def _wait(self) -> None:
        if self.sync and torch.cuda.is_available():
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, phase: str, examples: int = 0):
        self._wait()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._wait()
            self.seconds[phase] += time.perf_counter() - start
            self.examples[phase] += examples

    def add(self, other: PhaseTimer) -> None:
        """Count another timer's phases in this one (a cell that ran elsewhere)."""
        self.seconds.update(other.seconds)
        self.examples.update(other.examples)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            phase: {"seconds": round(self.seconds[phase], 2), "examples": self.examples[phase]}
            for phase in self.seconds
        }
