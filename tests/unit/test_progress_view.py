"""``kubeworkers submit --wait``'s view of a running job (kubeworkers.progress_view): the bar line, the
plain lines, and the watch loop driven by a fake record, clock and sleep."""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubeworkers import progress_view as view
from kubeworkers.protocol import JobError, JobRecord, JobState


def rec(state: JobState = JobState.RUNNING, progress: float | None = None, message: str | None = None,
        **extra: object) -> JobRecord:
    return JobRecord(job_id="j1", uid="j1", namespace="default", pool="p", handler="h", state=state,
                     progress=progress, message=message, **extra)


# --------------------------------------------------------------------------- the bar line


def test_bar_line_shows_the_bar_percentage_time_state_and_message() -> None:
    line = view.bar_line(0.5, "step 5 of 10", JobState.RUNNING, 4.25, 80)
    assert line == "[" + "#" * 9 + "-" * 9 + "]  50%   4.2s  Running    step 5 of 10"


def test_bar_line_keeps_its_columns_as_the_state_changes() -> None:
    queued = view.bar_line(None, "m", JobState.QUEUED, 0.0, 80)
    running = view.bar_line(0.1, "m", JobState.RUNNING, 61.0, 80)
    assert queued.index("]") == running.index("]") and queued.index("m") == running.index(" m") + 1


def test_bar_line_cuts_a_long_message_to_the_terminal_leaving_the_last_column_free() -> None:
    line = view.bar_line(0.3, "x" * 500, JobState.RUNNING, 1.0, 100)
    assert len(line) == 99 and line.endswith("x...")


def test_bar_line_on_a_narrow_terminal_drops_the_bar_before_the_percentage() -> None:
    assert view.bar_line(0.42, "a message", JobState.RUNNING, 1.0, 24) == "42%   1.0s  Running"
    assert view.bar_line(0.42, None, JobState.RUNNING, 1.0, 8) == "42% ..."
    assert view.bar_line(0.42, None, JobState.RUNNING, 1.0, 1) == ""


def test_a_handler_message_cannot_move_the_cursor_or_break_the_line() -> None:
    line = view.bar_line(0.5, "evil\x1b[2J\rline\nnext\ttab", JobState.RUNNING, 0.0, 120)
    assert line.endswith("evil [2J line next tab")
    assert view.plain_line(view.Shown(0.5, view.printable("a\nb\x1b")), JobState.RUNNING) == "progress 50% a b"


@given(fraction=st.one_of(st.none(), st.floats(min_value=-1, max_value=2)), message=st.one_of(st.none(), st.text()),
       state=st.sampled_from(list(JobState)), elapsed=st.floats(min_value=0, max_value=10**7),
       width=st.integers(min_value=0, max_value=300))
def test_bar_line_never_exceeds_the_width_and_holds_no_control_character(
    fraction: float | None, message: str | None, state: JobState, elapsed: float, width: int,
) -> None:
    line = view.bar_line(fraction, message, state, elapsed, width)
    assert view.cells(line) <= max(width - 1, 0)
    assert all(c.isprintable() for c in line)


def test_wide_characters_count_two_columns() -> None:
    line = view.bar_line(0.5, "漢字" * 50, JobState.RUNNING, 0.0, 60)
    assert view.cells(line) <= 59 and unicodedata.east_asian_width(line[-4]) == "W"


@pytest.mark.parametrize(("fraction", "shown"), [(None, "--"), (0.0, "0%"), (0.333, "33%"), (0.666, "67%"),
                                                 (0.999, "99%"), (1.0, "100%"), (7.0, "100%"), (-1.0, "0%")])
def test_percent_never_says_100_before_the_end(fraction: float | None, shown: str) -> None:
    assert view.percent(fraction) == shown


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0s"), (4.25, "4.2s"), (59.9, "59.9s"), (187, "3m07s"),
                                               (3729, "1h02m09s")])
def test_elapsed_text(seconds: float, text: str) -> None:
    assert view.elapsed_text(seconds) == text


def test_a_bar_only_on_a_terminal_that_is_not_dumb() -> None:
    assert view.use_bar(True, "xterm-256color") and view.use_bar(True, None)
    assert not view.use_bar(True, "dumb") and not view.use_bar(False, "xterm")


# --------------------------------------------------------------------------- plain lines and the final line


def test_a_plain_line_only_when_the_progress_or_the_message_changed_to_something() -> None:
    first = view.Shown(0.5, "half")
    assert view.worth_a_line(view.NOTHING, first)
    assert not view.worth_a_line(first, view.Shown(0.5, "half"))
    assert view.worth_a_line(first, view.Shown(0.5, "still half"))
    assert view.worth_a_line(first, view.Shown(0.6, "half"))
    assert not view.worth_a_line(first, view.NOTHING)  # a new attempt cleared them


def test_a_plain_line_names_the_state_when_the_job_is_not_running() -> None:
    shown = view.Shown(0.4, "attempt 1/2 failed (E: x); retrying in 1.0s")
    assert (view.plain_line(shown, JobState.QUEUED)
            == "progress 40% attempt 1/2 failed (E: x); retrying in 1.0s (Queued)")
    assert view.plain_line(view.Shown(None, "hello"), JobState.RUNNING) == "progress -- hello"


