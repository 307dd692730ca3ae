"""The dead-letter stream of a pool: jobs that failed for good, with the reason. List and replay.

A replay is a rerun (:mod:`kubeworkers.reruns`) of each entry's job, expecting the uid and run the
entry was written with: an entry of a job since deleted and re-created, or already rerun, is
refused and left in place, never allowed to overwrite the newer record.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple

import redis
from pydantic import BaseModel

from kubeworkers import reruns
from kubeworkers.protocol import JobError, JobMessage, PoolKeys


class DeadLetter(BaseModel):
    """One entry of ``PoolKeys.dead_letter``."""

    id: str
    job_id: str
    handler: str
    reason: str
    attempts: int
    at: float
    worker: str | None = None
    error: JobError | None = None
    message: JobMessage


class Unreadable(BaseModel):
    """An entry of the dead-letter stream that cannot be read (written by hand, or by something else)."""

    id: str
    unreadable: Literal[True] = True
    problem: str
    fields: dict[str, str]


class Replayed(NamedTuple):
    """What :func:`replay` did: the job ids it queued again, the entries it could not read, the
    reruns refused (their entries left in place), and the reruns made (their new run numbers)."""

    job_ids: list[str]
    unreadable: list[Unreadable]
    refused: list[reruns.RerunRefusedError]
    reruns: list[reruns.Rerun]


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _parse(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter | Unreadable:
    f = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return _dead_letter(entry_id, f)
    except (ValueError, KeyError) as exc:
        return Unreadable(id=_text(entry_id), problem=f"{type(exc).__name__}: {str(exc)[:300]}", fields=f)


def _dead_letter(entry_id: Any, f: dict[str, str]) -> DeadLetter:
    msg = JobMessage.model_validate_json(f["m"])
    return DeadLetter(
        id=_text(entry_id),
        job_id=msg.job_id,
        handler=msg.handler,
        reason=f.get("reason", ""),
        attempts=int(f.get("attempts") or 0),
        at=float(f.get("at") or 0),
        worker=f.get("worker") or None,
        error=JobError.model_validate(json.loads(f["error"])) if f.get("error") else None,
        message=msg,
    )


def list_dead(r: redis.Redis, keys: PoolKeys, count: int = 100) -> list[DeadLetter | Unreadable]:
    """The oldest ``count`` dead-lettered jobs of a pool (entries that cannot be read, as :class:`Unreadable`)."""
    entries: Any = r.xrange(keys.dead_letter, count=count)
    return [_parse(i, f) for i, f in entries]


def replay(
    r: redis.Redis, keys: PoolKeys, ids: list[str] | None = None, *, by: str = "kubeworkers dlq replay"
) -> Replayed:
    """Rerun dead-lettered jobs (all of them when ``ids`` is None): each queued again as its next run.

    Each rerun is atomic (``lua/rerun.lua``): the job is queued and its dead-letter entry removed
    together, or nothing is written. An entry that cannot be read, or whose rerun is refused, is
    left where it is and reported; the others are replayed.
    """
    if ids is None:
        entries: Any = r.xrange(keys.dead_letter)
    else:
        entries = []
        for entry_id in ids:
            entries.extend(r.xrange(keys.dead_letter, entry_id, entry_id))
    replayed: list[str] = []
    unreadable: list[Unreadable] = []
    refused: list[reruns.RerunRefusedError] = []
    made: list[reruns.Rerun] = []
    for entry_id, fields in entries:
        dead = _parse(entry_id, fields)
        if isinstance(dead, Unreadable):
            unreadable.append(dead)
            continue
        try:
            made.append(reruns.rerun_dead_letter(r, keys, dead.id, dead.message, by=by))
        except reruns.RerunRefusedError as exc:
            refused.append(exc)
            continue
        replayed.append(dead.message.job_id)
    return Replayed(replayed, unreadable, refused, made)
