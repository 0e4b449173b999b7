"""CML's meta step (Reptile), a pure function over parameter dicts.

After the inner training on a task has taken the weights from theta_before to theta_after, the
outer step keeps only part of the way:

    theta <- theta_before + eps_k (theta_after - theta_before)

with eps_k fixed, or decaying over the K tasks (linear: eps (1 - k/K); sqrt: eps sqrt(1 - k/K)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES: dict[str, Callable[[float, int, int], float]] = {
    "fixed": lambda eps, k, n: eps,
    "linear": lambda eps, k, n: eps * (1 - k / n),
    "sqrt": lambda eps, k, n: eps * math.sqrt(1 - k / n),
}


def step_size(eps: float, schedule: str, task: int, n_tasks: int) -> float:
    """eps_k for the task at 0-based position `task` of `n_tasks`."""
    return SCHEDULES[schedule](eps, task, n_tasks)


def reptile(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    eps: float,
    keep_after: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """before + eps (after - before) for every name of `before`; new tensors, inputs untouched.

    `keep_after` maps a name to row indices that take `after` unchanged (the classifier rows of the
    relations that arrived with this task: like a first task, they have nothing to protect).
    """
    out = {}
    for name, start in before.items():
        mixed = torch.lerp(start, after[name].to(start.dtype), eps)
        rows = (keep_after or {}).get(name)
        if rows is not None:
            mixed[rows] = after[name][rows].to(start.dtype)
        out[name] = mixed
    return out
