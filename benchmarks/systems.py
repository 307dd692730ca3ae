"""The systems compared, as the benchmark starts them: driver module, virtualenv, worker command.

Every worker logs at WARNING (Celery's and Python's default; kubeworkers' default INFO writes
two JSON lines per job, measured as a row of its own), and runs one worker process.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.venvs import PEERS, PeerEnv

#: The project's own interpreter (kubeworkers and the bare loop run in it).
PROJECT_PYTHON = Path(sys.executable)

WorkerArgv = Callable[[Path, str], list[str]]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    driver: str
    worker: WorkerArgv
    env: PeerEnv | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    #: The reference the others are measured against (the bare loop): not a queue.
    ceiling: bool = False

    @property
    def python(self) -> Path:
        return PROJECT_PYTHON if self.env is None else self.env.python

    @property
    def version(self) -> str:
        return "this tree" if self.env is None else self.env.version

    def worker_argv(self, url: str) -> list[str]:
        return self.worker(self.python, url)


def _bin(python: Path, name: str) -> str:
    return str(python.parent / name)


def kubeworkers(concurrency: int, log_level: str = "WARNING") -> System:
    def argv(python: Path, url: str) -> list[str]:
        return [str(python), "-m", "kubeworkers", "worker", "--redis-url", url, "--namespace", "default",
                "--pool", "bench", "--import", "benchmarks.peers.kubeworkers_peer", "--concurrency",
                str(concurrency), "--metrics-port", "-1"]

    suffix = "" if log_level == "WARNING" else f", {log_level} logs"
    return System(f"kubeworkers-c{concurrency}" + ("" if log_level == "WARNING" else f"-{log_level.lower()}"),
                  f"kubeworkers, concurrency {concurrency}{suffix}", "benchmarks.peers.kubeworkers_peer", argv,
                  extra_env={"KUBEWORKERS_LOG_LEVEL": log_level})


def _celery(pool: str, concurrency: int) -> WorkerArgv:
    def argv(python: Path, url: str) -> list[str]:
        return [str(python), "-m", "celery", "-A", "benchmarks.peers.celery_peer", "worker", "--pool", pool,
                "--concurrency", str(concurrency), "--loglevel", "WARNING", "--without-gossip",
                "--without-mingle", "--without-heartbeat"]

    return argv


def _rq(python: Path, url: str) -> list[str]:
    return [_bin(python, "rq"), "worker", "--url", url, "--worker-class", "rq.worker.SimpleWorker",
            "--logging_level", "WARNING", "default"]


def _arq(python: Path, url: str) -> list[str]:
    return [str(python), "-m", "benchmarks.peers.arq_peer", "worker", "--url", url]


def _dramatiq(python: Path, url: str) -> list[str]:
    return [_bin(python, "dramatiq"), "benchmarks.peers.dramatiq_peer", "--processes", "1", "--threads", "8"]


def _taskiq(python: Path, url: str) -> list[str]:
    return [_bin(python, "taskiq"), "worker", "benchmarks.peers.taskiq_peer:broker", "--workers", "1",
            "--log-level", "WARNING"]


def _bare(python: Path, url: str) -> list[str]:
    return [str(python), "-m", "benchmarks.peers.bare_peer", "worker", "--url", url]


BARE = System("bare", "bare consumer-group loop (redis-py)", "benchmarks.peers.bare_peer", _bare, ceiling=True)
CELERY_SOLO = System("celery-solo", "Celery, solo pool", "benchmarks.peers.celery_peer", _celery("solo", 1),
                     PEERS["celery"])

#: In the order the throughput and latency suites run them (interleaved, repeated).
ALL: list[System] = [
    kubeworkers(50),
    kubeworkers(200),
    CELERY_SOLO,
    System("celery-threads", "Celery, threads pool (50)", "benchmarks.peers.celery_peer", _celery("threads", 50),
           PEERS["celery"]),
    System("rq", "RQ, SimpleWorker", "benchmarks.peers.rq_peer", _rq, PEERS["rq"]),
    System("arq", "arq, max_jobs 200", "benchmarks.peers.arq_peer", _arq, PEERS["arq"]),
    System("dramatiq", "Dramatiq, Redis broker (8 threads)", "benchmarks.peers.dramatiq_peer", _dramatiq,
           PEERS["dramatiq"]),
    System("taskiq", "taskiq, RedisStreamBroker", "benchmarks.peers.taskiq_peer", _taskiq, PEERS["taskiq"]),
    BARE,
]

BY_KEY = {s.key: s for s in ALL}


def only(keys: list[str]) -> None:
    """Keep only the systems named by ``keys`` in :data:`ALL` (``--systems``); KeyError for an unknown one.
    The throughput suite's extra INFO-logs row is named ``kubeworkers-c200-info``."""
    known = {*BY_KEY, kubeworkers(200, "INFO").key}
    for key in keys:
        if key not in known:
            raise KeyError(key)
    ALL[:] = [s for s in ALL if s.key in keys]
    global ONLY
    ONLY = frozenset(keys)


#: The systems ``--systems`` named (None: all of them).
ONLY: frozenset[str] | None = None
