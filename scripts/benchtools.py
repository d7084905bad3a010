"""Timing helpers shared by the benchmarks: interleaved repeats, median (min-max), per-round ratios, the machine.

On a shared machine the load drifts during a run, so variants are timed in rounds: each round runs every variant
once (in an order that rotates from round to round), and a ratio is taken within each round before the median of
the ratios is reported. A figure is quoted as ``median (min-max)`` over the rounds.

A benchmark records the machine (CPU model, cores, load average) when it starts and when it ends, and writes its
raw per-round runs as JSON (:class:`Record`), so that a quoted figure can be traced to the runs behind it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Run:
    """One timed call of one variant: wall-clock and process-CPU seconds, and what the call returned."""

    wall_s: float
    cpu_s: float
    value: Any = None


def rounds(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, progress: bool = True
) -> dict[str, list[Run]]:
    """Every call of every variant: `warmup` untimed rounds, then `repeats` timed rounds in rotating order.

    With `progress`, one line per round on stderr (wall seconds of each variant), so a long run shows where it is.
    """
    names = list(variants)
    runs: dict[str, list[Run]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        took = {}
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            value = variants[name]()
            run = Run(time.perf_counter() - wall, time.process_time() - cpu, value)
            took[name] = run.wall_s
            if r >= warmup:
                runs[name].append(run)
        if progress:
            kind = "warm-up" if r < warmup else "timed"
            cells = ", ".join(f"{n} {t:.3g} s" for n, t in took.items())
            print(f"round {r + 1}/{warmup + repeats} ({kind}): {cells}", file=sys.stderr, flush=True)
    return runs


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each variant: `warmup` untimed rounds, then `repeats` timed rounds."""
    return {name: [run.wall_s for run in runs] for name, runs in rounds(variants, repeats, warmup).items()}


def spread(values: list[float], unit: str = "s", digits: int = 3) -> str:
    """'0.123 s (0.118-0.140)': median (min-max)."""
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Round-by-round ratios (the rounds of one interleaved run)."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def ratio_spread(numerator: list[float], denominator: list[float]) -> str:
    """'1.43x (1.31-1.52)': median (min-max) of the per-round ratios."""
    r = ratios(numerator, denominator)
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def summary(values: list[float]) -> dict[str, float]:
    """{'median', 'min', 'max'} of a list of per-round values (the JSON form of :func:`spread`)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB.

    Linux's VmHWM belongs to the process's own address space, which exec replaces, so a child started by a large
    parent (a benchmark holding its timed models) measures only itself; ``ru_maxrss`` keeps the parent's peak
    across fork + exec and would hide every child peak below it. Falls back to ``ru_maxrss`` elsewhere.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and version, the GPU if any, and the load average (1, 5, 15 min) now."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else [float("nan")] * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_avg": [round(x, 2) for x in load],
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def machine() -> str:
    """CPU model, core count and load average (or the GPU), for the figures' 'machine' column."""
    info = machine_info()
    if info["gpu"]:
        return info["gpu"]
    threads, load = info["torch_threads"], info["load_avg"][0]
    return f"{info['cpu']}, {info['cores']} cores, {threads} torch threads, load {load:.1f}"


@dataclass
class Record:
    """A benchmark run's machine at start and end, its arguments, raw per-round runs and summary, as JSON.

    >>> record = Record("bench_x", vars(args))   # the machine and load now
    >>> ...                                        # timed rounds
    >>> record.finish(raw={...}, summary={...})   # the machine and load at the end
    >>> print(record.machine_lines()); record.write(path)
    """

    script: str
    args: dict[str, Any]
    start: dict[str, Any] = field(default_factory=machine_info)
    end: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def finish(self, raw: dict[str, Any], summary: dict[str, Any]) -> None:
        self.end = machine_info()
        self.raw, self.summary = raw, summary

    def machine_lines(self) -> str:
        """'machine: <cpu>, N cores, torch T threads, torch V' and the load average at start and end."""
        s = self.start
        where = s["gpu"] or f"{s['cpu']}, {s['cores']} cores, {s['torch_threads']} torch threads"
        line = f"machine: {where}, torch {s['torch']}\nload average (1/5/15 min): start {_load(s)}"
        if self.end is not None:
            line += f", end {_load(self.end)} ({s['time_utc']} -> {self.end['time_utc']})"
        return line

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "script": self.script,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.args.items()},
            "machine_start": self.start,
            "machine_end": self.end,
            "summary": self.summary,
            "raw": self.raw,
        }
        path.write_text(json.dumps(payload, indent=1) + "\n")
        return path


def default_out(script: str, tag: str = "") -> Path:
    """scripts/results/<script>[_<tag>]_<cpu|cuda>.json: where a run's raw JSON goes unless --out says otherwise."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return RESULTS / f"{script}{'_' + tag if tag else ''}_{device}.json"


def _load(info: dict[str, Any]) -> str:
    return "/".join(f"{x:.1f}" for x in info["load_avg"])
