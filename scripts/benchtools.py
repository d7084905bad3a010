"""Timing helpers shared by the benchmarks: interleaved repeats, median (min-max), per-round ratios, the machine.

On a shared machine the load drifts during a run, so variants are timed in rounds: each round runs every variant
once (in an order that rotates from round to round), and a ratio is taken within each round before the median of
the ratios is reported. A figure is quoted as ``median (min-max)`` over the rounds.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each variant: `warmup` untimed rounds, then `repeats` timed rounds."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            variants[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def spread(values: list[float], unit: str = "s", digits: int = 3) -> str:
    """'0.123 s (0.118-0.140)': median (min-max)."""
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Round-by-round ratios (the rounds of one interleaved run)."""
    return [a / b for a, b in zip(numerator, denominator)]


def ratio_spread(numerator: list[float], denominator: list[float]) -> str:
    """'1.43x (1.31-1.52)': median (min-max) of the per-round ratios."""
    r = ratios(numerator, denominator)
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def machine() -> str:
    """CPU model, core count and load average (or the GPU), for the figures' 'machine' column."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load {load:.1f}"
