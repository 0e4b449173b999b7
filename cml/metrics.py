"""Continual-learning metrics over accuracy matrices (docs/method.md, "Metrics"), and the statistics
that tell order effects from noise.

`acc` has shape [N, K, K]: acc[r, k, j] is the accuracy on the task at position j after training
the task at position k in run r (NaN above the diagonal, j > k); a run is one (order, seed).
`n` has shape [N, K]: the number of test examples of the task at position j. Numbers over runs
come as [O, S] (orders x seeds). Everything runs on whatever device the tensors live on; the
tests (p-values, intervals) use scipy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
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
    """f_j = max_{l < K} a[l][j] - a[K][j] for the tasks j < K; shape [N, K-1]."""
    return unit_forgetting(acc)[..., :-1]


def unit_forgetting(acc: torch.Tensor) -> torch.Tensor:
    """f_u = max_{l < K} a[l][u] - a[K][u] for every unit u (task or relation) of `acc` [N, K, U],
    NaN where a unit is not yet learned; NaN for a unit first learned at the last stage (so
    every unit of a one-task run: nothing could be forgotten)."""
    if acc.shape[1] < 2:
        return torch.full((acc.shape[0], acc.shape[2]), torch.nan, dtype=acc.dtype)
    best = torch.nan_to_num(acc[:, :-1, :], nan=-torch.inf).amax(dim=1)
    return torch.where(torch.isinf(best), torch.nan, best - acc[:, -1, :])


def average_forgetting(acc: torch.Tensor) -> torch.Tensor:
    """Mean f_j over the tasks that were evaluated before the last stage (all, unless `--eval-every`)."""
    return torch.nanmean(forgetting(acc), dim=-1)


def average_forgetting_rate(acc: torch.Tensor) -> torch.Tensor:
    """AFR = mean_{j<K} (a[j][j] - a[K][j]) / a[j][j]; tasks never learned (a[j][j] = 0) are left out."""
    final, diagonal = _final_and_diagonal(acc)
    rate = (diagonal - final) / diagonal
    return torch.nanmean(torch.where(diagonal > 0, rate, torch.nan), dim=-1)


def backward_transfer(acc: torch.Tensor) -> torch.Tensor:
    """BWT = mean_{j<K} (a[K][j] - a[j][j]) over the tasks evaluated right after they were learned."""
    final, diagonal = _final_and_diagonal(acc)
    return torch.nanmean(final - diagonal, dim=-1)


@dataclass
class Spread:
    """A number over runs: the mean, its error bound t_{0.975, n-1} s / sqrt(n) over the n order
    means (seeds averaged within an order; over the seeds when there is one order; None for one
    run), and the std and range over every run."""

    mean: float
    error_bound: float | None
    std: float
    min: float
    max: float


def spread(values: torch.Tensor) -> Spread:
    """`values`: one number per order [O], or per order and seed [O, S]."""
    values = values.double()
    values = values[:, None] if values.dim() == 1 else values
    sample = values.mean(1) if len(values) > 1 else values[0]
    flat, n = values.flatten(), len(sample)
    bound = float(stats.t.ppf(0.975, n - 1) * sample.std() / n**0.5) if n > 1 else None
    std = float(flat.std()) if len(flat) > 1 else 0.0
    return Spread(float(flat.mean()), bound, std, float(flat.min()), float(flat.max()))


def order_sensitivity(final_by_unit: torch.Tensor) -> torch.Tensor:
    """OS_j = std over orders of the final accuracy of unit j; `final_by_unit` is [O, units]."""
    return final_by_unit.std(dim=0)


def order_performance_difference(final_by_unit: torch.Tensor) -> torch.Tensor:
    """OPD_j = max - min over orders of the final accuracy of unit j (Yoon et al., ICLR 2020);
    AOPD is their mean, MOPD their max."""
    return final_by_unit.amax(dim=0) - final_by_unit.amin(dim=0)


@dataclass
class VarianceParts:
    """Final accuracy [O, S] split into a part of the order and a part of the seed (one-way
    random-effects ANOVA with orders as groups). `order_means_std` is the std of the O order
    means; `seed_std` the pooled std over seeds within an order; `order_std` the estimated std
    that the order alone causes, sqrt(max(0, var(order means) - seed_var / S)); the F test (scipy)
    asks whether orders differ more than seeds alone would make them."""

    order_means_std: float | None
    seed_std: float | None
    order_std: float | None
    f_statistic: float | None
    p_value: float | None


def variance_parts(final: torch.Tensor) -> VarianceParts:
    final = final.double()
    O, S = final.shape
    means_std = float(final.mean(1).std()) if O > 1 else None
    if S < 2:
        return VarianceParts(means_std, None, None, None, None)
    seed_var = float(final.var(dim=1).mean())
    if O < 2:
        return VarianceParts(None, seed_var**0.5, None, None, None)
    order_var = max(0.0, means_std**2 - seed_var / S)
    if seed_var == 0:
        return VarianceParts(means_std, 0.0, order_var**0.5, None, None)
    test = stats.f_oneway(*final.cpu().numpy())
    return VarianceParts(means_std, seed_var**0.5, order_var**0.5, float(test.statistic), float(test.pvalue))


@dataclass
class PairedComparison:
    """Method a against method b over the same runs (orders x seeds): the mean difference a - b
    with its 95% t interval, the paired t test and the Wilcoxon signed-rank test (scipy)."""

    n: int
    mean_difference: float
    ci_low: float | None
    ci_high: float | None
    t_p_value: float | None
    wilcoxon_p_value: float | None


def paired_comparison(a: torch.Tensor, b: torch.Tensor) -> PairedComparison:
    a, b = a.double().flatten().cpu().numpy(), b.double().flatten().cpu().numpy()
    d, n = a - b, len(a)
    if n < 2 or (d == d[0]).all():
        return PairedComparison(n, float(d.mean()), None, None, None, None)
    t = stats.ttest_rel(a, b)
    low, high = t.confidence_interval(0.95)
    wilcoxon = stats.wilcoxon(d).pvalue  # d is not all zero here
    return PairedComparison(n, float(d.mean()), float(low), float(high), float(t.pvalue), float(wilcoxon))


@dataclass
class Correlation:
    """Spearman's rho with a permutation p-value (exact for n <= 7) and a 95% percentile bootstrap
    interval over the resamples where rho is defined (a resample with a constant side has none)."""

    rho: float
    p_value: float
    ci_low: float | None  # None: no resample had rho defined
    ci_high: float | None
    n: int


def _spearman(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (Pearson's r of the ranks, ties averaged), for many resamples at once."""
    return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis), axis=axis).statistic


