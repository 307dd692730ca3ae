"""The Lua scripts of the Redis protocol, called by SHA and loaded when Redis does not know them.

Scripts live as ``.lua`` files in ``kubeworkers/lua/``. Calls go through ``EVALSHA``; when
Redis answers ``NOSCRIPT`` (first use, or after a restart flushed the script cache) the script
is loaded and the call made again, which is safe because a ``NOSCRIPT`` reply means the script
did not run. Every script is sent with one line before its file: ``local EVENTS_MAXLEN = <n>``
(:data:`~kubeworkers.protocol.EVENTS_MAXLEN`), the cap of every ``XADD`` to the events stream,
so the number has one home. A file whose first line is a Redis 7 shebang (``#!lua flags=...``)
keeps it first: the scripts that only keep held work alive (``renew``, ``reap``) declare
``allow-oom``, so a Redis at ``maxmemory`` still takes the heartbeats that stop live workers'
jobs from being handed out again (it refuses new work, not the upkeep of work already taken).
The calls are plans (:mod:`kubeworkers.redis_ops`), so the blocking and the asyncio callers
share them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from kubeworkers import protocol, redis_ops
from kubeworkers.redis_ops import Command, Pipeline, Plan
from kubeworkers.wire import Arg

#: Shipped as package data next to this module.
LUA_DIR = Path(__file__).resolve().parent / "lua"
#: What every script's source starts with (its constants from :mod:`kubeworkers.protocol`).
PRELUDE = f"local EVENTS_MAXLEN = {protocol.EVENTS_MAXLEN}\n"


class Script:
    """One Lua file: its source and SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        text = (LUA_DIR / f"{name}.lua").read_text()
        shebang, newline, body = text.partition("\n")
        if shebang.startswith("#!"):
            self.source = shebang + newline + PRELUDE + body
        else:
            self.source = PRELUDE + text
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, keys: Sequence[str], argv: Sequence[Arg]) -> Command:
        """The ``EVALSHA`` of this script with ``keys`` and ``argv``."""
        return Command("evalsha", self.sha, len(keys), *keys, *argv)

    def load(self) -> Command:
        return Command("script_load", self.source)


_SCRIPTS: dict[str, Script] = {}


def script(name: str) -> Script:
    """The script named ``name`` (file ``lua/<name>.lua``), read once per process."""
    found = _SCRIPTS.get(name)
    if found is None:
        found = _SCRIPTS[name] = Script(name)
    return found


def call_plan(name: str, keys: Sequence[str], argv: Sequence[Arg], *, idempotent: bool = False) -> Plan[Any]:
    """Run one script. With ``idempotent=True`` it is repeated after a connection error."""
    s = script(name)
    return redis_ops.retried(lambda: s.command(keys, argv), idempotent=idempotent, reload=s.load)


def pipeline_plan(
    calls: Sequence[tuple[str, Sequence[str], Sequence[Arg]]], *, idempotent: bool = False
) -> Plan[list[Any]]:
    """Run many script calls ``(name, keys, argv)`` in one round trip; one reply per call.

    After ``NOSCRIPT`` every ``EVALSHA`` of the batch failed alike, so the scripts are loaded
    and the whole batch sent again. With ``idempotent=True`` it is also sent again after a
    connection error.
    """
    batch = Pipeline([script(name).command(keys, argv) for name, keys, argv in calls])
    loads = Pipeline([script(name).load() for name in {name for name, _, _ in calls}])
    return redis_ops.retried(lambda: batch, idempotent=idempotent, reload=lambda: loads)


async def call(
    r: aioredis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg], *, idempotent: bool = False
) -> Any:
    """:func:`call_plan`, awaited."""
    return await redis_ops.run(r, call_plan(name, keys, argv, idempotent=idempotent))
