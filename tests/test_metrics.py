"""Metrics against matrices worked out by hand (numbers in the comments)."""

import itertools
import math

import pytest
import torch
from scipy import stats

from cml import metrics
from cml.summary import comparisons

nan = math.nan
# order 0: n = 10, 20, 10; order 1: n = 10, 10, 20
ACC = torch.tensor(
    [
        [[0.9, nan, nan], [0.6, 0.8, nan], [0.5, 0.7, 0.9]],
        [[0.8, nan, nan], [0.9, 0.6, nan], [0.7, 0.5, 1.0]],
    ],
    dtype=torch.float64,
)
N = torch.tensor([[10, 20, 10], [10, 10, 20]])


def test_whole_and_average_accuracy():
    # W: order 0: 0.9, (6 + 16) / 30, (5 + 14 + 9) / 40; order 1: 0.8, (9 + 6) / 20, (7 + 5 + 20) / 40
    expected_w = [[0.9, 22 / 30, 0.7], [0.8, 0.75, 0.8]]
    torch.testing.assert_close(metrics.whole_accuracy(ACC, N), torch.tensor(expected_w, dtype=torch.float64))
    # A: order 0: .9, (.6 + .8) / 2, (.5 + .7 + .9) / 3; order 1: .8, (.9 + .6) / 2, (.7 + .5 + 1) / 3
    expected_a = [[0.9, 0.7, 0.7], [0.8, 0.75, 2.2 / 3]]
    torch.testing.assert_close(metrics.average_accuracy(ACC), torch.tensor(expected_a, dtype=torch.float64))


def test_forgetting_afr_bwt():
    # order 0: f = [max(.9,.6) - .5, .8 - .7] = [.4, .1]; order 1: [max(.8,.9) - .7, .6 - .5] = [.2, .1]
    torch.testing.assert_close(metrics.forgetting(ACC), torch.tensor([[0.4, 0.1], [0.2, 0.1]], dtype=torch.float64))
    torch.testing.assert_close(metrics.average_forgetting(ACC), torch.tensor([0.25, 0.15], dtype=torch.float64))
    # AFR: order 0: (.4/.9 + .1/.8) / 2; order 1: (.1/.8 + .1/.6) / 2
    afr = torch.tensor([(0.4 / 0.9 + 0.125) / 2, (0.125 + 0.1 / 0.6) / 2], dtype=torch.float64)
    torch.testing.assert_close(metrics.average_forgetting_rate(ACC), afr)
    # BWT: order 0: ((.5 - .9) + (.7 - .8)) / 2 = -.25; order 1: ((.7 - .8) + (.5 - .6)) / 2 = -.1
    torch.testing.assert_close(metrics.backward_transfer(ACC), torch.tensor([-0.25, -0.1], dtype=torch.float64))


def test_metrics_over_stages_not_evaluated():
    """--eval-every 2 over 4 tasks evaluates after tasks 2 and 4: rows 1 and 3 are NaN."""
    acc = torch.tensor(
        [[[nan] * 4, [0.6, 0.8, nan, nan], [nan] * 4, [0.5, 0.7, 0.4, 0.9]]],
        dtype=torch.float64,
    )
    n = torch.tensor([[10, 10, 20, 10]])
    # W: nan, (6 + 8) / 20, nan, (5 + 7 + 8 + 9) / 50
    w = metrics.whole_accuracy(acc, n)
    assert math.isnan(w[0, 0]) and math.isnan(w[0, 2])
    assert w[0, 1].item() == pytest.approx(0.7) and w[0, 3].item() == pytest.approx(29 / 50)
    # f over the evaluated stages before the last: task 1 .6 - .5, task 2 .8 - .7; task 3 never
    # evaluated before the last stage, so it has no forgetting
    f = metrics.forgetting(acc)
    torch.testing.assert_close(f[0, :2], torch.tensor([0.1, 0.1], dtype=torch.float64))
    assert math.isnan(f[0, 2])
    assert metrics.average_forgetting(acc).item() == pytest.approx(0.1)
    # BWT over the tasks evaluated right after they were learned: task 2 only, .7 - .8
    assert metrics.backward_transfer(acc).item() == pytest.approx(-0.1)
    assert metrics.average_forgetting_rate(acc).item() == pytest.approx(0.1 / 0.8)


def test_correlation_leaves_out_points_without_a_value():
    x, y = [0.1, 0.4, nan, 0.3, 0.9, 0.5], [1.0, 2.0, 5.0, nan, 4.0, 3.0]
    both = metrics.correlation(x, y)
    alone = metrics.correlation([0.1, 0.4, 0.9, 0.5], [1.0, 2.0, 4.0, 3.0])
    assert both.n == alone.n == 4
    assert both.rho == pytest.approx(stats.spearmanr([0.1, 0.4, 0.9, 0.5], [1.0, 2.0, 4.0, 3.0]).statistic)
    assert both.p_value == pytest.approx(alone.p_value)