def correlation(x, y, seed: int = 0, resamples: int = 9999) -> Correlation | None:
    """Spearman's rho over the points with a value on both sides (a NaN is no value: a task never
    evaluated before the last, under `--eval-every`). None where rho is not defined: fewer than 3
    points, or a side that is constant."""
    x = np.asarray(torch.as_tensor(x, dtype=torch.float64).flatten().cpu())
    y = np.asarray(torch.as_tensor(y, dtype=torch.float64).flatten().cpu())
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 3 or (x == x[0]).all() or (y == y[0]).all():
        return None
    rng = np.random.default_rng(seed)
    # one sample permuted against fixed y: n! pairings, enumerated exactly while n! <= resamples
    against_y = lambda a, axis=-1: _spearman(a, np.broadcast_to(y, a.shape), axis)
    test = stats.permutation_test((x,), against_y, permutation_type="pairings", n_resamples=resamples, rng=rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap(
            (x, y), _spearman, paired=True, method="percentile", n_resamples=resamples, rng=rng
        ).bootstrap_distribution
    defined = boot[~np.isnan(boot)]
    low, high = map(float, np.percentile(defined, [2.5, 97.5])) if len(defined) else (None, None)
    return Correlation(float(test.statistic), float(test.pvalue), low, high, len(x))


# Difficulty-based order sensitivity (docs/method.md, "Metrics").


def difficulty_weighted_os(os_units: torch.Tensor, difficulty: torch.Tensor) -> float:
    """OS_d = sum_j d_j OS_j / sum_j d_j."""
    return float((difficulty * os_units).sum() / difficulty.sum())


def curriculumness(difficulty: torch.Tensor) -> torch.Tensor:
    """tau_o = Kendall(position, d) per order; `difficulty` is [O, K]; +1 is easy to hard."""
    positions = list(range(difficulty.shape[1]))
    return torch.tensor([stats.kendalltau(positions, d.cpu()).statistic for d in difficulty], dtype=torch.float64)
