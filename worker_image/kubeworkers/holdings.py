"""What one worker holds: the deliveries it took and has not settled, and those whose handler runs.

The consumer adds to it, the attempt runner moves deliveries through it, the heartbeat renews
what it holds and the shutdown hands back what is left. One object, so each of them reads the
same truth.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from kubeworkers import wire
from kubeworkers.attempts import Delivery


class Holdings:
    """The deliveries of one worker, by stream entry id and by job record key."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        #: Delivered to us, not yet acknowledged (its lease is ours to renew).
        self.held: dict[str, Delivery] = {}
        #: Handler started, not yet ended.
        self.running: dict[str, Delivery] = {}
        self._by_record: dict[str, Delivery] = {}
        #: Running handlers, by handler name (per-handler concurrency limits count these).
        self.running_by_handler: Counter[str] = Counter()
        #: Pending for us, found by a recovery read (a take's reply was lost), not yet decided by
        #: ``take.lua`` (more than the free slots came): decided first by the next take.
        self.undecided: dict[str, wire.Given] = {}
        #: Set whenever a running job ends (the consumer waits on it when every slot is busy).
        self.slot_free = asyncio.Event()
        self.last_job: str | None = None

    @property
    def free(self) -> int:
        """Slots without a running handler."""
        return self.concurrency - len(self.running)

    def free_by_handler(self, limits: dict[str, int]) -> dict[str, int]:
        """Free slots of each handler with a concurrency limit (``limits``: handler -> its limit)."""
        return {name: max(0, limit - self.running_by_handler[name]) for name, limit in limits.items()}

    def hold(self, job: Delivery) -> None:
        self.held[job.entry] = job

    def release(self, entry: str) -> None:
        """The delivery's last write was applied: its lease is no longer ours."""
        self.held.pop(entry, None)

    def start(self, job: Delivery) -> None:
        if job.entry not in self.running:
            self.running_by_handler[job.handler] += 1
        self.running[job.entry] = job
        self._by_record[job.record] = job
        self.last_job = job.job_id

    def end(self, job: Delivery) -> None:
        if self.running.pop(job.entry, None) is not None:
            self.running_by_handler[job.handler] -= 1
        self._by_record.pop(job.record, None)
        self.slot_free.set()

    def running_job(self, record: str) -> Delivery | None:
        """The running delivery of the job whose record key is ``record``."""
        return self._by_record.get(record)

    def held_by_stream(self, streams: list[str]) -> dict[str, list[str]]:
        """Entry ids whose lease is ours (held or undecided), per stream."""
        held: dict[str, list[str]] = {}
        for entry, job in list(self.held.items()):
            held.setdefault(job.stream, []).append(entry)
        for entry, given in list(self.undecided.items()):
            held.setdefault(streams[given.stream - 1], []).append(entry)
        return held

    def knows(self, entry: str) -> bool:
        return entry in self.held or entry in self.undecided
