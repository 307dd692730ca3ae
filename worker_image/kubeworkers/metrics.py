"""Prometheus metrics of a worker, and the small HTTP server for /metrics, /healthz and /readyz.

Each :class:`Worker` owns its own ``CollectorRegistry`` so several workers can
live in one process (tests do that) without colliding.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from kubeworkers import protocol

log = logging.getLogger("kubeworkers.metrics")

#: A bucket bound as prometheus_client writes its ``le`` label (untyped there).
_le_text: Callable[[float], str] = floatToGoString

#: The labels of ``kubeworkers_job_duration_seconds``.
_DURATION_LABELS = ("namespace", "pool", "handler")


class _JobCounts(Collector):
    """``kubeworkers_jobs_total`` (by handler and outcome) and ``kubeworkers_job_duration_seconds``
    (by handler), counted in plain numbers on the event loop and turned into samples at scrape time.

    Every job ends with one count and one duration; through ``prometheus_client``'s ``Counter`` and
    ``Histogram`` those are three locked increments and the checks around them, per job. Only the
    event loop counts (sync handlers' threads never do) and the probe server scrapes on the loop
    too, so nothing here needs a lock. The samples are the ones the two client classes export,
    ``_created`` included.
    """

    def __init__(self, namespace: str, pool: str) -> None:
        self.namespace = namespace
        self.pool = pool
        #: (handler, outcome) -> [count, created].
        self.counts: dict[tuple[str, str], list[float]] = {}
        #: handler -> (count per bucket (not cumulative; the last one +Inf), [sum, created]).
        self.durations: dict[str, tuple[list[int], list[float]]] = {}
        self._bounds = protocol.DURATION_BUCKETS_S
        self._les = [_le_text(b) for b in self._bounds] + ["+Inf"]

    def outcome(self, handler: str, outcome: str) -> None:
        count = self.counts.get((handler, outcome))
        if count is None:
            count = self.counts[handler, outcome] = [0.0, time.time()]
        count[0] += 1

    def observe(self, handler: str, seconds: float) -> None:
        tally = self.durations.get(handler)
        if tally is None:
            tally = self.durations[handler] = ([0] * len(self._les), [0.0, time.time()])
        # The first bucket whose bound is >= seconds (a bound is inclusive: le), +Inf past the last.
        tally[0][bisect.bisect_left(self._bounds, seconds)] += 1
        tally[1][0] += seconds

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        jobs, durations = self._families()
        base = (self.namespace, self.pool)
        for (handler, outcome), (count, created) in list(self.counts.items()):
            jobs.add_metric((*base, handler, outcome), count, created=created)
        for handler, (buckets, (total, created)) in list(self.durations.items()):
            labels = (*base, handler)
            cumulative, running = [], 0
            for le, n in zip(self._les, buckets, strict=True):
                running += n
                cumulative.append((le, float(running)))
            durations.add_metric(labels, cumulative, total)
            durations.samples.append(Sample(
                durations.name + "_created", dict(zip(_DURATION_LABELS, labels, strict=True)),
                created, None,
            ))
        yield jobs
        yield durations

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (
            CounterMetricFamily(
                "kubeworkers_jobs",
                "Attempts that ended, each counted once, by handler and outcome (succeeded, failed, retried, "
                "cancelled, timed_out, handed_back, lost, waiting: waits for its children).",
                labels=["namespace", "pool", "handler", "outcome"],
            ),
            HistogramMetricFamily(
                "kubeworkers_job_duration_seconds", "Wall time of one attempt of a handler.",
                labels=_DURATION_LABELS,
            ),
        )


class WorkerMetrics:
    """The metrics a worker exports (names prefixed ``kubeworkers_``)."""

    def __init__(self, pool: str, namespace: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds...: a worker's memory
        # must be visible before it runs out.
        ProcessCollector(registry=self.registry)
        labels = {"namespace": namespace, "pool": pool}
        #: ``kubeworkers_jobs_total`` and ``kubeworkers_job_duration_seconds``: see :class:`_JobCounts`.
        self.jobs = _JobCounts(namespace, pool)
        self.registry.register(self.jobs)
        self.in_flight = Gauge(
            "kubeworkers_jobs_in_flight", "Jobs this worker is running.", ["namespace", "pool"],
            registry=self.registry,
        ).labels(**labels)
        self.retries = Counter(
            "kubeworkers_retries", "Attempts that failed and were scheduled again.",
            ["namespace", "pool", "handler"], registry=self.registry,
        )
        self.dead_lettered = Counter(
            "kubeworkers_dead_lettered", "Jobs moved to the dead-letter stream.",
            ["namespace", "pool", "handler"], registry=self.registry,
        )
        self.namespace = namespace
        self.pool = pool
        # A busy worker calls these two for every job.
        self.outcome = self.jobs.outcome
        self.observe = self.jobs.observe

    def retried(self, handler: str) -> None:
        self.retries.labels(self.namespace, self.pool, handler).inc()

    def dead_letter(self, handler: str) -> None:
        self.dead_lettered.labels(self.namespace, self.pool, handler).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ProbeServer:
    """A minimal HTTP/1.1 server on asyncio: ``GET /metrics``, ``/healthz``, ``/readyz``.

    prometheus-client's own server only knows /metrics and runs in a thread; the
    probes need the worker's state, which lives on the event loop.
    """

    def __init__(
        self,
        metrics: WorkerMetrics,
        healthy: Callable[[], bool],
        ready: Callable[[], bool],
        host: str,
        port: int,
        *,
        details: Callable[[], list[str]] = list,
    ) -> None:
        self.metrics = metrics
        self.details = details
        self.healthy = healthy
        self.ready = ready
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else "/"
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self.metrics.render()
            elif path == "/healthz":
                ok = self.healthy()
                lines = ["ok" if ok else "unhealthy", *self.details()]
                status, ctype = ("200 OK" if ok else "503 Service Unavailable"), "text/plain"
                body = ("\n".join(lines) + "\n").encode()
            elif path == "/readyz":
                ok = self.ready()
                status, ctype, body = ("200 OK" if ok else "503 Service Unavailable"), "text/plain", (
                    b"ready\n" if ok else b"not ready\n"
                )
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
