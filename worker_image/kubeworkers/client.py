"""The SDK: submit jobs straight to Redis, inspect them, wait for them, cancel them.

``Client`` blocks; ``AsyncClient`` is its asyncio twin. Both write exactly the
:class:`~kubeworkers.protocol.JobMessage` the operator writes for Job custom
resources, through the same idempotent enqueue script.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from kubeworkers import queue
from kubeworkers.protocol import JobMessage, JobRecord, Priority
from kubeworkers.registry import Registry
from kubeworkers.registry import registry as default_registry

Input = BaseModel | dict[str, Any] | None

#: Polling intervals of ``wait``: start fast for short jobs, back off for long ones.
WAIT_FIRST_POLL = 0.005
WAIT_MAX_POLL = 0.25


class InvalidInputError(ValueError):
    """The input does not match the handler's input model (checked when the handler is importable)."""


class JobNotFoundError(LookupError):
    """No record for this job id (never submitted, expired, or deleted)."""


def new_job_id() -> str:
    """A random 128-bit id, as 32 hex digits.

    Not from ``os.urandom`` (a system call per id, which bulk submits feel): ids need to be
    unique, not secret, and the ``random`` module reseeds itself in forked children.
    """
    return f"{random.getrandbits(128):032x}"


class _Builder:
    """Turns submit arguments into validated :class:`JobMessage` objects."""

    def __init__(self, namespace: str, registry: Registry) -> None:
        self.namespace = namespace
        self.registry = registry

    def input(self, handler: str, value: Input) -> dict[str, Any]:
        """The input as JSON-ready data, checked against the handler's model when it is registered here."""
        spec = self.registry.get(handler)
        if isinstance(value, BaseModel):
            if spec is not None and not isinstance(value, spec.input_model):
                self._check(handler, spec.input_model, value.model_dump(mode="json"))
            return value.model_dump(mode="json")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InvalidInputError(f"input must be a pydantic model or a dict, not {type(value).__name__}")
        if spec is not None:
            self._check(handler, spec.input_model, value)
        # Sent as given: the worker validates it again into the same model.
        return value

    @staticmethod
    def _check(handler: str, model: type[BaseModel], data: dict[str, Any]) -> None:
        try:
            model.__pydantic_validator__.validate_python(data)
        except ValidationError as exc:
            raise InvalidInputError(f"input for handler {handler!r} does not match {model.__name__}: {exc}") from exc

    def message(
        self,
        pool: str,
        handler: str,
        value: Input,
        *,
        priority: Priority | str,
        timeout: float | None,
        max_attempts: int | None,
        job_id: str | None,
    ) -> JobMessage:
        job_id = job_id or new_job_id()
        return JobMessage(
            job_id=job_id,
            uid=job_id,
            namespace=self.namespace,
            pool=pool,
            handler=handler,
            input=self.input(handler, value),
            priority=priority,
            timeout_seconds=timeout,
            max_attempts=max_attempts,
        )


