"""The handler registry: ``@handler("name")`` turns a typed function into a runnable job handler.

A handler's first parameter is a pydantic model (its input); an optional
parameter annotated :class:`~kubeworkers.context.JobContext` receives the
job's context. It returns a pydantic model, a dict or None (its output).
``async def`` handlers run on the worker's event loop; plain ``def`` handlers
run in a thread pool so they cannot block it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar, Unpack

from pydantic import BaseModel, ValidationError

from kubeworkers.context import JobContext
from kubeworkers.protocol import DEFAULT_RETRY, RetryPolicy

F = TypeVar("F", bound=Callable[..., Any])

#: Defaults of a handler registered without options (its retry policy: :data:`DEFAULT_RETRY`).
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BACKOFF = 1.0
assert DEFAULT_RETRY.maximum_attempts == DEFAULT_MAX_ATTEMPTS
assert DEFAULT_RETRY.initial_interval_seconds == DEFAULT_RETRY_BACKOFF

#: Where a handler runs: in the worker (``async`` on its loop, ``def`` on a thread), or in a
#: child process of its own per attempt, which a hard timeout or a cancel kills.
Isolation = Literal["none", "process"]


class Policy(TypedDict, total=False):
    """The options of ``@handler(name, **policy)``; each one the handler does not set has its default."""

    #: Seconds one attempt may run before it is stopped and fails with ``Timeout`` (default None: no limit).
    timeout: float | None
    #: Seconds after which the handler is told to wrap up (``SoftTimeout`` raised into an async
    #: handler, ``ctx.soft_timed_out`` for a sync one); below ``timeout`` (default None: never).
    soft_timeout: float | None
    #: How failed attempts are retried (default :data:`~kubeworkers.protocol.DEFAULT_RETRY`).
    retry: RetryPolicy
    #: Shortcut for ``retry=RetryPolicy(maximum_attempts=...)`` (default :data:`DEFAULT_MAX_ATTEMPTS`).
    max_attempts: int
    #: Shortcut for ``retry=RetryPolicy(initial_interval_seconds=...)`` (default :data:`DEFAULT_RETRY_BACKOFF`).
    retry_backoff: float
    #: Most attempts of this handler one worker runs at once (default None: up to the worker's slots).
    concurrency: int | None
    #: ``"process"``: each attempt runs in a child process (default ``"none"``).
    isolation: Isolation


class RegistryError(Exception):
    """A handler definition is wrong (raised at import time, where the mistake is)."""


class DuplicateHandlerError(RegistryError):
    """Two different functions were registered under the same handler name."""


@dataclass(frozen=True)
class HandlerSpec:
    """A registered handler and its policy."""

    name: str
    func: Callable[..., Any]
    input_model: type[BaseModel]
    output_model: type[BaseModel] | None
    #: Seconds one attempt may run before it is stopped (None: no limit).
    timeout: float | None = None
    #: Seconds after which the handler is told to wrap up (None: never).
    soft_timeout: float | None = None
    #: The complete retry policy (every field set).
    retry: RetryPolicy = DEFAULT_RETRY
    #: Most attempts of this handler one worker runs at once (None: no limit of its own).
    concurrency: int | None = None
    isolation: Isolation = "none"
    #: Name of the parameter receiving the JobContext, if the handler takes one.
    context_param: str | None = None
    is_async: bool = True
    description: str = field(default="")

    @property
    def max_attempts(self) -> int:
        """Attempts before the job is dead-lettered (1: never retried)."""
        return self.retry.maximum_attempts or DEFAULT_MAX_ATTEMPTS

    @property
    def retry_backoff(self) -> float:
        """Seconds before the first retry."""
        initial = self.retry.initial_interval_seconds
        return DEFAULT_RETRY_BACKOFF if initial is None else initial

    @property
    def origin(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the handler's input model."""
        return self.input_model.model_json_schema()

    def describe(self) -> dict[str, Any]:
        """What ``kubeworkers handlers`` prints for this handler."""
        return {
            "name": self.name,
            "function": self.origin,
            "async": self.is_async,
            "timeout": self.timeout,
            "soft_timeout": self.soft_timeout,
            "max_attempts": self.max_attempts,
            "retry_backoff": self.retry_backoff,
            "retry": self.retry.model_dump(mode="json"),
            "concurrency": self.concurrency,
            "isolation": self.isolation,
            "description": self.description,
            "input_schema": self.input_schema(),
            "output_schema": self.output_model.model_json_schema() if self.output_model else None,
        }


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def inspect_handler(name: str, func: Callable[..., Any], **policy: Unpack[Policy]) -> HandlerSpec:
    """Check ``func``'s signature and build its :class:`HandlerSpec` (raises :class:`RegistryError`)."""
    if not callable(func):
        raise RegistryError(f"handler {name!r}: {func!r} is not callable")
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise RegistryError(f"handler {name!r}: cannot resolve the type hints of {func!r}: {exc}") from exc
    params = list(inspect.signature(func).parameters.values())
    if not params or not _is_model(hints.get(params[0].name)):
        raise RegistryError(
            f"handler {name!r}: the first parameter of {func.__qualname__} must be annotated "
            "with a pydantic model (the job's input)"
        )
    context_param: str | None = None
    for param in params[1:]:
        if hints.get(param.name) is JobContext or (param.name == "ctx" and param.name not in hints):
            context_param = param.name
        elif param.default is inspect.Parameter.empty:
            raise RegistryError(
                f"handler {name!r}: parameter {param.name!r} of {func.__qualname__} is neither "
                "the input model nor a JobContext"
            )
    ret = hints.get("return")
    unknown = sorted(set(policy) - Policy.__optional_keys__)
    if unknown:
        raise RegistryError(f"handler {name!r}: unknown option(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(Policy.__optional_keys__))}")
    timeout = _seconds(name, "timeout", policy.get("timeout"))
    soft_timeout = _seconds(name, "soft_timeout", policy.get("soft_timeout"))
    check_timeouts(soft_timeout, timeout, f"handler {name!r}: ", RegistryError)
    retry = _retry_policy(name, policy)
    concurrency = policy.get("concurrency")
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise RegistryError(f"handler {name!r}: concurrency must be a whole number >= 1, got {concurrency!r}")
    isolation = policy.get("isolation", "none")
    if isolation not in ("none", "process"):
        raise RegistryError(f"handler {name!r}: isolation must be 'none' or 'process', got {isolation!r}")
    if isolation == "process" and "<locals>" in func.__qualname__:
        raise RegistryError(f"handler {name!r}: a process-isolated handler must be defined at module level "
                            f"(the child process imports it by name), not {func.__qualname__}")
    return HandlerSpec(
        name=name,
        func=func,
        input_model=hints[params[0].name],
        output_model=ret if _is_model(ret) else None,
        timeout=timeout,
        soft_timeout=soft_timeout,
        retry=retry,
        concurrency=concurrency,
        isolation=isolation,
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(func),
        description=inspect.getdoc(func) or "",
    )


