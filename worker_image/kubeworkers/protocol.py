"""The Redis protocol shared by the SDK, the workers and the operator.

One module holds every key name and every message shape, so the three parties
cannot drift apart. See ``docs/protocol.md`` for the prose version.

Keys of one pool share the hash tag ``{<namespace>/<pool>}`` so that a Lua
script touching a pool's streams, its job records, its dead-letter stream and its
events stream stays within one Redis Cluster slot. The one key outside a pool's
slot, the job id -> pools hint (:func:`job_pool_key`), is never touched by a pool's script: the
clients write it, a bulk enqueue with ``lua/hints.lua`` (a script of the namespace's slot).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Consumer group every worker of a pool reads through.
WORKER_GROUP = "workers"
#: Consumer group the operator's status sync reads the events stream through.
OPERATOR_GROUP = "operator"
#: The one events stream of the layout before per-pool streams (:attr:`PoolKeys.events`): nothing
#: writes or reads it any more; named so the docs and an upgrade check can say so.
LEGACY_EVENTS_STREAM = "kw:events"
#: Pub/sub channel on which cancellations are announced (payload: record key).
CANCEL_CHANNEL = "kw:cancel"
#: Seconds a finished job's record (and its cancel flag) is kept before Redis expires it.
DEFAULT_RESULT_TTL = 7 * 24 * 3600
#: Seconds a job id -> pools hint (:func:`job_pool_key`) lives after its last write (an enqueue or a
#: rerun of the job): what a lookup without a pool can find, then ``--pool`` is needed.
JOB_HINT_TTL = 30 * 24 * 3600
#: Entries each pool's events stream keeps, about: every script's ``XADD`` to it says ``MAXLEN ~`` this
#: (``scripts.py`` hands it to the scripts as ``EVENTS_MAXLEN``), so it is bounded with no operator
#: reading it. An operator that falls further behind loses the oldest events; its resync from the
#: records repairs the Jobs' statuses (docs/protocol.md, *Bounds*).
EVENTS_MAXLEN = 100_000
#: Ids each of a pool's finished-jobs indexes keeps (``lua/jobindex.lua``, one sorted set per
#: finished state, read by ``kubeworkers jobs list``): the newest, so a read stays fast and the
#: index small whatever the result TTL (``scripts.py`` hands it to the scripts).
JOB_INDEX_MAXLEN = 1_000_000
#: Attempts a record's history (field ``attempt_log``, ``kubeworkers jobs describe``) keeps: the latest.
ATTEMPT_LOG_MAX = 25
#: Entries a pool's dead-letter stream keeps, about, by default (``KUBEWORKERS_DEAD_LETTER_MAXLEN``).
DEFAULT_DEAD_LETTER_MAXLEN = 10_000
#: Most attempts a job may be given (``lua/enqueue.lua`` has the same number; a test keeps them equal).
MAX_ATTEMPTS_LIMIT = 1000
#: Most steps of a sequence (the CRD's ``maxItems``): every event of a sequence names them all.
MAX_STEPS = 20
#: Upper bounds (seconds) of the buckets of a handler's attempt durations: the worker's histogram
#: ``kubeworkers_job_duration_seconds`` and the per-minute statistics ``lua/stats.lua`` keeps for
#: ``kubeworkers stats`` both count by these, so the two give the same quantiles.
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The longest window ``kubeworkers stats`` answers for (seconds), and how long a minute of
#: statistics is kept: a little more, so a window of that length is whole.
STATS_WINDOW_MAX_S = 24 * 3600
STATS_TTL_S = STATS_WINDOW_MAX_S + 3600


class Priority(enum.StrEnum):
    """Scheduling class of a job, the seed system's four levels. Workers drain ``critical`` before
    ``high`` before ``normal`` before ``low``, strictly unless the pool turns on priority aging
    (``KUBEWORKERS_PRIORITY_AGING_SECONDS``, docs/handlers.md *Priorities*)."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


#: Order in which a worker reads the per-priority streams.
PRIORITY_ORDER: tuple[Priority, ...] = (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW)


