"""Cron schedules: the syntax, its errors, the Vixie day rule, leap years, DST, and brute force."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queueit.jobs.cron import Cron, CronError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
MINUTE = timedelta(minutes=1)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: tzinfo = UTC) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def fields(cron: Cron) -> tuple[object, ...]:
    return (cron.minute, cron.hour, cron.day_of_month, cron.month, cron.day_of_week, cron.either_day)


# --- syntax ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "attribute", "expected"),
    [
        ("* * * * *", "minute", set(range(60))),
        ("7 * * * *", "minute", {7}),
        ("10-13 * * * *", "minute", {10, 11, 12, 13}),
        ("*/15 * * * *", "minute", {0, 15, 30, 45}),
        ("10-30/10 * * * *", "minute", {10, 20, 30}),
        ("50/3 * * * *", "minute", {50, 53, 56, 59}),
        ("1,5-6,*/30 * * * *", "minute", {0, 1, 5, 6, 30}),
        ("0,0,59 * * * *", "minute", {0, 59}),
        ("*/90 * * * *", "minute", {0}),
        ("0 * * * *", "hour", set(range(24))),
        ("0 */5 * * *", "hour", {0, 5, 10, 15, 20}),
        ("0 9-17/4 * * *", "hour", {9, 13, 17}),
        ("0 0 * * *", "day_of_month", set(range(1, 32))),
        ("0 0 */10 * *", "day_of_month", {1, 11, 21, 31}),
        ("0 0 28-31 * *", "day_of_month", {28, 29, 30, 31}),
        ("0 0 1 * *", "month", set(range(1, 13))),
        ("0 0 1 */4 *", "month", {1, 5, 9}),
        ("0 0 1 JAN-MAR *", "month", {1, 2, 3}),
        ("0 0 1 jan,Jun,DEC *", "month", {1, 6, 12}),
        ("0 0 1 feb-12/5 *", "month", {2, 7, 12}),
        ("0 0 * * *", "day_of_week", set(range(7))),
        ("0 0 * * MON-FRI", "day_of_week", {1, 2, 3, 4, 5}),
        ("0 0 * * sun,Sat", "day_of_week", {0, 6}),
        ("0 0 * * 7", "day_of_week", {0}),
        ("0 0 * * 0,7", "day_of_week", {0}),
        ("0 0 * * 5-7", "day_of_week", {5, 6, 0}),
        ("0 0 * * FRI-SUN", "day_of_week", {5, 6, 0}),
        ("0 0 * * SUN-SAT", "day_of_week", set(range(7))),
        ("0 0 * * SUN-SUN", "day_of_week", {0}),
        ("0 0 * * */2", "day_of_week", {0, 2, 4, 6}),
        ("0 0 * * 1/2", "day_of_week", {1, 3, 5}),
        ("0 0 * * 1-7/2", "day_of_week", {1, 3, 5, 0}),
        ("0 0 * * mon/2", "day_of_week", {1, 3, 5}),
        ("  30\t4  * *   *  ", "hour", {4}),
    ],
)
def test_every_syntax_form_parses_to_its_set(text: str, attribute: str, expected: set[int]) -> None:
    cron = Cron.parse(text)
    assert getattr(cron, attribute) == frozenset(expected)
    assert cron.text == text
    assert cron.tz is UTC


@pytest.mark.parametrize(
    ("alias", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("  @hourly\n", "0 * * * *"),
    ],
)
def test_aliases_stand_for_their_expressions(alias: str, same_as: str) -> None:
    cron = Cron.parse(alias)
    assert cron.text == alias
    assert fields(cron) == fields(Cron.parse(same_as))


def test_time_zone_is_utc_a_zoneinfo_name_or_a_tzinfo() -> None:
    assert Cron.parse("0 0 * * *").tz is UTC
    assert Cron.parse("0 0 * * *", None).tz is UTC
    assert Cron.parse("0 0 * * *", "Europe/Berlin").tz == BERLIN
    assert Cron.parse("0 0 * * *", NEW_YORK).tz is NEW_YORK
    india = timezone(timedelta(hours=5, minutes=30))
    assert Cron.parse("0 9 * * *", india).next_after(at(2024, 1, 1)) == at(2024, 1, 1, 3, 30)


def test_cron_is_a_frozen_value() -> None:
    cron = Cron.parse("*/5 * * * *", "Europe/Berlin")
    assert cron == Cron.parse("*/5 * * * *", "Europe/Berlin")
    assert hash(cron) == hash(Cron.parse("*/5 * * * *", "Europe/Berlin"))
    assert "*/5 * * * *" in repr(cron)
    with pytest.raises(AttributeError):
        cron.text = "* * * * *"  # type: ignore[misc]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cron expression is empty: expected 5 fields"),
        (" \t\n", "cron expression is empty"),
        ("* " * 100 + "*", "201 characters long; the limit is 200"),
        ("@reboot", "'@reboot' is not supported"),
        ("@every 5m", "unknown cron alias '@every'"),
        ("@daily 0", "cron alias '@daily' takes no fields"),
        ("0 * * * * *", "has 6 fields (a seconds field is not supported): expected 5"),
        ("* * * *", "has 4 fields: expected 5 (minute hour day-of-month month day-of-week)"),
        ("*", "has 1 field: expected 5"),
        ("* * * * * * *", "has 7 fields: expected 5"),
        ("60 * * * *", "cron field 'minute' value 60 is out of range 0-59"),
        ("0 25 * * *", "cron field 'hour' value 25 is out of range 0-23 in '0 25 * * *'"),
        ("0 0 0 * *", "cron field 'day-of-month' value 0 is out of range 1-31"),
        ("0 0 32 * *", "cron field 'day-of-month' value 32 is out of range 1-31"),
        ("0 0 * 0 *", "cron field 'month' value 0 is out of range 1-12"),
        ("0 0 * 13 *", "cron field 'month' value 13 is out of range 1-12"),
        ("0 0 * * 8", "cron field 'day-of-week' value 8 is out of range 0-7"),
        ("*/0 * * * *", "cron field 'minute' step 0 is not allowed"),
        ("0 1-5/0 * * *", "cron field 'hour' step 0 is not allowed"),
        ("*/ * * * *", "step '' is not a whole number"),
        ("*/x * * * *", "step 'x' is not a whole number"),
        ("*/-2 * * * *", "step '-2' is not a whole number"),
        ("1/2/3 * * * *", "step '2/3' is not a whole number"),
        ("5-1 * * * *", "cron field 'minute' range '5-1' is reversed"),
        ("0 0 * DEC-JAN *", "cron field 'month' range 'DEC-JAN' is reversed"),
        ("0 0 * * FRI-MON", "cron field 'day-of-week' range 'FRI-MON' is reversed"),
        ("0 0 * * 7-0", "range '7-0' is reversed"),
        ("0 0 * * 7/2", "'7/n' starts after 6"),
        ("1- * * * *", "range with a missing end"),
        ("-1 * * * *", "range with a missing end"),
        ("1-2-3 * * * *", "value '2-3' is not allowed"),
        ("*-5 * * * *", "cannot use '*' inside a range"),
        ("1,,2 * * * *", "cron field 'minute' has an empty list item"),
        ("1, * * * *", "has an empty list item"),
        ("x * * * *", "cron field 'minute' value 'x' is not allowed in 'x * * * *': values are 0-59"),
        ("JAN * * * *", "cron field 'minute' value 'JAN' is not allowed"),
        ("0 0 * MON *", "value 'MON' is not allowed in '0 0 * MON *': values are 1-12 or a name JAN-DEC"),
        ("0 0 * * JAN", "values are 0-7 or a name SUN-SAT"),
        ("0 0 * * MONDAY", "value 'MONDAY' is not allowed"),
        ("+5 * * * *", "value '+5' is not allowed"),
        ("1.5 * * * *", "value '1.5' is not allowed"),
        ("\u0663 * * * *", "is not allowed"),  # An Arabic-Indic 3: int() would take it.
        ("? * * * *", "value '?' is not allowed"),
        ("0 0 L * *", "value 'L' is not allowed"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires"),
        ("0 0 31 4,6,9,11 *", "never fires"),
        ("0 0 30,31 FEB * ", "never fires"),
    ],
)
def test_invalid_expressions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        Cron.parse(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_date_is_refused_exactly_when_it_never_exists() -> None:
    for month in range(1, 13):
        for day in range(1, 32):
            try:
                date(2000, month, day)  # A leap year: February 29 exists.
            except ValueError:
                with pytest.raises(CronError, match="never fires"):
                    Cron.parse(f"0 0 {day} {month} *")
            else:
                assert Cron.parse(f"0 0 {day} {month} *").next_after(at(2001, 1, 1)).day == day


def test_two_hundred_characters_are_allowed() -> None:
    text = "0" * 192 + " * * * *"
    assert len(text) == 200
    assert Cron.parse(text).minute == {0}


@pytest.mark.parametrize("zone", ["Nope/Zone", "Europe", "", "../etc/passwd", "/etc/localtime", "utc"])
def test_unknown_time_zones_are_cron_errors(zone: str) -> None:
    with pytest.raises(CronError, match="unknown time zone"):
        Cron.parse("* * * * *", zone)


def test_naive_datetimes_are_refused() -> None:
    cron = Cron.parse("* * * * *")
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="aware") as caught:
        cron.next_after(naive)
    assert not isinstance(caught.value, CronError)
    with pytest.raises(ValueError, match="start must be an aware datetime"):
        cron.ticks(naive, at(2024, 1, 2))  # At the call, before iterating.
    with pytest.raises(ValueError, match="end must be an aware datetime"):
        cron.ticks(at(2024, 1, 1), naive)


# --- days -----------------------------------------------------------------------------------------


def days_fired(text: str, year: int, month: int) -> list[int]:
    cron = Cron.parse(text)
    start = at(year, month, 1) - MINUTE
    end = at(year + month // 12, month % 12 + 1, 1) - MINUTE
    return [fire.day for fire in cron.ticks(start, end)]


def test_both_day_fields_restricted_fire_on_either() -> None:
    # October 2024: the 13th is a Sunday; the Fridays are the 4th, 11th, 18th and 25th.
    assert Cron.parse("0 0 13 * FRI").either_day
    assert days_fired("0 0 13 * FRI", 2024, 10) == [4, 11, 13, 18, 25]
    # The classic surprise: "the first Monday" written this way is days 1-7 plus every Monday.
    assert days_fired("0 0 1-7 * MON", 2024, 10) == [1, 2, 3, 4, 5, 6, 7, 14, 21, 28]


def test_one_day_field_unrestricted_needs_both() -> None:
    assert days_fired("0 0 * * FRI", 2024, 10) == [4, 11, 18, 25]
    assert days_fired("0 0 13 * *", 2024, 10) == [13]
    assert not Cron.parse("0 0 13 * *").either_day


def test_a_day_field_starting_with_a_star_counts_as_unrestricted_like_vixie_cron() -> None:
    # Vixie cron looks at the first character, so "*/2" keeps the AND: odd days that are Fridays.
    assert not Cron.parse("0 0 */2 * FRI").either_day
    assert days_fired("0 0 */2 * FRI", 2024, 10) == [11, 25]
    assert days_fired("0 0 13 * */3", 2024, 10) == [13]  # A Sunday (0).
    assert days_fired("0 0 14 * */3", 2024, 10) == []


def test_day_rule_with_a_restricted_month() -> None:
    # Either day in February 2024 only (the 29th is a Thursday); never in other months.
    cron = Cron.parse("0 12 29 FEB THU")
    assert [f.date() for f in cron.ticks(at(2024, 1, 1), at(2025, 1, 1))] == [
        date(2024, 2, 1),
        date(2024, 2, 8),
        date(2024, 2, 15),
        date(2024, 2, 22),
        date(2024, 2, 29),
    ]
    # Even a date that never exists fires on its weekdays when both fields are restricted.
    assert Cron.parse("0 0 30 2 MON").next_after(at(2024, 1, 1)) == at(2024, 2, 5)


# --- next_after -----------------------------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    cron = Cron.parse("*/5 * * * *")
    assert cron.next_after(at(2024, 5, 1, 10, 0)) == at(2024, 5, 1, 10, 5)
    assert cron.next_after(at(2024, 5, 1, 10, 4)) == at(2024, 5, 1, 10, 5)
    almost = datetime(2024, 5, 1, 10, 4, 59, 999_999, tzinfo=UTC)
    assert cron.next_after(almost) == at(2024, 5, 1, 10, 5)
    assert cron.next_after(at(2024, 5, 1, 10, 5) + timedelta(microseconds=1)) == at(2024, 5, 1, 10, 10)


def test_next_after_returns_utc_for_any_zone_of_moment() -> None:
    cron = Cron.parse("0 9 * * *", "Europe/Berlin")
    moment = datetime(2024, 7, 1, 6, 0, tzinfo=NEW_YORK)  # 10:00 UTC, 12:00 in Berlin.
    fire = cron.next_after(moment)
    assert fire == at(2024, 7, 2, 7, 0)
    assert fire.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "moment", "expected"),
    [
        ("*/5 * * * *", at(2024, 12, 31, 23, 58), at(2025, 1, 1, 0, 0)),
        ("0 0 1 * *", at(2024, 12, 31, 23, 59), at(2025, 1, 1)),
        ("0 0 1 * *", at(2025, 1, 1), at(2025, 2, 1)),
        ("59 23 31 12 *", at(2024, 12, 31, 23, 59), at(2025, 12, 31, 23, 59)),
        ("0 0 31 * *", at(2024, 4, 1), at(2024, 5, 31)),  # April has 30 days.
        ("0 0 31 * *", at(2024, 7, 31, 0, 0), at(2024, 8, 31)),
        ("30 * * * *", at(2024, 1, 31, 23, 31), at(2024, 2, 1, 0, 30)),
        ("0 12 * 3 *", at(2024, 3, 31, 12, 0), at(2025, 3, 1, 12, 0)),
        ("0 0 * * MON", at(2024, 12, 29), at(2024, 12, 30)),
        ("0 0 1 JAN *", at(2024, 1, 1), at(2025, 1, 1)),
        ("@yearly", at(2024, 6, 1), at(2025, 1, 1)),
        ("@monthly", at(2024, 2, 29, 12), at(2024, 3, 1)),
        ("@weekly", at(2024, 10, 9), at(2024, 10, 13)),
        ("@hourly", at(2024, 10, 9, 23, 0), at(2024, 10, 10, 0, 0)),
    ],
)
def test_month_and_year_rollover(text: str, moment: datetime, expected: datetime) -> None:
    assert Cron.parse(text).next_after(moment) == expected


def test_february_29_fires_in_leap_years_only() -> None:
    cron = Cron.parse("0 0 29 2 *")
    assert cron.next_after(at(2024, 3, 1)) == at(2028, 2, 29)
    assert cron.next_after(at(2023, 6, 1)) == at(2024, 2, 29)
    assert cron.next_after(at(1999, 1, 1)) == at(2000, 2, 29)  # 2000 is divisible by 400.
    assert cron.next_after(at(2096, 3, 1)) == at(2104, 2, 29)  # 2100 is not a leap year.
    fires = list(cron.ticks(at(2000, 1, 1), at(2030, 1, 1)))
    assert [fire.year for fire in fires] == [2000, 2004, 2008, 2012, 2016, 2020, 2024, 2028]


def test_rare_schedules_are_found_without_walking_every_minute() -> None:
    cron = Cron.parse("0 0 29 2 *")
    began = time.perf_counter()
    for _ in range(50):
        assert cron.next_after(at(2096, 3, 1)) == at(2104, 2, 29)
    # Eight years minute by minute would be 4 million steps for each call.
    assert time.perf_counter() - began < 2.0


def test_no_fire_time_before_the_year_10000_is_an_overflow() -> None:
    with pytest.raises(OverflowError):
        Cron.parse("0 0 29 2 *").next_after(at(9997, 1, 1))


# --- ticks ----------------------------------------------------------------------------------------


def test_ticks_exclude_start_include_end_and_come_in_order() -> None:
    cron = Cron.parse("*/5 * * * *")
    fires = list(cron.ticks(at(2024, 5, 1), at(2024, 5, 2)))
    assert len(fires) == 288
    assert fires[0] == at(2024, 5, 1, 0, 5)
    assert fires[-1] == at(2024, 5, 2)
    assert fires == sorted(fires)
    assert all(later - earlier == timedelta(minutes=5) for earlier, later in pairwise(fires))
    assert all(fire.tzinfo is UTC for fire in fires)


def test_ticks_of_an_empty_or_reversed_window_are_empty() -> None:
    cron = Cron.parse("* * * * *")
    assert list(cron.ticks(at(2024, 5, 1), at(2024, 5, 1))) == []
    assert list(cron.ticks(at(2024, 5, 2), at(2024, 5, 1))) == []
    assert list(cron.ticks(at(2024, 5, 1), at(2024, 5, 1, 0, 0) + timedelta(seconds=59))) == []


def test_ticks_are_lazy() -> None:
    fires = Cron.parse("* * * * *").ticks(at(2024, 1, 1), at(9000, 1, 1))
    assert next(fires) == at(2024, 1, 1, 0, 1)
    assert next(fires) == at(2024, 1, 1, 0, 2)


# --- time zones and DST ---------------------------------------------------------------------------


def test_fields_match_the_local_wall_clock() -> None:
    cron = Cron.parse("0 9 * * MON-FRI", "America/New_York")
    # Friday 2024-07-05 09:00 EDT is 13:00 UTC; then Monday the 8th.
    assert cron.next_after(at(2024, 7, 5, 12, 0)) == at(2024, 7, 5, 13, 0)
    assert cron.next_after(at(2024, 7, 5, 13, 0)) == at(2024, 7, 8, 13, 0)
    # In winter the same wall time is 14:00 UTC.
    assert cron.next_after(at(2024, 12, 2)) == at(2024, 12, 2, 14, 0)


def test_berlin_spring_forward_skips_the_missing_time() -> None:
    # 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist that day.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    fires = list(cron.ticks(at(2024, 3, 29), at(2024, 4, 2)))
    assert fires == [at(2024, 3, 29, 1, 30), at(2024, 3, 30, 1, 30), at(2024, 4, 1, 0, 30)]


def test_berlin_spring_forward_loses_no_utc_time() -> None:
    cron = Cron.parse("*/30 * * * *", "Europe/Berlin")
    fires = list(cron.ticks(at(2024, 3, 31, 0, 0), at(2024, 3, 31, 2, 0)))
    # 01:30 CET, then 03:00, 03:30 and 04:00 CEST: every 30 minutes in UTC.
    assert fires == [
        at(2024, 3, 31, 0, 30),
        at(2024, 3, 31, 1, 0),
        at(2024, 3, 31, 1, 30),
        at(2024, 3, 31, 2),
    ]


def test_berlin_fall_back_fires_once_at_the_first_occurrence() -> None:
    # 2024-10-27: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00-02:59 happens twice.
    cron = Cron.parse("30 2 * * *", "Europe/Berlin")
    fires = list(cron.ticks(at(2024, 10, 26), at(2024, 10, 29)))
    assert fires == [at(2024, 10, 26, 0, 30), at(2024, 10, 27, 0, 30), at(2024, 10, 28, 1, 30)]
    assert fires[1].astimezone(BERLIN).fold == 0


def test_berlin_fall_back_repeated_hour_does_not_fire_again() -> None:
    cron = Cron.parse("*/15 * * * *", "Europe/Berlin")
    fires = list(cron.ticks(at(2024, 10, 26, 23, 0), at(2024, 10, 27, 2, 0)))
    walls = [fire.astimezone(BERLIN).strftime("%H:%M %Z") for fire in fires]
    assert walls == [
        "01:15 CEST",
        "01:30 CEST",
        "01:45 CEST",
        "02:00 CEST",
        "02:15 CEST",
        "02:30 CEST",
        "02:45 CEST",
        "03:00 CET",
    ]


def test_berlin_moment_inside_the_second_occurrence() -> None:
    cron = Cron.parse("*/20 * * * *", "Europe/Berlin")
    second = datetime(2024, 10, 27, 2, 10, fold=1, tzinfo=BERLIN)  # 01:10 UTC
    assert cron.next_after(second) == at(2024, 10, 27, 2, 0)  # 03:00 CET
    first = datetime(2024, 10, 27, 2, 10, fold=0, tzinfo=BERLIN)  # 00:10 UTC
    assert cron.next_after(first) == at(2024, 10, 27, 0, 20)  # 02:20 CEST


def test_new_york_spring_forward_skips_the_missing_time() -> None:
    # 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    cron = Cron.parse("30 2 * * *", "America/New_York")
    fires = list(cron.ticks(at(2024, 3, 9), at(2024, 3, 12)))
    assert fires == [at(2024, 3, 9, 7, 30), at(2024, 3, 11, 6, 30)]
    hourly = Cron.parse("0 * * * *", "America/New_York")
    walls = [f.astimezone(NEW_YORK).hour for f in hourly.ticks(at(2024, 3, 10, 5), at(2024, 3, 10, 9))]
    assert walls == [1, 3, 4, 5]


def test_new_york_fall_back_fires_once_at_the_first_occurrence() -> None:
    # 2024-11-03: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:00-01:59 happens twice.
    cron = Cron.parse("30 1 * * *", "America/New_York")
    fires = list(cron.ticks(at(2024, 11, 2), at(2024, 11, 5)))
    assert fires == [at(2024, 11, 2, 5, 30), at(2024, 11, 3, 5, 30), at(2024, 11, 4, 6, 30)]
    inside = Cron.parse("*/20 * * * *", "America/New_York")
    assert inside.next_after(at(2024, 11, 3, 6, 10)) == at(2024, 11, 3, 7, 0)  # 01:10 EST -> 02:00 EST
    hourly = Cron.parse("0 * * * *", "America/New_York")
    walls = [
        f.astimezone(NEW_YORK).strftime("%H %Z") for f in hourly.ticks(at(2024, 11, 3, 4), at(2024, 11, 3, 8))
    ]
    assert walls == ["01 EDT", "02 EST", "03 EST"]


# --- brute force ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """An expression and the sets it should mean, built independently of the parser."""

    texts: tuple[str, str, str, str, str]
    sets: tuple[frozenset[int], frozenset[int], frozenset[int], frozenset[int], frozenset[int]]

    @property
    def text(self) -> str:
        return " ".join(self.texts)

    def day_fires(self, day: date) -> bool:
        by_date = day.day in self.sets[2]
        by_weekday = day.isoweekday() % 7 in self.sets[4]
        if not self.texts[2].startswith("*") and not self.texts[4].startswith("*"):
            return by_date or by_weekday
        return by_date and by_weekday

    def fires_at(self, wall: datetime) -> bool:
        return (
            wall.minute in self.sets[0]
            and wall.hour in self.sets[1]
            and wall.month in self.sets[3]
            and self.day_fires(wall.date())
        )

    def ever_fires(self) -> bool:
        # 2000-2031 puts every date, February 29 too, on every weekday.
        day = date(2000, 1, 1)
        while day.year < 2032:
            if day.month in self.sets[3] and self.day_fires(day):
                return True
            day += timedelta(days=1)
        return False


@st.composite
def field(draw: st.DrawFn, low: int, high: int, end: int) -> tuple[str, frozenset[int]]:
    """A comma list of items for a field of ``low``-``high`` whose ``*`` stops at ``end``."""
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["*", "a", "a-b", "*/n", "a-b/n", "a/n"]))
        a = draw(st.integers(low, end if kind == "a/n" else high))
        b = draw(st.integers(a, high))
        n = draw(st.integers(1, end - low + 2))
        text, span = {
            "*": ("*", range(low, end + 1)),
            "a": (str(a), range(a, a + 1)),
            "a-b": (f"{a}-{b}", range(a, b + 1)),
            "*/n": (f"*/{n}", range(low, end + 1, n)),
            "a-b/n": (f"{a}-{b}/{n}", range(a, b + 1, n)),
            "a/n": (f"{a}/{n}", range(a, end + 1, n)),
        }[kind]
        texts.append(text)
        values.update(span)
    return ",".join(texts), frozenset(values)


def mostly_star(
    low: int, end: int, fields: st.SearchStrategy[tuple[str, frozenset[int]]]
) -> st.SearchStrategy[tuple[str, frozenset[int]]]:
    return st.one_of(st.just(("*", frozenset(range(low, end + 1)))), fields)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    minute = draw(field(0, 59, 59))
    hour = draw(field(0, 23, 23))
    dom = draw(mostly_star(1, 31, field(1, 31, 31)))
    month = draw(mostly_star(1, 12, field(1, 12, 12)))
    dow_text, dow = draw(mostly_star(0, 6, field(0, 7, 6)))
    return Spec(
        (minute[0], hour[0], dom[0], month[0], dow_text),
        (minute[1], hour[1], dom[1], month[1], frozenset(d % 7 for d in dow)),
    )


def brute_force(spec: Spec, moment: datetime, zone: tzinfo, window: timedelta) -> datetime | None:
    """The first UTC minute after ``moment`` whose first-occurrence wall time fires, in the window."""
    minute = moment.astimezone(UTC).replace(second=0, microsecond=0) + MINUTE
    while minute <= moment + window:
        wall = minute.astimezone(zone)
        if minute > moment and wall.fold == 0 and spec.fires_at(wall.replace(tzinfo=None)):
            return minute
        minute += MINUTE
    return None


WINDOW = timedelta(days=8)
PROPERTY = settings(max_examples=150, deadline=None)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC))


@PROPERTY
@given(specs(), moments)
def test_next_after_agrees_with_a_minute_by_minute_search_in_utc(spec: Spec, moment: datetime) -> None:
    if not spec.ever_fires():
        with pytest.raises(CronError, match="never fires"):
            Cron.parse(spec.text)
        return
    cron = Cron.parse(spec.text)
    assert fields(cron)[:5] == spec.sets
    fire = cron.next_after(moment)
    assert fire.tzinfo is UTC
    assert fire > moment
    assert spec.fires_at(fire.replace(tzinfo=None))
    expected = brute_force(spec, moment, UTC, WINDOW)
    if expected is None:
        assert fire > moment + WINDOW
    else:
        assert fire == expected


TRANSITIONS = [
    (BERLIN, at(2024, 3, 31, 1)),
    (BERLIN, at(2024, 10, 27, 1)),
    (NEW_YORK, at(2024, 3, 10, 7)),
    (NEW_YORK, at(2024, 11, 3, 6)),
]


@PROPERTY
@given(
    st.sampled_from(TRANSITIONS),
    st.integers(-36 * 60, 12 * 60),
    st.sampled_from(
        ["*/7 * * * *", "0,30 * * * *", "15 1-3 * * *", "*/20 2 * * *", "59 * * * *", "0 */2 * * *"]
    ),
)
def test_dst_nights_agree_with_a_minute_by_minute_search(
    transition: tuple[ZoneInfo, datetime], offset: int, text: str
) -> None:
    zone, instant = transition
    cron = Cron.parse(text, zone)
    moment = instant + timedelta(minutes=offset, seconds=offset % 60)
    minute, hour, dom, month, dow = text.split()
    spec = Spec(
        (minute, hour, dom, month, dow),
        (cron.minute, cron.hour, cron.day_of_month, cron.month, cron.day_of_week),
    )
    assert cron.next_after(moment) == brute_force(spec, moment, zone, timedelta(days=2))
