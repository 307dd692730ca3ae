"""The Schedule's cron strings: parsing, and fire times in a time zone across DST changes."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubeworkers_operator.model import cron

BERLIN = ZoneInfo("Europe/Berlin")
UTC = datetime.UTC


def unix(*args: int, tz: datetime.tzinfo = UTC, fold: int = 0) -> float:
    return datetime.datetime(*args, tzinfo=tz, fold=fold).timestamp()  # type: ignore[misc]


def fires(text: str, start: float, count: int, zone: str | None = None) -> list[datetime.datetime]:
    schedule = cron.parse(text, time_zone=zone)
    out, t = [], start
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        out.append(datetime.datetime.fromtimestamp(nxt, BERLIN if zone else UTC))
        t = nxt
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@hourly", ["01:00", "02:00", "03:00"]),
        ("*/20 * * * *", ["00:20", "00:40", "01:00"]),
        ("5,10 0-1 * * *", ["00:05", "00:10", "01:05"]),
        ("15/20 * * * *", ["00:15", "00:35", "00:55"]),
    ],
)
def test_cron_fields_name_the_minutes_and_hours_they_fire_at(text: str, expected: list[str]) -> None:
    got = fires(text, unix(2026, 1, 1, 0, 0), 3)
    assert [f"{d:%H:%M}" for d in got] == expected


def test_both_day_fields_restricted_fire_on_either_like_cron() -> None:
    # The 13th, or any Friday: 2026-02-06 is a Friday, the 13th is one too.
    got = fires("0 0 13 * FRI", unix(2026, 2, 1), 3)
    assert [d.date().isoformat() for d in got] == ["2026-02-06", "2026-02-13", "2026-02-20"]


def test_weekday_seven_is_sunday_and_macros_expand() -> None:
    assert cron.parse("0 0 * * 7") == cron.parse("@weekly")
    assert cron.parse("@annually") == cron.parse("0 0 1 JAN *")
    assert cron.parse("@midnight") == cron.parse("@daily")


def test_a_local_time_skipped_by_dst_is_skipped() -> None:
    # Europe/Berlin springs forward at 02:00 on 2026-03-29: 02:30 does not exist that day.
    got = fires("30 2 * * *", unix(2026, 3, 28, 12), 2, zone="Europe/Berlin")
    assert [d.date().isoformat() for d in got] == ["2026-03-30", "2026-03-31"]


def test_a_local_time_repeated_by_dst_fires_once() -> None:
    # Europe/Berlin falls back at 03:00 on 2026-10-25: 02:30 happens twice, fires at the first.
    got = fires("30 2 * * *", unix(2026, 10, 24, 12), 2, zone="Europe/Berlin")
    assert got[0] == datetime.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0)
    assert got[1].date().isoformat() == "2026-10-26"
    # Searching from inside the second 02:xx hour does not fire 02:30 again.
    second_pass = unix(2026, 10, 25, 2, 10, tz=BERLIN, fold=1)
    nxt = cron.parse("30 2 * * *", time_zone="Europe/Berlin").next_after(second_pass)
    assert nxt is not None and datetime.datetime.fromtimestamp(nxt, BERLIN).date().isoformat() == "2026-10-26"


def test_every_slots_are_counted_from_the_anchor() -> None:
    schedule = cron.parse("@every 1h30m", anchor=1000.0)
    assert schedule.next_after(0) == 1000 + 5400
    assert schedule.next_after(1000 + 5400) == 1000 + 2 * 5400
    assert cron.latest_slot(schedule, 0, 1000 + 3 * 5400 + 7) == 1000 + 3 * 5400


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* * * 13 *", "month: 13"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("@fortnightly", "unknown macro"),
        ("@every 0s", "at least 1s"),
        ("@every 10", "whole hours, minutes and seconds"),
        ("@every 1m30", "whole hours"),
    ],
)
def test_an_unreadable_schedule_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(cron.InvalidSchedule, match=message):
        cron.parse(text)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(cron.InvalidSchedule, match="timeZone 'Mars/Olympus'"):
        cron.parse("@daily", time_zone="Mars/Olympus")


def test_a_schedule_that_never_fires_has_no_next_time() -> None:
    assert cron.parse("0 0 30 2 *").next_after(unix(2026, 1, 1)) is None


# --------------------------------------------------------------------------- properties

field = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 29), st.integers(30, 59)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.integers(1, 30).map(lambda n: f"*/{n}"),
)
hours = st.one_of(st.just("*"), st.integers(0, 23).map(str), st.integers(1, 12).map(lambda n: f"*/{n}"))
days = st.one_of(st.just("*"), st.integers(1, 28).map(str))
months = st.one_of(st.just("*"), st.integers(1, 12).map(str))
weekdays = st.one_of(st.just("*"), st.integers(0, 7).map(str), st.just("MON-FRI"))
schedules = st.tuples(field, hours, days, months, weekdays).map(" ".join)
zones = st.sampled_from([None, "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])
instants = st.floats(min_value=unix(2020, 1, 1), max_value=unix(2035, 1, 1), allow_nan=False)


def matches(schedule: cron.CronSchedule, t: float) -> bool:
    local = datetime.datetime.fromtimestamp(t, schedule.zone)
    return (local.second == 0 and local.minute in schedule.minutes and local.hour in schedule.hours
            and schedule._day_matches(local.date()))


@settings(max_examples=300, deadline=None)
@given(text=schedules, zone=zones, t=instants)
def test_next_time_is_after_t_matches_the_fields_and_skips_nothing(text: str, zone: str | None, t: float) -> None:
    schedule = cron.parse(text, time_zone=zone)
    assert isinstance(schedule, cron.CronSchedule)
    nxt = schedule.next_after(t)
    assert nxt is not None
    assert nxt > t
    assert matches(schedule, nxt)
    # No matching minute lies strictly between t and the answer (checked over the first hours).
    minute = (int(t) // 60 + 1) * 60
    while minute < min(nxt, t + 6 * 3600):
        assert not matches(schedule, minute) or _repeated(schedule, minute), minute
        minute += 60


def _repeated(schedule: cron.CronSchedule, t: float) -> bool:
    """``t`` is the second occurrence of its local time (clocks went back): it never fires."""
    local = datetime.datetime.fromtimestamp(t, schedule.zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


@settings(max_examples=200, deadline=None)
@given(text=schedules, zone=zones, t=instants)
def test_fire_times_strictly_increase_and_no_local_time_fires_twice(text: str, zone: str | None, t: float) -> None:
    schedule = cron.parse(text, time_zone=zone)
    seen: set[tuple[int, ...]] = set()
    last = t
    for _ in range(20):
        nxt = schedule.next_after(last)
        assert nxt is not None and nxt > last
        local = datetime.datetime.fromtimestamp(nxt, schedule.zone)
        wall = (local.year, local.month, local.day, local.hour, local.minute)
        assert wall not in seen
        seen.add(wall)
        last = nxt


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(1, 10_000), anchor=instants, t=instants)
def test_every_next_time_is_the_first_slot_after_t(seconds: int, anchor: float, t: float) -> None:
    schedule = cron.parse(f"@every {seconds}s", anchor=anchor)
    nxt = schedule.next_after(t)
    assert nxt is not None and nxt > t
    k = round((nxt - anchor) / seconds)
    assert k >= 1 and abs(anchor + k * seconds - nxt) < 1e-6
    assert nxt - seconds <= max(t, anchor) + 1e-6


@settings(max_examples=200, deadline=None)
@given(text=schedules, t=instants, back=st.floats(min_value=60, max_value=40 * 86400))
def test_latest_slot_is_the_last_fire_time_at_or_before_now(text: str, t: float, back: float) -> None:
    schedule = cron.parse(text)
    after = t - back
    latest = cron.latest_slot(schedule, after, t)
    first = schedule.next_after(after)
    assert first is not None
    if latest is None:
        assert first > t
    else:
        assert after < latest <= t
        nxt = schedule.next_after(latest)
        assert nxt is not None and nxt > t
