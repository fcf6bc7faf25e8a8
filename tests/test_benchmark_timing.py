"""The benchmarks' statistics: the paired ratio's interval is the distribution-free one for the median."""

from __future__ import annotations

import random
import statistics

import pytest

from benchmarks.timing import MIN_ROUNDS, median_interval, paired_ratios, summarize


def test_interval_of_fifteen_is_the_fourth_and_twelfth_values():
    values = [float(v) for v in random.Random(0).sample(range(100), 15)]
    ordered = sorted(values)
    assert median_interval(values) == (ordered[3], ordered[11])  # P(Binomial(15, 1/2) <= 3) = 0.0176 < 0.025


def test_interval_covers_the_true_median_at_least_as_often_as_it_claims():
    rng = random.Random(1)
    trials, covered = 4000, 0
    for _ in range(trials):
        low, high = median_interval([rng.expovariate(1.0) for _ in range(15)])  # skewed; true median ln 2
        covered += low <= 0.6931471805599453 <= high
    assert 0.95 <= covered / trials <= 0.98  # the exact coverage for n = 15 is 0.965


def test_interval_needs_enough_values_and_a_sensible_confidence():
    with pytest.raises(ValueError, match="values: 5 are too few"):
        median_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert median_interval([3.0, 1.0, 2.0, 6.0, 5.0, 4.0]) == (1.0, 6.0)
    median_interval([1.0] * MIN_ROUNDS)  # the benchmarks' --rounds floor is the fewest values the interval accepts
    with pytest.raises(ValueError, match="too few"):
        median_interval([1.0] * (MIN_ROUNDS - 1))
    with pytest.raises(ValueError, match="confidence"):
        median_interval([1.0] * 20, confidence=95)


def test_paired_ratios_pair_round_by_round():
    assert paired_ratios([1.0, 3.0], [2.0, 2.0]) == [0.5, 1.5]
    with pytest.raises(ValueError, match="ours has 2 times but theirs has 1"):
        paired_ratios([1.0, 2.0], [1.0])


def test_summary_of_a_drifting_machine_keeps_the_paired_ratio():
    """A drift that slows both runs of a round alike leaves each round's ratio, and so the interval, at 0.9."""
    drift = [1.0, 1.3, 1.0, 1.3, 1.3, 1.0, 1.3, 1.3, 1.0]
    theirs = [d * 0.4 for d in drift]
    ours = [0.9 * t for t in theirs]
    row = summarize(ours, theirs)
    assert row["paired_ratio"] == pytest.approx(0.9)
    assert row["paired_ratio_low"] == pytest.approx(0.9) and row["paired_ratio_high"] == pytest.approx(0.9)
    assert row["ours_median_s"] == pytest.approx(statistics.median(ours))