def test_the_final_line_says_how_the_job_ended_and_why_it_failed() -> None:
    assert view.final_line(rec(JobState.SUCCEEDED, 1.0, "done"), 4.25) == "j1: Succeeded after 4.2s"
    failed = rec(JobState.FAILED, 0.5, "RuntimeError: disk\non fire (attempt 2 of 2)",
                 error=JobError(type="RuntimeError", message="disk\non fire"))
    assert view.final_line(failed, 0.3) == "j1: Failed after 0.3s: RuntimeError: disk on fire (attempt 2 of 2)"
    no_message = rec(JobState.CANCELLED, error=JobError(type="Cancelled", message="cancel requested"))
    assert view.final_line(no_message, 1) == "j1: Cancelled after 1.0s: Cancelled: cancel requested"


# --------------------------------------------------------------------------- the watch loop


class Fake:
    """A job whose record is the next of ``records`` at each read, a clock that moves only when slept."""

    def __init__(self, *records: JobRecord) -> None:
        self.records = list(records)
        self.reads = 0
        self.now = 100.0
        self.slept: list[float] = []

    def read(self) -> JobRecord:
        record = self.records[min(self.reads, len(self.records) - 1)]
        self.reads += 1
        return record

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def watch(self, out: io.StringIO, *, bar: bool, timeout: float | None = None) -> JobRecord:
        return view.watch(self.read, out, job_id="j1", bar=bar, timeout=timeout, delays=delays(), width=lambda: 60,
                          clock=lambda: self.now, sleep=self.sleep)


def delays() -> Iterator[float]:
    while True:
        yield 0.1


STEPS = (rec(JobState.QUEUED), rec(), rec(progress=0.5, message="step 1 of 2"),
         rec(progress=0.5, message="step 1 of 2"), rec(progress=1.0, message="step 2 of 2"),
         rec(JobState.SUCCEEDED, progress=1.0, message="ok"))


def test_plain_watch_prints_one_line_per_progress_change_then_the_final_line() -> None:
    fake, out = Fake(*STEPS), io.StringIO()
    assert fake.watch(out, bar=False).state is JobState.SUCCEEDED
    assert out.getvalue().splitlines() == ["progress 50% step 1 of 2", "progress 100% step 2 of 2",
                                           "j1: Succeeded after 0.5s"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_watch_sleeps_between_every_two_reads_and_stops_at_the_end() -> None:
    fake = Fake(*STEPS)
    fake.watch(io.StringIO(), bar=True)
    assert fake.reads == len(STEPS) and fake.slept == [0.1] * (len(STEPS) - 1)


def test_bar_watch_redraws_in_place_only_when_the_line_changes_and_erases_it_at_the_end() -> None:
    fake, out = Fake(*STEPS), io.StringIO()
    fake.watch(out, bar=True)
    text = out.getvalue()
    assert text.endswith(view.CLEAR + "j1: Succeeded after 0.5s\n")
    frames = text.removesuffix(view.CLEAR + "j1: Succeeded after 0.5s\n").split("\r")[1:]
    assert len(frames) == len(STEPS) - 1  # every poll moved the clock: every line differs
    assert all(f.endswith(view.ERASE_TO_END) and "\n" not in f for f in frames)
    assert "50%" in frames[2] and frames[2].endswith("step 1 of 2" + view.ERASE_TO_END)

    still = Fake(rec(progress=0.2, message="m"), rec(progress=0.2, message="m"), rec(JobState.SUCCEEDED))
    still.sleep = lambda seconds: None  # the clock stands still: the same line twice is drawn once
    out = io.StringIO()
    still.watch(out, bar=True)
    assert out.getvalue().count("\r") == 2  # one frame, one erase


def test_a_watch_that_times_out_erases_the_bar_and_says_where_the_job_is() -> None:
    fake, out = Fake(rec(JobState.QUEUED)), io.StringIO()
    with pytest.raises(TimeoutError, match=r"^job j1 is still Queued after 0.3s$"):
        fake.watch(out, bar=True, timeout=0.3)
    assert out.getvalue().endswith(view.CLEAR) and fake.now >= 100.3


def test_ctrl_c_while_waiting_erases_the_bar_and_goes_through() -> None:
    fake, out = Fake(rec(progress=0.5)), io.StringIO()

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    fake.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        fake.watch(out, bar=True)
    assert out.getvalue().startswith("\r[") and out.getvalue().endswith(view.CLEAR)


def test_a_plain_watch_of_a_job_that_never_reports_prints_only_the_final_line() -> None:
    fake = Fake(rec(JobState.QUEUED), rec(), rec(JobState.FAILED, message="E: boom (attempt 1 of 1)"))
    out = io.StringIO()
    assert fake.watch(out, bar=False).state is JobState.FAILED
    assert out.getvalue() == "j1: Failed after 0.2s: E: boom (attempt 1 of 1)\n"
