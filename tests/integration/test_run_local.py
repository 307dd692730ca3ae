"""``kubeworkers run-local``: one attempt of a handler in the command's own process, no Redis
(the tests point the Redis URL at a port nobody listens on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.workers import REPO

HANDLERS = "tests.integration.local_handlers"


def run_local(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
    env.update(PYTHONPATH=str(REPO), KUBEWORKERS_REDIS_URL="redis://127.0.0.1:1/0")
    return subprocess.run([sys.executable, "-m", "kubeworkers", "run-local", "--import", HANDLERS, *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)


def test_run_local_prints_the_output_as_json_and_progress_on_stderr() -> None:
    done = run_local("local.steps", "--input", '{"n": 2}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"steps": 2}
    assert done.stderr.splitlines() == ["progress 50% step 1", "progress 100% step 2"]


def test_run_local_runs_a_process_isolated_handler_in_its_child() -> None:
    done = run_local("local.double", "--input", '{"n": 4}')
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout)
    assert output["doubled"] == 8 and output["pid"] != os.getpid()


def test_run_local_stops_a_handler_at_its_hard_timeout_with_one_line_and_exit_1() -> None:
    done = run_local("local.spin")  # CPU-bound in its child, timeout 0.5 s: only a kill ends it
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("kubeworkers run-local: Timeout: timed out after 0.5s")


def test_run_local_tells_a_sync_handler_of_its_soft_timeout() -> None:
    done = run_local("local.soft")
    assert (done.returncode, done.stdout.strip()) == (0, '"told"'), done.stderr


@pytest.mark.parametrize(("args", "code", "line"), [
    (("local.fails",), 1, "kubeworkers run-local: ValueError: this input is no good"),
    (("local.steps", "--input", '{"n": "x"}'), 1,
     "kubeworkers run-local: InvalidInput: input does not match Inp of 'local.steps'"),
    (("nothing.here",), 1, "kubeworkers run-local: UnknownHandler: no handler named 'nothing.here'"),
    (("local.steps", "--input", "[1]"), 2, "kubeworkers run-local: --input must be a JSON object"),
    (("local.steps", "--timeout", "-1"), 2, "kubeworkers run-local: timeout must be a finite number"),
])
def test_run_local_failures_are_one_line_and_a_non_zero_exit(args: tuple[str, ...], code: int, line: str) -> None:
    done = run_local(*args)
    assert done.returncode == code and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(line), done.stderr
