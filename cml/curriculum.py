"""A reusable curriculum scheduler: batches released from easy to hard under a pacing function.

It depends on nothing else in cml; give it one difficulty score per item and it yields batches
of item indices. Within each epoch every item is yielded exactly once. Items are ranked by
difficulty (ties broken at random with the seed); at step t of an epoch of T steps, only the
first `available(t)` items of the ranking may be drawn, where

    linear:  c(t) = c0 + (1 - c0) * t / (T - 1)
    root:    c(t) = sqrt(c0^2 + (1 - c0^2) * t / (T - 1))
    step:    c(t) = c0 + (1 - c0) * floor(n_steps * t / T) / (n_steps - 1)

is the fraction of the ranking available (competence-based curricula, Platanios et al. 2019),
raised where needed so that an epoch can always finish on time. Each batch is drawn uniformly
from the available items not yet yielded in this epoch.

    >>> from cml.curriculum import CurriculumScheduler
    >>> sched = CurriculumScheduler([0.9, 0.1, 0.5, 0.3], batch_size=2, pacing="linear", seed=0)
    >>> [sorted(batch) for batch in sched]          # doctest: +SKIP
    [[1, 3], [0, 2]]
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence

PACINGS: dict[str, Callable[[float, float, int], float]] = {
    "linear": lambda progress, c0, _: c0 + (1 - c0) * progress,
    "root": lambda progress, c0, _: math.sqrt(c0**2 + (1 - c0**2) * progress),
    "step": lambda progress, c0, n: c0 + (1 - c0) * min(math.floor(n * progress + 1e-9), n - 1) / max(n - 1, 1),
}
DIRECTIONS = ("easy_first", "hard_first")


class CurriculumScheduler:
    """Yields batches (lists of item indices) from easy to hard, one epoch per iteration.

    Args:
        difficulties: one score per item; higher is harder.
        batch_size: items per batch (the last batch of an epoch may be smaller).
        pacing: "linear", "root", "step", or a function (progress in [0, 1]) -> fraction in (0, 1].
        start_fraction: c0, the fraction of the ranking available at the first step.
        direction: "easy_first" (curriculum) or "hard_first" (anti-curriculum).
        n_steps: number of plateaus of the "step" pacing.
        seed: seeds tie-breaking and the draws within the available pool; epoch e uses seed + e.
    """

    def __init__(
        self,
        difficulties: Sequence[float],
        batch_size: int,
        pacing: str | Callable[[float], float] = "linear",
        start_fraction: float = 0.25,
        direction: str = "easy_first",
        n_steps: int = 4,
        seed: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 < start_fraction <= 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction}")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if isinstance(pacing, str):
            if pacing not in PACINGS:
                raise ValueError(f"pacing must be one of {tuple(PACINGS)} or a function, got {pacing!r}")
            named = PACINGS[pacing]
            self.pacing: Callable[[float], float] = lambda progress: named(progress, start_fraction, n_steps)
        else:
            self.pacing = pacing
        self.difficulties = [float(d) for d in difficulties]
        self.batch_size, self.direction, self.seed = batch_size, direction, seed
        self.epoch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.difficulties) / self.batch_size)

    def ranking(self, seed: int | None = None) -> list[int]:
        """Item indices from first released to last; ties in difficulty are shuffled with the seed."""
        rng = random.Random(self.seed if seed is None else seed)
        keys = [(d if self.direction == "easy_first" else -d, rng.random()) for d in self.difficulties]
        return sorted(range(len(keys)), key=keys.__getitem__)

    def available(self, step: int) -> int:
        """How many items of the ranking may be drawn at `step` (monotone, all by the last step)."""
        n, steps = len(self.difficulties), len(self)
        progress = step / (steps - 1) if steps > 1 else 1.0
        by_pacing = math.ceil(min(max(self.pacing(progress), 0.0), 1.0) * n - 1e-9)
        needed = min(n, (step + 1) * self.batch_size)  # enough to fill every batch so far
        return n if step >= steps - 1 else max(by_pacing, needed)

    def __iter__(self) -> Iterator[list[int]]:
        seed = self.seed + self.epoch
        self.epoch += 1
        ranking, rng = self.ranking(seed), random.Random(seed)
        pool: list[int] = []  # available, not yet yielded
        released = 0
        for step in range(len(self)):
            upto = self.available(step)
            pool += ranking[released:upto]
            released = upto
            rng.shuffle(pool)
            batch, pool = pool[: self.batch_size], pool[self.batch_size :]
            yield batch
