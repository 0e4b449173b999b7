"""Continual-learning metrics over accuracy matrices (METHOD.md section 4), in torch.

`acc` has shape [O, K, K]: acc[o, k, j] is the accuracy on the task at position j after training
the task at position k in order o (NaN above the diagonal, j > k). `n` has shape [O, K]: the
number of test examples of the task at position j. Everything runs on whatever device the
tensors live on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats


def whole_accuracy(acc: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """W_k = sum_j n_j a[k][j] / sum_j n_j over j <= k; shape [O, K]."""
    seen = ~torch.isnan(acc)
    weights = n[:, None, :].to(acc.dtype) * seen
    return (torch.nan_to_num(acc) * weights).sum(-1) / weights.sum(-1)


def average_accuracy(acc: torch.Tensor) -> torch.Tensor:
    """A_k = mean_{j <= k} a[k][j]; shape [O, K]."""
    return torch.nanmean(acc, dim=-1)


def _final_and_diagonal(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a[K][j] and a[j][j] for the tasks j < K that can be forgotten; shapes [O, K-1]."""
    final = acc[:, -1, :-1]
    diagonal = torch.diagonal(acc, dim1=1, dim2=2)[:, :-1]
    return final, diagonal


def forgetting(acc: torch.Tensor) -> torch.Tensor:
    """f_j = max_{l < K} a[l][j] - a[K][j] for j < K; shape [O, K-1]."""
    best = torch.nan_to_num(acc[:, :-1, :-1], nan=-torch.inf).amax(dim=1)
    return best - acc[:, -1, :-1]


def average_forgetting(acc: torch.Tensor) -> torch.Tensor:
    return forgetting(acc).mean(-1)


def average_forgetting_rate(acc: torch.Tensor) -> torch.Tensor:
    """AFR = mean_{j<K} (a[j][j] - a[K][j]) / a[j][j]; tasks never learned (a[j][j] = 0) are left out."""
    final, diagonal = _final_and_diagonal(acc)
    rate = (diagonal - final) / diagonal
    return torch.nanmean(torch.where(diagonal > 0, rate, torch.nan), dim=-1)


def backward_transfer(acc: torch.Tensor) -> torch.Tensor:
    final, diagonal = _final_and_diagonal(acc)
    return (final - diagonal).mean(-1)


@dataclass
class Spread:
    """A number over orders: mean +/- t_{0.975, O-1} s / sqrt(O), with std and range."""

    mean: float
    error_bound: float
    std: float
    min: float
    max: float

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.error_bound:.1f}"


def spread(values: torch.Tensor) -> Spread:
    values = values.double().flatten()
    o = len(values)
    std = float(values.std()) if o > 1 else 0.0
    bound = float(stats.t.ppf(0.975, o - 1)) * std / o**0.5 if o > 1 else float("nan")
    return Spread(float(values.mean()), bound, std, float(values.min()), float(values.max()))


def order_sensitivity(final_by_unit: torch.Tensor) -> torch.Tensor:
    """OS_j = std over orders of the final accuracy of unit j; `final_by_unit` is [O, units]."""
    return final_by_unit.std(dim=0)


# Difficulty-based order sensitivity (METHOD.md section 4). Rank correlations use scipy, which
# handles ties; the arrays are one number per task or per order.


def difficulty_weighted_os(os_units: torch.Tensor, difficulty: torch.Tensor) -> float:
    """OS_d = sum_j d_j OS_j / sum_j d_j."""
    return float((difficulty * os_units).sum() / difficulty.sum())


def spearman(x, y) -> float:
    return float(stats.spearmanr(torch.as_tensor(x).cpu(), torch.as_tensor(y).cpu()).statistic)


def curriculumness(difficulty: torch.Tensor) -> torch.Tensor:
    """tau_o = Kendall(position, d) per order; `difficulty` is [O, K]; +1 is easy to hard."""
    positions = list(range(difficulty.shape[1]))
    return torch.tensor([stats.kendalltau(positions, d.cpu()).statistic for d in difficulty], dtype=torch.float64)
