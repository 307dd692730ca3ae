"""A pool's timeline of replicas and backlog as inline SVG (no script, no style attribute: the CSP holds).

Pure geometry: :func:`points` puts samples on a ``width`` x ``height`` box, time left to right
over the samples' span, a value bottom (0) to top (the series' largest, at least 1); :func:`svg`
draws the replicas ready and desired as one step line each and the backlog as another, each on
its own scale (a backlog of 10,000 and 3 replicas on one axis would flatten the replicas).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .backend import Sample


def points(times: Sequence[float], values: Sequence[float], width: float, height: float,
           top: float | None = None) -> list[tuple[float, float]]:
    """``(x, y)`` of each (time, value): x from 0 (first time) to ``width`` (last), y from ``height`` (0)
    to 0 (``top``, by default the largest value, at least 1). One sample is a point at the right edge."""
    if not times:
        return []
    t0, t1 = times[0], times[-1]
    most = max(max(values) if top is None else top, 1)
    spread = t1 - t0
    return [((t - t0) / spread * width if spread > 0 else width, height - v / most * height)
            for t, v in zip(times, values, strict=True)]


def steps(pts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A step line through ``pts``: each value holds until the next sample (replicas change in steps)."""
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(pts):
        if i:
            out.append((x, out[-1][1]))
        out.append((x, y))
    return out


def _polyline(cls: str, pts: Sequence[tuple[float, float]]) -> str:
    return f'<polyline class={cls} points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"></polyline>'


def svg(samples: Sequence[Sample], width: int = 180, height: int = 28) -> str:
    """The timeline: replicas ready (solid), desired (dashed, by its class) and backlog, oldest on the left."""
    if not samples:
        return ""
    times = [s.at for s in samples]
    replicas = max([1, *(s.ready for s in samples), *(s.desired for s in samples)])
    pad = 1.0
    h = height - 2 * pad

    def line(values: list[float], top: float | None) -> list[tuple[float, float]]:
        return [(x, y + pad) for x, y in steps(points(times, values, width, h, top))]

    ready = line([float(s.ready) for s in samples], replicas)
    desired = line([float(s.desired) for s in samples], replicas)
    backlog = line([float(s.backlog) for s in samples], None)
    last = samples[-1]
    minutes = (samples[-1].at - samples[0].at) / 60
    label = (f"over the last {minutes:.0f} min: replicas {min(s.ready for s in samples)} to {replicas}, "
             f"backlog up to {max(s.backlog for s in samples)}; now {last.ready} ready of {last.desired}, "
             f"backlog {last.backlog}")
    text = html.escape(label, quote=True)
    return (f'<svg class=replicas viewBox="0 0 {width} {height}" width="{width}" height="{height}" role=img '
            f'aria-label="{text}"><title>{text}</title>{_polyline("backlog", backlog)}'
            f'{_polyline("desired", desired)}{_polyline("ready", ready)}</svg>')
