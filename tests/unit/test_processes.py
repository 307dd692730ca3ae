"""hack/processes.py: what a run starts dies with it, and what a killed run left is reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hack import processes
from hack.polling import wait_for

REPO = Path(__file__).resolve().parents[2]

# A parent that starts a child from a short-lived thread (as the kubelet stand-in's control
# loop does), prints the child's pid, and waits to be killed.
PARENT = textwrap.dedent("""
    import os, threading, time
    from hack import processes
    started = []
    t = threading.Thread(target=lambda: started.append(processes.spawn(["sleep", "600"])))
    t.start(); t.join()
    # Until the kernel has let the thread go, the child's parent-death signal cannot have fired.
    keep = 1 + (processes._spawner_thread is not None)  # the main thread, and the spawner's
    while len(os.listdir("/proc/self/task")) > keep:
        time.sleep(0.01)
    time.sleep(0.2)
    print(started[0].pid, flush=True)
    time.sleep(600)
""")


def alive(pid: int) -> bool:
    return processes.process_token(pid) is not None


def test_a_spawned_child_outlives_the_thread_that_asked_for_it_and_dies_with_the_process() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child), "the child died with the thread that started it"
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(child), timeout=10, what="the child to die with its parent", every=0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_the_reaper_kills_what_a_dead_run_left_in_its_state_dir_and_spares_a_live_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.Popen(["sleep", "600"])
    dead_owner = processes.process_token(gone.pid)
    gone.kill()
    gone.wait()
    assert dead_owner is not None and not processes.owner_alive(dead_owner)
    live_owner = processes.process_token(os.getpid())
    assert live_owner is not None

    started = []
    for owner in (dead_owner, live_owner):
        monkeypatch.setattr(processes, "_run", processes.Run(str(tmp_path.resolve()), owner))
        # owned=True would also tie them to us; the marks and records are what the reaper reads.
        started.append(processes.spawn(["sleep", "600"]))
    monkeypatch.setattr(processes, "_run", None)
    orphan, ours = started
    try:
        assert processes.processes_of(tmp_path, dead_owner) == [orphan.pid]
        assert processes.reap_stale(tmp_path) == [orphan.pid]
        orphan.wait(10)
        assert orphan.returncode == -signal.SIGKILL
        assert ours.poll() is None, "the reaper killed a process whose run is alive"
        assert processes.processes_of(tmp_path, live_owner) == [ours.pid]
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
