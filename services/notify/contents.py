"""What a message about a session says: its template variables in the session's time zone,
the recipient as stored, and the link they join with.

Shared by the sender, which writes messages, and the API, which answers the copy-link text.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from contracts.links import LinkKind
from contracts.notify import MessageKind, RecipientKind
from contracts.scheduling import VideoMode
from runtime.db import Executor
from services.notify.handlers import Notify
from services.notify.templates import DEFAULT_TEMPLATES, TemplateSet


class UnknownSession(Exception):
    """Notify has not heard of the session (or it is another clinic's)."""


class UnknownRecipient(Exception):
    """The session has no such client or attendee."""


WINDOWED = frozenset({LinkKind.session, LinkKind.drop_in, LinkKind.guest})
"""Links that open ``early_join`` minutes before the start; a room's link is always open."""
SHAREABLE = frozenset({LinkKind.practitioner_room, LinkKind.guest})
"""Links that are not one person's: a practitioner's room is public, a guest link is passed on."""


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


@dataclass(frozen=True)
class Contents:
    """What a message about a session is written from."""

    session: Any
    """The session's row, with its clinic's name and its practitioner's."""
    context: dict[str, Any]
    """Its template variables: ``join_url`` once the link has arrived; ``recipient_name`` and
    ``room_title`` empty, for the writer to fill in once opened."""
    recipient: Recipient
    link: LinkKind
    """The kind of link the recipient joins with (or is to, before it arrives)."""
    room_title: str | None
    """The title of the room the session is held in, as stored (a client room's is sealed)."""


async def session_context(
    conn: Executor,
    notify: Notify,
    clinic_id: str,
    session_id: UUID,
    recipient_id: UUID | None,
    *,
    guest: bool = False,
) -> Contents:
    """The session as ``recipient_id`` (else its clients) is told of it; with ``guest``, with
    the session's shareable guest link instead. Raises :class:`UnknownSession`,
    :class:`UnknownRecipient`."""
    session = await conn.fetchrow(
        "SELECT s.*, c.name AS clinic_name, c.early_join_minutes, p.display_name AS practitioner, "
        "room.title AS room_title FROM sessions s JOIN clinics c USING (clinic_id) "
        "LEFT JOIN practitioners p USING (practitioner_id) "
        "LEFT JOIN rooms room ON room.room_id = s.room_id AND s.video_mode <> 'session_link' "
        "WHERE s.session_id = $1 AND s.clinic_id = $2",
        session_id,
        clinic_id,
    )
    if session is None:
        raise UnknownSession
    recipient = Recipient("client", None, None)  # none named: the session's clients
    if recipient_id is not None:
        found = await conn.fetchrow(
            f"{_RECIPIENT} WHERE r.session_id = $1 AND r.recipient_id = $2",
            session_id,
            recipient_id,
        )
        if found is None:
            raise UnknownRecipient
        recipient = Recipient(**found)
    link = LinkKind.guest if guest else link_kind_for(session, recipient.kind)
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
        "opens_at": local_parts(opens, zone)[1] if link in WINDOWED else "",
        "link_personal": link not in SHAREABLE,
        "room_title": "",
        "recipient_name": "",
    }
    if session["previous_starts_at"] is not None:
        context["previous_date"], context["previous_start_time"] = local_parts(
            session["previous_starts_at"], zone
        )
    url = await link_for(conn, session, recipient_id, link)
    if url is not None:
        context["join_url"] = notify.sealer.unseal(url)
    return Contents(session, context, recipient, link, session["room_title"])


_RECIPIENT = (
    "SELECT r.kind, coalesce(r.email, c.email) AS email, "
    "coalesce(r.display_name, c.display_name) AS name, "
    "r.kind = 'client' AND c.client_id IS NULL AS client_unknown, "
    "r.erased OR coalesce(c.erased, false) AS erased "
    "FROM recipients r LEFT JOIN clients c ON c.client_id = r.recipient_id"
)


def link_kind_for(session: Any, recipient_kind: str) -> LinkKind:
    """An attendee's own drop-in link while link sharing is on, else the session's own link
    or the room the session is held in."""
    if recipient_kind == RecipientKind.attendee.value and session["link_sharing"]:
        return LinkKind.drop_in
    if session["video_mode"] == VideoMode.session_link.value:
        return LinkKind.session
    return LinkKind(session["video_mode"])  # practitioner_room or client_room


async def link_for(
    conn: Executor, session: Any, recipient_id: UUID | None, kind: LinkKind
) -> str | None:
    """The sealed link of ``kind`` this recipient joins with; None until links has issued it."""
    if kind is LinkKind.drop_in:
        drop_in: str | None = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE attendee_id = $1 AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            recipient_id,
        )
        return drop_in
    if kind in (LinkKind.session, LinkKind.guest):
        sealed: str | None = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE session_id = $1 AND kind = $2 AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            session["session_id"],
            kind.value,
        )
    else:
        sealed = await conn.fetchval(
            "SELECT url_sealed FROM links WHERE room_id = $1 AND kind = $2 AND active "
            "ORDER BY issued_at DESC LIMIT 1",
            session["room_id"],
            kind.value,
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
