"""The calendar entry a message carries (iTIP, RFC 5546, over iCalendar, RFC 5545).

A session is one entry for its whole life: the UID never changes and every change raises
SEQUENCE, so a calendar moves the entry on an update and removes it on a CANCEL instead of
adding a second one.
"""

from datetime import MAXYEAR, MINYEAR, UTC, date, datetime
from functools import lru_cache
from typing import Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from icalendar import Calendar, Component, Event, vCalAddress

PRODID = "-//Antechamber//Antechamber//EN"


def session_uid(session_id: UUID) -> str:
    return f"{session_id}@antechamber"


def calendar(
    *,
    uid: str,
    sequence: int,
    method: Literal["REQUEST", "CANCEL"],
    starts_at: datetime,
    ends_at: datetime,
    time_zone: str,
    summary: str,
    description: str,
    url: str | None,
    organizer: tuple[str, str] | None,
    attendee: tuple[str, str] | None,
    stamp: datetime,
) -> bytes:
    """One VEVENT, its times in ``time_zone`` with the VTIMEZONE that defines it.

    ``organizer`` and ``attendee`` are (name, email). Times must be aware; a zone of UTC is
    written as UTC (``Z``), which needs no VTIMEZONE, and so is a time that has no local form
    (the last hours of year 9999 east of UTC fall in year 10000, which no datetime holds).
    """
    if any(moment.tzinfo is None for moment in (starts_at, ends_at, stamp)):
        raise ValueError("starts_at, ends_at and stamp must carry a time zone")
    zone = ZoneInfo(time_zone)
    event = Event()
    event.add("uid", uid)
    event.add("sequence", sequence)
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", _in_zone(starts_at, zone))
    event.add("dtend", _in_zone(ends_at, zone))
    event.add("summary", summary)
    event.add("description", description)
    if url:
        # LOCATION too: most calendars show it on the entry, and few show URL at all.
        event.add("url", url)
        event.add("location", url)
    event.add("status", "CONFIRMED" if method == "REQUEST" else "CANCELLED")
    if organizer:
        event.add("organizer", _address(*organizer))
    if attendee:
        # RSVP=FALSE: nobody reads replies, so calendars should not offer to send one.
        event.add("attendee", _address(*attendee, ROLE="REQ-PARTICIPANT", RSVP="FALSE"))

    entry = Calendar()
    entry.add("prodid", PRODID)
    entry.add("version", "2.0")
    entry.add("method", method)
    first_year = max(MINYEAR, starts_at.year - 1)
    last_year = min(MAXYEAR - 1, ends_at.year + 2)  # the probe below needs the year after
    for definition in _vtimezones(time_zone, first_year, last_year):
        entry.add_component(definition)
    entry.add_component(event)
    content: bytes = entry.to_ical()
    return content


def _in_zone(moment: datetime, zone: ZoneInfo) -> datetime:
    try:
        return moment.astimezone(zone)
    except OverflowError:
        return moment.astimezone(UTC)


@lru_cache(maxsize=128)
def _vtimezones(time_zone: str, first_year: int, last_year: int) -> tuple[Component, ...]:
    """The zone's rules around the session only: the full 1970-2038 history would be most of
    the file, and a later change of the session sends a new VTIMEZONE with it. Made once per
    zone and years (a quarter of a calendar's cost otherwise); none for UTC."""
    probe = Calendar()
    moment = Event()
    moment.add("dtstart", datetime(first_year + 1, 6, 1, tzinfo=ZoneInfo(time_zone)))
    probe.add_component(moment)
    probe.add_missing_timezones(first_date=date(first_year, 1, 1), last_date=date(last_year, 1, 1))
    return tuple(c for c in probe.subcomponents if c.name == "VTIMEZONE")


def _address(name: str, email: str, **params: str) -> vCalAddress:
    address = vCalAddress(f"mailto:{email}")
    # A parameter value cannot hold a double quote or a line break, even quoted (RFC 5545 3.1).
    address.params["CN"] = " ".join(name.replace('"', "'").split())
    address.params.update(params)
    return address
