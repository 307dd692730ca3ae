"""The Lua scripts of the Redis protocol, loaded once per connection and called by SHA.

Scripts live as ``.lua`` files in ``kubeworkers/lua/``. Calls go through
``EVALSHA``; when Redis answers ``NOSCRIPT`` (first use, or after a restart
flushed the script cache) the scripts are loaded and the call is made again.
That retry is safe because a ``NOSCRIPT`` reply means the script did not run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float

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


async def call(r: aioredis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg]) -> Any:
    """Run one script, loading it first if Redis does not know it."""
    s = script(name)
    try:
        return await r.evalsha(s.sha, len(keys), *s.args(keys, argv))
    except NoScriptError:
        await r.script_load(s.source)
        return await r.evalsha(s.sha, len(keys), *s.args(keys, argv))


def call_sync(r: redis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg]) -> Any:
    s = script(name)
    try:
        return r.evalsha(s.sha, len(keys), *s.args(keys, argv))
    except NoScriptError:
        r.script_load(s.source)
        return r.evalsha(s.sha, len(keys), *s.args(keys, argv))


async def pipelined(r: aioredis.Redis, build: Callable[[Any], None]) -> list[Any]:
    """Run the commands ``build`` queues on a (non-transactional) pipeline, in one round trip.

    Only pipelines whose commands are safe to repeat after a ``NOSCRIPT`` reply
    may use this: after a Redis restart every ``EVALSHA`` in the batch fails
    the same way, so the whole batch is sent again once the scripts are loaded.
    """
    for attempt in (1, 2):
        pipe = r.pipeline(transaction=False)
        build(pipe)
        try:
            result: list[Any] = await pipe.execute()
            return result
        except NoScriptError:
            if attempt == 2:
                raise
            await load_all(r)
    raise AssertionError("unreachable")


def pipelined_sync(r: redis.Redis, build: Callable[[Any], None]) -> list[Any]:
    for attempt in (1, 2):
        pipe = r.pipeline(transaction=False)
        build(pipe)
        try:
            result: list[Any] = pipe.execute()
            return result
        except NoScriptError:
            if attempt == 2:
                raise
            load_all_sync(r)
    raise AssertionError("unreachable")


def evalsha(pipe: Any, name: str, keys: Sequence[str], argv: Sequence[Arg]) -> None:
    """Queue one script call on a pipeline."""
    s = script(name)
    pipe.evalsha(s.sha, len(keys), *s.args(keys, argv))