class JobState(enum.StrEnum):
    """Life of a job, as written to its record and mirrored into ``Job.status.phase``."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    #: A parent job whose attempt ended by waiting for its children (``ctx.wait``): it holds no
    #: worker slot; the last child's end queues its continuation (docs/workflows.md).
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


#: The states a job never leaves (its record then expires on the result TTL).
FINISHED_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class PoolKeys:
    """Every Redis key that belongs to one pool."""

    def __init__(self, namespace: str, pool: str) -> None:
        self.namespace = namespace
        self.pool = pool
        self.tag = f"{{{namespace}/{pool}}}"

    def stream(self, priority: Priority | str) -> str:
        """Job stream for one priority level."""
        return f"kw:{self.tag}:jobs:{Priority(priority).value}"

    @property
    def streams(self) -> list[str]:
        """All job streams of the pool, highest priority first."""
        return [self.stream(p) for p in PRIORITY_ORDER]

    def record(self, job_id: str) -> str:
        """Hash holding the job's state, attempts, worker, times, progress, output, error."""
        return f"kw:{self.tag}:job:{job_id}"

    def cancel(self, job_id: str) -> str:
        """Flag set when a job is cancelled (checked before a queued job starts)."""
        return f"kw:{self.tag}:cancel:{job_id}"

    @property
    def events(self) -> str:
        """The pool's events stream: every state change of its jobs, appended by the scripts of the
        pool (so in the pool's slot) and read by the operator's status sync (docs/protocol.md)."""
        return f"kw:{self.tag}:events"

    @property
    def dead_letter(self) -> str:
        """Stream of jobs that exhausted their attempts, with the reason."""
        return f"kw:{self.tag}:dlq"

    @property
    def delayed(self) -> str:
        """Sorted set of retries waiting out their backoff and delayed jobs (score: due time, unix seconds)."""
        return f"kw:{self.tag}:delayed"

    @property
    def workers(self) -> str:
        """Hash: worker (pod) name -> JSON heartbeat (see :class:`WorkerHeartbeat`)."""
        return f"kw:{self.tag}:workers"

    @property
    def reaper_lock(self) -> str:
        """Lock (SET NX PX) held by the single worker reclaiming expired leases."""
        return f"kw:{self.tag}:reaper"

    @property
    def prefix(self) -> str:
        """Common prefix of the pool's keys (Lua scripts derive per-job keys from it)."""
        return f"kw:{self.tag}:"

    @property
    def pulse(self) -> str:
        """Hash: when (Redis' clock) a worker last reached Redis, and when Redis came back after a gap."""
        return f"kw:{self.tag}:pulse"

    @property
    def stats(self) -> str:
        """Hash of rolling counters (enqueued, completed, duration sums) the autoscaler reads."""
        return f"kw:{self.tag}:stats"

    def index(self, state: JobState | str) -> str:
        """Sorted set of job ids by time (``lua/jobindex.lua``): ``live`` (not finished, scored by
        enqueue time) or a finished state (scored by finish time; bounded by count and the result TTL)."""
        return f"kw:{self.tag}:idx:{state}"

    def handler_index(self, state: JobState | str, handler: str) -> str:
        """The same index for one handler's jobs only (``lua/jobindex.lua``): what ``jobs list
        --handler`` reads, so a rare handler is found without reading every other handler's ids."""
        return f"kw:{self.tag}:idx:{state}:h:{handler}"

    def stats_minute(self, minute: int) -> str:
        """Hash of one minute's statistics per handler (``<handler>|<outcome>``, ``<handler>|dsum``,
        ``<handler>|b<bucket index>``), written by ``lua/stats.lua``; ``minute`` is unix seconds // 60."""
        return f"kw:{self.tag}:stats:m:{minute}"

    def children(self, job_id: str) -> str:
        """Hash of a parent job's children: ``<pool>/<child job id>`` -> the child's state
        (written by ``lua/children.lua``; expires with the parent's record)."""
        return f"kw:{self.tag}:children:{job_id}"


def record_key_pattern(namespace: str | None = None) -> str:
    """``SCAN`` pattern matching the job records (:meth:`PoolKeys.record`) of one namespace, or of all."""
    tag = "{*}" if namespace is None else f"{{{namespace}/*}}"
    return f"kw:{tag}:job:*"


def job_id_of(namespace: str, name: str) -> str:
    """The job id a Job custom resource is enqueued under: ``<namespace>/<name>``."""
    return f"{namespace}/{name}"


def job_object_of(job_id: str) -> tuple[str, str]:
    """Namespace and name of the Job custom resource behind a job id (see :func:`job_id_of`)."""
    namespace, _, name = job_id.partition("/")
    return namespace, name


def is_sdk_job(job_id: str, uid: str) -> bool:
    """Whether a job came from the SDK (``Client.submit``): no Job object stands behind it.

    SDK jobs use their job id as their uid, and their generated ids have no ``/``;
    a Job custom resource's id is ``<namespace>/<name>`` and its uid the object's.
    """
    return uid == job_id or "/" not in job_id


