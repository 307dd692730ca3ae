"""A private ``redis-server`` for a pytest fixture to yield (one helper, not a copy per file)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


def private_redis(password: str | None = None, **options: object) -> Iterator[RedisServer]:
    """Start a :class:`RedisServer` (``options`` are its arguments; ``password``: ``requirepass``),
    yield it, and remove it afterwards. One that cannot start fails the test in one line, not
    with a traceback: usually a missing redis-server, and the message says how to install it."""
    if password is not None:
        extra = tuple(options.pop("extra_args", ()))  # type: ignore[arg-type]
        options["extra_args"] = ("--requirepass", password, *extra)
    server = RedisServer(**options)  # type: ignore[arg-type]
    try:
        server.start()
    except RuntimeError as exc:
        server.cleanup()
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()
