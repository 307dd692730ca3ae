"""The handler registry: pure logic."""

from __future__ import annotations

import pytest
from kubeworkers import App, DuplicateHandlerError, JobContext, Registry, RegistryError
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

    with pytest.raises(RegistryError, match=r"timout.*known: max_attempts, retry_backoff, timeout"):
        reg.handler("h", timout=5)(h)  # type: ignore[call-arg]


def test_the_module_decorator_and_apps_take_the_same_options_as_a_registry() -> None:
    reg = Registry()
    app = App("app", registry=reg)

    @app.handler("h", timeout=2, max_attempts=4, retry_backoff=0.5)
    async def h(inp: Inp) -> None: ...

    spec = reg["app.h"]
    assert (spec.timeout, spec.max_attempts, spec.retry_backoff) == (2.0, 4, 0.5)
