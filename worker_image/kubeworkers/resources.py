"""Pydantic models of the custom resources ``Job``, ``WorkerPool`` and ``Schedule`` (group ``workers.io``).

The CRD schemas in ``crds/`` are the source of truth for the API (validation,
defaults, descriptions shown by ``kubectl explain``); these models are the one
Python view of them, shared by the operator and the SDK.
``tests/unit/test_crd_models_agree.py`` walks both and fails when they drift.

Python attributes are snake_case; the wire names are the CRD's camelCase, so
parse with ``JobSpec.model_validate(body["spec"])`` and write with
:meth:`CrdModel.to_k8s`.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from kubeworkers.protocol import MAX_ATTEMPTS_LIMIT, MAX_STEPS, JobState, Priority, RetryPolicy, Step
from kubeworkers.settings import ENV

#: API group and version of every custom resource.
GROUP = "workers.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
JOB_KIND = "Job"
JOB_PLURAL = "jobs"
WORKERPOOL_KIND = "WorkerPool"
WORKERPOOL_PLURAL = "workerpools"
SCHEDULE_KIND = "Schedule"
SCHEDULE_PLURAL = "schedules"

#: Pool names end up in Deployment and pod names, so they are DNS-1123 labels.
POOL_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Handler names as registered with ``@handler(...)`` (dotted names allowed for namespacing).
HANDLER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:-]*$"
#: Python module paths as passed to ``kubeworkers worker --import``.
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

#: IANA time zone names (``Europe/Berlin``, ``Etc/GMT+5``); whether one exists is the operator's check.
TIME_ZONE_PATTERN = r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$"

PoolName = Annotated[str, Field(min_length=1, max_length=63, pattern=POOL_NAME_PATTERN)]
HandlerName = Annotated[str, Field(min_length=1, max_length=253, pattern=HANDLER_NAME_PATTERN)]
ModuleName = Annotated[str, Field(min_length=1, max_length=253, pattern=MODULE_PATTERN)]


class CrdModel(BaseModel):
    """Base of every model here: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than rejected: the apiserver already
    prunes them, and an older operator must keep reading objects written by a
    newer CRD version.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_k8s(self) -> dict[str, Any]:
        """The object as the apiserver wants it: camelCase keys, JSON types, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(enum.StrEnum):
    """``status`` of a :class:`Condition`, as in ``metav1.Condition``."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CrdModel):
    """One entry of ``status.conditions``, the standard ``metav1.Condition`` shape."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------- Job


#: The CRD's cross-field rules on a Job, with their messages (the models refuse the same).
SOFT_NOT_BELOW_HARD = "softTimeoutSeconds must be below timeoutSeconds: the handler is told before it is stopped"
RETRY_MAXIMUM_BELOW_INITIAL = "retry.maximumIntervalSeconds must not be below retry.initialIntervalSeconds"


class JobRetryPolicy(CrdModel):
    """``Job.spec.retry``: overrides of the handler's retry policy (:class:`~kubeworkers.protocol.RetryPolicy`)."""

    initial_interval_seconds: float | None = Field(default=None, ge=0)
    backoff_coefficient: float | None = Field(default=None, ge=1, le=100)
    maximum_interval_seconds: float | None = Field(default=None, gt=0)
    non_retryable_error_types: list[Annotated[str, StringConstraints(min_length=1, max_length=253)]] | None = Field(
        default=None, max_length=50)

    @model_validator(mode="after")
    def _maximum_not_below_initial(self) -> JobRetryPolicy:
        most, first = self.maximum_interval_seconds, self.initial_interval_seconds
        if most is not None and first is not None and most < first:
            raise ValueError(RETRY_MAXIMUM_BELOW_INITIAL)
        return self

    def policy(self) -> RetryPolicy:
        """The same overrides as the message carries them."""
        types = self.non_retryable_error_types
        return RetryPolicy(
            initial_interval_seconds=self.initial_interval_seconds, backoff_coefficient=self.backoff_coefficient,
            maximum_interval_seconds=self.maximum_interval_seconds,
            non_retryable_error_types=None if types is None else tuple(types),
        )