def job_pool_key(namespace: str, job_id: str) -> str:
    """The hint of the pools a job id was enqueued to, so ``Client.get(job_id)`` needs no pool name.

    A job is (namespace, pool, job_id): the same id on two pools is two jobs, so this is a set.
    It is in the namespace's slot, not a pool's, so no pool's script touches it: the clients write
    it beside the script calls (:func:`kubeworkers.queue.enqueue` SADDs and sets its TTL, a bulk
    enqueue of several jobs through one ``lua/hints.lua`` call per namespace and chunk,
    :data:`JOB_HINT_TTL`, a rerun does it again, :func:`kubeworkers.queue.delete_job` SREMs). A
    hint, not a truth: a reader checks that the record is in each pool it names, and one that
    expired (or was never written: a crash between the script and it) leaves ``--pool`` to say.
    """
    return f"{job_pool_prefix(namespace)}{job_id}"


def job_pool_prefix(namespace: str) -> str:
    """Prefix of :func:`job_pool_key` (Lua scripts append the job id).

    ``jobpools`` (a set), not the ``jobpool`` string it replaced, so keys left by an older
    version never meet a set command (no WRONGTYPE); they expire as before, or with the job's delete.
    """
    return f"kw:{{{namespace}}}:jobpools:"


def legacy_job_pool_key(namespace: str, job_id: str) -> str:
    """The one-pool string pointer older versions wrote; :func:`kubeworkers.queue.delete_job` removes it."""
    return f"kw:{{{namespace}}}:jobpool:{job_id}"


class RetryPolicy(BaseModel):
    """How a failed attempt is retried, in Temporal's shape; each field left None is inherited.

    A job's policy (SDK ``submit(retry=...)``, Job ``spec.retry``) overrides its handler's
    field by field, and the handler's the defaults (:data:`DEFAULT_RETRY`). The delay before
    retry *n* is ``initial_interval_seconds * backoff_coefficient ** (n - 1)``, capped by
    ``maximum_interval_seconds`` and the worker's ``--max-backoff``, then scaled by a random 50-100 %.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_interval_seconds: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Seconds before the first retry (default 1)."
    )
    backoff_coefficient: float | None = Field(
        default=None, ge=1, le=100, allow_inf_nan=False, description="Factor from one delay to the next (default 2)."
    )
    maximum_interval_seconds: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Longest delay between attempts (default: the worker's --max-backoff, 300 s).",
    )
    maximum_attempts: int | None = Field(
        default=None, ge=1, le=MAX_ATTEMPTS_LIMIT, description="Attempts in all, the first included (default 3)."
    )
    non_retryable_error_types: tuple[str, ...] | None = Field(
        default=None, description="Error types (exception class names, or reasons such as 'Timeout') that fail at once."
    )

    def over(self, base: RetryPolicy) -> RetryPolicy:
        """This policy, with every field it leaves unset taken from ``base``."""
        own = self.model_dump(exclude_none=True)
        return base.model_copy(update=own) if own else base


#: The retry policy of a handler that declares none.
DEFAULT_RETRY = RetryPolicy(
    initial_interval_seconds=1.0, backoff_coefficient=2.0, maximum_attempts=3, non_retryable_error_types=()
)


class Step(BaseModel):
    """One step of a sequence (docs/workflows.md, *Sequences*): a handler with its own limits.

    The first step gets the job's input, each next one the previous step's output (an object);
    the last step's output is the job's. Each field left None is the job's, then the handler's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=63, description="Unique in the sequence; shown in the Job's status.")
    handler: str = Field(min_length=1, description="The registered handler this step runs.")
    timeout_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                          description="Hard time limit of one attempt of this step.")
    soft_timeout_seconds: float | None = Field(default=None, gt=0, allow_inf_nan=False,
                                               description="Seconds after which this step is told to wrap up.")
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT,
                                     description="Attempts of this step in all, the first included.")
    retry: RetryPolicy | None = Field(default=None, description="Overrides of the handler's retry policy.")


