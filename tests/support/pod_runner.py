"""The kubelet stand-in, for tests: see :mod:`hack.pod_runner`."""

from hack.pod_runner import PodRunner, expand, field_value

__all__ = ["PodRunner", "expand", "field_value"]
