"""Fixtures shared by the e2e tests (the control plane itself comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = ("jobs.workers.io", "workerpools.workers.io")


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> Cluster:
    """The CRDs from crds/ applied to the cluster and Established; returns the cluster.

    Server-side apply, so a CRD updated between sessions replaces the old one
    without tripping over the client-side last-applied annotation.
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", *(f"crd/{name}" for name in CRD_NAMES), "--timeout=60s")
    return cluster