def sequence(msg: JobMessage, steps: list[Step]) -> JobMessage:
    """``msg`` (a job's message: its input and job-wide limits) as the first step of a sequence of ``steps``.

    Each step's limit left None is the job's (``msg``'s), and the job's the handler's; a step's
    ``retry`` overrides the job's field by field, its ``maximum_attempts`` moved to ``max_attempts``
    as the message carries it. ValueError when the steps are none, too many, or share a name.
    """
    if not steps or len(steps) > MAX_STEPS:
        raise ValueError(f"a sequence has 1 to {MAX_STEPS} steps, not {len(steps)}")
    names = [step.name for step in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"the steps' names must be unique: {names}")
    resolved = []
    for step in steps:
        retry = step.retry.over(msg.retry) if step.retry is not None and msg.retry is not None else (
            step.retry or msg.retry)
        max_attempts = step.max_attempts
        if retry is not None and retry.maximum_attempts is not None:
            max_attempts = max_attempts or retry.maximum_attempts
            retry = retry.model_copy(update={"maximum_attempts": None})
        if retry is not None and not retry.model_dump(exclude_none=True):
            retry = None
        resolved.append(step.model_copy(update={
            "timeout_seconds": step.timeout_seconds if step.timeout_seconds is not None else msg.timeout_seconds,
            "soft_timeout_seconds": step.soft_timeout_seconds if step.soft_timeout_seconds is not None
            else msg.soft_timeout_seconds,
            "max_attempts": max_attempts if max_attempts is not None else msg.max_attempts,
            "retry": retry,
        }))
    return msg.model_copy(update={"steps": resolved}).at_step(0, msg.input, now=msg.enqueued_at)


class StepRef(BaseModel):
    """Where a sequence is: the current step's 0-based index, and every step's name.

    Carried by every event of a sequence job (``JobEvent.step``) and kept as JSON in the record's
    ``step`` field, which the Lua scripts splice into the events they write without decoding it.
    """

    index: int = Field(ge=0)
    names: list[str]

    @property
    def name(self) -> str:
        return self.names[self.index] if self.index < len(self.names) else ""

    def describe(self) -> str:
        """``step 2/3 extract``: what ``kubectl get`` shows."""
        return f"step {self.index + 1}/{len(self.names)} {self.name}"


class JobMessage(BaseModel):
    """One entry on a pool's job stream: everything a worker needs to run the job.

    The operator (for Job custom resources) and the SDK (for direct submits)
    produce exactly this; workers consume exactly this.
    """

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(description="'<namespace>/<name>' for Job CRs, generated for SDK jobs.")
    uid: str = Field(description="Dedupe identity: the Job CR's metadata.uid, or the job id for SDK jobs.")
    namespace: str
    pool: str
    handler: str
    input: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    timeout_seconds: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Seconds, > 0. None: the handler's default."
    )
    max_attempts: int | None = Field(
        default=None, ge=1, le=MAX_ATTEMPTS_LIMIT, description="1 to 1000. None: the handler's default."
    )
    soft_timeout_seconds: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Seconds after which the handler is told to wrap up (below the hard timeout). None: the handler's.",
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Overrides of the handler's retry policy (maximum attempts: max_attempts).",
    )
    expires_at: float | None = Field(
        default=None, allow_inf_nan=False,
        description="Unix seconds: an attempt not started by then fails with 'Expired' without running.",
    )
    not_before: float | None = Field(
        default=None, allow_inf_nan=False,
        description="Unix seconds: the job waits in the pool's delayed set until then (None: runs now).",
    )
    enqueued_at: float = Field(default_factory=time.time, description="Unix seconds.")
    parent: str | None = Field(
        default=None, description="Job id of the parent that spawned this job (``ctx.spawn``), in the same namespace.",
    )
    parent_pool: str | None = Field(default=None, description="The parent's pool (set with ``parent``).")
    steps: list[Step] | None = Field(
        default=None, max_length=MAX_STEPS,
        description="A sequence: every step, each with its limits resolved over the job's (None: one handler).",
    )
    step: int = Field(default=0, ge=0, description="The step this message runs (an index into ``steps``).")

    @property
    def step_ref(self) -> StepRef | None:
        """Where this message's sequence is, or None for a job that is not a sequence."""
        if not self.steps:
            return None
        return StepRef(index=self.step, names=[s.name for s in self.steps])

    @property
    def last_step(self) -> bool:
        """This message runs the last step of its sequence, or is no sequence at all."""
        return not self.steps or self.step >= len(self.steps) - 1

    def at_step(self, index: int, input: dict[str, Any], *, now: float | None = None) -> JobMessage:
        """The message of step ``index`` of this sequence, with ``input``: that step's handler and limits.

        The job's start conditions (``not_before``, ``expires_at``) belong to the first step only:
        a later step follows a finished one and is never delayed or expired.
        """
        assert self.steps is not None
        step = self.steps[index]
        first = index == 0
        return self.model_copy(update={
            "handler": step.handler, "input": input, "step": index, "timeout_seconds": step.timeout_seconds,
            "soft_timeout_seconds": step.soft_timeout_seconds, "max_attempts": step.max_attempts,
            "retry": step.retry, "enqueued_at": time.time() if now is None else now,
            "not_before": self.not_before if first else None, "expires_at": self.expires_at if first else None,
        })

    #: Declared last so it is the last key of the JSON: ``lua/rerun.lua`` rewrites it in place.
    run: int = Field(
        default=0, ge=0,
        description="Which run of the job this is: 0 the first, n after n reruns (``kubeworkers jobs retry``).",
    )

    def wire_json(self) -> str:
        """The message as it is stored (stream entry, record, dead letters): JSON without the fields
        that are unset (None), which every reader, Python or Lua, takes as the same None. For a
        no-op SDK job that is about 210 bytes instead of 375, less for Redis to store and decode
        and for a worker to parse. ``run`` stays the last key (``lua/rerun.lua`` rewrites it)."""
        return self.model_dump_json(exclude_none=True)

    def to_fields(self) -> dict[str, str]:
        """Stream entry fields: the message as one JSON field ``m`` (versioned by ``v``), plus
        ``j``/``u``/``h`` (job id, uid, handler) so Lua scripts need not decode the JSON."""
        return {"v": "1", "m": self.wire_json(), "j": self.job_id, "u": self.uid, "h": self.handler}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> JobMessage:
        raw = fields.get(b"m") if b"m" in fields else fields.get("m")  # type: ignore[call-overload]
        if raw is None:
            raise ValueError("stream entry has no 'm' field")
        return cls.model_validate_json(raw)


