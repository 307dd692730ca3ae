"""Structured log lines: valid JSON whatever the job id or message holds, same fields on both paths."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from kubeworkers import logs


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("INFO")
    yield buf
    root.handlers[:], level = saved
    root.setLevel(level)


def test_job_state_line_is_one_json_object_even_with_quotes_newlines_and_unicode(stream: io.StringIO) -> None:
    job_log = logs.JobLog(logging.getLogger("kubeworkers.worker"))
    job_log(logging.WARNING, 'attempt "1" failed:\nbad é', {
        "job_id": 'ns/j"1', "handler": "h", "attempt": 1, "duration": 0.5, "state": "Queued", "error": None,
    })
    [line] = stream.getvalue().splitlines()
    parsed = json.loads(line)
    assert parsed["msg"] == 'attempt "1" failed:\nbad é'
    assert (parsed["job_id"], parsed["attempt"], parsed["duration"], parsed["level"]) == ('ns/j"1', 1, 0.5, "warning")
    assert "error" not in parsed


def test_job_state_line_matches_the_formatter_of_ordinary_log_records(stream: io.StringIO) -> None:
    logger = logging.getLogger("kubeworkers.worker")
    logs.JobLog(logger)(logging.ERROR, "job failed", {"job_id": "a", "handler": "h", "state": "Failed"})
    logger.error("job failed", extra={"job_id": "a", "handler": "h", "state": "Failed"})
    fast, slow = (json.loads(line) for line in stream.getvalue().splitlines())
    fast.pop("ts")
    slow.pop("ts")
    assert fast == slow


def test_lines_below_the_level_are_not_written(stream: io.StringIO) -> None:
    logging.getLogger().setLevel("WARNING")
    logs.JobLog(logging.getLogger("kubeworkers.worker"))(logging.INFO, "job running", {"job_id": "a"})
    logs.flush()
    assert stream.getvalue() == ""
