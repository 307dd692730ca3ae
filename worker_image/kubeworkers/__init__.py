"""kubeworkers: typed Python handlers run by an autoscaled fleet of Kubernetes worker pods."""

from kubeworkers.client import (
    AmbiguousJobIdError,
    AsyncClient,
    Client,
    InvalidInputError,
    JobNotFoundError,
    Submitted,
)
from kubeworkers.context import JobContext
from kubeworkers.errors import PermanentError, RetryableError, SoftTimeout
from kubeworkers.protocol import (
    ChildCounts,
    ChildrenDone,
    ChildResult,
    JobRecord,
    JobState,
    Priority,
    RetryPolicy,
    Step,
    StepRef,
)
from kubeworkers.queue import Durability, NotReplicatedError
from kubeworkers.registry import App, DuplicateHandlerError, HandlerSpec, Registry, RegistryError, handler, registry
from kubeworkers.results import JobCancelledError, JobFailedError, OutputValidationError

__version__ = "0.1.0"

__all__ = [
    "AmbiguousJobIdError",
    "App",
    "AsyncClient",
    "ChildCounts",
    "ChildResult",
    "ChildrenDone",
    "Client",
    "DuplicateHandlerError",
    "Durability",
    "HandlerSpec",
    "InvalidInputError",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobNotFoundError",
    "JobRecord",
    "JobState",
    "NotReplicatedError",
    "OutputValidationError",
    "PermanentError",
    "Priority",
    "Registry",
    "RegistryError",
    "RetryPolicy",
    "RetryableError",
    "SoftTimeout",
    "Step",
    "StepRef",
    "Submitted",
    "handler",
    "registry",
]