class JobError(BaseModel):
    """Why a job failed."""

    type: str = Field(description="Exception class name, or a kubeworkers reason such as 'Timeout'.")
    message: str
    traceback: str | None = Field(default=None, description="Last frames only, capped in size.")
    retryable: bool = True


class ChildCounts(BaseModel):
    """A parent job's children by phase (``active``: queued or running, not finished yet)."""

    total: int = 0
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, total: int, succeeded: int, failed: int, cancelled: int) -> ChildCounts:
        return cls(total=total, active=max(0, total - succeeded - failed - cancelled),
                   succeeded=succeeded, failed=failed, cancelled=cancelled)


class ChildResult(BaseModel):
    """One child as its parent's continuation sees it."""

    job_id: str
    pool: str
    state: JobState
    output: Any = None
    #: The output was left out: the children's outputs passed the 1 MiB a continuation carries
    #: (``Client.children`` reads it).
    output_omitted: bool = False
    error: JobError | None = None


class ChildrenDone(BaseModel):
    """The input of a continuation handler (``ctx.wait(then=...)``): what the parent passed, and its children."""

    input: dict[str, Any] = Field(default_factory=dict)
    counts: ChildCounts = Field(default_factory=ChildCounts)
    children: list[ChildResult] = Field(default_factory=list)

    @property
    def failed(self) -> list[ChildResult]:
        """The children that failed or were cancelled."""
        return [c for c in self.children if c.state in (JobState.FAILED, JobState.CANCELLED)]


class JobEvent(BaseModel):
    """One state change appended by a script to its pool's events stream (:attr:`PoolKeys.events`).

    The operator's status sync folds these into ``Job.status``; the record in
    Redis stays the source of truth, the event is the notification.
    """

    job_id: str
    uid: str
    namespace: str
    pool: str
    state: JobState
    attempt: int = 0
    #: The run of the job the event belongs to (``JobMessage.run``). None: the writer did not say
    #: (an older worker); the operator then takes it for the run it knows.
    run: int | None = None
    worker: str | None = None
    at: float = Field(default_factory=time.time)
    progress: float | None = None
    message: str | None = None
    output: Any = None
    error: JobError | None = None
    #: Set on the events ``lua/children.lua`` writes for a parent when its children change: such
    #: an event only updates the parent's children counts, never its phase.
    children: ChildCounts | None = None
    #: A sequence's step this event is about (None: the job is no sequence, or a script that does
    #: not know wrote it: then it is about the step the status is at).
    step: StepRef | None = None

    def to_fields(self) -> dict[str, str]:
        return {"e": self.model_dump_json(exclude_none=True)}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> JobEvent:
        raw = fields.get(b"e") if b"e" in fields else fields.get("e")  # type: ignore[call-overload]
        if raw is None:
            raise ValueError("event entry has no 'e' field")
        return cls.model_validate_json(raw)


