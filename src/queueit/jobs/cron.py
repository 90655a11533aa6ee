"""Cron schedules for periodic jobs (``@app.periodic("*/5 * * * *")``), with no dependencies.

Syntax: five fields separated by whitespace, ``minute hour day-of-month month day-of-week``:

========================  ========  ==========================================
field                     values    names
========================  ========  ==========================================
minute                    0-59
hour                      0-23
day-of-month              1-31
month                     1-12      ``JAN``-``DEC``
day-of-week               0-7       ``SUN``-``SAT`` (0 and 7 are both Sunday)
========================  ========  ==========================================

Each field is a comma list of items; an item is ``*`` (every value), a value ``a``, a range
``a-b``, or one of those with a step: ``*/n``, ``a-b/n`` and ``a/n`` (from ``a`` to the end of
the field: 59, 23, 31, 12, or 6 for the day of week). Names are case-insensitive and may end
ranges (``MON-FRI``); ``SUN`` at the end of a range is 7, so ``FRI-SUN`` is Friday to Sunday.
The aliases ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``)
and ``@hourly`` stand for the usual expressions. There are no seconds and no ``@reboot``: a
periodic job fires on a clock, not when a process starts. Anything else raises
:class:`CronError`, which says what is wrong and what is allowed.

Days follow Vixie cron: when both day fields are restricted (neither starts with ``*``), a day
fires if *either* matches, so ``0 0 1 * MON`` runs on the 1st and on every Monday; otherwise
both must match (``0 0 */2 * MON``: odd days that are Mondays). An expression that can never
fire (``0 0 30 2 *``) is refused when parsed; ``0 0 29 2 *`` is valid and fires in leap years.

Time zones and DST: fields are matched against the wall clock in the schedule's zone (UTC by
default), because that is what people mean by "02:30 every day". Fire times are returned in
UTC, which never jumps. When clocks spring forward, a wall time inside the gap does not exist
and is skipped (nothing fires for it: running it at another time would be a surprise too, and
a skipped run is easy to see). When clocks fall back, a wall time that occurs twice fires
once, at its first occurrence (``fold=0``), so a daily job never runs twice in one night.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Cron", "CronError"]

#: The longest expression accepted, in characters.
_MAX_LENGTH = 200

_MONTHS = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True, slots=True)
class _Field:
    label: str
    low: int
    high: int
    names: dict[str, int] | None
    names_help: str = ""
    #: where ``*`` and ``a/n`` stop (below ``high`` for the day of week, whose 7 is a synonym).
    open_high: int = -1

    @property
    def end(self) -> int:
        return self.high if self.open_high < 0 else self.open_high


_MINUTE = _Field("minute", 0, 59, None)
_HOUR = _Field("hour", 0, 23, None)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, None)
_MONTH = _Field("month", 1, 12, _MONTHS, "JAN-DEC")
_DAY_OF_WEEK = _Field("day-of-week", 0, 7, _WEEKDAYS, "SUN-SAT", open_high=6)
_FIELDS = (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)
_LAYOUT = " ".join(field.label for field in _FIELDS)


class CronError(ValueError):
    """A cron expression (or its time zone) is invalid; the message says why and what is allowed."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron schedule; build one with :meth:`Cron.parse`.

    Attributes:
        text: the expression as given.
        minute: minutes that fire (0-59).
        hour: hours that fire (0-23).
        day_of_month: days of the month that fire (1-31).
        month: months that fire (1-12).
        day_of_week: days of the week that fire (0-6, 0 is Sunday).
        tz: the zone whose wall clock the fields are matched against.
        either_day: both day fields are restricted, so a day fires if either matches (Vixie).
    """

    text: str
    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]
    tz: tzinfo
    either_day: bool

    @classmethod
    def parse(cls, text: str, tz: str | tzinfo | None = None) -> Cron:
        """Parse ``text``; ``tz`` is a zoneinfo name or a tzinfo (``None``: UTC).

        Raises:
            CronError: the expression is invalid or can never fire, or the zone is unknown.
        """
        zone = _zone(tz)
        fields = _split(text)
        minute, hour, dom, month, dow = (
            _parse_field(spec, field, text) for spec, field in zip(fields, _FIELDS, strict=True)
        )
        either_day = not fields[2].startswith("*") and not fields[4].startswith("*")
        cron = cls(text, minute, hour, dom, month, frozenset(d % 7 for d in dow), zone, either_day)
        if not either_day and not any(
            day <= _longest_month(number) for number in month for day in dom
        ):  # Every date falls on every weekday in some year, so only the dates can rule it out.
            raise CronError(
                f"cron expression {text!r} never fires: no month in its month field has any day "
                "in its day-of-month field (February has 29 days in leap years)"
            )
        return cron

    def __repr__(self) -> str:
        return f"Cron.parse({self.text!r}, tz={self.tz!r})"

    def next_after(self, moment: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (an aware datetime), in UTC.

        Raises:
            ValueError: ``moment`` is naive.
            OverflowError: there is no fire time before the year 10000.
        """
        _check_aware(moment, "moment")
        local = moment.astimezone(self.tz).replace(tzinfo=None, fold=0, second=0, microsecond=0)
        wall = local + timedelta(minutes=1)
        while True:
            found = self._next_wall(wall)
            if found is None:
                raise OverflowError(f"{self!r} does not fire after {moment.isoformat()} before 10000")
            fire = self._to_utc(found)
            # A gap time is skipped; in an overlap the first occurrence may precede ``moment``.
            if fire is not None and fire > moment:
                return fire
            wall = found + timedelta(minutes=1)

    def ticks(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """The fire times ``t`` with ``start < t <= end``, in order, in UTC.

        Raises:
            ValueError: ``start`` or ``end`` is naive (at once, not when iterated).
        """
        _check_aware(start, "start")
        _check_aware(end, "end")
        return self._ticks(start, end)

    def _ticks(self, start: datetime, end: datetime) -> Iterator[datetime]:
        if start >= end:
            return
        fire = self.next_after(start)
        while fire <= end:
            yield fire
            fire = self.next_after(fire)

    def _to_utc(self, wall: datetime) -> datetime | None:
        """``wall`` (naive, local) in UTC at its first occurrence, or None if it does not exist."""
        fire = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        if fire.astimezone(self.tz).replace(tzinfo=None) != wall:
            return None
        return fire

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        by_date = day in self.day_of_month
        by_weekday = (calendar.weekday(year, month, day) + 1) % 7 in self.day_of_week
        return by_date or by_weekday if self.either_day else by_date and by_weekday

    def _next_wall(self, start: datetime) -> datetime | None:
        """The first matching naive wall time at or after ``start`` (whole minutes), if any.

        It skips whole months, days and hours that cannot match, so it is a few dozen steps
        even when the next fire time is years ahead (``0 0 29 2 *``).
        """
        year, month, day, hour, minute = start.year, start.month, start.day, start.hour, start.minute
        while year <= MAXYEAR:
            if month > 12:
                year, month = year + 1, 1
                continue
            if month not in self.month or day > calendar.monthrange(year, month)[1]:
                month, day, hour, minute = month + 1, 1, 0, 0
                continue
            next_hour = _first_from(self.hour, hour, 23) if self._day_matches(year, month, day) else None
            if next_hour is None:
                day, hour, minute = day + 1, 0, 0
                continue
            if next_hour != hour:
                hour, minute = next_hour, 0
            next_minute = _first_from(self.minute, minute, 59)
            if next_minute is None:
                hour, minute = hour + 1, 0
                continue
            return datetime(year, month, day, hour, next_minute)
        return None


def _first_from(values: frozenset[int], start: int, high: int) -> int | None:
    for value in range(start, high + 1):
        if value in values:
            return value
    return None


def _longest_month(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _check_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with a tzinfo), got {moment.isoformat()}")


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"unknown time zone {tz!r}: use an IANA zone name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _split(text: str) -> list[str]:
    """The five field texts of ``text``, aliases expanded."""
    if len(text) > _MAX_LENGTH:
        raise CronError(f"cron expression is {len(text)} characters long; the limit is {_MAX_LENGTH}")
    words = text.split()
    if not words:
        raise CronError(f"cron expression is empty: expected 5 fields ({_LAYOUT}) or an alias like '@daily'")
    if words[0].startswith("@"):
        alias = words[0].lower()
        allowed = ", ".join(_ALIASES)
        if alias == "@reboot":
            raise CronError(
                f"'@reboot' is not supported: a periodic job fires on a schedule; use one of {allowed}"
            )
        if alias not in _ALIASES:
            raise CronError(f"unknown cron alias {words[0]!r} in {text!r}: use one of {allowed}")
        if len(words) > 1:
            raise CronError(f"cron alias {words[0]!r} takes no fields, got {text!r}")
        return _ALIASES[alias].split()
    if len(words) != 5:
        seconds = " (a seconds field is not supported)" if len(words) == 6 else ""
        count = f"{len(words)} field" + ("s" if len(words) > 1 else "")
        raise CronError(f"cron expression {text!r} has {count}{seconds}: expected 5 ({_LAYOUT})")
    return words


def _parse_field(spec: str, field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in spec.split(","):
        values.update(_parse_item(item, field, text))
    return frozenset(values)


def _parse_item(item: str, field: _Field, text: str) -> range:
    where = f"cron field {field.label!r}"
    forms = "'*', 'a', 'a-b', '*/n', 'a/n' or 'a-b/n'"
    if not item:
        raise CronError(f"{where} has an empty list item in {text!r}: items are {forms}, separated by ','")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()):
            raise CronError(f"{where} step {step_text!r} is not a whole number in {text!r}: use '/n', n >= 1")
        step = int(step_text)
        if step == 0:
            raise CronError(f"{where} step 0 is not allowed in {text!r}: use '/n', n >= 1")
    if base == "*":
        low, high = field.low, field.end
    elif "-" in base:
        first, _, last = base.partition("-")
        low = _value(first, field, text)
        high = _value(last, field, text)
        if field is _DAY_OF_WEEK and high == 0 and low > 0 and not last.isdigit():
            high = 7  # "FRI-SUN": Sunday ends the week here.
        if low > high:
            raise CronError(
                f"{where} range {base!r} is reversed in {text!r}: write it low to high "
                f"({field.low}-{field.high}), or as a list"
            )
    else:
        low = _value(base, field, text)
        high = field.end if slash else low
        if slash and low > high:  # Only "7/n" in the day of week.
            raise CronError(f"{where} '{base}/n' starts after {field.end} in {text!r}: use a range 'a-b/n'")
    return range(low, high + 1, step)


def _value(token: str, field: _Field, text: str) -> int:
    where = f"cron field {field.label!r}"
    if token.isascii() and token.isdigit():
        number = int(token)
        if not field.low <= number <= field.high:
            raise CronError(f"{where} value {number} is out of range {field.low}-{field.high} in {text!r}")
        return number
    upper = token.upper()
    if field.names is not None and upper in field.names:
        return field.names[upper]
    allowed = f"{field.low}-{field.high}" + (f" or a name {field.names_help}" if field.names else "")
    if not token:
        raise CronError(f"{where} has a range with a missing end in {text!r}: values are {allowed}")
    if token == "*":
        raise CronError(f"{where} cannot use '*' inside a range in {text!r}: values are {allowed}")
    raise CronError(f"{where} value {token!r} is not allowed in {text!r}: values are {allowed}")