#: The CRD's rule that a Job runs one handler or a sequence (the model refuses the same).
HANDLER_OR_STEPS = "set exactly one of handler (one handler) and steps (a sequence)"
STEP_SOFT_NOT_BELOW_HARD = (
    "a step's softTimeoutSeconds must be below its timeoutSeconds: the handler is told before it is stopped")


class JobStep(CrdModel):
    """One entry of ``Job.spec.steps``: a step of a sequence, with its own limits (docs/workflows.md)."""

    name: PoolName
    handler: HandlerName
    timeout_seconds: int | None = Field(default=None, ge=1)
    soft_timeout_seconds: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    retry: JobRetryPolicy | None = None

    @model_validator(mode="after")
    def _soft_below_hard(self) -> JobStep:
        soft, hard = self.soft_timeout_seconds, self.timeout_seconds
        if soft is not None and hard is not None and soft >= hard:
            raise ValueError(STEP_SOFT_NOT_BELOW_HARD)
        return self

    def step(self) -> Step:
        """The step as the message carries it (before the job's limits are filled in)."""
        return Step(name=self.name, handler=self.handler, timeout_seconds=self.timeout_seconds,
                    soft_timeout_seconds=self.soft_timeout_seconds, max_attempts=self.max_attempts,
                    retry=self.retry.policy() if self.retry is not None else None)


class JobSpec(CrdModel):
    """``Job.spec``: which pool runs which handler on what input (field docs: ``kubectl explain jobs.spec``).

    ``pool``, ``handler``, ``input``, ``priority``, ``timeoutSeconds``, ``softTimeoutSeconds``,
    ``maxAttempts``, ``retry``, ``notBefore`` and ``expiresAfterSeconds`` are immutable once created;
    ``cancel`` may only go from false to true.
    """

    pool: PoolName
    handler: HandlerName | None = None
    steps: list[JobStep] | None = Field(default=None, min_length=1, max_length=MAX_STEPS)
    input: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    timeout_seconds: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    soft_timeout_seconds: int | None = Field(default=None, ge=1)
    retry: JobRetryPolicy | None = None
    not_before: AwareDatetime | None = None
    expires_after_seconds: int | None = Field(default=None, ge=1)
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    cancel: bool = False

    @model_validator(mode="after")
    def _soft_below_hard(self) -> JobSpec:
        soft, hard = self.soft_timeout_seconds, self.timeout_seconds
        if soft is not None and hard is not None and soft >= hard:
            raise ValueError(SOFT_NOT_BELOW_HARD)
        if (self.handler is None) == (self.steps is None):
            raise ValueError(HANDLER_OR_STEPS)
        names = [step.name for step in self.steps or ()]
        if len(set(names)) != len(names):
            raise ValueError(f"the steps' names must be unique: {names}")
        return self

    @property
    def handlers(self) -> list[str]:
        """Every handler the Job runs: its handler, or its steps' in order."""
        return [step.handler for step in self.steps] if self.steps else [str(self.handler)]

    @property
    def first_handler(self) -> str:
        """The handler that runs first (the Job's, or its first step's)."""
        return self.handlers[0]


class JobProgress(CrdModel):
    """``Job.status.progress``: what the handler last reported through ``ctx.progress()``."""

    fraction: float = Field(ge=0, le=1)
    message: str | None = None


class JobErrorInfo(CrdModel):
    """``Job.status.error``: why the last attempt failed."""

    type: str
    message: str


class JobChildren(CrdModel):
    """``Job.status.children``: the job's child jobs by phase (the wire's ``ChildCounts``)."""

    total: int | None = Field(default=None, ge=0)
    active: int | None = Field(default=None, ge=0)
    succeeded: int | None = Field(default=None, ge=0)
    failed: int | None = Field(default=None, ge=0)
    cancelled: int | None = Field(default=None, ge=0)


class JobStepStatus(CrdModel):
    """One entry of ``Job.status.steps``: a sequence's step, folded from its events."""

    name: str
    phase: JobState
    attempts: int | None = Field(default=None, ge=0)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    error: JobErrorInfo | None = None


