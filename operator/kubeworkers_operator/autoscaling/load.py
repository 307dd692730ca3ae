"""From raw Redis observations to a :class:`~.decision.Load`: pure functions and small estimators.

:mod:`.signals` fills the snapshot dataclasses below from Redis; everything that
interprets them (NULL lag, missing streams or groups, pending entries of dead
consumers, stale heartbeats, counter resets) lives here so it is tested
without Redis.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubeworkers.protocol import WorkerHeartbeat

from kubeworkers_operator.autoscaling.decision import Load

#: Fields of ``PoolKeys.stats`` that workers (``lua/finish.lua``) ``HINCRBY`` by one per handler run
#: that ended in success or failure; both kinds add their duration to :data:`STATS_DURATION_SUM`.
STATS_RUN_COUNTERS = ("completed", "failed")
#: Field of ``PoolKeys.stats`` that workers ``HINCRBYFLOAT`` by each run's duration in seconds.
STATS_DURATION_SUM = "duration_seconds_total"
#: A heartbeat older than this (seconds) marks its worker dead: its pending entries count as backlog.
DEFAULT_HEARTBEAT_TIMEOUT = 20.0


@dataclass(frozen=True)
class GroupSnapshot:
    """``XINFO GROUPS`` of the ``workers`` group on one stream, plus per-consumer pending counts."""

    lag: int | None
    """Redis's own count of undelivered entries; NULL (None) after XDEL/XTRIM or odd ids."""
    entries_read: int | None
    last_delivered_id: str
    pending: int
    pending_by_consumer: Mapping[str, int] = field(default_factory=dict)
    undelivered_counted: int | None = None
    """Entries after ``last_delivered_id``, counted by XRANGE when ``lag`` is NULL (capped)."""


@dataclass(frozen=True)
class StreamSnapshot:
    """One priority stream as seen by ``XINFO STREAM`` (``exists=False``: no such key)."""

    name: str
    exists: bool
    length: int = 0
    entries_added: int = 0
    last_generated_id: str = "0-0"
    group: GroupSnapshot | None = None


@dataclass(frozen=True)
class PoolSnapshot:
    """Everything read from Redis for one pool in one round trip."""

    at: float
    """Wall-clock (unix) seconds of the read, to judge heartbeat ages."""
    streams: tuple[StreamSnapshot, ...]
    heartbeats: tuple[WorkerHeartbeat, ...] = ()
    completed: int = 0
    """Handler runs finished (succeeded or failed), all time."""
    duration_sum: float = 0.0
    """Their summed durations in seconds."""
    retries_due: int = 0
    """Delayed-set entries (retries, delayed jobs) due now or within the cold-start lead."""
    retries_waiting: int = 0
    """Delayed-set entries due after the lead but within the keep-warm horizon (see :mod:`.signals`)."""

    @property
    def entries_added(self) -> int:
        """Jobs ever added to the pool's streams (the arrival counter)."""
        return sum(s.entries_added for s in self.streams)


def undelivered(stream: StreamSnapshot) -> int:
    """Entries of ``stream`` no worker has been handed yet."""
    if not stream.exists:
        return 0
    g = stream.group
    if g is None:
        # No worker has ever read this stream: every entry is waiting.
        return stream.length
    if g.lag is not None:
        return g.lag
    if g.undelivered_counted is not None:
        return g.undelivered_counted
    # No count was made: the largest the truth can be, so a NULL lag errs towards more pods.
    if g.entries_read is not None:
        return min(stream.length, max(0, stream.entries_added - g.entries_read))
    return stream.length


def live_heartbeats(snapshot: PoolSnapshot, timeout: float) -> dict[str, WorkerHeartbeat]:
    """Workers whose heartbeat is younger than ``timeout`` seconds, by name."""
    return {hb.worker: hb for hb in snapshot.heartbeats if snapshot.at - hb.at <= timeout}


