"""A Schedule's ``schedule`` string: parse it, and find its fire times in a time zone (pure).

Three forms, as Kubernetes CronJob (robfig/cron) reads them:

- five fields ``minute hour day-of-month month day-of-week``, each ``*``, a number, a
  range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n``, or a comma list of those; month
  and weekday names (``JAN``, ``MON``) are accepted, weekday 7 is Sunday like 0, and
  ``?`` means ``*`` in the day fields. When both day fields are restricted a day
  matches either (cron's rule); otherwise both must match.
- the macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``.
- ``@every <duration>``: a Go-style duration of whole hours, minutes and seconds
  (``30s``, ``5m``, ``1h30m``), at least :data:`MIN_EVERY_SECONDS`. Its slots are the
  schedule's anchor (the Schedule's creation time) plus whole multiples of the duration,
  so they are the same before and after an operator restart.

Fire times of the cron forms are wall-clock times in the schedule's time zone: a local
time that does not exist (the hour skipped when clocks go forward) is skipped, and a
local time that happens twice (clocks go back) fires once, at its first occurrence.
The CRD's CEL rule checks the shape of the string; :func:`parse` is the full check.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = datetime.UTC
#: The shortest ``@every`` interval: one run a second is plenty for a Kubernetes object per run.
MIN_EVERY_SECONDS = 1
#: How far ahead :meth:`CronSchedule.next_after` looks before it says a schedule never fires
#: (``0 0 30 2 *``). Nine years covers Feb 29 across a century's skipped leap year.
HORIZON_DAYS = 9 * 366

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_WEEKDAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_EVERY = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class InvalidSchedule(ValueError):
    """The ``schedule`` string (or ``timeZone``) cannot be read; the message says why."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 7, _WEEKDAYS),
)


def _number(text: str, spec: _Field) -> int:
    if spec.names is not None and text.upper() in spec.names:
        return spec.names[text.upper()]
    if not text.isdigit():
        raise InvalidSchedule(f"{spec.name}: {text!r} is not a number")
    value = int(text)
    if not spec.low <= value <= spec.high:
        raise InvalidSchedule(f"{spec.name}: {value} is outside {spec.low}-{spec.high}")
    return value


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidSchedule(f"{spec.name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if span in ("*", "?"):
            low, high = spec.low, spec.high
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _number(first, spec), _number(last, spec)
            if low > high:
                raise InvalidSchedule(f"{spec.name}: range {span!r} runs backwards")
        else:
            low = _number(span, spec)
            high = spec.high if slash else low  # "a/n" is "a-max/n"
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A five-field schedule in a time zone."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 (Sunday) to 6; a 7 in the string is folded into 0."""
    days_restricted: bool
    weekdays_restricted: bool
    zone: datetime.tzinfo

    def _day_matches(self, day: datetime.date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, t: float) -> float | None:
        """The first fire time strictly after unix time ``t``; None when it never fires again."""
        start = datetime.datetime.fromtimestamp(t, self.zone).replace(tzinfo=None, fold=0)
        start = start.replace(second=0, microsecond=0)
        day = start.date()
        for _ in range(HORIZON_DAYS):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = datetime.datetime.combine(day, datetime.time(hour, minute))
                        if wall < start:
                            continue
                        unix = _first_occurrence(wall, self.zone)
                        if unix is not None and unix > t:
                            return unix
            day += datetime.timedelta(days=1)
        return None


def _first_occurrence(wall: datetime.datetime, zone: datetime.tzinfo) -> float | None:
    """Unix time of the local ``wall`` time's first occurrence; None if it falls in a DST gap."""
    local = wall.replace(tzinfo=zone, fold=0)
    back = local.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != wall:
        return None
    return local.timestamp()


@dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: slots at ``anchor + k * seconds`` (k ≥ 1)."""

    seconds: int
    anchor: float

    def next_after(self, t: float) -> float:
        """The first slot strictly after unix time ``t``."""
        if t < self.anchor:
            return self.anchor + self.seconds
        k = math.floor((t - self.anchor) / self.seconds) + 1
        return self.anchor + k * self.seconds


Schedule = CronSchedule | EverySchedule


def zone_of(name: str | None) -> datetime.tzinfo:
    """The IANA time zone ``name`` (None or empty: UTC)."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"timeZone {name!r} is not a known IANA time zone") from exc


def parse_every(text: str) -> int:
    """Seconds of an ``@every`` duration such as ``1h30m`` or ``45s``."""
    match = _EVERY.match(text)
    if not text or match is None:
        raise InvalidSchedule(f"@every {text!r}: the duration must be whole hours, minutes and seconds, as 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < MIN_EVERY_SECONDS:
        raise InvalidSchedule(f"@every {text}: the interval must be at least {MIN_EVERY_SECONDS}s")
    return total


def parse(text: str, *, time_zone: str | None = None, anchor: float = 0.0) -> Schedule:
    """Read a ``schedule`` string; raise :class:`InvalidSchedule` saying what is wrong."""
    text = text.strip()
    zone = zone_of(time_zone)
    if text.startswith("@every"):
        _, _, duration = text.partition(" ")
        return EverySchedule(parse_every(duration.strip()), anchor)
    if text.startswith("@"):
        if text not in MACROS:
            raise InvalidSchedule(f"unknown macro {text!r} (known: {', '.join(MACROS)}, @every <duration>)")
        text = MACROS[text]
    parts = text.split()
    if len(parts) != len(_FIELDS):
        raise InvalidSchedule(
            f"a cron schedule has 5 fields (minute hour day-of-month month day-of-week), not {len(parts)}"
        )
    minutes, hours, days, months, weekdays = (_parse_field(p, f) for p, f in zip(parts, _FIELDS, strict=True))
    return CronSchedule(
        minutes, hours, days, months, frozenset(d % 7 for d in weekdays),
        days_restricted=not parts[2].startswith(("*", "?")),
        weekdays_restricted=not parts[4].startswith(("*", "?")),
        zone=zone,
    )


#: Search windows of :func:`latest_slot`, widening: most schedules are found in the first.
_WINDOWS = (3600.0, 86400.0, 32 * 86400.0, 400 * 86400.0, HORIZON_DAYS * 86400.0)


def latest_slot(schedule: Schedule, after: float, now: float) -> float | None:
    """The latest fire time in ``(after, now]``, or None.

    The search starts in the last hour before ``now`` and widens only if that holds no
    slot, so an operator that was down for a month does not walk every missed minute.
    """
    if isinstance(schedule, EverySchedule):
        if now < schedule.anchor + schedule.seconds:
            return None
        last = schedule.anchor + math.floor((now - schedule.anchor) / schedule.seconds) * schedule.seconds
        return last if last > after else None
    for window in (*_WINDOWS, math.inf):
        start = max(after, now - window)
        latest: float | None = None
        slot = schedule.next_after(start)
        while slot is not None and slot <= now:
            latest = slot
            slot = schedule.next_after(slot)
        if latest is not None or start == after:
            return latest
    return None
