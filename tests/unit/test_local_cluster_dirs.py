"""Local control planes in directories of their own: the tests', the cluster-wide tests', the demo's."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from hack.local_cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_and_the_tests_use_different_directories_and_kubeconfigs() -> None:
    demo_kubeconfig = subprocess.run(["bash", str(REPO / "hack" / "demo.sh"), "env"], capture_output=True,
                                     text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout.strip()
    tests, cluster_wide = LocalCluster.for_tests(), LocalCluster.for_cluster_wide_tests()
    assert demo_kubeconfig == f"export KUBECONFIG={REPO / '.local' / 'demo' / 'kubeconfig'}"
    kubeconfigs = {str(tests.kubeconfig), str(cluster_wide.kubeconfig), demo_kubeconfig.split("=", 1)[1]}
    assert len(kubeconfigs) == 3
    states = [tests.state, cluster_wide.state, LocalCluster(REPO / ".local" / "demo").state]
    assert len(set(states)) == 3
    assert not any(a != b and a in b.parents for a in states for b in states), "one state dir inside another"


def test_a_recorded_port_another_process_took_is_chosen_anew(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path)
    first = cluster.ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.apiserver))
        squatter.listen()
        again = cluster.ports()
    assert again.apiserver != first.apiserver
    assert again.etcd_client == first.etcd_client  # the free ones are kept
    assert json.loads((cluster.state / "ports.json").read_text())["apiserver"] == again.apiserver
