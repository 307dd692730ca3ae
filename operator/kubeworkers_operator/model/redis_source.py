"""Where a WorkerPool's Redis comes from, and reading its URL out of a Secret: pure, no I/O.

A pool that names a Secret (``spec.redis``) has its queue on the Redis that Secret's key holds; a
pool that names none is on the operator's own Redis (``--redis-url``), as its workers are when the
default Secret holds the same URL (the chart writes both from one value). Every message here names
the Secret and the key, never the URL: a URL may carry a password, and these messages end up in a
Job's status, in Events and in logs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeworkers import redis_url
from kubeworkers.resources import WorkerPoolSpec

#: The reason of a Job's ``Enqueued=False`` condition (and of the Warning Events) while its pool's
#: Redis cannot be reached or its Secret cannot be read.
REDIS_UNAVAILABLE = "RedisUnavailable"


@dataclass(frozen=True)
class RedisSource:
    """The Secret key a pool's Redis URL is read from (in the pool's namespace)."""

    namespace: str
    secret: str
    key: str

    def describe(self) -> str:
        """For messages: ``Secret ns/name (key url)``; never the value."""
        return f"Secret {self.namespace}/{self.secret} (key {self.key!r})"


#: What :func:`describe` says of a pool on the operator's own Redis.
OPERATOR_REDIS = "the operator's own Redis (--redis-url)"


def source_of(namespace: str, spec: WorkerPoolSpec | None) -> RedisSource | None:
    """The Secret key of the pool's Redis; None: the operator's own Redis (``spec.redis`` unset)."""
    if spec is None or spec.redis is None:
        return None
    return RedisSource(namespace, spec.redis.secret_name, spec.redis.key)


def describe(source: RedisSource | None) -> str:
    return OPERATOR_REDIS if source is None else source.describe()


class SecretProblem(ValueError):
    """A Secret that does not yield a usable Redis URL; the message names the Secret, not the value."""


def url_from_secret(source: RedisSource, body: Mapping[str, Any] | None) -> str:
    """The Redis URL in ``body`` (a Secret as the apiserver returns it: ``data`` base64-encoded).

    Raises :class:`SecretProblem` for a missing Secret or key, a value that is not base64 text,
    or one that is not a Redis URL kubeworkers accepts (:func:`kubeworkers.redis_url.check_url`).
    """
    where = source.describe()
    if body is None:
        raise SecretProblem(f"{where} does not exist")
    data = body.get("data") or {}
    raw = data.get(source.key)
    if raw is None:
        string_data = body.get("stringData") or {}  # never returned by a GET, but harmless to honour
        if source.key in string_data:
            url = str(string_data[source.key]).strip()
        else:
            raise SecretProblem(f"{where} has no key {source.key!r}")
    else:
        try:
            url = base64.b64decode(str(raw), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretProblem(f"{where} does not hold text") from None
    try:
        redis_url.check_url(url)
    except redis_url.RedisUrlError:
        # Its message shows the URL redacted; still more than a status or an Event should carry.
        raise SecretProblem(f"{where} does not hold a Redis URL kubeworkers accepts "
                            "(redis://, rediss://, unix:// or redis+sentinel://)") from None
    return url
