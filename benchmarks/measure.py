"""The arithmetic of the benchmarks, pure: percentiles, medians, per-job figures, ratios, tables.

Everything a suite prints goes through here, so a unit test (tests/unit/test_benchmarks_measure.py)
keeps it from rotting while the suites themselves only run by hand or in CI's quick pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) with linear interpolation between the closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are there (None when none are)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Snapshot:
    """What the handler-side probe reports at one handler run (``benchmarks.probe``)."""

    n: int
    t: float
    cpu: float
    redis_cpu: float

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Snapshot:
        return cls(int(body["n"]), float(body["t"]), float(body["cpu"]), float(body["redis_cpu"]))


def drain_figures(jobs: int, spawned_at: float, first: Snapshot, last: Snapshot) -> dict[str, float]:
    """Rates and CPU per job of one drain of ``jobs`` pre-submitted jobs.

    From the first handler run to the last the worker ran ``last.n - first.n`` jobs; the
    CPU of that window (worker process and redis-server) is divided by the same count,
    so start-up is excluded. The rate "with start-up" counts from the worker's spawn.
    """
    ran = max(1, last.n - first.n)
    window = max(1e-9, last.t - first.t)
    return {
        "drain_per_s": ran / window,
        "drain_with_startup_per_s": jobs / max(1e-9, last.t - spawned_at),
        "startup_s": first.t - spawned_at,
        "worker_cpu_us_per_job": (last.cpu - first.cpu) / ran * 1e6,
        "redis_cpu_us_per_job": (last.redis_cpu - first.redis_cpu) / ran * 1e6,
        "worker_core_share": (last.cpu - first.cpu) / window,
        "redis_core_share": (last.redis_cpu - first.redis_cpu) / window,
    }


def median_figures(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each figure over repeated runs (each figure on its own)."""
    keys = {k for run in runs for k, v in run.items() if isinstance(v, int | float)}
    out: dict[str, float] = {}
    for key in sorted(keys):
        value = median(run.get(key) for run in runs)
        if value is not None:
            out[key] = value
    return out


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either is missing or theirs is zero."""
    if ours is None or not theirs:
        return None
    return ours / theirs


def verdict(value: float | None, limit: float, *, at_least: bool) -> str:
    """Whether a figure meets its target, and by how much it misses: ``met`` or ``missed (...)``."""
    if value is None:
        return "not measured"
    if at_least:
        return "met" if value >= limit else f"missed ({value / limit:.0%} of the target)"
    return "met" if value <= limit else f"missed ({value / limit:.1f}x the limit)"


def commandstats_delta(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]], jobs: int
) -> dict[str, dict[str, float]]:
    """Per command, calls and Redis µs per job between two ``INFO commandstats`` readings.

    Commands run inside Lua scripts count on their own and in the script's time, so the
    ``evalsha`` line holds the scripts' whole time and the others say what the scripts called.
    """
    out: dict[str, dict[str, float]] = {}
    for name, stats in after.items():
        prev = before.get(name, {})
        calls = float(stats.get("calls", 0)) - float(prev.get("calls", 0))
        usec = float(stats.get("usec", 0)) - float(prev.get("usec", 0))
        if calls > 0:
            out[name.removeprefix("cmdstat_")] = {
                "calls_per_job": calls / jobs, "usec_per_job": usec / jobs, "usec_per_call": usec / calls,
            }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec_per_job"]))


def commandstats_counts(info: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``INFO commandstats`` as redis-py parses it (``cmdstat_<name>`` -> its fields) cut down to
    ``calls`` and ``usec`` per line, the two :func:`commandstats_delta` subtracts."""
    return {name: {"calls": float(fields.get("calls", 0)), "usec": float(fields.get("usec", 0))}
            for name, fields in info.items() if name.startswith("cmdstat_")}


#: Commands the benchmark itself sends to read Redis (not the system's work).
MEASURING_COMMANDS = ("info",)


def redis_per_job(
    jobs: int, cpu_before: float, cpu_after: float,
    stats_before: Mapping[str, Mapping[str, float]], stats_after: Mapping[str, Mapping[str, float]],
    *, ignore: Sequence[str] = MEASURING_COMMANDS,
) -> dict[str, Any]:
    """Redis' side of a window in which ``jobs`` jobs went through: redis-server's CPU (user +
    system seconds from ``/proc``, before and after) in µs per job, and from two ``INFO
    commandstats`` readings the commands per job, in all and by command (busiest by calls first;
    the benchmark's own ``ignore``d). Commands a Lua script issues count on their own lines too,
    so the total counts what Redis executed, the ``evalsha`` line what clients sent as scripts.
    """
    n = max(1, jobs)
    delta = {name: figures for name, figures in commandstats_delta(stats_before, stats_after, n).items()
             if name not in ignore}
    by_calls = dict(sorted(delta.items(), key=lambda kv: (-kv[1]["calls_per_job"], kv[0])))
    return {
        "redis_cpu_us_per_job": (cpu_after - cpu_before) / n * 1e6,
        "redis_commands_per_job": sum(f["calls_per_job"] for f in by_calls.values()),
        "redis_commands_by_command": {name: {"calls_per_job": round(f["calls_per_job"], 3),
                                             "usec_per_job": round(f["usec_per_job"], 2)}
                                      for name, f in by_calls.items()},
    }


def fmt(value: float | None, digits: int = 0) -> str:
    """A figure for a table: thousands separated, ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A GitHub markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default: first l, rest r)."""
    align = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The same table for a terminal: columns padded, first left-aligned, the rest right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                               strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
