"""The report's statistics: Spearman's rank correlation and the paired bootstrap over seeds and prompts."""

import random

import pytest

from tvaccine.report import paired_bootstrap, rank_correlation


def test_rank_correlation_reads_order_not_scale_and_shares_ranks_between_ties():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert rank_correlation(xs, [10.0, 200.0, 3000.0, 4e4, 5e5]) == pytest.approx(1.0)
    assert rank_correlation(xs, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # By hand: ranks of y = [1, 2.5, 2.5, 4, 5]; Pearson of x-ranks and y-ranks = 9.5 / sqrt(10 * 9.5).
    assert rank_correlation(xs, [1.0, 2.0, 2.0, 3.0, 4.0]) == pytest.approx(9.5 / (10 * 9.5) ** 0.5)
    assert rank_correlation(xs, [7.0] * 5) is None  # a constant side has no order


def test_paired_bootstrap_is_exact_for_constant_differences_and_covers_a_known_mean():
    assert paired_bootstrap([[-12.5] * 64, [-12.5] * 64, [-12.5] * 64]) == (-12.5, -12.5)
    rng = random.Random(1)
    # Three seeds of 64 prompts whose differences are -100, 0 or +100 points, a quarter each way: mean 0.
    seeds = [[rng.choice((-100.0, 0.0, 0.0, 100.0)) for _ in range(64)] for _ in range(3)]
    low, high = paired_bootstrap(seeds)
    mean = sum(map(sum, seeds)) / 192
    assert low < mean < high and 10 < high - low < 40  # the width of ~1.96 * 2 * 71 / sqrt(192) = 20 points
    assert paired_bootstrap(seeds) == (low, high)  # seeded