def test_afr_leaves_out_tasks_never_learned():
    acc = torch.tensor([[[0.0, nan, nan], [0.2, 0.5, nan], [0.1, 0.25, 1.0]]], dtype=torch.float64)
    torch.testing.assert_close(metrics.average_forgetting_rate(acc), torch.tensor([0.5], dtype=torch.float64))


def test_error_bound_over_orders():
    # W_K = [0.7, 0.8]: mean .75, s = .0707107, t_{0.975, 1} = 12.7062047
    s = metrics.spread(torch.tensor([0.7, 0.8]))
    assert s.mean == pytest.approx(0.75)
    assert s.std == pytest.approx(0.0707107, rel=1e-5)
    assert s.error_bound == pytest.approx(12.7062047 * 0.0707107 / 2**0.5, rel=1e-5)
    assert (s.min, s.max) == (pytest.approx(0.7), pytest.approx(0.8))
    # five orders: mean .82, squared deviations .0004 + 0 + .0009 + .0009 + .0004 = .0026,
    # s = sqrt(.0026 / 4) = .0254951, t_{0.975, 4} = 2.7764451
    five = metrics.spread(torch.tensor([0.80, 0.82, 0.85, 0.79, 0.84]))
    assert five.error_bound == pytest.approx(2.7764451 * 0.0254951 / 5**0.5, rel=1e-5)


def test_order_sensitivity():
    final = torch.tensor([[0.5, 0.7, 0.9], [0.6, 0.7, 1.0]], dtype=torch.float64)
    os_j = metrics.order_sensitivity(final)
    torch.testing.assert_close(
        os_j, torch.tensor([0.0707107, 0.0, 0.0707107], dtype=torch.float64), rtol=1e-5, atol=1e-7
    )


def test_difficulty_based_metrics_by_hand():
    # OS_d = (1 * .1 + 1 * .2 + 2 * .3) / (1 + 1 + 2) = .225
    os_d = metrics.difficulty_weighted_os(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 1.0, 2.0]))
    assert os_d == pytest.approx(0.225)
    # Kendall of position and difficulty: sorted +1, reversed -1; [.2, .1, .3]: pairs (0,1) discordant,
    # (0,2) and (1,2) concordant -> (2 - 1) / 3
    d = torch.tensor([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.1, 0.3]])
    torch.testing.assert_close(metrics.curriculumness(d), torch.tensor([1.0, -1.0, 1 / 3], dtype=torch.float64))
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = .8
    assert metrics.correlation([1, 2, 3, 4], [10, 30, 20, 40]).rho == pytest.approx(0.8)


def test_relation_forgetting_leaves_out_units_learned_last():
    # run 0: relation 0 learned at stage 0 (.9, then .6, final .5), relation 1 only at the last stage
    acc = torch.tensor([[[0.9, nan], [0.6, nan], [0.5, 0.8]]], dtype=torch.float64)
    f = metrics.unit_forgetting(acc)
    assert f[0, 0].item() == pytest.approx(0.4) and math.isnan(f[0, 1].item())


def test_order_performance_difference():
    # units over 3 orders: [.5, .6, .8] -> .3; [.7, .7, .7] -> 0; [.9, 1., .95] -> .1
    final = torch.tensor([[0.5, 0.7, 0.9], [0.6, 0.7, 1.0], [0.8, 0.7, 0.95]], dtype=torch.float64)
    opd = metrics.order_performance_difference(final)
    torch.testing.assert_close(opd, torch.tensor([0.3, 0.0, 0.1], dtype=torch.float64))
    assert float(opd.mean()) == pytest.approx(0.4 / 3) and float(opd.max()) == pytest.approx(0.3)


def test_spread_over_orders_and_seeds():
    # order means .75 and .85 (seeds averaged): bound t_{0.975,1} * s(.75, .85) / sqrt 2; std over all four runs
    s = metrics.spread(torch.tensor([[0.7, 0.8], [0.8, 0.9]]))
    assert s.mean == pytest.approx(0.8)
    assert s.error_bound == pytest.approx(12.7062047 * 0.0707107 / 2**0.5, rel=1e-5)
    assert s.std == pytest.approx((0.02 / 3) ** 0.5) and (s.min, s.max) == (pytest.approx(0.7), pytest.approx(0.9))
    assert metrics.spread(torch.tensor([0.7])).error_bound is None  # one run: no bound, never NaN
    # one order, three seeds: the bound is over the seeds
    one = metrics.spread(torch.tensor([[0.7, 0.8, 0.9]]))
    assert one.error_bound == pytest.approx(4.3026527 * 0.1 / 3**0.5, rel=1e-5)


