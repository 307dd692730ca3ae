"""The replicas-and-backlog timeline of each pool the operator-served console shows (pure).

The operator samples each pool's WorkerPool status (replicas ready and desired, backlog) every
:data:`SAMPLE_SECONDS` into a ring of :data:`CAPACITY` samples per pool (an hour), held in memory
only: a restarted operator starts an empty timeline. A sample equal to the one before it still
counts (the time axis is real time), and a pool not seen for a whole ring is forgotten.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

SAMPLE_SECONDS = 15.0
CAPACITY = 240  # an hour of samples


@dataclass(frozen=True)
class Point:
    at: float
    ready: int
    desired: int
    backlog: int


@dataclass
class Ring:
    """The last ``capacity`` points, oldest first."""

    capacity: int = CAPACITY
    _points: deque[Point] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError("a ring holds at least one point")
        self._points = deque(self._points, maxlen=self.capacity)

    def add(self, point: Point) -> None:
        if self._points and point.at < self._points[-1].at:
            return  # a clock step back: keep the line moving forward
        self._points.append(point)

    def points(self) -> list[Point]:
        return list(self._points)

    def __len__(self) -> int:
        return len(self._points)


@dataclass
class Timelines:
    """One :class:`Ring` per pool (namespace, name)."""

    capacity: int = CAPACITY
    period: float = SAMPLE_SECONDS
    rings: dict[tuple[str, str], Ring] = field(default_factory=dict)

    def add(self, pool: tuple[str, str], point: Point) -> None:
        self.rings.setdefault(pool, Ring(self.capacity)).add(point)

    def points(self, pool: tuple[str, str]) -> list[Point]:
        ring = self.rings.get(pool)
        return [] if ring is None else ring.points()

    def forget_older_than(self, cutoff: float) -> None:
        """Drop the rings whose newest point is older than ``cutoff`` (a deleted pool)."""
        for key in [k for k, r in self.rings.items() if not r.points() or r.points()[-1].at < cutoff]:
            del self.rings[key]
