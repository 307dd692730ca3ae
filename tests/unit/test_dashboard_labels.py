"""The Grafana dashboard's queries against the label sets Prometheus would store.

The series come from the real metric objects of the operator, the autoscaler and a worker,
rendered as their ``/metrics`` would be. The chart's ServiceMonitor (operator) and PodMonitor
(workers) decide which target labels Prometheus adds, and ``honorLabels`` decides who wins a
clash: without it, the autoscaler's ``namespace="team-a"`` would be stored as
``exported_namespace`` and ``namespace`` would say where the *operator* runs, so the
dashboard's namespace variable would list ``kw-system`` and every panel filtered on it would
show the wrong pools (or none).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from tests.support.tools import CHART, MODES, RELEASE_NAMESPACE, render_chart

POOL_NAMESPACE, POOL = "team-a", "demo"
Series = dict[str, str]


def app_value(label: str) -> str:
    return {"namespace": POOL_NAMESPACE, "pool": POOL}.get(label, f"some-{label}")


def exported_series(registry: CollectorRegistry, *owners: object) -> list[tuple[str, Series]]:
    """What ``/metrics`` of ``registry`` shows once every labelled metric of ``owners`` has a child."""
    for owner in owners:
        for metric in vars(owner).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames and not metric._labelvalues:
                metric.labels(*(app_value(n) for n in metric._labelnames))
    out: list[tuple[str, Series]] = []
    for line in generate_latest(registry).decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, labels = line.rsplit(" ", 1)[0].partition("{")
        out.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels))))
    return out


@dataclass
class Target:
    """A scrape target as prometheus-operator configures it: its labels and honor_labels."""

    labels: Series
    honor_labels: bool

    def store(self, scraped: Series) -> Series:
        """The label set Prometheus stores for one scraped sample (its honor_labels rules)."""
        if self.honor_labels:
            return {**self.labels, **scraped}
        stored = dict(self.labels)
        for name, value in scraped.items():
            key = name
            while key in stored:
                key = f"exported_{key}"
            stored[key] = value
        return stored


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == kind]
    return found


def targets(tmp_path: Path) -> tuple[Target, Target]:
    """The operator's target (ServiceMonitor) and a worker pod's (PodMonitor) in the monitoring mode."""
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    service_monitor, pod_monitor = one(objs, "ServiceMonitor"), one(objs, "PodMonitor")
    (sm_endpoint,) = service_monitor["spec"]["endpoints"]
    (pm_endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    for endpoint in (sm_endpoint, pm_endpoint):
        # This simulation knows no relabeling: a new rule must be added here too.
        assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint, endpoint
    service = f"{service_monitor['metadata']['name']}"
    operator = Target({
        "job": service, "namespace": RELEASE_NAMESPACE, "service": service, "pod": "kw-kubeworkers-5d9f-abcde",
        "container": "operator", "endpoint": sm_endpoint["port"], "instance": "10.0.0.5:8080",
    }, honor_labels=bool(sm_endpoint.get("honorLabels", False)))
    worker = Target({
        "job": f"{pod_monitor['metadata']['namespace']}/{pod_monitor['metadata']['name']}",
        "namespace": POOL_NAMESPACE, "pod": f"{POOL}-workers-7c4b-fghij", "container": "worker",
        "endpoint": pm_endpoint["port"], "instance": "10.0.0.6:9100",
    }, honor_labels=bool(pm_endpoint.get("honorLabels", False)))
    return operator, worker


def stored_series(tmp_path: Path) -> tuple[dict[str, list[Series]], dict[str, list[Series]]]:
    """Per metric name: the series Prometheus stores, and the label sets the code exported."""
    from kubeworkers.metrics import WorkerMetrics
    from kubeworkers_operator.adapters.metrics import OperatorMetrics
    from kubeworkers_operator.autoscaling.metrics import AutoscalerMetrics

    operator_target, worker_target = targets(tmp_path)
    operator = OperatorMetrics()  # the autoscaler's metrics share the operator's registry, as in the operator
    worker = WorkerMetrics(POOL, POOL_NAMESPACE)
    # The jobs' counts and durations are a collector of the worker's own (no label children): one job.
    worker.outcome(app_value("handler"), app_value("outcome"))
    worker.observe(app_value("handler"), 0.1)
    scraped = [
        (operator_target, exported_series(operator.registry, operator, AutoscalerMetrics(operator.registry))),
        (worker_target, exported_series(worker.registry, worker)),
    ]
    stored: dict[str, list[Series]] = {}
    exported: dict[str, list[Series]] = {}
    for target, series in scraped:
        for name, labels in series:
            stored.setdefault(name, []).append(target.store(labels))
            exported.setdefault(name, []).append(labels)
    return stored, exported


def dashboard_queries() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "kubeworkers.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [str(v["query"].get("query") if isinstance(v.get("query"), dict) else v.get("query", ""))
                for v in dashboard["templating"]["list"] if v.get("type") != "datasource"]
    return [q for q in queries if "kubeworkers_" in q]


def recording_rule_queries(tmp_path: Path) -> list[str]:
    """The expressions of the chart's PrometheusRule (monitoring mode)."""
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    return [r["expr"] for obj in objs if obj["kind"] == "PrometheusRule"
            for group in obj["spec"]["groups"] for r in group["rules"]]


def labels_used(query: str) -> dict[str, set[str]]:
    """Metric name -> the labels the query filters, groups or takes values by."""
    grouped = {label.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", query)
               for label in group.split(",") if label.strip()}
    taken = set(re.findall(r"label_values\([^,]+,\s*(\w+)\s*\)", query))
    used: dict[str, set[str]] = {}
    for name, matchers in re.findall(r"\b(kubeworkers_[a-z_]+)(\{[^}]*\})?", query):
        filtered = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
        used.setdefault(name, set()).update(filtered | grouped | taken)
    return used


def test_every_dashboard_query_and_recording_rule_uses_labels_prometheus_stores_with_the_values_the_code_exports(
    tmp_path: Path,
) -> None:
    stored, exported = stored_series(tmp_path)
    problems = []
    queries = dashboard_queries()
    assert queries, "the dashboard has no kubeworkers queries"
    rules = recording_rule_queries(tmp_path)
    assert rules, "the chart's PrometheusRule records nothing"
    queries += rules
    for query in queries:
        for name, labels in labels_used(query).items():
            assert name in stored, f"{name} is exported by nobody ({query})"
            for label in labels - {"le"} if not name.endswith("_bucket") else labels:
                for series, original in zip(stored[name], exported[name], strict=True):
                    if label not in series:
                        problems.append(f"{name} has no label {label!r} in Prometheus: {query}")
                    elif label in original and series[label] != original[label]:
                        problems.append(f"{name}{{{label}}} is stored as {series[label]!r}, the code exported "
                                        f"{original[label]!r} (now in exported_{label}): {query}")
    assert not problems, "\n".join(sorted(set(problems)))


@pytest.mark.parametrize("monitor", ["ServiceMonitor", "PodMonitor"])
def test_monitors_keep_the_labels_kubeworkers_exports(tmp_path: Path, monitor: str) -> None:
    objs = render_chart(MODES["metrics-all-on"], tmp_path)
    spec = one(objs, monitor)["spec"]
    (endpoint,) = spec.get("endpoints") or spec["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
