"""The example manifests are valid for the models and for the handlers they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubeworkers.examples  # noqa: F401  (registers the example handlers)
import pytest
import yaml
from kubeworkers.registry import default_registry
from kubeworkers.resources import (
    API_VERSION,
    MIN_ABOVE_MAX,
    REPLICAS_OUT_OF_BOUNDS,
    RETRY_MAXIMUM_BELOW_INITIAL,
    SOFT_NOT_BELOW_HARD,
    JobSpec,
    ScheduleSpec,
    WorkerPoolSpec,
)
from kubeworkers_operator.model import cron
from pydantic import ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    assert doc["apiVersion"] == API_VERSION
    return doc


@pytest.mark.parametrize("name", ["job.yaml", "slow-job.yaml", "delayed-job.yaml"])
def test_example_job_input_is_valid_for_its_handler_on_the_demo_pool(name: str) -> None:
    spec = JobSpec.model_validate(load(name)["spec"])
    pool = WorkerPoolSpec.model_validate(load("workerpool.yaml")["spec"])
    assert spec.pool == load("workerpool.yaml")["metadata"]["name"]
    assert pool.handlers is not None and spec.handler in pool.handlers
    handler = default_registry[spec.handler]
    handler.input_model.model_validate(spec.input)


def test_example_schedule_runs_a_valid_job_on_the_demo_pool() -> None:
    spec = ScheduleSpec.model_validate(load("schedule.yaml")["spec"])
    pool = WorkerPoolSpec.model_validate(load("workerpool.yaml")["spec"])
    job = spec.job_template.spec
    assert job.pool == load("workerpool.yaml")["metadata"]["name"]
    assert pool.handlers is not None and job.handler in pool.handlers
    default_registry[job.handler].input_model.model_validate(job.input)
    assert spec.schedule == "@every 30s"
    cron.parse(spec.schedule)


def test_example_pool_declares_exactly_the_example_handlers() -> None:
    pool = WorkerPoolSpec.model_validate(load("workerpool.yaml")["spec"])
    assert pool.imports == ["kubeworkers.examples"]
    registered = {h.name for h in default_registry if h.func.__module__ == "kubeworkers.examples"}
    assert set(pool.handlers or []) == registered


BAD_CREATES = sorted(
    p
    for p in (EXAMPLES / "bad-jobs").glob("*.yaml")
    if "# after:" not in p.read_text() and "# expect: spec." in p.read_text()
)


@pytest.mark.parametrize("path", BAD_CREATES, ids=[p.stem for p in BAD_CREATES])
def test_bad_example_is_refused_by_the_model_too(path: Path) -> None:
    # Edits of existing objects (transition rules) need the apiserver: tests/e2e/test_admission.py.
    doc = yaml.safe_load(path.read_text())
    model = {"Job": JobSpec, "WorkerPool": WorkerPoolSpec, "Schedule": ScheduleSpec}[doc["kind"]]
    with pytest.raises(ValidationError) as refused:
        model.model_validate(doc["spec"])
    field = refused.value.errors()[0]["loc"]
    expect = next(line for line in path.read_text().splitlines() if line.startswith("# expect: "))
    # "spec.<field>: ..." in the apiserver's message; the model names the field (or the message, for CEL rules).
    named = expect.removeprefix("# expect: spec.").split(":")[0]
    assert named in field or named in str(refused.value)


def test_model_and_crd_share_the_cross_field_messages() -> None:
    crd = yaml.safe_load((EXAMPLES.parent / "crds" / "workers.io_workerpools.yaml").read_text())
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert {rule["message"] for rule in rules} == {MIN_ABOVE_MAX, REPLICAS_OUT_OF_BOUNDS}


def test_job_model_and_crd_share_the_cross_field_messages() -> None:
    crd = yaml.safe_load((EXAMPLES.parent / "crds" / "workers.io_jobs.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    messages = {rule["message"] for rule in spec["x-kubernetes-validations"]}
    messages |= {rule["message"] for rule in spec["properties"]["retry"]["x-kubernetes-validations"]}
    assert {SOFT_NOT_BELOW_HARD, RETRY_MAXIMUM_BELOW_INITIAL} <= messages
    with pytest.raises(ValidationError, match=SOFT_NOT_BELOW_HARD):
        JobSpec.model_validate({"pool": "p", "handler": "h", "timeoutSeconds": 5, "softTimeoutSeconds": 5})
    with pytest.raises(ValidationError, match=RETRY_MAXIMUM_BELOW_INITIAL.replace(".", r"\.")):
        JobSpec.model_validate({"pool": "p", "handler": "h",
                                "retry": {"initialIntervalSeconds": 10, "maximumIntervalSeconds": 1}})


def test_every_bad_example_quotes_the_message_it_is_refused_with() -> None:
    bad = sorted((EXAMPLES / "bad-jobs").glob("*.yaml"))
    assert len(bad) >= 10
    for path in bad:
        expects = [line for line in path.read_text().splitlines() if line.startswith("# expect: ")]
        assert len(expects) == 1, path
