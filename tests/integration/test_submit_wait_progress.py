"""``kubeworkers submit --wait`` shows the job's progress: a live bar under a real pseudo-terminal, plain
lines (one per change, no control characters) into a pipe, against a real Redis and worker process.

The handler (tests/integration/progress_handlers.py) waits at each step until the test lets it go
on, so each assertion on what the command showed is made while the job is still at that step."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kubeworkers.protocol import JobState, PoolKeys

from hack import processes
from hack.polling import wait_for
from tests.support.workers import REPO, WorkerProcess

HANDLERS = "tests.integration.progress_handlers"


@pytest.fixture
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    w = WorkerProcess(redis_url, "bar-w", imports=HANDLERS)
    w.wait_started()
    yield w
    w.close()


@pytest.fixture
def gate() -> Path:
    return Path(tempfile.mkdtemp(prefix="kw-gate-"))


def env() -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_") and k not in ("COLUMNS", "LINES")}
    return {**base, "PYTHONPATH": str(REPO), "TERM": "xterm"}


def submit_args(redis_url: str, job_id: str, gate: Path, **extra: object) -> list[str]:
    return [sys.executable, "-m", "kubeworkers", "submit", "--redis-url", redis_url, "--pool", "p",
            "--job-id", job_id, "--input", json.dumps({"gate": str(gate), **extra}), "--wait", "60",
            "progress.gated"]


class Terminal:
    """The command under a pseudo-terminal 100 columns wide; what it wrote, read from the master side."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 10, 100, 0, 0))
        self.proc = processes.spawn(argv, env=env(), cwd=REPO, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.text = ""

    def read_until(self, pattern: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not re.search(pattern, self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal within {within}s:\n{self.text!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the command exited and closed the terminal
                    chunk = b""
                if not chunk:
                    assert re.search(pattern, self.text), f"no {pattern!r} before the end:\n{self.text!r}"
                    return
                self.text += chunk.decode(errors="replace")

    def finish(self) -> int:
        try:
            while True:
                if not select.select([self.master], [], [], 30)[0]:
                    break
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                self.text += chunk.decode(errors="replace")
        except OSError:
            pass
        os.close(self.master)
        return self.proc.wait(30)


def frames(text: str) -> list[str]:
    """The bar's frames: what each carriage return drew before its erase-to-end."""
    return re.findall(r"\r([^\r\n]+?)\x1b\[K", text)


def test_on_a_terminal_submit_wait_draws_a_live_bar_with_the_message_then_the_final_line(
    redis_url: str, worker: WorkerProcess, gate: Path,
) -> None:
    term = Terminal(submit_args(redis_url, "bar-1", gate))
    term.read_until(r"33%[^\r]*step 1 of 3")
    (gate / "1").touch()
    term.read_until(r"67%[^\r]*step 2 of 3")
    (gate / "2").touch()
    term.read_until(r"100%[^\r]*step 3 of 3")
    (gate / "3").touch()
    assert term.finish() == 0, term.text
    drawn = frames(term.text)
    assert all(len(f) <= 99 for f in drawn), drawn  # never the last column: no wrap
    assert any(re.fullmatch(r"\[#{8}-{16}\]  33% +\d+\.\ds  Running    step 1 of 3", f) for f in drawn), drawn
    assert any(re.fullmatch(r"\[#{16}-{8}\]  67% +\d+\.\ds  Running    step 2 of 3", f) for f in drawn), drawn
    # The bar's line is erased, then the final line (the terminal turns \n into \r\n), then the record.
    assert re.search(r"\r\x1b\[Kbar-1: Succeeded after \d+\.\ds\r\n\{", term.text), term.text
    record = json.loads(term.text[term.text.index("{"):].replace("\r\n", "\n"))
    assert (record["state"], record["output"]) == ("Succeeded", {"steps": 3})
    assert "Traceback" not in term.text


def test_ctrl_c_stops_waiting_with_exit_130_a_clean_line_and_the_job_still_running(
    redis_url: str, worker: WorkerProcess, gate: Path,
) -> None:
    term = Terminal(submit_args(redis_url, "bar-2", gate, steps=1))
    term.read_until(r"100%[^\r]*step 1 of 1")
    term.proc.send_signal(signal.SIGINT)  # what the terminal sends the foreground process on Ctrl-C
    assert term.finish() == 130, term.text
    tail = term.text[term.text.rindex("step 1 of 1"):]
    assert re.fullmatch(r"step 1 of 1\x1b\[K\r\x1b\[Kkubeworkers submit: stopped waiting; job bar-2 goes on "
                        r"\(kubeworkers jobs cancel bar-2 stops it\)\r\n", tail), tail
    r = redis.Redis.from_url(redis_url)
    key = PoolKeys("default", "p").record("bar-2")
    assert r.hget(key, "state") == JobState.RUNNING.value.encode()  # not cancelled
    (gate / "1").touch()
    wait_for(lambda: r.hget(key, "state") == JobState.SUCCEEDED.value.encode(), 30, "bar-2 to succeed")


class Piped:
    """The command with its stdout and stderr pipes; stderr read line by line as it comes."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = processes.spawn(argv, env=env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []

    def next_line(self) -> str:
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline().decode()
        self.lines.append(line)
        return line.rstrip("\n")

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=60)
        self.lines += err.decode().splitlines(keepends=True)
        return self.proc.returncode, out.decode(), "".join(self.lines)


def test_into_a_pipe_submit_wait_prints_one_plain_line_per_progress_change_then_the_final_line(
    redis_url: str, worker: WorkerProcess, gate: Path,
) -> None:
    run = Piped(submit_args(redis_url, "plain-1", gate))
    assert run.next_line() == "plain-1: queued; position 0 in pool p's queue (0 job(s) ahead of it)"
    for step, shown in ((1, "33%"), (2, "67%"), (3, "100%")):
        assert run.next_line() == f"progress {shown} step {step} of 3"
        time.sleep(0.3)  # several polls at this step: still one line
        (gate / str(step)).touch()
    assert re.fullmatch(r"plain-1: Succeeded after \d+\.\ds", run.next_line())
    code, out, err = run.finish()
    assert code == 0, err
    assert len(err.splitlines()) == 5 and "\r" not in err and "\x1b" not in err
    job_id, _, record = out.partition("\n")
    assert job_id == "plain-1" and json.loads(record)["output"] == {"steps": 3}


def test_submit_wait_of_a_job_that_fails_exits_1_with_its_error(
    redis_url: str, worker: WorkerProcess, gate: Path,
) -> None:
    run = Piped(submit_args(redis_url, "plain-2", gate, fail_at=1))
    run.next_line()
    assert run.next_line() == "progress 33% step 1 of 3"
    (gate / "1").touch()
    assert re.fullmatch(r"plain-2: Failed after \d+\.\ds: ValueError: step 1 broke \(attempt 1 of 1\)",
                        run.next_line())
    code, out, err = run.finish()
    assert code == 1, err
    record = json.loads(out.partition("\n")[2])
    assert record["state"] == "Failed" and record["error"]["message"] == "step 1 broke"
    assert "Traceback" not in err
