"""WorkerPool autoscaling by queue depth (see ``docs/autoscaling.md``).

Layers, from pure to I/O: :mod:`.policy` (spec → numbers), :mod:`.decision`
(load → replicas, pure), :mod:`.load` (Redis observations → load, pure),
:mod:`.deletion_cost` (registry → pod annotations, pure), :mod:`.signals`
(Redis reads), :mod:`.kube` (Kubernetes writes), :mod:`.controller` (the loop).
"""

from kubeworkers_operator.autoscaling.controller import PoolAutoscaler
from kubeworkers_operator.autoscaling.decision import Decision, Load, ScalerState, decide, recommend
from kubeworkers_operator.autoscaling.kube import KubernetesScaler, KubeScaler
from kubeworkers_operator.autoscaling.metrics import AutoscalerMetrics
from kubeworkers_operator.autoscaling.policy import AutoscalingPolicy

__all__ = [
    "AutoscalerMetrics",
    "AutoscalingPolicy",
    "Decision",
    "KubeScaler",
    "KubernetesScaler",
    "Load",
    "PoolAutoscaler",
    "ScalerState",
    "decide",
    "recommend",
]