class JobStatus(CrdModel):
    """``Job.status``, written by the operator from the job's record in Redis."""

    phase: JobState | None = None
    attempts: int | None = Field(default=None, ge=0)
    current_step: str | None = None
    steps: list[JobStepStatus] | None = Field(default=None, max_length=MAX_STEPS)
    reruns: int | None = Field(default=None, ge=0)
    worker: str | None = None
    last_worker: str | None = None
    queued_at: datetime | None = None
    not_before: datetime | None = None
    #: While Queued: about how many jobs of the pool start before it (docs/handlers.md, *Priorities*).
    position: int | None = Field(default=None, ge=0)
    #: While Queued: when it should start, from its position and the pool's take rate.
    estimated_start_time: datetime | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    progress: JobProgress | None = None
    output: Any = None
    output_truncated: bool | None = None
    children: JobChildren | None = None
    error: JobErrorInfo | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------- WorkerPool


class ImagePullPolicy(enum.StrEnum):
    """``imagePullPolicy`` of the worker container (unset: Kubernetes' own default)."""

    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class AutoscalingSpec(CrdModel):
    """``WorkerPool.spec.autoscaling``: the knobs of the per-pool autoscaler."""

    enabled: bool = True
    target_drain_seconds: int = Field(default=30, ge=1)
    scale_down_stabilization_seconds: int = Field(default=60, ge=0)
    idle_seconds_before_zero: int = Field(default=120, ge=0)
    poll_seconds: float = Field(default=2.0, gt=0, le=300)
    max_scale_up_step: int | None = Field(default=None, ge=1)


class RedisRef(CrdModel):
    """``WorkerPool.spec.redis``: the Secret key holding the Redis URL the pool's workers use."""

    secret_name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="url", min_length=1, max_length=253)


