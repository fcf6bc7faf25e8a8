"""Timing and the statistics the CPU benchmarks share.

This machine's speed drifts by 10 to 30% over tens of seconds, so the benchmarks run what they compare in
alternating rounds and compare each round's runs with each other ("paired"), then give the median of those
paired ratios with a distribution-free confidence interval, instead of trusting one median against another.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")

MIN_ROUNDS = 6  # the fewest values median_interval accepts at 95% (P(Binomial(6, 1/2) = 0) = 1/64 <= 0.025)


def sync(device: torch.device | None) -> None:
    """Wait for the GPU's queued work (a CUDA call returns before its kernels finish); nothing elsewhere."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], T], device: torch.device | None = None) -> tuple[T, float]:
    """What one call returns, and its wall-clock seconds (on CUDA, from idle to finished: synchronised both ends).

    The one timer every benchmark uses.
    """
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def seconds(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Wall-clock seconds of one call."""
    return timed_call(fn, device)[1]


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """The median of `repeats` timed calls."""
    return statistics.median(seconds(fn, device) for _ in range(repeats))


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """A confidence interval for the median that assumes nothing about the distribution.

    Sorted, the k-th smallest and k-th largest values bound the median with probability
    1 - 2 P(Binomial(n, 1/2) < k); k is the largest that keeps this at least `confidence`.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    n = len(values)
    tail = 0.0  # P(Binomial(n, 1/2) < k)
    k = 0
    while True:
        next_tail = tail + math.comb(n, k) / 2**n
        if 1 - 2 * next_tail < confidence:
            break
        tail, k = next_tail, k + 1
    if k == 0:
        raise ValueError(f"values: {n} are too few for a {confidence:.0%} interval of the median; give more rounds")
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def paired_ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """Each round's ratio ours / theirs (the two ran back to back, so a slow spell slows both)."""
    if len(ours) != len(theirs):
        raise ValueError(f"ours has {len(ours)} times but theirs has {len(theirs)}: pair them round by round")
    return [a / b for a, b in zip(ours, theirs)]


def summarize(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float]:
    """Medians, their ratio, and the median paired ratio with its 95% interval."""
    ratios = paired_ratios(ours, theirs)
    low, high = median_interval(ratios)
    a, b = statistics.median(ours), statistics.median(theirs)
    return {
        "ours_median_s": a,
        "theirs_median_s": b,
        "ratio_of_medians": a / b,
        "paired_ratio": statistics.median(ratios),
        "paired_ratio_low": low,
        "paired_ratio_high": high,
    }
