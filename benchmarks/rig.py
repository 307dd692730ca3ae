"""Running one system against the private redis-server: submit, start a worker, hear the probe, stop.

The benchmark process owns the Redis server (``tests.support.redis_server.RedisServer``, the
one the tests use), a UDP socket the handlers' probes report to, and the worker processes
it starts; every peer command runs with that peer's interpreter and ``PYTHONPATH`` = the repo.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from benchmarks import venvs
from benchmarks.measure import Snapshot, commandstats_delta, drain_figures
from benchmarks.systems import System

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.redis_server import RedisServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    """One private redis-server (AOF off, no RDB snapshots: Redis' defaults minus the fork) and the probe socket."""

    def __init__(self) -> None:
        self.server = RedisServer(aof=False)
        self.redis: redis.Redis | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.logs = RESULTS / "logs"

    def __enter__(self) -> Rig:
        self.server.start()
        self.redis = redis.Redis.from_url(self.server.url)
        self.logs.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.redis is not None:
            self.redis.close()
        self.sock.close()
        self.server.cleanup()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def redis_pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    def r(self) -> redis.Redis:
        assert self.redis is not None
        return self.redis

    def flush(self) -> None:
        self.r().flushall()
        self.r().script_flush()

    def env(self, system: System, mode: str, jobs: int = 0, port: int | None = None) -> dict[str, str]:
        pythonpath = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
        return {
            **os.environ, **system.extra_env, "PYTHONPATH": pythonpath, "KW_BENCH_URL": self.url,
            "KW_BENCH_MODE": mode, "KW_BENCH_JOBS": str(jobs), "KW_BENCH_PORT": str(port or self.port),
            "KW_BENCH_REDIS_PID": str(self.redis_pid), "PYTHONDONTWRITEBYTECODE": "1",
        }

    def ensure(self, system: System) -> None:
        if system.env is not None:
            venvs.ensure(system.env)

    # ------------------------------------------------------------------ driver commands

    def driver(self, system: System, *args: str, timeout: float = 900) -> dict[str, Any]:
        out = subprocess.run(
            [str(system.python), "-m", system.driver, *args, "--url", self.url],
            env=self.env(system, ""), capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{system.key} driver {args[0]} failed:\n{out.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    def submit(self, system: System, jobs: int) -> float:
        """Seconds the system's bulk submit of ``jobs`` no-op jobs took (timed inside the driver)."""
        return float(self.driver(system, "submit", "--jobs", str(jobs))["seconds"])

    # ------------------------------------------------------------------ workers

    def start_worker(self, system: System, mode: str, jobs: int = 0, *, port: int | None = None,
                     name: str = "w1", argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{system.key}-{name}.log").open("wb")
        return subprocess.Popen(
            argv or system.worker_argv(self.url), env=self.env(system, mode, jobs, port), cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
        """SIGTERM to the worker's process group (some systems fork children), SIGKILL after ``grace``."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def receive(self, timeout: float) -> dict[str, Any]:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65536)
        body: dict[str, Any] = json.loads(data)
        return body

    def drain_socket(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recvfrom(65536)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def commandstats(self) -> dict[str, dict[str, float]]:
        info: dict[str, Any] = self.r().info("commandstats")
        return {k: {"calls": float(v["calls"]), "usec": float(v["usec"])} for k, v in info.items()}

    # ------------------------------------------------------------------ one drain

    def drain(self, system: System, jobs: int, timeout: float = 600, *, argv: list[str] | None = None,
              stop_grace: float = 10) -> dict[str, Any]:
        """Submit ``jobs`` no-op jobs, then start one worker process and time how it drains them
        (``argv``: another command line for the worker, e.g. under valgrind, which also needs a
        longer ``stop_grace`` to write its output)."""
        self.ensure(system)
        self.flush()
        self.drain_socket()
        submit_s = self.submit(system, jobs)
        stats0 = self.commandstats()
        spawned = time.time()
        proc = self.start_worker(system, "drain", jobs, argv=argv)
        try:
            first = Snapshot.of(self.receive(timeout))
            stats1 = self.commandstats()
            last = Snapshot.of(self.receive(timeout))
            stats2 = self.commandstats()
        except TimeoutError as exc:
            raise RuntimeError(f"{system.key}: the drain of {jobs} jobs did not finish in {timeout} s "
                               f"(worker log: {self.logs / (system.key + '-w1.log')})") from exc
        finally:
            self.stop(proc, stop_grace)
        figures: dict[str, Any] = drain_figures(jobs, spawned, first, last)
        figures["submit_per_s"] = jobs / submit_s
        figures["commands"] = commandstats_delta(stats1, stats2, max(1, last.n - first.n))
        figures["startup_commands"] = commandstats_delta(stats0, stats1, 1)
        return figures

    # ------------------------------------------------------------------ latency

    def latency(self, system: System, samples: int, budget_s: float) -> list[float]:
        """submit -> handler start on an idle worker, ms, one job at a time (driver and worker share a port)."""
        self.ensure(system)
        self.flush()
        port = free_udp_port()
        proc = self.start_worker(system, "latency", port=port, name="latency")
        try:
            out = self.driver(system, "latency", "--jobs", str(samples), "--port", str(port),
                              "--budget", str(budget_s), timeout=budget_s + 120)
        finally:
            self.stop(proc)
        return [float(x) for x in out["ms"]]


@contextmanager
def rig() -> Iterator[Rig]:
    with Rig() as r:
        yield r
