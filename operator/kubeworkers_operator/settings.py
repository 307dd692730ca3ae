"""The operator's settings: one dataclass; each field declares its flag, its variable and its help.

A field is declared once, with :func:`declare` as its metadata: its default, the
command-line flag, the environment variable (if it has one) and the help text. The
CLI builds its parser from these declarations (:func:`add_arguments`,
:func:`from_arguments`), so every field has a flag by construction and
``kubeworkers-operator --help`` is this file. A value comes from the flag if given,
else from the variable if set, else from the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from kubeworkers.protocol import OPERATOR_GROUP

from kubeworkers_operator.model.defaults import DEFAULT_OUTPUT_LIMIT, DEFAULT_REDIS_SECRET
from kubeworkers_operator.model.leader_lease import ElectionTiming


@dataclass(frozen=True)
class Declaration:
    """How one settings field is given from outside."""

    flag: str
    """The long option (``--redis-url``); a boolean that defaults to true is turned off by it."""
    help: str
    env: str | None = None
    """The environment variable read when the flag is absent."""
    short: str | None = None


def declare(flag: str, help: str, *, env: str | None = None, short: str | None = None) -> dict[str, Declaration]:
    """The ``metadata`` of a settings field: its flag, variable and help."""
    return {"setting": Declaration(flag, help, env, short)}


@dataclass
class OperatorSettings:
    """How the operator runs. Every field has a CLI flag (see ``kubeworkers-operator --help``)."""

    redis_url: str = field(default="redis://localhost:6379/0", metadata=declare(
        "--redis-url",
        "the operator's own Redis: that of every WorkerPool naming no Redis Secret of its own "
        "(spec.redis), whose workers must point at it too (through --default-redis-secret); a pool "
        "naming a Secret is served on the Redis that Secret holds",
        env="KUBEWORKERS_REDIS_URL",
    ))
    namespaces: list[str] = field(default_factory=list, metadata=declare(
        "--namespace", "serve only this namespace (repeatable); default: cluster-wide", short="-n",
    ))
    metrics_port: int = field(default=8080, metadata=declare(
        "--metrics-port",
        "port of /healthz and /metrics (0: any free port, reported in the log)",
        env="KUBEWORKERS_METRICS_PORT",
    ))
    consumer_name: str = field(default="operator", metadata=declare(
        "--consumer-name",
        "this operator's name (the pod name): its consumer name in the events stream's group and its "
        "identity in the leader election Lease, so it must differ between replicas; pending entries of "
        "other consumers (an operator pod that died) are claimed after --claim-idle seconds",
        env="POD_NAME",
    ))
    leader_election: bool = field(default=True, metadata=declare(
        "--no-leader-election",
        "lead at once, without a Lease (only for a single replica: two replicas without election would "
        "both enqueue, write statuses and scale)",
    ))
    lease_namespace: str = field(default="default", metadata=declare(
        "--lease-namespace",
        "namespace of the leader election Lease (the chart: the operator's own namespace)",
        env="POD_NAMESPACE",
    ))
    lease_name: str = field(default="kubeworkers-operator", metadata=declare(
        "--lease-name",
        "name of the leader election Lease; replicas that share it elect one leader among them",
    ))
    lease_duration_seconds: float = field(default=10.0, metadata=declare(
        "--lease-duration",
        "seconds a Lease unchanged by its holder stays valid; a standby takes over once it has seen "
        "it unchanged this long",
    ))
    lease_renew_deadline_seconds: float = field(default=7.0, metadata=declare(
        "--lease-renew-deadline",
        "seconds after its last successful renew began that a leader stops leading unless it renewed "
        "again; shorter than --lease-duration, so the old leader stops before a standby can start",
    ))
    lease_renew_seconds: float = field(default=2.0, metadata=declare(
        "--lease-renew-period",
        "seconds between the leader's renews of the Lease",
    ))
    lease_retry_seconds: float = field(default=2.0, metadata=declare(
        "--lease-retry-period",
        "seconds between a standby's reads of the Lease",
    ))
    claim_idle_seconds: float = field(default=30.0, metadata=declare(
        "--claim-idle",
        "seconds after which another consumer's unacked events are claimed",
    ))
    sync_batch_size: int = field(default=500, metadata=declare(
        "--sync-batch-size",
        "events read from the events stream per turn (the coalescing window's upper bound)",
    ))
    sync_block_ms: int = field(default=1000, metadata=declare(
        "--sync-block-ms",
        "milliseconds one read of the events stream waits for new events",
    ))
    api_concurrency: int = field(default=16, metadata=declare(
        "--api-concurrency",
        "in-flight requests to the apiserver from the operator's own client",
    ))
    progress_interval_seconds: float = field(default=5.0, metadata=declare(
        "--progress-interval",
        "minimum seconds between progress-only status writes of one Job",
    ))
    resync_interval_seconds: float = field(default=60.0, metadata=declare(
        "--resync-interval",
        "seconds between resyncs of unfinished Jobs from their Redis records",
    ))
    orphan_sweep_seconds: float = field(default=300.0, metadata=declare(
        "--orphan-sweep-interval",
        "seconds between sweeps for jobs whose Job was deleted while the operator was not watching",
    ))
    lost_job_age_seconds: float = field(default=3600.0, metadata=declare(
        "--lost-job-age",
        "seconds a Queued or Running job record may stay unchanged with nothing in Redis able to run it "
        "(its stream entry gone) before the orphan sweep fails it (JobLost, dead-lettered)",
    ))
    pending_retry_seconds: float = field(default=10.0, metadata=declare(
        "--pending-retry",
        "seconds between retries of Jobs waiting for their pool (or for Redis), of pools whose "
        "Deployment could not be applied, and between reads of the pools' Redis Secrets",
    ))
    output_limit_bytes: int = field(default=DEFAULT_OUTPUT_LIMIT, metadata=declare(
        "--output-limit",
        "maximum JSON bytes of status.output; larger outputs are cut (outputTruncated)",
    ))
    default_redis_secret: str = field(default=DEFAULT_REDIS_SECRET, metadata=declare(
        "--default-redis-secret",
        "Secret (in the pool's namespace, key 'url') worker pods read the Redis URL from when the "
        "WorkerPool names none; it must hold the operator's own --redis-url",
    ))
    enqueue_linger_seconds: float = field(default=0.01, metadata=declare(
        "--enqueue-linger",
        "seconds a Job enqueue waits for others to share one pipelined round trip to Redis",
    ))
    autoscaling: bool = field(default=True, metadata=declare(
        "--no-autoscaling",
        "do not run the per-pool autoscalers (replicas are left to the user)",
    ))
    log_level: str = field(default="INFO", metadata=declare("--log-level", "log level", env="KUBEWORKERS_LOG_LEVEL"))
    console_port: int = field(default=0, metadata=declare(
        "--console-port",
        "serve the web console (docs/console.md) on this port, on every address; 0: no console",
        env="KUBEWORKERS_CONSOLE_PORT",
    ))
    console_namespace: str = field(default="default", metadata=declare(
        "--console-namespace",
        "the namespace whose pools and jobs the console shows; left at 'default' with exactly one --namespace "
        "given: that one",
    ))
    console_actions: bool = field(default=False, metadata=declare(
        "--console-enable-actions",
        "let the console retry, cancel and replay, each for a caller whose bearer token the apiserver "
        "authenticates (TokenReview) and authorises for update on the Job or its pool (SubjectAccessReview)",
    ))
    console_require_sign_in: bool = field(default=False, metadata=declare(
        "--console-require-sign-in",
        "make every console page, not only the actions, need a signed-in caller whom the apiserver allows "
        "to list jobs.workers.io in the console's namespace",
    ))
    console_host_names: list[str] = field(default_factory=list, metadata=declare(
        "--console-host-name",
        "a Host name the console answers to besides loopback ones (repeatable; its Service's names)",
    ))

    console_sample_seconds: float = field(default=15.0, metadata=declare(
        "--console-sample-interval",
        "seconds between the console's samples of each pool's replicas and backlog (its timeline: the last "
        "240 samples, in memory)",
    ))

    @property
    def console_shows(self) -> str:
        """The namespace the console shows: :attr:`console_namespace`, but for ``default`` when the
        operator serves exactly one other namespace (a console of a namespace it does not serve is empty)."""
        if self.console_namespace == "default" and len(self.namespaces) == 1:
            return self.namespaces[0]
        return self.console_namespace

    @property
    def election_timing(self) -> ElectionTiming:
        """The leader election's durations (validated: renew period < renew deadline < lease duration)."""
        return ElectionTiming(
            lease_duration=self.lease_duration_seconds,
            renew_deadline=self.lease_renew_deadline_seconds,
            renew_period=self.lease_renew_seconds,
            retry_period=self.lease_retry_seconds,
        )

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


