"""The operator's settings: one dataclass, one docstring per field, filled by the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kubeworkers.protocol import OPERATOR_GROUP

from kubeworkers_operator.model.defaults import DEFAULT_OUTPUT_LIMIT, DEFAULT_REDIS_SECRET


@dataclass
class OperatorSettings:
    """How the operator runs. Every field has a CLI flag (see ``kubeworkers-operator --help``)."""

    redis_url: str = field(default_factory=lambda: os.environ.get("KUBEWORKERS_REDIS_URL", "redis://localhost:6379/0"))
    """Redis the operator enqueues to and reads the events stream from (``KUBEWORKERS_REDIS_URL``).
    Worker pools must point at the same Redis (through their Secret)."""

    namespaces: list[str] = field(default_factory=list)
    """Namespaces to serve; empty means cluster-wide."""

    metrics_port: int = 8080
    """Port of ``/healthz`` and ``/metrics`` (0: any free port, reported in the log)."""

    consumer_name: str = field(default_factory=lambda: os.environ.get("POD_NAME") or "operator")
    """Consumer name in the events stream's ``operator`` group; pending entries of other
    consumers (an operator pod that died) are claimed after ``claim_idle_seconds``."""

    claim_idle_seconds: float = 30.0
    """Idle time after which another consumer's unacked events are claimed."""

    sync_batch_size: int = 500
    """Events read from the events stream per turn (the coalescing window's upper bound)."""

    sync_block_ms: int = 1000
    """How long one read of the events stream waits for new events."""

    api_concurrency: int = 16
    """In-flight requests to the apiserver from the operator's own client."""

    progress_interval_seconds: float = 5.0
    """Minimum time between two progress-only status writes of one Job."""

    resync_interval_seconds: float = 60.0
    """Period of the safety-net resync of unfinished Jobs from their records in Redis."""

    orphan_sweep_seconds: float = 300.0
    """Period of the sweep that cancels queued or running jobs whose Job was deleted while
    the operator was not watching (their DELETED event was never seen)."""

    pending_retry_seconds: float = 10.0
    """Period at which Jobs waiting for their pool (or for Redis) are evaluated again."""

    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT
    """Cap on the JSON size of ``status.output``; larger outputs are cut (``outputTruncated``)."""

    default_redis_secret: str = DEFAULT_REDIS_SECRET
    """Secret (in the pool's namespace, key ``url``) worker pods read the Redis URL from
    when a WorkerPool does not name one."""

    enqueue_linger_seconds: float = 0.01
    """How long a Job enqueue waits for others to share one pipelined round trip to Redis."""

    autoscaling: bool = True
    """Run the per-pool autoscaler loops (off: replicas are left to the Deployment/user)."""

    @property
    def events_group(self) -> str:
        """Consumer group on the events stream.

        Cluster-wide operators share :data:`~kubeworkers.protocol.OPERATOR_GROUP`; an operator
        limited to some namespaces gets a group of its own, so it never acks (and thereby
        hides) the events of namespaces another operator serves.
        """
        if not self.namespaces:
            return OPERATOR_GROUP
        return f"{OPERATOR_GROUP}:{','.join(sorted(self.namespaces))}"
