"""Metrics against matrices worked out by hand (numbers in the comments)."""

import math

import pytest
import torch

from cml import metrics

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
    assert metrics.spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