def declared() -> list[tuple[Field[Any], Declaration]]:
    """Every settings field with its declaration."""
    return [(f, f.metadata["setting"]) for f in fields(OperatorSettings)]


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _convert(f: Field[Any], raw: str) -> Any:
    kind = type(_default(f))
    if kind is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return kind(raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per settings field; absent options parse as None (the variable or default applies)."""
    for f, decl in declared():
        names = [decl.flag] if decl.short is None else [decl.short, decl.flag]
        default = _default(f)
        metavar = decl.flag.removeprefix("--").upper().replace("-", "_")
        text = decl.help + (f" (default: ${decl.env}, else {default!r})" if decl.env else f" (default: {default!r})")
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            parser.add_argument(*names, dest=f.name, action=action, default=None, help=decl.help)
        elif isinstance(default, list):
            parser.add_argument(*names, dest=f.name, action="append", default=None, metavar=metavar, help=decl.help)
        else:
            parser.add_argument(
                *names, dest=f.name, type=type(default), default=None, metavar=metavar, help=text,
            )


def from_arguments(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Settings from parsed flags, then environment variables, then the defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f, decl in declared():
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
        elif decl.env and env.get(decl.env):
            values[f.name] = _convert(f, env[decl.env])
    return OperatorSettings(**values)