class EnvVar(CrdModel):
    """One item of ``WorkerPool.spec.env`` (a ``corev1.EnvVar``; ``valueFrom`` is passed through as is)."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_an_operator_setting(self) -> EnvVar:
        # The CRD's rule on spec.env items, with its message.
        if self.name.startswith("KUBEWORKERS_") and self.name not in POOL_ENV_SETTINGS:
            raise ValueError(POOL_ENV_REFUSED)
        return self


#: Worker settings (``kubeworkers.settings``) the operator sets from the pool's own fields or owns:
#: a pool's ``spec.env`` may not set their variables (its Redis, namespace and pool are not the pod's
#: to choose; the rest have a field of their own: imports, concurrency, leaseSeconds, the grace period,
#: and the metrics port the probes use).
OPERATOR_OWNED_SETTINGS = frozenset({
    "redis_url", "namespace", "pool", "imports", "concurrency", "lease_seconds", "shutdown_grace", "metrics_port",
})
#: ``KUBEWORKERS_*`` variables a pool's ``spec.env`` may set: every other worker setting.
POOL_ENV_SETTINGS = tuple(var for name, var in ENV.items() if name not in OPERATOR_OWNED_SETTINGS and
                          var.startswith("KUBEWORKERS_"))
#: The CRD's message (and the model's) for any other ``KUBEWORKERS_*`` name in ``spec.env``.
POOL_ENV_REFUSED = (
    "a KUBEWORKERS_* variable in spec.env must be a worker setting the pool may set ("
    + ", ".join(POOL_ENV_SETTINGS)
    + "); the others come from the pool's own fields (spec.redis, spec.imports, spec.concurrency, "
    "spec.leaseSeconds, spec.terminationGracePeriodSeconds)"
)

#: Messages of the WorkerPool CRD's cross-field rules, shared with the model's validator.
MIN_ABOVE_MAX = "minReplicas must not be greater than maxReplicas"
REPLICAS_OUT_OF_BOUNDS = "replicas must be between minReplicas and maxReplicas when autoscaling is disabled"


class WorkerPoolSpec(CrdModel):
    """``WorkerPool.spec``: the worker fleet (field docs: ``kubectl explain workerpools.spec``)."""

    image: str = Field(min_length=1)
    image_pull_policy: ImagePullPolicy | None = None
    imports: list[ModuleName] = Field(min_length=1)
    handlers: Annotated[list[HandlerName], Field(min_length=1)] | None = None
    concurrency: int = Field(default=4, ge=1, le=1000)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=10, ge=0)
    replicas: int | None = Field(default=None, ge=0)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    lease_seconds: int = Field(default=30, ge=1)
    termination_grace_period_seconds: int = Field(default=60, ge=0)
    redis: RedisRef | None = None
    resources: dict[str, Any] | None = None
    env: list[EnvVar] | None = None
    env_from: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[dict[str, Any]] | None = None
    affinity: dict[str, Any] | None = None
    service_account_name: str | None = None
    pod_annotations: dict[str, str] | None = None
    pod_labels: dict[str, str] | None = None

    @model_validator(mode="after")
    def _replica_bounds_agree(self) -> WorkerPoolSpec:
        # The same rules (and messages) as the CRD's x-kubernetes-validations, so a spec
        # built in Python fails where the apiserver would refuse it.
        if self.min_replicas > self.max_replicas:
            raise ValueError(MIN_ABOVE_MAX)
        bounded = self.min_replicas <= (self.replicas or 0) <= self.max_replicas
        if not self.autoscaling.enabled and self.replicas is not None and not bounded:
            raise ValueError(REPLICAS_OUT_OF_BOUNDS)
        return self

    @property
    def fixed_replicas(self) -> int:
        """Replica count when autoscaling is disabled: ``replicas``, or ``minReplicas`` when unset."""
        return self.min_replicas if self.replicas is None else self.replicas


class WorkerPoolStatus(CrdModel):
    """``WorkerPool.status``: the Deployment's state and the autoscaler's last decision and inputs."""

    replicas: int | None = Field(default=None, ge=0)
    ready_replicas: int | None = Field(default=None, ge=0)
    desired_replicas: int | None = Field(default=None, ge=0)
    backlog: int | None = Field(default=None, ge=0)
    in_flight: int | None = Field(default=None, ge=0)
    arrival_rate: float | None = Field(default=None, ge=0)
    duration_estimate_seconds: float | None = Field(default=None, ge=0)
    last_scale_time: datetime | None = None
    last_scale_reason: str | None = None
    selector: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------- Schedule


class ConcurrencyPolicy(enum.StrEnum):
    """``Schedule.spec.concurrencyPolicy``: what a slot does while an earlier run is still active."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class JobTemplateMetadata(CrdModel):
    """``Schedule.spec.jobTemplate.metadata``: labels and annotations every run gets."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class JobTemplate(CrdModel):
    """``Schedule.spec.jobTemplate``: the Job each run is (its spec is a Job's spec)."""

    metadata: JobTemplateMetadata | None = None
    spec: JobSpec


#: The shapes the Schedule CRD's CEL rule lets through (the same three regular expressions):
#: a macro, ``@every <duration>``, or five cron fields. The operator's parser is the full check.
SCHEDULE_SHAPES = (
    "^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$",
    "^@every ([0-9]+h)?([0-9]+m)?([0-9]+s)?$",
    "^ *[0-9A-Za-z*?,/-]+( +[0-9A-Za-z*?,/-]+){4} *$",
)
#: The CRD's message when ``schedule`` has none of :data:`SCHEDULE_SHAPES`.
SCHEDULE_SHAPE_REFUSED = (
    "schedule must be five cron fields (minute hour day-of-month month day-of-week), one of @yearly, "
    '@annually, @monthly, @weekly, @daily, @midnight, @hourly, or "@every <duration>" such as @every 30s '
    "or @every 1h30m"
)


class ScheduleSpec(CrdModel):
    """``Schedule.spec``: when to run which Job (field docs: ``kubectl explain schedules.spec``)."""

    schedule: str = Field(min_length=1, max_length=256)
    time_zone: str | None = Field(default=None, min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN)
    job_template: JobTemplate
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline_seconds: int | None = Field(default=None, ge=1)
    suspend: bool = False
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=1000)
    failed_jobs_history_limit: int = Field(default=1, ge=0, le=1000)

    @model_validator(mode="after")
    def _schedule_has_a_known_shape(self) -> ScheduleSpec:
        # The CRD's CEL rule on spec.schedule, with its message.
        if self.schedule == "@every " or not any(re.match(shape, self.schedule) for shape in SCHEDULE_SHAPES):
            raise ValueError(SCHEDULE_SHAPE_REFUSED)
        return self


class ScheduleStatus(CrdModel):
    """``Schedule.status``: what the operator scheduled, and what it will schedule next."""

    last_schedule_time: datetime | None = None
    next_schedule_time: datetime | None = None
    last_successful_time: datetime | None = None
    last_skipped_time: datetime | None = None
    last_missed_time: datetime | None = None
    active: list[str] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(default=None, ge=0)
