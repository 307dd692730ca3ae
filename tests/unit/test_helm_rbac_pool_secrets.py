"""The operator's one right on Secrets: get, for the Redis URL a WorkerPool's spec.redis names.

Never list or watch (either would hand it every Secret of a served namespace), never a write;
granted with the other namespaced rules, so namespaced mode confines it to the watched namespace.
docs/security.md, *Reading a pool's Redis Secret*, says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import MODES, render_chart


def secret_rules(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in role["rules"] if "secrets" in rule["resources"]]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_operator_may_only_get_secrets_and_only_where_it_serves_pools(mode: str, tmp_path: Path) -> None:
    objs = render_chart(MODES[mode], tmp_path)
    granted = [(o["kind"], o["metadata"].get("namespace"), rule) for o in objs if o["kind"] in ("ClusterRole", "Role")
               for rule in secret_rules(o)]
    (only,) = granted
    kind, namespace, rule = only
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    watched = (MODES[mode] or {}).get("operator", {}).get("watchNamespace")
    if watched:
        assert (kind, namespace) == ("Role", watched)
    else:
        assert kind == "ClusterRole"
