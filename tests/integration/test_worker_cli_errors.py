"""The ``kubeworkers`` command: every operational error is one clear line and a non-zero exit, never a
traceback; and a worker always exits on SIGTERM, whatever its handlers do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from kubeworkers.protocol import PoolKeys

from tests.support.redis_server import RedisServer, free_port
from tests.support.workers import REPO, WorkerProcess


def kubeworkers(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
    return subprocess.run([sys.executable, "-m", "kubeworkers", *args], capture_output=True, text=True,
                          cwd=REPO, env={**base, **(env or {})}, timeout=120, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *, says: str, code: int | None = None) -> None:
    assert done.returncode != 0, done
    if code is not None:
        assert done.returncode == code, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0], lines[0]


@pytest.fixture
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    w = WorkerProcess(redis_url, "cli-w")
    w.wait_started()
    yield w
    w.close()


@pytest.mark.parametrize(("given", "says"), [("not json", "--input is not JSON"),
                                             ("[1, 2]", "--input must be a JSON object")])
def test_submit_with_input_that_is_not_a_json_object_says_so(redis_url: str, given: str, says: str) -> None:
    assert_one_line_error(kubeworkers("submit", "--redis-url", redis_url, "--pool", "p", "h", "--input", given),
                          says=says, code=2)


def test_submit_without_a_pool_is_refused(redis_url: str) -> None:
    done = kubeworkers("submit", "--redis-url", redis_url, "word_count", "--input", "{}")
    assert_one_line_error(done, says="pool", code=2)
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_commands_against_an_unreachable_redis_say_so() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert_one_line_error(kubeworkers("get", "--redis-url", url, "job"), says="cannot reach Redis")
    assert_one_line_error(kubeworkers("dlq", "list", "--redis-url", url, "--pool", "p"), says="cannot reach Redis")


def test_a_malformed_redis_url_is_refused(redis_url: str) -> None:
    assert_one_line_error(kubeworkers("get", "--redis-url", "nope://host", "job"), says="Redis URL", code=2)


def test_a_wrong_password_is_reported_without_echoing_it(tmp_path: object) -> None:
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", "right-secret")
        admin.close()
        url = f"redis://:wrong-secret@127.0.0.1:{server.port}/0"
        done = kubeworkers("get", "--redis-url", url, "job")
    assert_one_line_error(done, says="Redis refused")
    assert "wrong-secret" not in done.stderr + done.stdout


def test_replaying_a_dead_letter_id_that_is_not_one_says_so(redis_url: str) -> None:
    done = kubeworkers("dlq", "replay", "--redis-url", redis_url, "--pool", "p", "--id", "garbage")
    assert_one_line_error(done, says="garbage")


def test_submit_wait_that_times_out_says_so_and_exits_non_zero(redis_url: str) -> None:
    done = kubeworkers("submit", "--redis-url", redis_url, "--pool", "p", "h", "--wait", "0.3")
    job_id = done.stdout.strip()
    assert job_id
    # stderr: what the submit found out (one line), then the error (one line).
    note, _, error = done.stderr.partition("\n")
    assert note == f"{job_id}: queued; position 0 in pool p's queue (0 job(s) ahead of it)"
    assert_one_line_error(subprocess.CompletedProcess(done.args, done.returncode, done.stdout, error),
                          says="still Queued")


def test_submit_wait_of_a_job_that_fails_exits_non_zero(redis_url: str, worker: WorkerProcess) -> None:
    done = kubeworkers("submit", "--redis-url", redis_url, "--pool", "p", "fail", "--input", "{}", "--wait", "60")
    assert done.returncode == 1, done
    assert json.loads(done.stdout.split("\n", 1)[1])["state"] == "Failed"
    assert "Traceback" not in done.stderr


def test_one_unreadable_dead_letter_entry_does_not_break_list_or_replay(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    keys = PoolKeys("default", "p")
    msg = {"job_id": "j1", "uid": "j1", "namespace": "default", "pool": "p", "handler": "h", "input": {}}
    r.xadd(keys.dead_letter, {"m": "not json at all", "reason": "?"})
    r.xadd(keys.dead_letter, {"m": json.dumps(msg), "reason": "boom", "attempts": "3", "at": "1"})
    listed = kubeworkers("dlq", "list", "--redis-url", redis_url, "--pool", "p", "--json")
    assert listed.returncode == 0, listed
    dead = json.loads(listed.stdout)
    assert [d["job_id"] for d in dead if not d.get("unreadable")] == ["j1"]
    assert [d for d in dead if d.get("unreadable")], "the unreadable entry is not listed"
    replayed = kubeworkers("dlq", "replay", "--redis-url", redis_url, "--pool", "p", "--all")
    assert replayed.stdout.split() == ["j1"]
    assert replayed.returncode != 0 and "Traceback" not in replayed.stderr
    assert "unreadable" in replayed.stderr
    assert r.xlen(keys.dead_letter) == 1
    r.close()


def test_a_worker_whose_handlers_ignore_sigterm_still_exits_and_names_their_jobs(redis_url: str) -> None:
    from kubeworkers.client import Client
    from kubeworkers.protocol import JobState

    worker = WorkerProcess(redis_url, "stubborn", imports="tests.integration.stubborn_handlers",
                           extra_args=["--shutdown-grace", "0.5", "--cancel-grace", "0.5"])
    try:
        worker.wait_started()
        with Client(redis_url) as client:
            stuck = [client.submit("p", "stubborn.async", {}), client.submit("p", "stubborn.sync", {})]
            deadline = time.monotonic() + 30
            while not all((rec := client.get(j, pool="p")) and rec.state is JobState.RUNNING for j in stuck):
                assert time.monotonic() < deadline, "the jobs did not start"
                time.sleep(0.05)
            worker.terminate()
            assert worker.wait(60) == 0
            states = [client.get(j, pool="p") for j in stuck]
        assert all(rec is not None and rec.state is JobState.QUEUED for rec in states), states
        last = [line for line in worker.log_lines() if "still run" in line.get("msg", "")]
        assert last and all(job_id in last[-1]["msg"] for job_id in stuck), worker.log()
    finally:
        worker.close()