def _seconds(name: str, option: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise RegistryError(f"handler {name!r}: {option} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_timeouts(soft: float | None, hard: float | None, where: str, error: type[Exception]) -> None:
    """Refuse a soft timeout that does not come before the hard one: it would never be felt."""
    if soft is not None and hard is not None and soft >= hard:
        raise error(f"{where}soft_timeout ({soft:g}s) must be shorter than timeout ({hard:g}s)")


def _retry_policy(name: str, policy: Policy) -> RetryPolicy:
    """The handler's complete retry policy: ``retry``, its two shortcuts, then the defaults."""
    retry = policy.get("retry") or RetryPolicy()
    if not isinstance(retry, RetryPolicy):
        raise RegistryError(f"handler {name!r}: retry must be a kubeworkers.RetryPolicy, not {type(retry).__name__}")
    shortcuts: dict[str, Any] = {}
    for option, fld in (("max_attempts", "maximum_attempts"), ("retry_backoff", "initial_interval_seconds")):
        if option in policy:
            if getattr(retry, fld) is not None:
                raise RegistryError(f"handler {name!r}: give {option} or retry.{fld}, not both")
            shortcuts[fld] = policy[option]  # type: ignore[literal-required]
    try:
        own = RetryPolicy.model_validate({**retry.model_dump(exclude_none=True), **shortcuts})
    except ValidationError as exc:
        shortcut = {"maximum_attempts": "max_attempts", "initial_interval_seconds": "retry_backoff"}

        def where(loc: tuple[int | str, ...]) -> str:
            if loc and loc[0] in shortcuts:
                return shortcut[str(loc[0])]
            return "retry." + ".".join(map(str, loc))

        problems = "; ".join(f"{where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"handler {name!r}: invalid retry policy: {problems}") from None
    return own.over(DEFAULT_RETRY)


class Registry:
    """Handler name -> :class:`HandlerSpec`. The module-level :data:`registry` is the default."""

    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}

    def add(self, spec: HandlerSpec) -> HandlerSpec:
        existing = self._handlers.get(spec.name)
        if existing is not None:
            # Importing one module twice (as __main__ and by name, or a reload)
            # registers the same function again: that is not a conflict.
            if existing.origin == spec.origin:
                self._handlers[spec.name] = spec
                return spec
            raise DuplicateHandlerError(
                f"handler {spec.name!r} is registered twice: by {existing.origin} and by {spec.origin}"
            )
        self._handlers[spec.name] = spec
        return spec

    def handler(self, name: str, **policy: Unpack[Policy]) -> Callable[[F], F]:
        """Decorator registering a function as handler ``name`` in this registry.

        The options (``timeout``, ``soft_timeout``, ``retry``, ``max_attempts``,
        ``retry_backoff``, ``concurrency``, ``isolation``) are those of :class:`Policy`.
        """
        if not name or any(c.isspace() for c in name):
            raise RegistryError(f"handler name {name!r} must be non-empty and contain no spaces")

        def decorate(func: F) -> F:
            self.add(inspect_handler(name, func, **policy))
            return func

        return decorate

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def __getitem__(self, name: str) -> HandlerSpec:
        return self._handlers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(sorted(self._handlers.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._handlers)

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)


#: The process-wide registry that :func:`handler` and :class:`App` register into.
default_registry = Registry()
registry = default_registry


#: ``@handler(name, **policy)``: register a function as handler ``name`` in the process-wide registry.
handler = default_registry.handler


class App:
    """A namespace of handlers: ``App("open_notebook").handler("process_source")`` registers
    ``open_notebook.process_source``."""

    def __init__(self, name: str, *, registry: Registry | None = None) -> None:
        if not name or any(c.isspace() for c in name) or not all(name.split(".")):
            raise RegistryError(f"app name {name!r} is not valid")
        self.name = name
        self.registry = registry if registry is not None else default_registry

    def qualified(self, name: str) -> str:
        return f"{self.name}.{name}"

    def handler(self, name: str, **policy: Unpack[Policy]) -> Callable[[F], F]:
        """Register a function as handler ``<app>.<name>`` (options: :class:`Policy`)."""
        return self.registry.handler(self.qualified(name), **policy)


def import_modules(modules: list[str] | str) -> list[str]:
    """Import handler modules (a list, or a comma-separated string); returns the names imported."""
    names = [m.strip() for m in modules.split(",")] if isinstance(modules, str) else modules
    imported = []
    for module in names:
        if module:
            importlib.import_module(module)
            imported.append(module)
    return imported
