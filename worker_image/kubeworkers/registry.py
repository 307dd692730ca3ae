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
from typing import Any, TypedDict, TypeVar, Unpack

from pydantic import BaseModel

from kubeworkers.context import JobContext
from kubeworkers.protocol import MAX_ATTEMPTS_LIMIT

F = TypeVar("F", bound=Callable[..., Any])

#: Defaults of a handler registered without options.
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RETRY_BACKOFF = 1.0


class Policy(TypedDict, total=False):
    """The options of ``@handler(name, **policy)``; each one the handler does not set has its default."""

    #: Seconds one attempt may run before it is cancelled and fails with ``Timeout`` (default None: no limit).
    timeout: float | None
    #: Attempts before the job fails for good and is dead-lettered (default :data:`DEFAULT_MAX_ATTEMPTS`).
    max_attempts: int
    #: Seconds before the first retry, doubled per attempt, with jitter (default :data:`DEFAULT_RETRY_BACKOFF`).
    retry_backoff: float


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
    #: Seconds one attempt may run before it is cancelled (None: no limit).
    timeout: float | None = None
    #: Attempts before the job is dead-lettered (1: never retried).
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Seconds before the first retry; doubles with each attempt, with jitter.
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    #: Name of the parameter receiving the JobContext, if the handler takes one.
    context_param: str | None = None
    is_async: bool = True
    description: str = field(default="")

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
            "max_attempts": self.max_attempts,
            "retry_backoff": self.retry_backoff,
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
    timeout = policy.get("timeout")
    max_attempts = int(policy.get("max_attempts", DEFAULT_MAX_ATTEMPTS))
    retry_backoff = float(policy.get("retry_backoff", DEFAULT_RETRY_BACKOFF))
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise RegistryError(f"handler {name!r}: timeout must be a finite number of seconds > 0, got {timeout}")
    if not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise RegistryError(f"handler {name!r}: max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, got {max_attempts}")
    if not math.isfinite(retry_backoff) or retry_backoff < 0:
        raise RegistryError(f"handler {name!r}: retry_backoff must be >= 0, got {retry_backoff}")
    return HandlerSpec(
        name=name,
        func=func,
        input_model=hints[params[0].name],
        output_model=ret if _is_model(ret) else None,
        timeout=None if timeout is None else float(timeout),
        max_attempts=max_attempts,
        retry_backoff=retry_backoff,
        context_param=context_param,
        is_async=inspect.iscoroutinefunction(func),
        description=inspect.getdoc(func) or "",
    )


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

        ``timeout``: seconds one attempt may run (None: unlimited). ``max_attempts``:
        attempts before the job goes to the dead-letter stream. ``retry_backoff``:
        seconds before the first retry, doubled per attempt, with jitter (see :class:`Policy`).
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
