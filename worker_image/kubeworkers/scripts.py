"""The Lua scripts of the Redis protocol, called by SHA and loaded when Redis does not know them.

Scripts live as ``.lua`` files in ``kubeworkers/lua/``. Calls go through ``EVALSHA``; when
Redis answers ``NOSCRIPT`` (first use, after a restart flushed the script cache, or after a
failover: a promoted replica's cache is empty) the call is made again as ``EVAL`` with the
script's source, which runs it and caches it; safe because a ``NOSCRIPT`` reply means the
script did not run. In a pipeline only the calls that answered ``NOSCRIPT`` are sent again.
Every script is sent with a few lines before its file: ``local EVENTS_MAXLEN = <n>``
(:data:`~kubeworkers.protocol.EVENTS_MAXLEN`), the cap of every ``XADD`` to a pool's events stream,
so the number has one home (likewise ``DURATION_BUCKETS`` and ``STATS_TTL_S``, which ``lua/stats.lua``
uses), and ``kw_has_job_object(job_id, uid)``, :func:`~kubeworkers.protocol.is_sdk_job` negated, so
the rule of which jobs have events written on the worker path has one home on each side.
A file whose first line is a Redis 7 shebang (``#!lua flags=...``)
keeps it first: the scripts that only keep held work alive (``renew``, ``reap``) declare
``allow-oom``, so a Redis at ``maxmemory`` still takes the heartbeats that stop live workers'
jobs from being handed out again (it refuses new work, not the upkeep of work already taken).
A line ``--! include <name>`` is replaced by the file ``lua/<name>.lua``: a library of local
functions several scripts share (``children``: fan-out and joins; ``jobindex``: the jobs index and
attempt history), so its rules have one home; a library may include another (each once per script).
The calls are plans (:mod:`kubeworkers.redis_ops`), so the blocking and the asyncio callers
share them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from kubeworkers import protocol, redis_ops
from kubeworkers.redis_ops import Command, Pipeline, Plan
from kubeworkers.wire import Arg

#: Shipped as package data next to this module.
LUA_DIR = Path(__file__).resolve().parent / "lua"
#: What every script's source starts with (its constants from :mod:`kubeworkers.protocol`).
PRELUDE = (
    f"local EVENTS_MAXLEN = {protocol.EVENTS_MAXLEN}\n"
    f"local JOB_INDEX_MAXLEN = {protocol.JOB_INDEX_MAXLEN}\nlocal ATTEMPT_LOG_MAX = {protocol.ATTEMPT_LOG_MAX}\n"
    f"local DURATION_BUCKETS = {{{', '.join(repr(b) for b in protocol.DURATION_BUCKETS_S)}}}\n"
    f"local STATS_TTL_S = {protocol.STATS_TTL_S}\n"
    # protocol.is_sdk_job, negated: only a job a Job object stands behind has its events written
    # by the worker path (take, settle); the operator has nothing to copy an SDK job's events to.
    "local function kw_has_job_object(job_id, uid)\n"
    "  return uid ~= job_id and string.find(job_id, '/', 1, true) ~= nil\n"
    "end\n"
)
#: The line that splices a library file in (see the module docstring).
INCLUDE = "--! include "


def _with_includes(text: str, seen: set[str] | None = None) -> str:
    seen = set() if seen is None else seen
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith(INCLUDE):
            name = line[len(INCLUDE):].strip()
            if name not in seen:
                seen.add(name)
                lines.append(_with_includes((LUA_DIR / f"{name}.lua").read_text(), seen))
        else:
            lines.append(line)
    return "".join(lines)


class Script:
    """One Lua file: its source and SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        text = _with_includes((LUA_DIR / f"{name}.lua").read_text())
        shebang, newline, body = text.partition("\n")
        if shebang.startswith("#!"):
            self.source = shebang + newline + PRELUDE + body
        else:
            self.source = PRELUDE + text
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, keys: Sequence[str], argv: Sequence[Arg]) -> Command:
        """The ``EVALSHA`` of this script with ``keys`` and ``argv``."""
        return Command("evalsha", self.sha, len(keys), *keys, *argv)

    def with_source(self, keys: Sequence[str], argv: Sequence[Arg]) -> Command:
        """The same call as ``EVAL`` with the source, for a Redis that answered ``NOSCRIPT``."""
        return Command("eval", self.source, len(keys), *keys, *argv)


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
    return redis_ops.retried(
        lambda: s.command(keys, argv), idempotent=idempotent, unknown_script=lambda: s.with_source(keys, argv),
    )


def pipeline_plan(
    calls: Sequence[tuple[str, Sequence[str], Sequence[Arg]]],
    *,
    idempotent: bool = False,
    then: Sequence[Command] = (),
    before: Sequence[Command] = (),
) -> Plan[list[Any]]:
    """Run the commands ``before``, many script calls ``(name, keys, argv)``, then the commands
    ``then``, in one round trip; one reply per command and call, in that order.

    The calls that answered ``NOSCRIPT`` did not run (the others of the batch may have: a batch
    can mix known and unknown scripts), so only they are sent again, as ``EVAL``, followed by
    ``then`` again (it is meant for commands about the writes before them on the connection,
    such as ``WAIT``); ``before`` is sent once (it is meant for a blocking read the calls wait
    behind, which has returned by then). With ``idempotent=True`` the whole batch is also sent again after a
    transient error. Any other error reply is raised once the batch has answered. Transient
    errors and ``NOSCRIPT`` have budgets of their own (see :func:`redis_ops.retried`).
    """
    policy = redis_ops.RETRY
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    sending = [script(name).command(keys, argv) for name, keys, argv in calls]
    failures = unknown_rounds = 0
    first: list[Any] = []
    while True:
        try:
            got = yield Pipeline([*before, *(sending[i] for i in todo), *then], errors_as_replies=True)
        except redis_ops.TRANSIENT_ERRORS:
            failures += 1
            if not idempotent or failures > policy.retries:
                raise
            yield redis_ops.Pause(policy.pause(failures))
            continue
        if before:
            first, got, before = list(got[: len(before)]), got[len(before) :], ()
        unknown = [i for i, reply in zip(todo, got, strict=False) if isinstance(reply, NoScriptError)]
        for i, reply in zip(todo, got, strict=False):
            if not isinstance(reply, NoScriptError):
                replies[i] = reply
        tail = list(got[len(todo):])
        if not unknown:
            break
        unknown_rounds += 1
        if unknown_rounds > policy.retries:
            raise next(r for r in got if isinstance(r, NoScriptError))
        for i in unknown:
            name, keys, argv = calls[i]
            sending[i] = script(name).with_source(keys, argv)
        todo = unknown
    errors = [r for r in (*first, *replies, *tail) if isinstance(r, Exception)]
    if errors:
        raise errors[0]
    return [*first, *replies, *tail]


async def call(
    r: aioredis.Redis, name: str, keys: Sequence[str], argv: Sequence[Arg], *, idempotent: bool = False
) -> Any:
    """:func:`call_plan`, awaited."""
    return await redis_ops.run(r, call_plan(name, keys, argv, idempotent=idempotent))