class AsyncClient:
    """Submit and inspect jobs from asyncio code. Use ``async with AsyncClient(url) as c: ...``."""

    def __init__(
        self,
        redis_url: str | None = None,
        namespace: str = "default",
        *,
        connection: aioredis.Redis | None = None,
        registry: Registry | None = None,
    ) -> None:
        if connection is None and redis_url is None:
            raise ValueError("give a redis_url or a connection")
        self.redis: aioredis.Redis = connection or aioredis.Redis.from_url(str(redis_url))
        self._owns_connection = connection is None
        self.namespace = namespace
        self._build = _Builder(namespace, registry if registry is not None else default_registry)

    async def submit(
        self,
        pool: str,
        handler: str,
        input: Input = None,
        *,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's time limit, not this call's
        max_attempts: int | None = None,
        job_id: str | None = None,
    ) -> str:
        """Enqueue one job; returns its id. Submitting the same ``job_id`` again enqueues nothing."""
        msg = self._build.message(
            pool, handler, input, priority=priority, timeout=timeout, max_attempts=max_attempts, job_id=job_id
        )
        await queue.enqueue(self.redis, msg)
        return msg.job_id

    async def submit_many(
        self,
        pool: str,
        handler: str,
        inputs: Iterable[Input],
        *,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,  # noqa: ASYNC109 - the jobs' time limit, not this call's
        max_attempts: int | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one handler in pipelined round trips; returns their ids in order."""
        values = list(inputs)
        if job_ids is not None and len(job_ids) != len(values):
            raise ValueError(f"{len(job_ids)} job ids for {len(values)} inputs")
        ids: list[str] = []
        sending: asyncio.Task[list[bool]] | None = None
        try:
            for start in range(0, len(values), queue.ENQUEUE_CHUNK):
                chunk = [
                    self._build.message(
                        pool, handler, v, priority=priority, timeout=timeout, max_attempts=max_attempts,
                        job_id=job_ids[start + i] if job_ids is not None else None,
                    )
                    for i, v in enumerate(values[start : start + queue.ENQUEUE_CHUNK])
                ]
                ids.extend(m.job_id for m in chunk)
                # One chunk in flight while the next is built: Redis and Python work at the
                # same time, and chunks still arrive in order.
                if sending is not None:
                    await sending
                sending = asyncio.create_task(queue.enqueue_many(self.redis, chunk))
            if sending is not None:
                await sending
        finally:
            if sending is not None and not sending.done():
                sending.cancel()
        return ids

    async def _pool(self, job_id: str, pool: str | None) -> str | None:
        return pool or await queue.find_pool(self.redis, self.namespace, job_id)

    async def get(self, job_id: str, *, pool: str | None = None) -> JobRecord | None:
        """The job's record (state, attempts, progress, output, error...), or None."""
        found = await self._pool(job_id, pool)
        if found is None:
            return None
        return await queue.get_record(self.redis, self.namespace, found, job_id)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors Client.wait; also raises TimeoutError
        *,
        pool: str | None = None,
    ) -> JobRecord:
        """Wait until the job has finished and return its record.

        Raises :class:`TimeoutError` after ``timeout`` seconds and
        :class:`JobNotFoundError` when the job does not exist.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = WAIT_FIRST_POLL
        while True:
            record = await self.get(job_id, pool=pool)
            if record is None:
                raise JobNotFoundError(job_id)
            if record.state.finished:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {record.state.value} after {timeout}s")
            await asyncio.sleep(poll)
            poll = min(poll * 2, WAIT_MAX_POLL)

    async def cancel(self, job_id: str, *, pool: str | None = None) -> bool:
        """Cancel a queued or running job; False if it is unknown or already finished."""
        found = await self._pool(job_id, pool)
        return found is not None and await queue.cancel(self.redis, self.namespace, found, job_id)

    async def aclose(self) -> None:
        if self._owns_connection:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Client:
    """Blocking twin of :class:`AsyncClient`: ``Client(url).submit("pool", "handler", {...})``."""

    def __init__(
        self,
        redis_url: str | None = None,
        namespace: str = "default",
        *,
        connection: redis.Redis | None = None,
        registry: Registry | None = None,
    ) -> None:
        if connection is None and redis_url is None:
            raise ValueError("give a redis_url or a connection")
        self.redis: redis.Redis = connection or redis.Redis.from_url(str(redis_url))
        self._owns_connection = connection is None
        self.namespace = namespace
        self._build = _Builder(namespace, registry if registry is not None else default_registry)

    def submit(
        self,
        pool: str,
        handler: str,
        input: Input = None,
        *,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        max_attempts: int | None = None,
        job_id: str | None = None,
    ) -> str:
        """Enqueue one job; returns its id. Submitting the same ``job_id`` again enqueues nothing."""
        msg = self._build.message(
            pool, handler, input, priority=priority, timeout=timeout, max_attempts=max_attempts, job_id=job_id
        )
        queue.enqueue_sync(self.redis, msg)
        return msg.job_id

    def submit_many(
        self,
        pool: str,
        handler: str,
        inputs: Iterable[Input],
        *,
        priority: Priority | str = Priority.NORMAL,
        timeout: float | None = None,
        max_attempts: int | None = None,
        job_ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Enqueue many jobs of one handler in pipelined round trips; returns their ids in order."""
        values = list(inputs)
        if job_ids is not None and len(job_ids) != len(values):
            raise ValueError(f"{len(job_ids)} job ids for {len(values)} inputs")
        msgs = [
            self._build.message(
                pool, handler, v, priority=priority, timeout=timeout, max_attempts=max_attempts,
                job_id=job_ids[i] if job_ids is not None else None,
            )
            for i, v in enumerate(values)
        ]
        queue.enqueue_many_sync(self.redis, msgs)
        return [m.job_id for m in msgs]

    def _pool(self, job_id: str, pool: str | None) -> str | None:
        return pool or queue.find_pool_sync(self.redis, self.namespace, job_id)

    def get(self, job_id: str, *, pool: str | None = None) -> JobRecord | None:
        """The job's record, or None."""
        found = self._pool(job_id, pool)
        return None if found is None else queue.get_record_sync(self.redis, self.namespace, found, job_id)

    def wait(self, job_id: str, timeout: float | None = None, *, pool: str | None = None) -> JobRecord:
        """Block until the job has finished; see :meth:`AsyncClient.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = WAIT_FIRST_POLL
        while True:
            record = self.get(job_id, pool=pool)
            if record is None:
                raise JobNotFoundError(job_id)
            if record.state.finished:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {record.state.value} after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 2, WAIT_MAX_POLL)

    def cancel(self, job_id: str, *, pool: str | None = None) -> bool:
        """Cancel a queued or running job; False if it is unknown or already finished."""
        found = self._pool(job_id, pool)
        return found is not None and queue.cancel_sync(self.redis, self.namespace, found, job_id)

    def close(self) -> None:
        if self._owns_connection:
            self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
