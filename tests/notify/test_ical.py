"""The calendar entry: one session, one UID, in the clinic's zone, confirmed or cancelled."""

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import pytest
from icalendar import Calendar

from services.notify.ical import calendar, session_uid

SESSION = UUID("0b6c3f1e-2f4a-4d8e-9a51-7c2d9e3b1f00")
STARTS = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 14:00 in Berlin (winter, UTC+1)


def entry(method: Literal["REQUEST", "CANCEL"] = "REQUEST", **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "uid": session_uid(SESSION),
        "sequence": 3,
        "method": method,
        "starts_at": STARTS,
        "ends_at": STARTS + timedelta(minutes=50),
        "time_zone": "Europe/Berlin",
        "summary": "Video session with Dr. Maria Keller",
        "description": "Join: https://video.example.org/s/abc?x=1&y=2\nPersonal; do not share.",
        "url": "https://video.example.org/s/abc?x=1&y=2",
        "organizer": ("Riverside Practice", "clinic@example.org"),
        "attendee": ("Alex Morgan", "alex@example.org"),
        "stamp": datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
    }
    return calendar(**(fields | changes))


def event_of(content: bytes) -> Any:
    (event,) = Calendar.from_ical(content).walk("VEVENT")
    return event


def test_the_uid_is_stable_per_session() -> None:
    assert session_uid(SESSION) == "0b6c3f1e-2f4a-4d8e-9a51-7c2d9e3b1f00@antechamber"
    assert session_uid(SESSION) == session_uid(UUID(str(SESSION)))


def test_a_request_carries_the_session() -> None:
    content = entry()
    parsed = Calendar.from_ical(content)
    event = event_of(content)

    assert str(parsed["PRODID"]) == "-//Antechamber//Antechamber//EN"
    assert str(parsed["VERSION"]) == "2.0"
    assert str(parsed["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == session_uid(SESSION)
    assert int(event["SEQUENCE"]) == 3
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["SUMMARY"]) == "Video session with Dr. Maria Keller"
    assert "do not share" in str(event["DESCRIPTION"])
    assert str(event["URL"]) == "https://video.example.org/s/abc?x=1&y=2"
    assert str(event["LOCATION"]) == "https://video.example.org/s/abc?x=1&y=2"
    assert event.decoded("DTSTAMP") == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    assert b"DTSTAMP:20261101T093000Z\r\n" in content


def test_times_are_in_the_clinic_zone_with_its_definition() -> None:
    content = entry()
    event = event_of(content)
    start = event.decoded("DTSTART")

    assert event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert (start.hour, start.minute) == (14, 0)
    assert start == STARTS
    assert event.decoded("DTEND") == STARTS + timedelta(minutes=50)
    assert b"DTSTART;TZID=Europe/Berlin:20261124T140000\r\n" in content
    zones = Calendar.from_ical(content).walk("VTIMEZONE")
    assert [str(zone["TZID"]) for zone in zones] == ["Europe/Berlin"]


def test_summer_time_is_respected() -> None:
    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    event = event_of(entry(starts_at=summer, ends_at=summer + timedelta(hours=1)))

    assert event.decoded("DTSTART").hour == 14  # UTC+2


def test_organizer_and_attendee_are_mail_addresses_with_names() -> None:
    event = event_of(entry())

    assert str(event["ORGANIZER"]) == "mailto:clinic@example.org"
    assert event["ORGANIZER"].params["CN"] == "Riverside Practice"
    assert str(event["ATTENDEE"]) == "mailto:alex@example.org"
    assert event["ATTENDEE"].params["CN"] == "Alex Morgan"
    assert event["ATTENDEE"].params["RSVP"] == "FALSE"


def test_a_name_cannot_break_the_entry() -> None:
    event = event_of(entry(attendee=('Alex "the\r\nGreat" Morgan', "alex@example.org")))

    assert event["ATTENDEE"].params["CN"] == "Alex 'the Great' Morgan"


def test_a_cancel_cancels_the_same_entry() -> None:
    content = entry("CANCEL", sequence=4, url=None, attendee=None)
    event = event_of(content)

    assert str(Calendar.from_ical(content)["METHOD"]) == "CANCEL"
    assert str(event["UID"]) == session_uid(SESSION)
    assert int(event["SEQUENCE"]) == 4
    assert str(event["STATUS"]) == "CANCELLED"
    assert "URL" not in event
    assert "LOCATION" not in event
    assert "ATTENDEE" not in event


def test_lines_end_with_crlf() -> None:
    content = entry()

    assert content.endswith(b"END:VCALENDAR\r\n")
    assert b"\n" not in content.replace(b"\r\n", b"")


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        entry(starts_at=datetime(2026, 11, 24, 14, 0))


@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Berlin", "Pacific/Kiritimati"])
def test_a_session_at_the_end_of_year_9999_has_an_entry(time_zone: str) -> None:
    """Its local times may fall in year 10000, which no datetime holds: written in UTC."""
    starts = datetime(9999, 12, 31, 22, 0, tzinfo=UTC)
    ends = starts + timedelta(minutes=50)
    event = event_of(entry(starts_at=starts, ends_at=ends, time_zone=time_zone))
    assert event.decoded("DTSTART") == starts
    assert event.decoded("DTEND") == ends


def test_a_session_in_year_1_has_an_entry() -> None:
    starts = datetime(1, 1, 1, 9, 0, tzinfo=UTC)
    event = event_of(entry(starts_at=starts, ends_at=starts + timedelta(minutes=50)))
    assert event.decoded("DTSTART") == starts
