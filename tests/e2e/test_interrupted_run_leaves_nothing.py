"""An interrupted test run leaves nothing running: Ctrl-C, a timeout's SIGTERM, even SIGKILL.

A pytest session of its own (tests/e2e/interrupted_run_probe.py) starts an operator, the
kubelet stand-in with a worker running a long job, a worker process and redis-servers against
the test cluster, and is interrupted; afterwards no process it started is alive.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hack import processes
from hack.polling import WaitTimeout, wait_for
from tests.support.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "e2e" / "interrupted_run_probe.py"


def alive(pid: int) -> bool:
    return processes.process_token(pid) is not None


def command_of(pid: int) -> str:
    try:
        return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return f"{pid} (gone)"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_an_interrupted_test_run_leaves_no_process_of_its_own_running(
    cluster: Cluster, crds: None, tmp_path: Path, sig: signal.Signals
) -> None:
    ready = tmp_path / "ready.json"
    env = {**os.environ, "KUBEWORKERS_KUBECONFIG": cluster.kubeconfig, "KUBEWORKERS_LOCAL_DIR": str(tmp_path),
           "KW_PROBE_READY": str(ready)}
    env.pop("PYTEST_CURRENT_TEST", None)
    with (tmp_path / "run.log").open("wb") as log:
        # Not through processes.spawn: this run must outlive nothing but its own test.
        run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(PROBE)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    namespace = None
    try:
        wait_for(lambda: ready.exists() or run.poll() is not None, timeout=180, what="the probe run to start all")
        assert ready.exists(), (tmp_path / "run.log").read_text()
        started = json.loads(ready.read_text())
        namespace = started["namespace"]
        pids = [pid for group in started["pids"].values() for pid in group]
        assert all(started["pids"].values()) and all(alive(pid) for pid in pids), started
        owner = processes.process_token(run.pid)
        assert owner is not None
        marked = set(processes.processes_of(tmp_path, owner))
        unmarked = {name: group for name, group in started["pids"].items() if not set(group) <= marked}
        assert not unmarked, f"started without the run's marks: {unmarked}"

        run.send_signal(sig)
        run.wait(120)

        def leftovers() -> list[int]:
            return sorted({pid for pid in pids if alive(pid)} | set(processes.processes_of(tmp_path, owner)))

        try:
            wait_for(lambda: not leftovers(), timeout=30, what="every process of the interrupted run to end")
        except WaitTimeout:
            pytest.fail(f"left running after {sig.name}: {[command_of(pid) for pid in leftovers()]}")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if namespace:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
