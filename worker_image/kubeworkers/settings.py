"""Worker settings: one dataclass, filled from command-line flags over environment variables.

A pod sets the environment (the operator's Deployment builder does); tests and
humans mostly use flags. Every field documents its variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kubeworkers.protocol import DEFAULT_RESULT_TTL


def default_worker_name() -> str:
    """``POD_NAME`` in a pod, else ``<hostname>-<pid>`` (several workers may share a host)."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerSettings:
    """How one worker process connects, what it runs and how it holds its jobs."""

    #: KUBEWORKERS_REDIS_URL: the Redis holding the pool's streams.
    redis_url: str = "redis://localhost:6379/0"
    #: KUBEWORKERS_NAMESPACE: Kubernetes namespace of the pool.
    namespace: str = "default"
    #: KUBEWORKERS_POOL: the WorkerPool this worker serves (required).
    pool: str = ""
    #: KUBEWORKERS_IMPORT: modules defining handlers (comma-separated in the variable).
    imports: list[str] = field(default_factory=list)
    #: KUBEWORKERS_CONCURRENCY: jobs run at once by this process.
    concurrency: int = 10
    #: KUBEWORKERS_SHUTDOWN_GRACE: seconds in-flight jobs may take to finish after SIGTERM.
    shutdown_grace: float = 25.0
    #: KUBEWORKERS_METRICS_PORT: port of /metrics, /healthz, /readyz (0: ephemeral, -1: off).
    metrics_port: int = 9100
    #: KUBEWORKERS_METRICS_HOST: address the metrics server binds.
    metrics_host: str = "0.0.0.0"  # probes and Prometheus reach the pod IP
    #: POD_NAME, else hostname-pid: consumer name in the group and key in the worker registry.
    worker_name: str = field(default_factory=default_worker_name)
    #: KUBEWORKERS_LEASE_SECONDS: a job held this long without a heartbeat is given to another worker.
    lease_seconds: float = 30.0
    #: KUBEWORKERS_HEARTBEAT_SECONDS: how often leases and the registry entry are renewed
    #: (0: automatic, ``min(5, lease / 6)``).
    heartbeat_seconds: float = 0.0
    #: KUBEWORKERS_BLOCK_MS: longest a blocking read waits before the loop looks around again.
    block_ms: int = 1000
    #: KUBEWORKERS_RESULT_TTL: seconds a finished job's record is kept.
    result_ttl: int = DEFAULT_RESULT_TTL
    #: KUBEWORKERS_MAX_BACKOFF: cap on one retry delay, seconds.
    max_backoff: float = 300.0
    #: KUBEWORKERS_PROMOTE_SECONDS: how often due retries are moved back to the streams.
    promote_seconds: float = 0.25
    #: KUBEWORKERS_LOG_LEVEL
    log_level: str = "INFO"
    #: KUBEWORKERS_LOG_FORMAT: 'json' (one object per line) or 'text'.
    log_format: str = "json"

    def __post_init__(self) -> None:
        if not self.heartbeat_seconds:
            self.heartbeat_seconds = min(5.0, self.lease_seconds / 6)

    def validate(self) -> None:
        """Raise ValueError on settings that cannot work."""
        if not self.pool:
            raise ValueError("a pool is required (--pool or KUBEWORKERS_POOL)")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.heartbeat_seconds <= 0 or self.lease_seconds <= 0:
            raise ValueError("lease and heartbeat intervals must be positive")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat ({self.heartbeat_seconds}s) must be at most half the lease ({self.lease_seconds}s),"
                " or live jobs would be taken away from their worker"
            )

    @property
    def reap_seconds(self) -> float:
        """How often a worker tries to become the reaper of expired leases."""
        return max(0.05, min(self.heartbeat_seconds, self.lease_seconds / 10))


ENV: dict[str, str] = {
    "redis_url": "KUBEWORKERS_REDIS_URL",
    "namespace": "KUBEWORKERS_NAMESPACE",
    "pool": "KUBEWORKERS_POOL",
    "imports": "KUBEWORKERS_IMPORT",
    "concurrency": "KUBEWORKERS_CONCURRENCY",
    "shutdown_grace": "KUBEWORKERS_SHUTDOWN_GRACE",
    "metrics_port": "KUBEWORKERS_METRICS_PORT",
    "metrics_host": "KUBEWORKERS_METRICS_HOST",
    "lease_seconds": "KUBEWORKERS_LEASE_SECONDS",
    "heartbeat_seconds": "KUBEWORKERS_HEARTBEAT_SECONDS",
    "block_ms": "KUBEWORKERS_BLOCK_MS",
    "result_ttl": "KUBEWORKERS_RESULT_TTL",
    "max_backoff": "KUBEWORKERS_MAX_BACKOFF",
    "promote_seconds": "KUBEWORKERS_PROMOTE_SECONDS",
    "log_level": "KUBEWORKERS_LOG_LEVEL",
    "log_format": "KUBEWORKERS_LOG_FORMAT",
}


def _convert(name: str, raw: str) -> Any:
    default = WorkerSettings.__dataclass_fields__[name].type
    if name == "imports":
        return [m.strip() for m in raw.split(",") if m.strip()]
    if default in ("int", int):
        return int(raw)
    if default in ("float", float):
        return float(raw)
    return raw


def settings_from(env: Mapping[str, str] | None = None, /, **overrides: Any) -> WorkerSettings:
    """Settings from environment variables, then ``overrides`` (flags; None means not given)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in fields(WorkerSettings):
        var = ENV.get(f.name)
        if var and env.get(var):
            values[f.name] = _convert(f.name, env[var])
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
    if "POD_NAME" in env and "worker_name" not in values:
        values["worker_name"] = env["POD_NAME"]
    return WorkerSettings(**values)
