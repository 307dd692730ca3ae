"""The Lua scripts of the Redis protocol, loaded once per connection and called by SHA.

Scripts live as ``.lua`` files in ``kubeworkers/lua/``. Calls go through
``EVALSHA``; when Redis answers ``NOSCRIPT`` (first use, or after a restart
flushed the script cache) the scripts are loaded and the call is made again.
That retry is safe because a ``NOSCRIPT`` reply means the script did not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from kubeworkers.wire import Arg

#: Shipped as package data next to this module.
LUA_DIR = Path(__file__).resolve().parent / "lua"


class Script:
    """One Lua file: its source and SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (LUA_DIR / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def args(self, keys: Sequence[str], argv: Sequence[Arg]) -> list[Arg]:
        """``EVALSHA`` arguments after the SHA and key count: keys, then arguments."""
        return [*keys, *argv]


_SCRIPTS: dict[str, Script] = {}


def script(name: str) -> Script:
    """The script named ``name`` (file ``lua/<name>.lua``), read once per process."""
    found = _SCRIPTS.get(name)
    if found is None:
        found = _SCRIPTS[name] = Script(name)
    return found


async def load_all(r: aioredis.Redis) -> None:
    """Load every script that has been used so far into Redis's script cache."""
    for s in list(_SCRIPTS.values()):
        await r.script_load(s.source)


def load_all_sync(r: redis.Redis) -> None:
    for s in list(_SCRIPTS.values()):
        r.script_load(s.source)


async def call(
    r: aioredis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg], *, idempotent: bool = False
) -> Any:
    """Run one script, loading it first if Redis does not know it.

    With ``idempotent=True`` the call is repeated after a connection error.
    """
    s = script(name)
    failures = 0
    while True:
        try:
            return await r.evalsha(s.sha, len(keys), *s.args(keys, argv))
        except NoScriptError:
            failures += 1
            if failures > RETRIES:
                raise
            await r.script_load(s.source)
        except (redis.ConnectionError, redis.TimeoutError):
            failures += 1
            if not idempotent or failures > RETRIES:
                raise
            await asyncio.sleep(0.1 * failures)


def call_sync(
    r: redis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg], *, idempotent: bool = False
) -> Any:
    s = script(name)
    failures = 0
    while True:
        try:
            return r.evalsha(s.sha, len(keys), *s.args(keys, argv))
        except NoScriptError:
            failures += 1
            if failures > RETRIES:
                raise
            r.script_load(s.source)
        except (redis.ConnectionError, redis.TimeoutError):
            failures += 1
            if not idempotent or failures > RETRIES:
                raise
            time.sleep(0.1 * failures)


#: Connection errors an idempotent call survives (a Redis restart leaves pooled sockets dead).
RETRIES = 3


async def pipelined(r: aioredis.Redis, build: Callable[[Any], None], *, idempotent: bool = False) -> list[Any]:
    """Run the commands ``build`` queues on a (non-transactional) pipeline, in one round trip.

    Only pipelines whose commands are safe to repeat after a ``NOSCRIPT`` reply
    may use this: after a Redis restart every ``EVALSHA`` in the batch fails
    the same way, so the whole batch is sent again once the scripts are loaded.
    With ``idempotent=True`` the batch is also sent again after a connection error.
    """
    failures = 0
    while True:
        pipe = r.pipeline(transaction=False)
        build(pipe)
        try:
            result: list[Any] = await pipe.execute()
            return result
        except NoScriptError:
            failures += 1
            if failures > RETRIES:
                raise
            await load_all(r)
        except (redis.ConnectionError, redis.TimeoutError):
            failures += 1
            if not idempotent or failures > RETRIES:
                raise
            await asyncio.sleep(0.1 * failures)


def pipelined_sync(r: redis.Redis, build: Callable[[Any], None], *, idempotent: bool = False) -> list[Any]:
    failures = 0
    while True:
        pipe = r.pipeline(transaction=False)
        build(pipe)
        try:
            result: list[Any] = pipe.execute()
            return result
        except NoScriptError:
            failures += 1
            if failures > RETRIES:
                raise
            load_all_sync(r)
        except (redis.ConnectionError, redis.TimeoutError):
            failures += 1
            if not idempotent or failures > RETRIES:
                raise
            time.sleep(0.1 * failures)


def evalsha(pipe: Any, name: str, keys: Sequence[str], argv: Sequence[Arg]) -> None:
    """Queue one script call on a pipeline."""
    s = script(name)
    pipe.evalsha(s.sha, len(keys), *s.args(keys, argv))


