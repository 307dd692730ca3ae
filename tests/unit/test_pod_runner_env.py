"""Pure parts of the kubelet stand-in: $(VAR) expansion and fieldRef lookup."""

from hack.pod_runner import expand, field_value


def test_expand_replaces_known_variables_and_keeps_unknown_ones() -> None:
    assert expand("$(A)-$(B)-$(MISSING)", {"A": "1", "B": "2"}) == "1-2-$(MISSING)"


def test_expand_treats_double_dollar_as_an_escape() -> None:
    assert expand("$$(A)", {"A": "1"}) == "$(A)"


def test_field_value_reads_metadata_labels_and_spec() -> None:
    pod = {"metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"app": "x"}},
           "spec": {"nodeName": "node-1"}, "status": {}}
    assert field_value(pod, "metadata.name") == "p"
    assert field_value(pod, "metadata.labels['app']") == "x"
    assert field_value(pod, "spec.nodeName") == "node-1"
    assert field_value(pod, "status.podIP") is None
