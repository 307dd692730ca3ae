"""The CRD schemas in crds/ and the pydantic models in kubeworkers.resources describe one API.

The walk compares pydantic's JSON schema of each model with the CRD's OpenAPI
schema, node by node: property names, types and formats, enums, required
fields, bounds and patterns, and defaults (the CRD's after nested defaulting,
the way the apiserver applies them, against the model's).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
import yaml
from kubeworkers import resources
from kubeworkers.protocol import JobState, Priority
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "jobs": REPO / "crds" / "workers.io_jobs.yaml",
    "workerpools": REPO / "crds" / "workers.io_workerpools.yaml",
    "schedules": REPO / "crds" / "workers.io_schedules.yaml",
}
# Bounds and string shapes that must be the same on both sides.
CONSTRAINTS = (
    *("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    *("minLength", "maxLength", "pattern", "format", "enum", "minItems", "maxItems"),
)

Schema = dict[str, Any]


def load_crd(plural: str) -> Schema:
    crd: Schema = yaml.safe_load(CRD_FILES[plural].read_text())
    return crd


def version_schema(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def crd_node(plural: str, *path: str) -> Schema:
    node = version_schema(load_crd(plural))
    for name in path:
        node = node["properties"][name]
    return node


# --------------------------------------------------------------------------- the walk


def apply_crd_defaults(node: Schema, value: Any) -> Any:
    """Fill in defaults below ``value`` as the apiserver does (a defaulted parent gets its children's)."""
    if not isinstance(value, dict) or "properties" not in node:
        return value
    out = dict(value)
    for name, child in node["properties"].items():
        if name not in out and "default" in child:
            out[name] = copy.deepcopy(child["default"])
        if name in out:
            out[name] = apply_crd_defaults(child, out[name])
    return out


def crd_constraints(node: Schema) -> dict[str, Any]:
    # OpenAPI v3.0 spells an exclusive bound as a flag beside minimum; JSON Schema as a number.
    found = {key: node[key] for key in CONSTRAINTS if key in node}
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if found.pop(flag, False) is True:
            found[flag] = found.pop(bound)
    return found


class Walk:
    """Compare one model's JSON schema with one CRD node, collecting every mismatch."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.root = model.model_json_schema(by_alias=True, mode="validation")
        self.defs: dict[str, Schema] = self.root.get("$defs", {})
        self.problems: list[str] = []

    def resolve(self, node: Schema) -> tuple[Schema, type[BaseModel] | None]:
        """Follow $ref and strip ``| None``; return the node and the model it describes, if any."""
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            assert len(options) == 1, f"unexpected union {node}"
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            merged.update(options[0])
            node = merged
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = {**self.defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        model = getattr(resources, node.get("title", ""), None) if "properties" in node else None
        return node, model if isinstance(model, type) and issubclass(model, BaseModel) else None

    def compare(self, py: Schema, crd: Schema, path: str, model: type[BaseModel] | None = None) -> None:
        py, nested = self.resolve(py)
        model = nested or model
        problem = self.problems.append
        if "type" not in py:
            # Any: the CRD must pass any JSON through.
            if "type" in crd or not crd.get("x-kubernetes-preserve-unknown-fields"):
                problem(f"{path}: model takes any JSON, CRD node is {crd.get('type')!r} without pass-through")
            return
        if py["type"] != crd.get("type"):
            problem(f"{path}: type {py['type']!r} in model, {crd.get('type')!r} in CRD")
            return
        want = {key: py[key] for key in CONSTRAINTS if key in py}
        if want != crd_constraints(crd):
            problem(f"{path}: constraints {want} in model, {crd_constraints(crd)} in CRD")
        if py["type"] == "array":
            self.compare(py["items"], crd["items"], f"{path}[]", model)
        elif py["type"] == "object":
            self.compare_object(py, crd, path, model)

    def compare_object(self, py: Schema, crd: Schema, path: str, model: type[BaseModel] | None) -> None:
        problem = self.problems.append
        if "properties" in py:
            if model is None:
                problem(f"{path}: no model found for {py.get('title')}")
                return
            self.compare_properties(py, crd, path, model)
        elif py.get("additionalProperties") is True:
            if "properties" in crd or not crd.get("x-kubernetes-preserve-unknown-fields"):
                problem(f"{path}: model takes any object, CRD does not preserve unknown fields")
        elif isinstance(py.get("additionalProperties"), dict):
            if "additionalProperties" not in crd:
                problem(f"{path}: model is a map, CRD is not")
            else:
                self.compare(py["additionalProperties"], crd["additionalProperties"], f"{path}{{}}")
        else:
            problem(f"{path}: cannot compare object node {py}")

    def compare_properties(self, py: Schema, crd: Schema, path: str, model: type[BaseModel]) -> None:
        problem = self.problems.append
        py_props, crd_props = py["properties"], crd.get("properties", {})
        if set(py_props) != set(crd_props):
            problem(
                f"{path}: only in model {sorted(set(py_props) - set(crd_props))}, "
                f"only in CRD {sorted(set(crd_props) - set(py_props))}"
            )
        if set(py.get("required", [])) != set(crd.get("required", [])):
            problem(f"{path}: required {sorted(py.get('required', []))} in model, {crd.get('required', [])} in CRD")
        fields = {(info.alias or name): info for name, info in model.model_fields.items()}
        for name in sorted(set(py_props) & set(crd_props)):
            self.compare(py_props[name], crd_props[name], f"{path}.{name}", model)
            info = fields[name]
            if info.is_required():
                continue
            py_default = pydantic_core.to_jsonable_python(
                info.get_default(call_default_factory=True), by_alias=True, exclude_none=True
            )
            crd_default = apply_crd_defaults(crd_props[name], crd_props[name].get("default"))
            # An unset optional field and an empty list read the same on both sides.
            if py_default in (None, []) and crd_default is None:
                continue
            if py_default != crd_default:
                problem(f"{path}.{name}: default {py_default!r} in model, {crd_default!r} in CRD")


def disagreements(model: type[BaseModel], crd: Schema, path: str) -> list[str]:
    walk = Walk(model)
    walk.compare(walk.root, crd, path, model)
    return walk.problems


PAIRS = [
    (resources.JobSpec, "jobs", "spec"),
    (resources.JobStatus, "jobs", "status"),
    (resources.WorkerPoolSpec, "workerpools", "spec"),
    (resources.WorkerPoolStatus, "workerpools", "status"),
    (resources.ScheduleSpec, "schedules", "spec"),
    (resources.ScheduleStatus, "schedules", "status"),
]


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("model", "plural", "part"), PAIRS, ids=[f"{p}.{s}" for _, p, s in PAIRS])
def test_pydantic_model_and_crd_schema_agree(model: type[BaseModel], plural: str, part: str) -> None:
    assert disagreements(model, crd_node(plural, part), f"{plural}.{part}") == []


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda s: s["properties"].pop("cancel"), "only in model ['cancel']"),
        (lambda s: s["properties"].update(extra={"type": "string"}), "only in CRD ['extra']"),
        (lambda s: s["properties"]["priority"].update(default="high"), "default 'normal' in model, 'high'"),
        (lambda s: s["properties"]["priority"]["enum"].append("urgent"), "spec.priority: constraints"),
        (lambda s: s["properties"]["timeoutSeconds"].update(type="number"), "type 'integer' in model"),
        (lambda s: s["properties"]["timeoutSeconds"].update(minimum=0), "spec.timeoutSeconds: constraints"),
        (lambda s: s["required"].remove("pool"), "required ['pool'] in model"),
        (lambda s: s["properties"]["input"].pop("x-kubernetes-preserve-unknown-fields"), "any object"),
    ],
    ids=["missing", "extra", "default", "enum", "type", "minimum", "required", "pass-through"],
)
def test_agreement_check_reports_each_kind_of_drift(mutation: Any, expected: str) -> None:
    spec = crd_node("jobs", "spec")
    mutation(spec)
    found = disagreements(resources.JobSpec, spec, "jobs.spec")
    assert any(expected in problem for problem in found), found


def test_nested_crd_defaults_match_the_models_nested_defaults() -> None:
    # autoscaling defaults to {} in the CRD; the apiserver then fills in its children.
    spec = crd_node("workerpools", "spec")
    defaulted = apply_crd_defaults(spec, {"image": "img", "imports": ["m"]})
    assert defaulted == resources.WorkerPoolSpec(image="img", imports=["m"]).to_k8s()


def test_enums_are_the_shared_protocol_enums() -> None:
    assert crd_node("jobs", "spec", "priority")["enum"] == [p.value for p in Priority]
    assert crd_node("jobs", "status", "phase")["enum"] == [s.value for s in JobState]


def iter_fields(node: Schema, path: str) -> Any:
    for name, child in node.get("properties", {}).items():
        if path in CRD_FILES and name == "metadata":
            # The apiserver forbids saying anything about metadata (kubectl explain shows ObjectMeta's docs).
            continue
        yield f"{path}.{name}", child
        yield from iter_fields(child, f"{path}.{name}")
    if "items" in node:
        yield f"{path}[]", node["items"]
        yield from iter_fields(node["items"], f"{path}[]")


@pytest.mark.parametrize("plural", sorted(CRD_FILES))
def test_every_crd_field_has_a_description(plural: str) -> None:
    schema = version_schema(load_crd(plural))
    undocumented = [path for path, node in iter_fields(schema, plural) if not node.get("description", "").strip()]
    assert undocumented == []


@pytest.mark.parametrize(
    ("plural", "kind", "short_name"),
    [("jobs", "Job", "wj"), ("workerpools", "WorkerPool", "wp"), ("schedules", "Schedule", "wsch")],
)
def test_crd_names_group_and_scope(plural: str, kind: str, short_name: str) -> None:
    crd = load_crd(plural)
    assert crd["metadata"]["name"] == f"{plural}.{resources.GROUP}"
    assert crd["spec"]["group"] == resources.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["plural"] == plural
    assert crd["spec"]["names"]["shortNames"] == [short_name]
    assert crd["spec"]["names"]["categories"] == ["workers"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == resources.VERSION
    assert version["served"] and version["storage"]
    assert "status" in version["subresources"]


def schema_at(schema: Schema, json_path: str) -> Schema | None:
    node: Schema | None = schema
    for name in json_path.strip(".").split("."):
        if node is None or name not in node.get("properties", {}):
            return None
        node = node["properties"][name]
    return node


@pytest.mark.parametrize("plural", sorted(CRD_FILES))
def test_printer_columns_point_at_fields_of_their_type(plural: str) -> None:
    (version,) = load_crd(plural)["spec"]["versions"]
    schema = version_schema(load_crd(plural))
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = schema_at(schema, column["jsonPath"])
        assert node is not None, f"{column['name']}: {column['jsonPath']} is not in the schema"
        # A list of names prints as text (Schedule's Active column); a timestamp as an age.
        shown = "string" if node["type"] == "array" and node["items"]["type"] == "string" else node["type"]
        if column["type"] == "date" and node.get("format") == "date-time":
            shown = "date"
        assert shown == column["type"], column["name"]


def without_transition_rules(node: Any) -> Any:
    """``node`` without the CEL rules that compare with ``oldSelf`` (immutability)."""
    if isinstance(node, list):
        return [without_transition_rules(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: without_transition_rules(value) for key, value in node.items() if key != "x-kubernetes-validations"}
    rules = [rule for rule in node.get("x-kubernetes-validations", []) if "oldSelf" not in rule["rule"]]
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def test_schedule_job_template_spec_is_the_job_spec_without_its_immutability_rules() -> None:
    # One Job spec schema: when the Job CRD's spec changes, copy it into the Schedule CRD's
    # spec.jobTemplate.spec (dropping the oldSelf rules: a template may be edited).
    template = crd_node("schedules", "spec", "jobTemplate", "spec")
    job = without_transition_rules(crd_node("jobs", "spec"))
    assert {k: v for k, v in template.items() if k != "description"} == {
        k: v for k, v in job.items() if k != "description"
    }


def test_workerpool_scale_subresource_points_at_replicas_and_selector() -> None:
    (version,) = load_crd("workerpools")["spec"]["versions"]
    schema = version_schema(load_crd("workerpools"))
    scale = version["subresources"]["scale"]
    assert (schema_at(schema, scale["specReplicasPath"]) or {}).get("type") == "integer"
    assert (schema_at(schema, scale["statusReplicasPath"]) or {}).get("type") == "integer"
    assert (schema_at(schema, scale["labelSelectorPath"]) or {}).get("type") == "string"


def test_the_schedule_shape_rule_is_the_models_check() -> None:
    (rule,) = crd_node("schedules", "spec", "schedule")["x-kubernetes-validations"]
    for shape in resources.SCHEDULE_SHAPES:
        assert f"self.matches('{shape}')" in rule["rule"]
    assert " ".join(rule["message"].split()) == resources.SCHEDULE_SHAPE_REFUSED
