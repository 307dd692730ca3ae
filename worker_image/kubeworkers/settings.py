"""Worker settings: one dataclass, each field declared once with its environment variable, flag and help.

A pod sets the environment (the operator's Deployment builder does); tests and humans mostly
use flags. Both come from the same declaration (:func:`setting`): :func:`settings_from` reads
the variables, :func:`add_flags` builds the ``kubeworkers worker`` flags, so every setting has a
flag and a variable by construction. ``tests/unit/test_worker_settings.py`` checks the table in
``docs/handlers.md`` against them.
"""

from __future__ import annotations

import argparse
import os
import socket
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from kubeworkers import redis_url
from kubeworkers.protocol import DEFAULT_DEAD_LETTER_MAXLEN, DEFAULT_RESULT_TTL


def default_worker_name() -> str:
    """``POD_NAME`` in a pod, else ``<hostname>-<pid>`` (several workers may share a host)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Setting:
    """How one field of :class:`WorkerSettings` is set from outside."""

    env: str
    flag: str
    help: str
    #: What the docs and ``--help`` say the default is, when the field's default is not it.
    default_text: str | None = None
    choices: tuple[str, ...] | None = None
    #: ``kubeworkers worker`` refuses to start without it.
    required: bool = False


def setting(
    default: Any = MISSING,
    *,
    env: str,
    flag: str,
    help: str,
    default_factory: Callable[[], Any] | Any = MISSING,
    default_text: str | None = None,
    choices: tuple[str, ...] | None = None,
    required: bool = False,
) -> Any:
    """A :class:`WorkerSettings` field with its variable, flag and help."""
    meta = {"setting": Setting(env, flag, help, default_text, choices, required)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class WorkerSettings:
    """How one worker process connects, what it runs and how it holds its jobs."""

    redis_url: str = setting(
        "redis://localhost:6379/0", env="KUBEWORKERS_REDIS_URL", flag="--redis-url",
        help="the Redis holding the pool's streams",
    )
    namespace: str = setting(
        "default", env="KUBEWORKERS_NAMESPACE", flag="--namespace", help="Kubernetes namespace of the pool",
    )
    pool: str = setting(
        "", env="KUBEWORKERS_POOL", flag="--pool", help="the WorkerPool this worker serves", required=True,
    )
    imports: list[str] = setting(  # noqa: RUF009 - setting() is dataclasses.field() with metadata
        env="KUBEWORKERS_IMPORT", flag="--import", default_factory=list, default_text="",
        help="modules defining handlers (the flag is repeatable; both take comma-separated lists)",
    )
    concurrency: int = setting(10, env="KUBEWORKERS_CONCURRENCY", flag="--concurrency", help="jobs run at once")
    shutdown_grace: float = setting(
        25.0, env="KUBEWORKERS_SHUTDOWN_GRACE", flag="--shutdown-grace",
        help="seconds in-flight jobs may take to finish after SIGTERM",
    )
    metrics_port: int = setting(
        9100, env="KUBEWORKERS_METRICS_PORT", flag="--metrics-port",
        help="port of /metrics, /healthz and /readyz (0: ephemeral, -1: off)",
    )
    # Probes and Prometheus reach the pod IP.
    metrics_host: str = setting(
        "0.0.0.0", env="KUBEWORKERS_METRICS_HOST", flag="--metrics-host", help="address the metrics server binds",
    )
    worker_name: str = setting(
        env="POD_NAME", flag="--name", default_factory=default_worker_name, default_text="hostname-pid",
        help="consumer name in the group and key in the worker registry",
    )
    lease_seconds: float = setting(
        30.0, env="KUBEWORKERS_LEASE_SECONDS", flag="--lease-seconds",
        help="a job held this long without a heartbeat is given to another worker",
    )
    heartbeat_seconds: float = setting(
        0.0, env="KUBEWORKERS_HEARTBEAT_SECONDS", flag="--heartbeat-seconds", default_text="min(5, lease/6)",
        help="how often leases and the registry entry are renewed (0: automatic)",
    )
    cancel_grace: float = setting(
        5.0, env="KUBEWORKERS_CANCEL_GRACE", flag="--cancel-grace",
        help="seconds a cancelled or timed-out handler may take to stop before the worker records the "
             "job without it, frees its slot and says so",
    )
    max_output_bytes: int = setting(
        1024 * 1024, env="KUBEWORKERS_MAX_OUTPUT_BYTES", flag="--max-output-bytes",
        help="largest output stored, as JSON bytes; a larger one is stored as a marker object",
        default_text="1048576 (1 MiB)",
    )
    redis_timeout: float = setting(
        10.0, env="KUBEWORKERS_REDIS_TIMEOUT", flag="--redis-timeout",
        help="seconds a Redis call may take before the worker treats Redis as unreachable and retries",
    )
    block_ms: int = setting(
        1000, env="KUBEWORKERS_BLOCK_MS", flag="--block-ms",
        help="longest a blocking read waits, in milliseconds, before the loop looks around again",
    )
    result_ttl: int = setting(
        DEFAULT_RESULT_TTL, env="KUBEWORKERS_RESULT_TTL", flag="--result-ttl",
        help="seconds a finished job's record is kept", default_text="604800 (7 days)",
    )
    dead_letter_maxlen: int = setting(
        DEFAULT_DEAD_LETTER_MAXLEN, env="KUBEWORKERS_DEAD_LETTER_MAXLEN", flag="--dead-letter-maxlen",
        help="entries the pool's dead-letter stream keeps, about (XADD MAXLEN ~): the oldest go first",
    )
    max_backoff: float = setting(
        300.0, env="KUBEWORKERS_MAX_BACKOFF", flag="--max-backoff", help="cap on one retry delay, seconds",
    )
    promote_seconds: float = setting(
        0.25, env="KUBEWORKERS_PROMOTE_SECONDS", flag="--promote-seconds",
        help="how often due retries are moved back to the streams",
    )
    priority_aging_seconds: float = setting(
        0.0, env="KUBEWORKERS_PRIORITY_AGING_SECONDS", flag="--priority-aging-seconds",
        help="priority aging: a job that has waited this many seconds on its stream is taken as if one "
             "level higher, one more level per further period, so low jobs never starve behind a steady "
             "stream of higher ones (0: strict priority order, lower levels may starve)",
    )
    durable_replicas: int = setting(
        0, env="KUBEWORKERS_DURABLE_REPLICAS", flag="--durable-replicas",
        help="replicas that must acknowledge a take before its jobs start, and a result before it counts as "
             "written (Redis WAIT), so a Redis failover loses neither (0: do not wait)",
    )
    log_level: str = setting("INFO", env="KUBEWORKERS_LOG_LEVEL", flag="--log-level", help="log level")
    log_format: str = setting(
        "json", env="KUBEWORKERS_LOG_FORMAT", flag="--log-format", choices=("json", "text"),
        help="'json' (one object per line) or 'text'",
    )

    def __post_init__(self) -> None:
        if not self.heartbeat_seconds:
            self.heartbeat_seconds = min(5.0, self.lease_seconds / 6)

    def validate(self) -> None:
        """Raise ValueError on settings that cannot work."""
        if not self.pool:
            raise ValueError("a pool is required (--pool or KUBEWORKERS_POOL)")
        redis_url.check_url(self.redis_url)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.heartbeat_seconds <= 0 or self.lease_seconds <= 0:
            raise ValueError("lease and heartbeat intervals must be positive")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat ({self.heartbeat_seconds}s) must be at most half the lease ({self.lease_seconds}s),"
                " or live jobs would be taken away from their worker"
            )
        if self.redis_timeout <= self.block_ms / 1000:
            raise ValueError(
                f"the Redis timeout ({self.redis_timeout}s) must be longer than a blocking read ({self.block_ms} ms)"
            )
        if self.dead_letter_maxlen < 1:
            raise ValueError(f"dead_letter_maxlen must be >= 1, got {self.dead_letter_maxlen}")
        if not self.priority_aging_seconds >= 0 or self.priority_aging_seconds == float("inf"):
            raise ValueError(f"priority_aging_seconds must be seconds >= 0, got {self.priority_aging_seconds}")
        if self.durable_replicas < 0:
            raise ValueError(f"durable_replicas must be >= 0, got {self.durable_replicas}")
        if self.cancel_grace < 0 or self.max_output_bytes < 1024:
            raise ValueError("cancel_grace must be >= 0 and max_output_bytes >= 1024")

    @property
    def reap_seconds(self) -> float:
        """How often a worker tries to become the reaper of expired leases."""
        return max(0.05, min(self.heartbeat_seconds, self.lease_seconds / 10))


def declared() -> dict[str, Setting]:
    """Field name -> its :class:`Setting`, in declaration order."""
    return {f.name: f.metadata["setting"] for f in fields(WorkerSettings)}


#: Field name -> environment variable.
ENV: dict[str, str] = {name: s.env for name, s in declared().items()}

_TYPES: dict[str, Any] = typing.get_type_hints(WorkerSettings)


def _split(raw: str) -> list[str]:
    return [m.strip() for m in raw.split(",") if m.strip()]


def _parse(name: str, raw: str) -> Any:
    kind = _TYPES[name]
    if kind == list[str]:
        return _split(raw)
    if kind in (int, float):
        return kind(raw)
    return raw


def default_text(name: str) -> str:
    """The default of a setting as ``--help`` and the docs state it."""
    s = declared()[name]
    if s.required:
        return "required"
    if s.default_text is not None:
        return s.default_text
    f = WorkerSettings.__dataclass_fields__[name]
    return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add the flags of the settings ``names`` (all by default) to ``parser``; unset flags are None."""
    table = declared()
    for name in names if names is not None else table:
        s = table[name]
        default = default_text(name)
        said = "required" if s.required else f"default {default}" if default else ""
        text = f"{s.help} (env {s.env}{', ' + said if said else ''})"
        kind = _TYPES[name]
        if kind == list[str]:
            parser.add_argument(s.flag, dest=name, action="append", help=text)
        elif kind in (int, float):
            parser.add_argument(s.flag, dest=name, type=kind, help=text)
        else:
            parser.add_argument(s.flag, dest=name, choices=s.choices, help=text)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (those :func:`add_flags` added and the user set)."""
    values: dict[str, Any] = {}
    for name in declared():
        value = getattr(args, name, None)
        if value is not None:
            values[name] = [m for v in value for m in _split(v)] if _TYPES[name] == list[str] else value
    return values


def settings_from(env: Mapping[str, str] | None = None, /, **overrides: Any) -> WorkerSettings:
    """Settings from environment variables, then ``overrides`` (flags; None means not given)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, s in declared().items():
        if env.get(s.env):
            values[name] = _parse(name, env[s.env])
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
    return WorkerSettings(**values)