def held_by_consumer(snapshot: PoolSnapshot) -> dict[str, int]:
    """Jobs each consumer (worker pod) holds: its pending entries over all priority streams.

    This, not a heartbeat's ``in_flight``, says which workers are busy: ``take.lua`` makes the
    entries pending in the call that hands the jobs out and the settle acks them, while a
    heartbeat is up to one beat old (a worker that took a job since reads as idle).
    """
    held: dict[str, int] = {}
    for stream in snapshot.streams:
        if stream.exists and stream.group is not None:
            for consumer, count in stream.group.pending_by_consumer.items():
                if count > 0:
                    held[consumer] = held.get(consumer, 0) + count
    return held


def measure_load(
    snapshot: PoolSnapshot,
    *,
    arrival_rate: float = 0.0,
    duration_estimate: float | None = None,
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
) -> Load:
    """The pool's :class:`Load`: backlog and in-flight over all priority streams.

    Heartbeats say which workers live; what each holds comes from the pending list
    (:func:`held_by_consumer`). A dead consumer's entries count as backlog.
    """
    live = live_heartbeats(snapshot, heartbeat_timeout)
    waiting = 0
    unattributed = 0
    for stream in snapshot.streams:
        waiting += undelivered(stream)
        if stream.exists and stream.group is not None:
            g = stream.group
            # Pending entries not attributed to any consumer (e.g. the consumer list was not read).
            unattributed += max(0, g.pending - sum(g.pending_by_consumer.values()))
    held = held_by_consumer(snapshot)
    held_by_live = sum(count for consumer, count in held.items() if consumer in live)
    # A dead consumer's entries wait for the reaper to hand them out again.
    orphaned = sum(count for consumer, count in held.items() if consumer not in live) + unattributed
    return Load(
        backlog=waiting + orphaned + snapshot.retries_due,
        in_flight=held_by_live,
        arrival_rate=arrival_rate,
        duration_estimate=duration_estimate,
        busy_workers=sum(1 for consumer in held if consumer in live),
        live_workers=len(live),
        retries_waiting=snapshot.retries_waiting,
    )


class ArrivalRate:
    """Jobs per second from a monotonically growing counter (``entries-added``), over a window.

    The rate is the count added within the window divided by the window length (or the span
    observed, if longer): a burst of 500 in 0.1 s reads as 500/window, not 5000/s — the
    backlog term already covers a burst, this term is for keeping up with a steady flow.
    """

    def __init__(self, window_seconds: float = 10.0) -> None:
        self.window = window_seconds
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now: float, total: int) -> float:
        """Record the counter at ``now`` (monotonic seconds) and return the current rate."""
        if self._samples and total < self._samples[-1][1]:
            # The counter went back (stream deleted and recreated): start over.
            self._samples.clear()
        self._samples.append((now, total))
        # Keep one sample older than the window as the baseline.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        return self.rate

    @property
    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = self._samples[0], self._samples[-1]
        if v1 == v0:
            return 0.0
        return (v1 - v0) / max(t1 - t0, self.window)


class DurationEstimate:
    """Mean handler duration from the workers' run counters and ``duration_seconds_total``.

    Recent runs (within the window) win; with no recent run the last estimate stands (handlers
    do not get faster by being idle); before any window has data, the all-time mean is used.
    """

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self._samples: deque[tuple[float, int, float]] = deque()
        self._last: float | None = None

    def observe(self, now: float, completed: int, duration_sum: float) -> float | None:
        """Record the counters at ``now`` (monotonic seconds) and return the estimate."""
        if self._samples and completed < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, completed, duration_sum))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        (_, c0, s0), (_, c1, s1) = self._samples[0], self._samples[-1]
        if c1 > c0:
            self._last = max(0.0, (s1 - s0) / (c1 - c0))
        elif self._last is None and completed > 0:
            self._last = max(0.0, duration_sum / completed)
        return self._last