def test_variance_parts_by_hand():
    # orders x seeds: [[.70, .72], [.80, .84], [.60, .62]]
    # within-order variances: .0002, .0008, .0002 -> seed var .0004, seed std .02
    # order means .71, .82, .61: variance ((.71-.7133)^2 + (.82-.7133)^2 + (.61-.7133)^2) / 2 = .011033
    # order var = .011033 - .0004 / 2 = .010833; F = S var(means) / seed var = 2 * .011033 / .0004 = 55.17
    final = torch.tensor([[0.70, 0.72], [0.80, 0.84], [0.60, 0.62]], dtype=torch.float64)
    v = metrics.variance_parts(final)
    assert v.seed_std == pytest.approx(0.02)
    assert v.order_means_std == pytest.approx(0.0110333**0.5, rel=1e-4)
    assert v.order_std == pytest.approx(0.0108333**0.5, rel=1e-4)
    assert v.f_statistic == pytest.approx(55.1667, rel=1e-4)
    assert v.p_value == pytest.approx(1 - stats.f.cdf(55.1667, 2, 3), rel=1e-3)
    # one seed per order: nothing separates them
    assert metrics.variance_parts(final[:, :1]).seed_std is None


def test_paired_comparison_by_hand():
    # differences .02, .04, .00, .02: mean .02, s = .0163299, t = .02 / (s / 2) = 2.4495 on 3 df
    a = torch.tensor([0.72, 0.74, 0.70, 0.73])
    b = torch.tensor([0.70, 0.70, 0.70, 0.71])
    c = metrics.paired_comparison(a, b)
    assert c.n == 4 and c.mean_difference == pytest.approx(0.02, abs=1e-6)
    assert c.t_p_value == pytest.approx(2 * stats.t.sf(2.4494897, 3), rel=1e-4)
    half = 3.1824463 * 0.0163299 / 2  # t_{0.975, 3} s / sqrt n
    assert (c.ci_low, c.ci_high) == (pytest.approx(0.02 - half, rel=1e-4), pytest.approx(0.02 + half, rel=1e-4))
    # Wilcoxon on the non-zero differences (.02, .04, .02): all positive, exact two-sided p = 2 / 2^3 = .25
    assert c.wilcoxon_p_value == pytest.approx(0.25)
    same = metrics.paired_comparison(a, a)
    assert same.mean_difference == 0 and same.t_p_value is None


def test_comparisons_pair_the_runs_and_with_several_seeds_the_order_means_by_hand():
    a = [[0.72, 0.74], [0.70, 0.73], [0.71, 0.75]]  # 3 orders x 2 seeds
    b = [[0.70, 0.70], [0.70, 0.71], [0.70, 0.72]]
    runs, means = comparisons({"a": {"final_whole_accuracy_per_run": a}, "b": {"final_whole_accuracy_per_run": b}})
    assert (runs["over"], runs["n"], means["over"], means["n"]) == ("runs", 6, "order means", 3)
    # order means' differences .03, .01, .02: mean .02, s = .01, t = .02 / (.01 / sqrt 3) = 3.4641 on 2 df
    assert means["mean_difference"] == pytest.approx(0.02, abs=1e-9)
    assert means["t_p_value"] == pytest.approx(2 * stats.t.sf(3.4641016, 2), rel=1e-5)
    # the 6 runs' differences .02, .04, .00, .02, .01, .03: mean .02, s = .0141421, t = 3.4641 on 5 df
    assert runs["t_p_value"] == pytest.approx(2 * stats.t.sf(3.4641016, 5), rel=1e-5)
    one_seed = {m: {"final_whole_accuracy_per_run": [[w[0]] for w in x]} for m, x in (("a", a), ("b", b))}
    assert [c["over"] for c in comparisons(one_seed)] == ["runs"]  # the runs are the order means


def test_correlation_p_value_against_every_permutation():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    c = metrics.correlation(x, y)
    observed = stats.spearmanr(x, y).statistic
    rhos = [stats.spearmanr(x, list(p)).statistic for p in itertools.permutations(y)]
    assert c.rho == pytest.approx(observed)
    assert c.p_value == pytest.approx(sum(abs(r) >= abs(observed) - 1e-12 for r in rhos) / len(rhos))
    assert c.ci_low <= c.rho <= c.ci_high and -1 <= c.ci_low and c.ci_high <= 1
    # a perfectly monotone relation: every resample with rho defined has rho = 1
    perfect = metrics.correlation(range(10), [v**2 for v in range(10)])
    assert perfect.ci_low == pytest.approx(1) and perfect.ci_high == pytest.approx(1)
    assert metrics.correlation([1, 2], [3, 4]) is None and metrics.correlation([1, 1, 1], [1, 2, 3]) is None