class WorkerHeartbeat(BaseModel):
    """A worker's entry in its pool's registry hash."""

    worker: str
    in_flight: int
    concurrency: int
    last_job: str | None = None
    at: float = Field(default_factory=time.time)
    draining: bool = False


#: Record fields ``step_output:<index>``: the output of each step of a sequence that succeeded
#: (``settle.lua``'s advance writes them; at most :data:`MAX_STEPS`, each within the output limit).
STEP_OUTPUT_FIELD = "step_output:"


def _readable_message(raw: str | None) -> JobMessage | None:
    """The record's message, or None when there is none or it cannot be read (a foreign
    producer's): the record is still the job's truth, and a worker fails such a job."""
    if not raw:
        return None
    try:
        return JobMessage.model_validate_json(raw)
    except ValueError:
        return None


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class JobRecord(BaseModel):
    """The job record hash (``PoolKeys.record``), decoded: the source of truth for a job.

    Written by the enqueue script (state Queued) and by workers (every state
    change); expires ``result TTL`` seconds after the job finishes.
    """

    model_config = ConfigDict(extra="ignore")

    job_id: str
    uid: str
    namespace: str
    pool: str
    handler: str
    priority: Priority = Priority.NORMAL
    state: JobState
    attempts: int = Field(default=0, description="Attempts started so far (the current one included).")
    max_attempts: int | None = None
    run: int = Field(default=0, description="Reruns so far: 0 until ``kubeworkers jobs retry`` runs the job again.")
    worker: str | None = Field(default=None, description="Consumer (pod) name that ran the last attempt.")
    entry: str | None = Field(default=None, description="Stream entry id of the current delivery.")
    enqueued_at: float | None = None
    not_before: float | None = Field(
        default=None, description="Unix seconds a delayed job waits for (None: not delayed)."
    )
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    progress: float | None = None
    message: str | None = None
    output: Any = None
    error: JobError | None = None
    cancel_requested: bool = False
    input: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = None
    parent: str | None = Field(default=None, description="Job id of the job that spawned this one.")
    children: ChildCounts | None = Field(default=None, description="This job's children by phase; None: it has none.")
    continuation: str | None = Field(default=None, description="The handler a Waiting job continues with.")
    dead_letter: str | None = Field(default=None, description="Id of the job's dead-letter entry (None: it has none).")
    step: StepRef | None = Field(default=None, description="A sequence's current step (None: no sequence).")
    step_outputs: list[Any] = Field(
        default_factory=list, description="A sequence's outputs of the steps that succeeded, first step first.",
    )

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> JobRecord:
        """Decode ``HGETALL`` of a record (bytes or str keys)."""
        import json

        fields: dict[str, str] = {}
        for key, value in raw.items():
            k, v = _text(key), _text(value)
            if k is not None and v is not None:
                fields[k] = v
        structured = ("msg", "output", "error")
        data: dict[str, Any] = {k: v for k, v in fields.items() if v != "" and k not in structured}
        msg = _readable_message(fields.get("msg"))
        if msg is not None:
            data.setdefault("input", msg.input)
            data.setdefault("timeout_seconds", msg.timeout_seconds)
            for name in ("job_id", "uid", "namespace", "pool", "handler"):
                data.setdefault(name, getattr(msg, name))
            data.setdefault("priority", msg.priority)
        if fields.get("output"):
            data["output"] = json.loads(fields["output"])
        if fields.get("error"):
            data["error"] = JobError.model_validate_json(fields["error"])
        data["cancel_requested"] = fields.get("cancel_requested") == "1"
        for name in ("children_total", "children_succeeded", "children_failed", "children_cancelled", "parent_prefix"):
            data.pop(name, None)
        if fields.get("children_total"):
            data["children"] = ChildCounts.of(*(int(fields.get(f"children_{n}") or 0)
                                                for n in ("total", "succeeded", "failed", "cancelled")))
        data.pop("continuation_input", None)
        outputs = sorted((int(k.rpartition(":")[2]), v) for k, v in fields.items() if k.startswith(STEP_OUTPUT_FIELD))
        for k in [k for k in data if k.startswith(STEP_OUTPUT_FIELD)]:
            data.pop(k)
        data["step_outputs"] = [json.loads(v) for _, v in outputs]
        if fields.get("step"):
            data["step"] = StepRef.model_validate_json(fields["step"])
        return cls.model_validate(data)
