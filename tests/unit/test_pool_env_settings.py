"""``KUBEWORKERS_*`` in a pool's ``spec.env``: worker settings are honoured, what the operator owns is refused."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubeworkers import resources, settings
from kubeworkers.resources import WorkerPoolSpec
from kubeworkers_operator.model.deployment import build_deployment
from pydantic import ValidationError

CRD = Path(__file__).resolve().parents[2] / "crds" / "workers.io_workerpools.yaml"


def env_of(spec: dict[str, Any]) -> dict[str, Any]:
    manifest = build_deployment(name="p", namespace="ns", uid="u", spec=WorkerPoolSpec.model_validate(spec))
    return {e["name"]: e for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}


def pool(*env: dict[str, Any]) -> dict[str, Any]:
    return {"image": "i", "imports": ["m"], "env": list(env)}


def test_worker_settings_in_spec_env_reach_the_workers() -> None:
    env = env_of(pool({"name": "KUBEWORKERS_RESULT_TTL", "value": "3600"},
                      {"name": "KUBEWORKERS_LOG_LEVEL", "value": "DEBUG"},
                      {"name": "KUBEWORKERS_MAX_BACKOFF", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}))
    assert env["KUBEWORKERS_RESULT_TTL"]["value"] == "3600"
    assert env["KUBEWORKERS_LOG_LEVEL"]["value"] == "DEBUG"
    assert env["KUBEWORKERS_MAX_BACKOFF"]["valueFrom"] == {"configMapKeyRef": {"name": "c", "key": "k"}}


@pytest.mark.parametrize("name", ["KUBEWORKERS_REDIS_URL", "KUBEWORKERS_POOL", "KUBEWORKERS_CONCURRENCY",
                                  "KUBEWORKERS_RESULTTTL"])
def test_what_the_operator_owns_or_no_setting_is_refused_with_a_message_naming_the_settable_ones(name: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(resources.POOL_ENV_REFUSED)):
        WorkerPoolSpec.model_validate(pool({"name": name, "value": "x"}))


def test_the_settable_ones_are_the_worker_settings_less_those_the_pool_spec_sets() -> None:
    built = {n for n in env_of(pool()) if n.startswith("KUBEWORKERS_")}
    ours = {var for var in settings.ENV.values() if var.startswith("KUBEWORKERS_")}  # POD_NAME is the pod's own
    assert set(resources.POOL_ENV_SETTINGS) == ours - built
    assert "KUBEWORKERS_RESULT_TTL" in resources.POOL_ENV_SETTINGS


def test_the_crd_refuses_the_same_names_with_the_same_message() -> None:
    docs = yaml.safe_load(CRD.read_text())
    env = docs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["env"]
    (rule,) = env["items"]["x-kubernetes-validations"]
    assert set(re.findall(r"'(KUBEWORKERS_[A-Z_]+)'", rule["rule"])) == set(resources.POOL_ENV_SETTINGS)
    assert rule["message"] == resources.POOL_ENV_REFUSED
