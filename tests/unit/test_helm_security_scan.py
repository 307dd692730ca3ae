"""checkov's static security scan of every rendered install mode: each finding is justified.

A finding that docs/security.md does not justify fails the test; so does a justification for a
check that no longer fires (the doc must not drift into fiction).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.support.tools import MODES, REPO, checkov_binary, helm_template

SECURITY_DOC = REPO / "docs" / "security.md"


def justified_checks() -> set[str]:
    """CKV ids in the first column of docs/security.md's findings table."""
    return set(re.findall(r"^\|\s*(CKV2?_K8S_\d+)\s*\|", SECURITY_DOC.read_text(), flags=re.MULTILINE))


def failed_checks(report: Any) -> list[dict[str, Any]]:
    reports = report if isinstance(report, list) else [report]
    failed: list[dict[str, Any]] = []
    for r in reports:
        failed.extend(r.get("results", {}).get("failed_checks", []))
    return failed


def test_every_checkov_finding_on_the_rendered_chart_is_justified_in_security_md(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for mode, values in MODES.items():
        (manifests / f"{mode}.yaml").write_text(helm_template(values, tmp_path).stdout)
    result = subprocess.run(
        [str(checkov_binary()), "--quiet", "--compact", "--framework", "kubernetes", "-d", str(manifests),
         "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    # checkov exits 1 when a check fails; anything else (or no JSON) is a broken run.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    failed = failed_checks(json.loads(result.stdout))
    found = {f["check_id"] for f in failed}
    justified = justified_checks()
    unjustified = sorted({f"{f['check_id']} {f['check_name']} ({f['resource']})" for f in failed
                          if f["check_id"] not in justified})
    assert not unjustified, "fix these or justify them in docs/security.md:\n" + "\n".join(unjustified)
    assert not justified - found, f"docs/security.md justifies checks that no longer fire: {justified - found}"


def test_the_scan_can_fail_a_manifest_that_breaks_the_rules(tmp_path: Path) -> None:
    # Proof that the scan above is not vacuous: a privileged root pod must produce findings.
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\n"
        "spec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {privileged: true}\n"
    )
    result = subprocess.run(
        [str(checkov_binary()), "--quiet", "--compact", "--framework", "kubernetes", "-d", str(tmp_path),
         "-o", "json", "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    found = {f["check_id"] for f in failed_checks(json.loads(result.stdout))}
    assert "CKV_K8S_16" in found, found  # "Container should not be privileged"
