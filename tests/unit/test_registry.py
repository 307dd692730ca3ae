"""The handler registry: pure logic."""

from __future__ import annotations

from typing import Any

import pytest
from kubeworkers import App, DuplicateHandlerError, JobContext, Registry, RegistryError, RetryPolicy
from pydantic import BaseModel


class Inp(BaseModel):
    text: str


class Out(BaseModel):
    n: int


def test_handler_records_its_models_policy_and_context_parameter() -> None:
    reg = Registry()

    @reg.handler("count", timeout=5, max_attempts=4, retry_backoff=0.5)
    async def count(inp: Inp, ctx: JobContext) -> Out:
        """Count things."""
        return Out(n=len(inp.text))

    spec = reg["count"]
    assert (spec.input_model, spec.output_model) == (Inp, Out)
    assert (spec.timeout, spec.max_attempts, spec.retry_backoff) == (5.0, 4, 0.5)
    assert spec.context_param == "ctx" and spec.is_async
    assert spec.describe()["input_schema"]["properties"]["text"]["type"] == "string"
    assert spec.describe()["description"] == "Count things."


def test_plain_function_is_registered_as_a_sync_handler_without_context() -> None:
    reg = Registry()

    @reg.handler("sync")
    def sync(inp: Inp) -> dict[str, int]:
        return {}

    assert not reg["sync"].is_async and reg["sync"].context_param is None and reg["sync"].output_model is None


def test_registering_another_function_under_a_taken_name_is_an_import_time_error() -> None:
    reg = Registry()

    @reg.handler("same")
    async def first(inp: Inp) -> None: ...

    with pytest.raises(DuplicateHandlerError, match=r"'same'.*first.*second"):

        @reg.handler("same")
        async def second(inp: Inp) -> None: ...


def test_registering_the_same_function_again_is_not_a_conflict() -> None:
    reg = Registry()

    async def again(inp: Inp) -> None: ...

    reg.handler("again")(again)
    reg.handler("again")(again)
    assert len(reg) == 1


def test_app_groups_handlers_under_its_namespace() -> None:
    reg = Registry()
    app = App("open_notebook", registry=reg)

    @app.handler("process_source", max_attempts=2)
    async def process_source(inp: Inp) -> None: ...

    assert "open_notebook.process_source" in reg
    assert reg["open_notebook.process_source"].max_attempts == 2


@pytest.mark.parametrize("bad", ["", "has space", "a..b"])
def test_invalid_app_names_are_refused(bad: str) -> None:
    with pytest.raises(RegistryError):
        App(bad, registry=Registry())


def test_first_parameter_must_be_a_pydantic_model() -> None:
    reg = Registry()
    with pytest.raises(RegistryError, match="first parameter"):

        @reg.handler("untyped")
        async def untyped(inp: dict[str, str]) -> None: ...


def test_extra_parameters_must_be_the_context_or_have_defaults() -> None:
    reg = Registry()
    with pytest.raises(RegistryError, match="'other'"):

        @reg.handler("extra")
        async def extra(inp: Inp, other: int) -> None: ...


@pytest.mark.parametrize(("option", "value"), [
    ("timeout", 0), ("timeout", float("nan")), ("timeout", float("inf")), ("max_attempts", 0),
    ("max_attempts", 10**30), ("retry_backoff", -1), ("retry_backoff", float("nan")),
])
def test_nonsensical_policies_are_refused(option: str, value: float) -> None:
    reg = Registry()

    async def h(inp: Inp) -> None: ...

    with pytest.raises(RegistryError, match=option):
        reg.handler("h", **{option: value})(h)  # type: ignore[arg-type]


def test_a_misspelt_option_is_an_import_time_error_naming_the_known_ones() -> None:
    reg = Registry()

    async def h(inp: Inp) -> None: ...

    known = "concurrency, isolation, max_attempts, retry, retry_backoff, soft_timeout, timeout"
    with pytest.raises(RegistryError, match=rf"timout.*known: {known}"):
        reg.handler("h", timout=5)(h)  # type: ignore[call-arg]


def test_the_module_decorator_and_apps_take_the_same_options_as_a_registry() -> None:
    reg = Registry()
    app = App("app", registry=reg)

    @app.handler("h", timeout=2, max_attempts=4, retry_backoff=0.5)
    async def h(inp: Inp) -> None: ...

    spec = reg["app.h"]
    assert (spec.timeout, spec.max_attempts, spec.retry_backoff) == (2.0, 4, 0.5)


@pytest.mark.parametrize(("policy", "complaint"), [
    ({"timeout": 5, "soft_timeout": 5}, "soft_timeout .* must be shorter than timeout"),
    ({"soft_timeout": -1}, "soft_timeout must be"),
    ({"max_attempts": 2, "retry": RetryPolicy(maximum_attempts=3)}, "max_attempts or retry.maximum_attempts"),
    ({"retry": {"maximum_attempts": 3}}, "retry must be a kubeworkers.RetryPolicy"),
    ({"concurrency": 0}, "concurrency must be"),
    ({"isolation": "thread"}, "isolation must be"),
    ({"isolation": "process"}, "must be defined at module level"),
])
def test_policies_that_cannot_work_are_refused_at_registration(policy: dict[str, Any], complaint: str) -> None:
    async def h(inp: Inp) -> None: ...

    with pytest.raises(RegistryError, match=complaint):
        Registry().handler("h", **policy)(h)


def test_a_handlers_retry_policy_is_completed_from_the_defaults_and_its_shortcuts() -> None:
    reg = Registry()

    @reg.handler("h", max_attempts=5, retry=RetryPolicy(backoff_coefficient=3.0, non_retryable_error_types=("X",)))
    async def h(inp: Inp) -> None: ...

    retry = reg["h"].retry
    assert (retry.maximum_attempts, retry.initial_interval_seconds, retry.backoff_coefficient,
            retry.non_retryable_error_types) == (5, 1.0, 3.0, ("X",))
    assert reg["h"].max_attempts == 5
