"""What a message about a session says: its template variables in the session's time zone,
the recipient as stored, and the link they join with.

Shared by the sender, which writes messages, and the API, which answers the copy-link text.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from contracts.notify import MessageKind, RecipientKind
from runtime.db import Executor
from services.notify.handlers import Notify
from services.notify.templates import DEFAULT_TEMPLATES, TemplateSet


class UnknownSession(Exception):
    """Notify has not heard of the session (or it is another clinic's)."""


@dataclass(frozen=True)
class Recipient:
    """Whom a message is for, as stored: ``email`` and ``name`` may still be sealed."""

    kind: str
    email: str | None
    name: str | None
    client_unknown: bool = False
    """A client notify has not heard of yet (their details may come after the session)."""
    erased: bool = False


def local_parts(moment: datetime, zone: str) -> tuple[str, str]:
    """The date and the time of day in ``zone``; in UTC if they have no local form."""
    try:
        local = moment.astimezone(ZoneInfo(zone))
    except OverflowError:  # past the end of year 9999 there
        local = moment.astimezone(UTC)
    return f"{local:%A} {local.day} {local:%B %Y}", f"{local:%H:%M}"


def display_zone(session: Any) -> str:
    """The session's zone, or UTC when its end has no local form (year 10000 east of UTC)."""
    try:
        session["ends_at"].astimezone(ZoneInfo(session["time_zone"]))
    except OverflowError:
        return "UTC"
    zone: str = session["time_zone"]
    return zone


def starts_in(minutes: int) -> str:
    if minutes % 1440 == 0:
        days = minutes // 1440
        return "in 24 hours" if days == 1 else f"in {days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "in 1 hour" if hours == 1 else f"in {hours} hours"
    return f"in {minutes} minutes"


async def session_context(
    conn: Executor, notify: Notify, clinic_id: str, session_id: UUID, recipient_id: UUID | None
) -> tuple[Any, dict[str, Any], Recipient]:
    """The session row, its template variables (``join_url`` included; ``recipient_name`` is
    the writer's to add, once opened), and the recipient as stored."""
    session = await conn.fetchrow(
        "SELECT s.*, c.name AS clinic_name, c.early_join_minutes, p.display_name AS practitioner "
        "FROM sessions s JOIN clinics c USING (clinic_id) "
        "LEFT JOIN practitioners p USING (practitioner_id) "
        "WHERE s.session_id = $1 AND s.clinic_id = $2",
        session_id,
        clinic_id,
    )
    if session is None:
        raise UnknownSession
    found = None
    if recipient_id is not None:
        found = await conn.fetchrow(
            f"{_RECIPIENT} WHERE r.session_id = $1 AND r.recipient_id = $2",
            session_id,
            recipient_id,
        )
    # Without one: the session's clients' link, for the copy-link text.
    recipient = Recipient(**found) if found else Recipient("client", None, None)
    zone = display_zone(session)
    date, start = local_parts(session["starts_at"], zone)
    _, end = local_parts(session["ends_at"], zone)
    opens = session["starts_at"] - timedelta(minutes=session["early_join_minutes"])
    context: dict[str, Any] = {
        "clinic_name": session["clinic_name"],
        "practitioner_name": session["practitioner"] or "",
        "date": date,
        "start_time": start,
        "end_time": end,
        "time_zone": zone,
        "duration_minutes": int((session["ends_at"] - session["starts_at"]).total_seconds() // 60),
        "opens_at": local_parts(opens, zone)[1],
    }
    if session["previous_starts_at"] is not None:
        context["previous_date"], context["previous_start_time"] = local_parts(
            session["previous_starts_at"], zone
        )
    url = await link_for(conn, session, recipient_id, recipient.kind)
    if url is not None:
        context["join_url"] = notify.sealer.unseal(url)
    return session, context, recipient


_RECIPIENT = (
    "SELECT r.kind, coalesce(r.email, c.email) AS email, "
    "coalesce(r.display_name, c.display_name) AS name, "
    "r.kind = 'client' AND c.client_id IS NULL AS client_unknown, "
    "r.erased OR coalesce(c.erased, false) AS erased "
    "FROM recipients r LEFT JOIN clients c ON c.client_id = r.recipient_id"
)


async def link_for(
    conn: Executor, session: Any, recipient_id: UUID | None, kind: str
) -> str | None:
    """The sealed link this recipient joins with: an attendee's own drop-in link while link
    sharing is on (None until links has issued it), else the session's own link or the room
    the session is held in."""
    if kind == RecipientKind.attendee.value and session["link_sharing"]:
        drop_in: str | None = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE attendee_id = $1 AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            recipient_id,
        )
        return drop_in
    if session["video_mode"] == "session_link":
        sealed: str | None = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE session_id = $1 AND kind = 'session' AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            session["session_id"],
        )
    else:
        sealed = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE room_id = $1 AND kind = $2 AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            session["room_id"],
            session["video_mode"],
        )
    return sealed


async def previous_link_until(conn: Executor, link_ref: str, now: datetime, zone: str) -> str:
    """For a new-link message: until when the link it replaces still works ('15:30 on Monday
    23 November 2026'), or '' if it no longer does (regenerated, or retired and past)."""
    sunset: datetime | None = await conn.fetchval(
        "SELECT replaces_link_sunset_at FROM links WHERE link_id = $1", UUID(link_ref)
    )
    if sunset is None or sunset <= now:
        return ""
    date, time_of_day = local_parts(sunset, zone)
    return f"{time_of_day} on {date}"


async def templates_of(conn: Executor, clinic_id: str, kind: MessageKind) -> TemplateSet:
    row = await conn.fetchrow(
        "SELECT subject, text_body, html_body FROM templates WHERE clinic_id = $1 AND kind = $2",
        clinic_id,
        kind.value,
    )
    if row is None:
        return DEFAULT_TEMPLATES[kind]
    return TemplateSet(subject=row["subject"], text=row["text_body"], html=row["html_body"])
