"""``kubeworkers jobs list`` arguments (issue 12, item 1): ``--since`` durations, ``--state`` names,
``--limit`` bounds, and which index a state is read from; bad ones are one line and exit 2."""

from __future__ import annotations

import pytest
from kubeworkers import cli, inspection


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    ("3600", 3600), ("0.5h", 1800), (" 1H ", 3600),
])
def test_since_takes_durations_with_units_or_plain_seconds(text: str, seconds: float) -> None:
    assert inspection.parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "yesterday", "1h 30m", "m1", "-5", "0", "0s", "1h-"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        inspection.parse_since(text)


def test_state_is_matched_whatever_its_case_and_delayed_is_one() -> None:
    assert inspection.parse_state("failed") == "Failed"
    assert inspection.parse_state("RUNNING") == "Running"
    assert inspection.parse_state("delayed") == "Delayed"
    with pytest.raises(ValueError, match="--state must be one of"):
        inspection.parse_state("Done")


def test_limit_is_between_one_and_the_maximum() -> None:
    assert inspection.parse_limit(1) == 1
    for bad in (0, -1, inspection.MAX_LIMIT + 1):
        with pytest.raises(ValueError, match="--limit"):
            inspection.parse_limit(bad)


def test_finished_states_read_their_own_index_and_live_states_the_live_one() -> None:
    assert inspection.indexes_for(None) == ["live", "Succeeded", "Failed", "Cancelled"]
    assert inspection.indexes_for("Failed") == ["Failed"]
    for state in ("Queued", "Running", "Waiting", "Delayed", "Pending"):
        assert inspection.indexes_for(state) == ["live"]


@pytest.mark.parametrize("argv", [
    ["--since", "soon"], ["--state", "Sleeping"], ["--limit", "0"],
])
def test_bad_list_arguments_exit_2_with_one_line_before_touching_redis(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1: nothing listens there, so reaching Redis would be exit 1, not 2.
    code = cli.main(["jobs", "list", "--pool", "p", "--redis-url", "redis://127.0.0.1:1/0", *argv])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("kubeworkers jobs list: ") and err.count("\n") == 1
