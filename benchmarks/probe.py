"""What every system's no-op handler calls: the measurement, inside the worker process.

Standard library only, so the same file runs in every peer's virtualenv. The handler calls
:meth:`Probe.tick` and nothing else. The probe talks to the benchmark over a UDP socket on
loopback (no Redis, so it adds nothing to what is measured):

- ``drain`` mode: at the first and at the last (``KW_BENCH_JOBS``-th) handler run it sends the
  wall time, this process's CPU seconds and redis-server's CPU seconds (both from
  ``/proc/<pid>/stat``, read at that instant, so start-up is excluded exactly);
- ``latency`` mode: every run sends its wall time (the benchmark subtracts the submit time);
- ``first`` mode: only the first run reports (several worker processes share one drain).

Environment: ``KW_BENCH_MODE``, ``KW_BENCH_PORT``, ``KW_BENCH_JOBS``, ``KW_BENCH_REDIS_PID``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process so far, all its threads (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class Probe:
    """Counts handler runs and reports the ones the benchmark needs."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.mode = env.get("KW_BENCH_MODE", "")
        self.jobs = int(env.get("KW_BENCH_JOBS", "0"))
        self.redis_pid = env.get("KW_BENCH_REDIS_PID", "")
        self.address = ("127.0.0.1", int(env.get("KW_BENCH_PORT", "0")))
        self._count = itertools.count(1)  # next() is atomic under the GIL: thread pools are safe
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def tick(self) -> None:
        """One handler run."""
        if not self.mode:
            return
        if self.mode == "latency":
            self._send({"t": time.time()})
            return
        n = next(self._count)
        if n == 1 or (self.mode == "drain" and n == self.jobs):
            self._send(self.snapshot(n))

    def snapshot(self, n: int) -> dict[str, float | int]:
        return {
            "n": n,
            "pid": os.getpid(),
            "t": time.time(),
            "cpu": cpu_seconds("self"),
            "redis_cpu": cpu_seconds(self.redis_pid) if self.redis_pid else 0.0,
        }

    def _send(self, body: dict[str, float | int]) -> None:
        if self.address[1]:
            self._sock.sendto(json.dumps(body).encode(), self.address)


#: The one probe of this process; handlers call ``PROBE.tick()``.
PROBE = Probe()
