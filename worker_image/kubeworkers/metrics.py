"""Prometheus metrics of a worker, and the small HTTP server for /metrics, /healthz and /readyz.

Each :class:`Worker` owns its own ``CollectorRegistry`` so several workers can
live in one process (tests do that) without colliding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from kubeworkers import protocol

log = logging.getLogger("kubeworkers.metrics")


class WorkerMetrics:
    """The metrics a worker exports (names prefixed ``kubeworkers_``)."""

    def __init__(self, pool: str, namespace: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds...: a worker's memory
        # must be visible before it runs out.
        ProcessCollector(registry=self.registry)
        labels = {"namespace": namespace, "pool": pool}
        self.jobs = Counter(
            "kubeworkers_jobs",
            "Attempts that ended, each counted once, by handler and outcome (succeeded, failed, retried, "
            "cancelled, timed_out, handed_back, lost, waiting: waits for its children).",
            ["namespace", "pool", "handler", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kubeworkers_job_duration_seconds",
            "Wall time of one attempt of a handler.",
            ["namespace", "pool", "handler"],
            buckets=protocol.DURATION_BUCKETS_S,
            registry=self.registry,
        )
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

        # labels() costs microseconds; a busy worker calls these for every job.
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def outcome(self, handler: str, outcome: str) -> None:
        child = self._outcomes.get((handler, outcome))
        if child is None:
            child = self._outcomes[handler, outcome] = self.jobs.labels(self.namespace, self.pool, handler, outcome)
        child.inc()

    def observe(self, handler: str, seconds: float) -> None:
        child = self._durations.get(handler)
        if child is None:
            child = self._durations[handler] = self.duration.labels(self.namespace, self.pool, handler)
        child.observe(seconds)

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
