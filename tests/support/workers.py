"""Workers for the worker-runtime tests: in-process (:func:`start_worker`) and real processes
(:class:`WorkerProcess`, ``python -m kubeworkers worker``), plus readers of what they wrote."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis
from kubeworkers import protocol, queue, scripts
from kubeworkers.client import AsyncClient, Client
from kubeworkers.protocol import JobEvent, JobMessage, JobRecord, JobState, PoolKeys
from kubeworkers.registry import Registry
from kubeworkers.settings import WorkerSettings
from kubeworkers.worker import Worker

from hack import processes
from hack.polling import WaitTimeout, wait_for, wait_for_async

REPO = Path(__file__).resolve().parents[2]

#: Short leases so that crash tests finish quickly (the production default is 30 s).
LEASE = 2.0
HEARTBEAT = 0.25


def fast_settings(redis_url: str, pool: str = "p", **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url, "pool": pool, "metrics_port": -1, "lease_seconds": LEASE,
        "heartbeat_seconds": HEARTBEAT, "block_ms": 200, "promote_seconds": 0.05, "shutdown_grace": 5.0,
        "concurrency": 4,
    }
    values.update(overrides)
    return WorkerSettings(**values)


@asynccontextmanager
async def start_worker(
    redis_url: str, registry: Registry, pool: str = "p", **overrides: Any
) -> AsyncIterator[Worker]:
    """An in-process worker, ready when entered, stopped gracefully on exit."""
    worker = Worker(fast_settings(redis_url, pool, **overrides), registry)
    task = asyncio.create_task(worker.run())
    await until(lambda: worker.ready() or task.done(), 20, "the worker to become ready")
    if task.done():
        task.result()
    try:
        yield worker
    finally:
        worker.stop()
        done, _ = await asyncio.wait([task], timeout=60)
        if not done:
            stacks = "\n".join(f"{t.get_name()}: {awaiting(t)}" for t in asyncio.all_tasks())
            raise AssertionError(f"the worker did not stop within 60 s; tasks:\n{stacks}")
        task.result()


def awaiting(task: asyncio.Task[Any]) -> str:
    """Where a task waits: its whole chain of awaited coroutines, innermost last, and what the
    innermost awaits (``Task.get_stack`` shows only the outermost coroutine's frame)."""
    where = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        where.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if nxt is None or not (hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame")):
            where.append(f"awaits {nxt!r}"[:300])
            break
        coro = nxt
    return " -> ".join(where)


#: The tests' one polling helper for coroutines, under the name the worker tests know it by.
until = wait_for_async


C = TypeVar("C", AsyncClient, Client)


def as_job_objects(client: C) -> C:
    """``client``, submitting its jobs as the operator enqueues a Job object's: each generated id
    becomes ``<namespace>/<id>`` and the uid a fresh one, so the worker path writes their events
    (``take.lua`` and ``settle.lua`` write none for an SDK job: docs/protocol.md, *Events*). For the
    tests that read those events. A job id passed explicitly with a ``/`` in it (``<ns>/<name>``) gets
    the uid ``uid:<id>``, the same on every submit, as a Job object's is; one without stays an SDK
    job's."""
    build = client._jobs._build
    plain = build.message

    def message(pool: str, handler: str, value: Any, job_id: str | None, options: Any) -> JobMessage:
        return as_job_object(plain(pool, handler, value, job_id, options), job_id)

    build.message = message  # type: ignore[method-assign]
    return client


def as_job_object(msg: JobMessage, job_id: str | None) -> JobMessage:
    """An SDK client's message (``job_id``: the id it was given, None for a generated one) as
    :func:`as_job_objects` turns it."""
    if job_id is None:
        return msg.model_copy(update={"job_id": f"{msg.namespace}/{msg.job_id}", "uid": uuid.uuid4().hex})
    if "/" in job_id:
        return msg.model_copy(update={"uid": f"uid:{job_id}"})
    return msg


async def submit_cr(r: aioredis.Redis, job_id: str, handler: str, input: dict[str, Any] | None = None,
                    *, pool: str = "p", namespace: str = "default") -> str:
    """Enqueue the message the operator enqueues for the Job object ``<namespace>/<job_id>`` (a uid
    of its own); returns its job id."""
    msg = JobMessage(job_id=f"{namespace}/{job_id}", uid=uuid.uuid4().hex, namespace=namespace, pool=pool,
                     handler=handler, input=input or {})
    assert await queue.enqueue(r, msg)
    return msg.job_id


#: The events streams of every pool (``PoolKeys.events``), for a ``SCAN``.
EVENTS_STREAMS_PATTERN = "kw:{*}:events"


def _oldest_first(entries: list[Any]) -> list[JobEvent]:
    def at(entry: Any) -> tuple[int, int]:
        ms, _, seq = (entry[0].decode() if isinstance(entry[0], bytes) else entry[0]).partition("-")
        return int(ms), int(seq)
    return [JobEvent.from_fields(f) for _, f in sorted(entries, key=at)]


async def events(r: aioredis.Redis, job_id: str | None = None) -> list[JobEvent]:
    """Every event on the events streams of every pool on ``r`` (of one job, if given), oldest first."""
    entries: list[Any] = []
    async for stream in r.scan_iter(match=EVENTS_STREAMS_PATTERN, _type="stream"):
        entries += await r.xrange(stream)
    out = _oldest_first(entries)
    return [e for e in out if job_id is None or e.job_id == job_id]


def events_sync(r: redis.Redis) -> list[JobEvent]:
    entries: list[Any] = []
    for stream in r.scan_iter(match=EVENTS_STREAMS_PATTERN, _type="stream"):
        entries += r.xrange(stream)  # type: ignore[operator]
    return _oldest_first(entries)


async def record(r: aioredis.Redis, job_id: str, pool: str = "p", namespace: str = "default") -> JobRecord:
    raw = await r.hgetall(PoolKeys(namespace, pool).record(job_id))
    assert raw, f"no record for {job_id}"
    return JobRecord.from_hash(raw)


async def wait_state(
    r: aioredis.Redis, job_id: str, states: set[JobState], within: float = 30, pool: str = "p"
) -> JobRecord:
    found: list[JobRecord] = []

    async def check() -> bool:
        raw = await r.hgetall(PoolKeys("default", pool).record(job_id))
        if raw:
            found[:] = [JobRecord.from_hash(raw)]
        return bool(found) and found[0].state in states

    await until(check, within, f"{job_id} to reach {sorted(s.value for s in states)}")
    return found[0]


class WorkerProcess:
    """``python -m kubeworkers worker`` as a child process, logging to a file."""

    def __init__(
        self,
        redis_url: str,
        name: str,
        *,
        pool: str = "p",
        imports: str = "kubeworkers.examples",
        concurrency: int = 4,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        use_flags: bool = True,
    ) -> None:
        self.name = name
        self.log_path = Path(tempfile.mkdtemp(prefix="kw-worker-")) / f"{name}.log"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
        base_env["PYTHONPATH"] = str(REPO)
        args = [sys.executable, "-m", "kubeworkers", "worker"]
        if use_flags:
            args += [
                "--redis-url", redis_url, "--pool", pool, "--import", imports, "--concurrency", str(concurrency),
                "--name", name, "--metrics-port", "0", "--lease-seconds", str(LEASE),
                "--heartbeat-seconds", str(HEARTBEAT), "--shutdown-grace", "10",
            ]
        args += extra_args or []
        self._log = self.log_path.open("wb")
        self.proc = processes.spawn(
            args, env={**base_env, **(env or {})}, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_started(self, timeout: float = 30) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()}")
            return "worker started" in self.log()

        try:
            wait_for(started, timeout, f"worker {self.name} to start", every=0.05)
        except WaitTimeout as exc:
            raise AssertionError(f"{exc}:\n{self.log()}") from None

    def metrics_port(self) -> int:
        match = re.search(r"metrics listening on port (\d+)", self.log())
        assert match, self.log()
        return int(match.group(1))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def cap_job_index(monkeypatch: pytest.MonkeyPatch, most: int) -> None:
    """The scripts rebuilt with ``JOB_INDEX_MAXLEN = most`` (instead of a million), for tests of the
    jobs index bound; undone with ``monkeypatch``."""
    old = f"JOB_INDEX_MAXLEN = {protocol.JOB_INDEX_MAXLEN}"
    assert old in scripts.PRELUDE
    monkeypatch.setattr(scripts, "PRELUDE", scripts.PRELUDE.replace(old, f"JOB_INDEX_MAXLEN = {most}"))
    monkeypatch.setattr(scripts, "_SCRIPTS", {})
