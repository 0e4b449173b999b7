"""Meta steps, as pure functions over parameter dicts.

CML's Reptile step: after the inner training on a task has taken the weights from theta_before to
theta_after, the outer step keeps only part of the way,

    theta <- theta_before + eps_k (theta_after - theta_before)

with eps_k fixed, or decaying over the K tasks (linear: eps (1 - k/K); sqrt: eps sqrt(1 - k/K)).
That only shrinks an update. `path_gradient` targets interference instead (first-order MER,
Riemer et al. 2019): one optimiser step's batch is cut into sub-batches, SGD walks through them
in turn, and the step takes the mean of the gradients met along that path. For two sub-batches it
is (g1(theta) + g2(theta - lr g1)) / 2 = (g1 + g2) / 2 - lr/2 H2 g1 + O(lr^2); the sub-batches are
drawn in random order, so in expectation that is the mean gradient - lr/4 grad(g1 . g2): the step
also climbs the agreement of the sub-batches' gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

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


def path_gradient(
    loss: Callable[[dict[str, torch.Tensor], Any], tuple[torch.Tensor, Any]],
    params: dict[str, torch.Tensor],
    batches: Sequence[Any],
    lr: float,
) -> tuple[dict[str, torch.Tensor], list[float], list[Any]]:
    """First-order MER over `batches`: theta_0 = params, theta_j = theta_{j-1} - lr g_j with
    g_j = grad loss(theta_{j-1}, batch_j); returns mean_j g_j (= (theta_0 - theta_n) / (n lr)),
    each batch's loss value and each `loss`'s auxiliary output. `loss(weights, batch)` returns
    (loss, aux); it runs the model on `weights` (`torch.func.functional_call`), so no copy of a
    model is made: the walk is over parameter dicts. One batch gives its plain gradient.

    (`torch.autograd.grad` rather than `torch.func.grad`: the latter's backward fails under bf16
    autocast, which training uses on CPUs that have bf16.)"""
    theta = {n: p.detach() for n, p in params.items()}
    total: dict[str, torch.Tensor] = {}
    values, aux = [], []
    for batch in batches:
        theta = {n: t.requires_grad_() for n, t in theta.items()}
        value, out = loss(theta, batch)
        g = dict(zip(theta, torch.autograd.grad(value, list(theta.values()), allow_unused=True)))
        values.append(float(value.detach()))
        aux.append(out)
        with torch.no_grad():
            for n, grad in g.items():
                if grad is not None:
                    total[n] = total[n] + grad if n in total else grad
            theta = {n: t.detach() if g[n] is None else t - lr * g[n] for n, t in theta.items()}
    return {n: t / len(batches) for n, t in total.items()}, values, aux
