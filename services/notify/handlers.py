"""What notify learns from scheduling and links, and the messages it plans because of it.

Each handler runs in the consumer's transaction (with the inbox row), so a redelivered event
plans nothing twice; on top of that every planned message has its unique key (session,
recipient, kind, revision, offset, ref) and is inserted with ``ON CONFLICT DO NOTHING``.
Nothing here talks to a mail server: :mod:`services.notify.sender` sends what is due.
Names and addresses are stored as the events carry them, sealed (:mod:`services.notify.details`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any
from uuid import UUID, uuid4

from contracts.envelope import RawEnvelope
from contracts.events import Event
from contracts.links import LinkIssued, LinkKind, LinkRegenerated, LinkRevoked
from contracts.notify import MessageKind, RecipientKind
from contracts.scheduling import (
    AttendeeInvited,
    AttendeeRemoved,
    ClientAdded,
    ClientErased,
    ClientUpdated,
    ClinicRegistered,
    ClinicSettings,
    ClinicSettingsChanged,
    LinkSharingDisabled,
    LinkSharingEnabled,
    PractitionerAdded,
    RoomCreated,
    RoomDeleted,
    RoomRenamed,
    SessionCancelled,
    SessionCompleted,
    SessionRescheduled,
    SessionScheduled,
    SessionWentLive,
)
from runtime.clock import Clock, system_clock
from runtime.context import ServiceContext
from runtime.db import Executor
from runtime.sealing import Sealer, SealingSettings
from services.notify.config import NotifySettings
from services.notify.details import Details


@dataclass
class Notify:
    """What the notify service's handlers, sender and API share, built once per process."""

    settings: NotifySettings = field(default_factory=NotifySettings)
    sealer_source: Callable[[], Sealer] = field(
        default=lambda: SealingSettings().sealer()  # read at start, not at import
    )
    clock: Clock = system_clock
    details: Details = field(default_factory=Details)
    """Recipients' names and addresses opened by scheduling, for a short while."""

    @cached_property
    def sealer(self) -> Sealer:
        return self.sealer_source()


# -- planning messages -------------------------------------------------------------------------


async def plan(
    conn: Executor,
    clinic_id: str,
    session_id: UUID,
    recipient: tuple[UUID, str],
    kind: MessageKind,
    revision: int,
    due_at: datetime,
    now: datetime,
    *,
    offset_minutes: int = 0,
    ref: str = "",
) -> UUID | None:
    """One message to send at ``due_at``; None if the same message was planned before."""
    delivery_id: UUID | None = await conn.fetchval(
        "INSERT INTO deliveries (delivery_id, clinic_id, session_id, recipient_id, "
        "recipient_kind, kind, revision, offset_minutes, ref, due_at, next_attempt_at, "
        "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $11) "
        "ON CONFLICT DO NOTHING RETURNING delivery_id",
        uuid4(),
        clinic_id,
        session_id,
        recipient[0],
        recipient[1],
        kind.value,
        revision,
        offset_minutes,
        ref,
        due_at,
        now,
    )
    return delivery_id


SESSIONS = "SELECT s.*, c.reminder_offsets FROM sessions s JOIN clinics c USING (clinic_id) "
"""Sessions with what planning their reminders needs."""

TOLD = "('sending', 'accepting', 'sent', 'unconfirmed')"
"""Statuses of a message a mail server has, or may have."""


async def _session(conn: Executor, clinic_id: str, session_id: UUID) -> Any:
    return await conn.fetchrow(
        SESSIONS + "WHERE s.session_id = $1 AND s.clinic_id = $2",
        session_id,
        clinic_id,
    )


async def _recipients(conn: Executor, session_id: UUID) -> list[tuple[UUID, str]]:
    rows = await conn.fetch(
        "SELECT recipient_id, kind FROM recipients WHERE session_id = $1 AND NOT removed "
        "ORDER BY kind, recipient_id",
        session_id,
    )
    return [(r["recipient_id"], r["kind"]) for r in rows]


async def plan_reminders(
    conn: Executor, session: Any, recipients: list[tuple[UUID, str]], now: datetime
) -> None:
    """The clinic's reminders for each recipient, at this revision of the session. Those
    already past when planned are not sent (a session booked an hour ahead gets no 24-hour
    reminder)."""
    for offset in session["reminder_offsets"]:
        due = session["starts_at"] - timedelta(minutes=offset)
        if due <= now:
            continue
        for recipient in recipients:
            await plan(
                conn,
                session["clinic_id"],
                session["session_id"],
                recipient,
                MessageKind.reminder,
                session["revision"],
                due,
                now,
                offset_minutes=offset,
            )


async def drop_pending(
    conn: Executor,
    session_id: UUID,
    now: datetime,
    *,
    kinds: tuple[MessageKind, ...] = tuple(MessageKind),
    recipient_id: UUID | None = None,
) -> None:
    """Planned messages that no longer make sense (not those a mail server already has)."""
    await conn.execute(
        "UPDATE deliveries SET status = 'dropped', updated_at = $2 "
        "WHERE session_id = $1 AND status = 'pending' AND kind = ANY($3::text[]) "
        "AND ($4::uuid IS NULL OR recipient_id = $4)",
        session_id,
        now,
        [k.value for k in kinds],
        recipient_id,
    )


async def _was_told(conn: Executor, session_id: UUID) -> list[tuple[UUID, str]]:
    """Recipients a mail server has (or may have) a message about the session for."""
    rows = await conn.fetch(
        "SELECT DISTINCT d.recipient_id, d.recipient_kind FROM deliveries d "
        "JOIN recipients r ON r.session_id = d.session_id AND r.recipient_id = d.recipient_id "
        f"WHERE d.session_id = $1 AND NOT r.removed AND d.status IN {TOLD}",
        session_id,
    )
    return [(r["recipient_id"], r["recipient_kind"]) for r in rows]


# -- scheduling's events -----------------------------------------------------------------------


async def _settings(conn: Executor, clinic_id: str, settings: ClinicSettings) -> None:
    await conn.execute(
        "UPDATE clinics SET time_zone = $2, early_join_minutes = $3, reminder_offsets = $4 "
        "WHERE clinic_id = $1",
        clinic_id,
        settings.time_zone,
        settings.early_join_minutes,
        list(settings.reminder_offsets_minutes),
    )


async def on_scheduling(
    notify: Notify, ctx: ServiceContext, conn: Executor, event: Event, envelope: RawEnvelope
) -> None:
    clinic = envelope.clinic_id
    now = notify.clock()
    match event:
        case ClinicRegistered():
            await conn.execute(
                "INSERT INTO clinics (clinic_id, name, time_zone, early_join_minutes, "
                "reminder_offsets) VALUES ($1, $2, '', 0, '{}') ON CONFLICT DO NOTHING",
                clinic,
                event.name,
            )
            await _settings(conn, clinic, event.settings)
        case ClinicSettingsChanged():
            await _settings(conn, clinic, event.settings)
            await _replan_clinic_reminders(conn, clinic, now)
        case PractitionerAdded():
            await conn.execute(
                "INSERT INTO practitioners (practitioner_id, clinic_id, display_name) "
                "VALUES ($1, $2, $3) ON CONFLICT (practitioner_id) DO UPDATE "
                "SET display_name = EXCLUDED.display_name",
                event.practitioner_id,
                clinic,
                event.display_name,
            )
        case ClientAdded() | ClientUpdated():
            await conn.execute(
                "INSERT INTO clients (client_id, clinic_id, display_name, email) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (client_id) DO UPDATE "
                "SET display_name = EXCLUDED.display_name, email = EXCLUDED.email "
                "WHERE NOT clients.erased",
                event.client_id,
                clinic,
                event.display_name,
                event.email,
            )
        case ClientErased():
            await _client_erased(notify, conn, clinic, event, now)
        case RoomCreated():
            await conn.execute(
                "INSERT INTO rooms (room_id, clinic_id, kind, client_id, title) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id) DO NOTHING",
                event.room_id,
                clinic,
                event.kind.value,
                event.client_id,
                event.title,
            )
        case RoomRenamed():
            # A room created before notify kept rooms is learnt of here.
            await conn.execute(
                "INSERT INTO rooms (room_id, clinic_id, kind, client_id, title) "
                "VALUES ($1, $2, CASE WHEN $3::uuid IS NULL THEN 'practitioner' "
                "ELSE 'client' END, $3, $4) ON CONFLICT (room_id) DO UPDATE "
                "SET title = EXCLUDED.title",
                event.room_id,
                clinic,
                event.client_id,
                event.title,
            )
        case RoomDeleted():
            await conn.execute(
                "DELETE FROM rooms WHERE room_id = $1 AND clinic_id = $2", event.room_id, clinic
            )
        case SessionScheduled():
            await _scheduled(conn, clinic, event, now)
        case SessionRescheduled():
            await _rescheduled(conn, clinic, event, now)
        case SessionCancelled():
            await _cancelled(conn, clinic, event.session_id, now)
        case AttendeeInvited():
            await _attendee_invited(conn, clinic, event, now)
        case AttendeeRemoved():
            await conn.execute(
                "UPDATE recipients SET removed = true WHERE session_id = $1 AND recipient_id = $2",
                event.session_id,
                event.attendee_id,
            )
            await drop_pending(conn, event.session_id, now, recipient_id=event.attendee_id)
        case LinkSharingEnabled() | LinkSharingDisabled():
            await conn.execute(
                "UPDATE sessions SET link_sharing = $3 WHERE session_id = $1 AND clinic_id = $2",
                event.session_id,
                clinic,
                isinstance(event, LinkSharingEnabled),
            )
        case SessionWentLive():
            await _set_status(conn, clinic, event.session_id, "live")
            await drop_pending(conn, event.session_id, now, kinds=(MessageKind.reminder,))
        case SessionCompleted():
            await _set_status(conn, clinic, event.session_id, "completed")
            await drop_pending(conn, event.session_id, now)


async def _set_status(conn: Executor, clinic_id: str, session_id: UUID, status: str) -> None:
    await conn.execute(
        "UPDATE sessions SET status = $3 WHERE session_id = $1 AND clinic_id = $2 "
        "AND status NOT IN ('cancelled', 'completed')",
        session_id,
        clinic_id,
        status,
    )


async def _scheduled(conn: Executor, clinic: str, event: SessionScheduled, now: datetime) -> None:
    inserted = await conn.fetchval(
        "INSERT INTO sessions (session_id, clinic_id, practitioner_id, video_mode, room_id, "
        "starts_at, ends_at, time_zone, link_sharing) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        "ON CONFLICT DO NOTHING RETURNING session_id",
        event.session_id,
        clinic,
        event.practitioner_id,
        event.video_mode.value,
        event.room_id,
        event.starts_at,
        event.ends_at,
        event.time_zone,
        event.link_sharing,
    )
    if inserted is None:
        return
    await conn.executemany(
        "INSERT INTO recipients (session_id, recipient_id, clinic_id, kind) "
        "VALUES ($1, $2, $3, 'client') ON CONFLICT DO NOTHING",
        [(event.session_id, client_id, clinic) for client_id in event.client_ids],
    )
    recipients = [(c, RecipientKind.client.value) for c in event.client_ids]
    for recipient in recipients:
        await plan(conn, clinic, event.session_id, recipient, MessageKind.invitation, 0, now, now)
    session = await _session(conn, clinic, event.session_id)
    await plan_reminders(conn, session, recipients, now)


async def _rescheduled(
    conn: Executor, clinic: str, event: SessionRescheduled, now: datetime
) -> None:
    revision = await conn.fetchval(
        "UPDATE sessions SET starts_at = $3, ends_at = $4, time_zone = $5, "
        "previous_starts_at = starts_at, revision = revision + 1 "
        "WHERE session_id = $1 AND clinic_id = $2 AND status IN ('scheduled', 'live') "
        "RETURNING revision",
        event.session_id,
        clinic,
        event.starts_at,
        event.ends_at,
        event.time_zone,
    )
    if revision is None:
        return
    # A planned invitation not yet sent goes out with the new time and is enough; those
    # already told get an update. Reminders move.
    await drop_pending(conn, event.session_id, now, kinds=(MessageKind.reminder,))
    told = await _was_told(conn, event.session_id)
    recipients = await _recipients(conn, event.session_id)
    for recipient in recipients:
        if recipient in told:
            await plan(
                conn, clinic, event.session_id, recipient, MessageKind.update, revision, now, now
            )
    session = await _session(conn, clinic, event.session_id)
    await plan_reminders(conn, session, recipients, now)


async def _cancelled(conn: Executor, clinic: str, session_id: UUID, now: datetime) -> None:
    revision = await conn.fetchval(
        "UPDATE sessions SET status = 'cancelled', revision = revision + 1 "
        "WHERE session_id = $1 AND clinic_id = $2 AND status <> 'cancelled' RETURNING revision",
        session_id,
        clinic,
    )
    if revision is None:
        return
    await drop_pending(conn, session_id, now)
    for recipient in await _was_told(conn, session_id):
        await plan(
            conn, clinic, session_id, recipient, MessageKind.cancellation, revision, now, now
        )


async def _attendee_invited(
    conn: Executor, clinic: str, event: AttendeeInvited, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO recipients (session_id, recipient_id, clinic_id, kind, email, display_name) "
        "VALUES ($1, $2, $3, 'attendee', $4, $5) ON CONFLICT (session_id, recipient_id) "
        "DO UPDATE SET email = EXCLUDED.email, display_name = EXCLUDED.display_name, "
        "removed = false WHERE NOT recipients.erased",
        event.session_id,
        event.attendee_id,
        clinic,
        event.email,
        event.display_name,
    )
    session = await _session(conn, clinic, event.session_id)
    if session is None or session["status"] in ("cancelled", "completed"):
        return
    recipient = (event.attendee_id, RecipientKind.attendee.value)
    revision = session["revision"]
    await plan(
        conn, clinic, event.session_id, recipient, MessageKind.invitation, revision, now, now
    )
    await plan_reminders(conn, session, [recipient], now)


async def _client_erased(
    notify: Notify, conn: Executor, clinic: str, event: ClientErased, now: datetime
) -> None:
    """The client and their contacts' invitations keep ids only; what was planned for them is
    dropped with the reason, and nothing is planned for them again (as if removed)."""
    people = [event.client_id, *event.attendee_ids]
    await conn.execute(
        "INSERT INTO clients (client_id, clinic_id, erased) VALUES ($1, $2, true) "
        "ON CONFLICT (client_id) DO UPDATE SET display_name = NULL, email = NULL, erased = true",
        event.client_id,
        clinic,
    )
    await conn.execute(
        "UPDATE recipients SET email = NULL, display_name = NULL, erased = true, removed = true "
        "WHERE clinic_id = $1 AND recipient_id = ANY($2::uuid[])",
        clinic,
        people,
    )
    await conn.execute(
        "UPDATE rooms SET title = NULL WHERE clinic_id = $1 AND client_id = $2",
        clinic,
        event.client_id,
    )
    await conn.execute(
        "UPDATE deliveries SET status = CASE WHEN status = 'pending' THEN 'dropped' "
        "ELSE status END, detail = CASE WHEN status = 'pending' THEN $3 ELSE detail END, "
        "address_masked = NULL, updated_at = $4 "
        "WHERE clinic_id = $1 AND recipient_id = ANY($2::uuid[])",
        clinic,
        people,
        ERASED,
        now,
    )
    notify.details.forget(people)


ERASED = "the recipient's personal data was erased at the clinic's request"


async def _replan_clinic_reminders(conn: Executor, clinic: str, now: datetime) -> None:
    """New reminder offsets apply to the sessions still ahead."""
    sessions = await conn.fetch(
        SESSIONS + "WHERE s.clinic_id = $1 AND s.status = 'scheduled' AND s.starts_at > $2",
        clinic,
        now,
    )
    for session in sessions:
        await conn.execute(
            "UPDATE deliveries SET status = 'dropped', updated_at = $3 WHERE session_id = $1 "
            "AND kind = 'reminder' AND status = 'pending' AND offset_minutes <> ALL($2::int[])",
            session["session_id"],
            session["reminder_offsets"],
            now,
        )
        recipients = await _recipients(conn, session["session_id"])
        await plan_reminders(conn, session, recipients, now)


# -- links' events -----------------------------------------------------------------------------

HELD_BY_RECIPIENTS = {
    LinkKind.session,
    LinkKind.client_room,
    LinkKind.practitioner_room,
    LinkKind.drop_in,
}
"""Links notify mails (guest links are passed on by the people who have them)."""
KEPT = HELD_BY_RECIPIENTS | {LinkKind.guest}
"""Links notify keeps: those it mails, and guest links for the copy-link text."""


async def on_links(
    notify: Notify, ctx: ServiceContext, conn: Executor, event: Event, envelope: RawEnvelope
) -> None:
    clinic = envelope.clinic_id
    now = notify.clock()
    match event:
        case LinkIssued() | LinkRegenerated():
            if event.kind not in KEPT:
                return
            sunset = event.replaces_link_sunset_at if isinstance(event, LinkIssued) else None
            await conn.execute(
                "INSERT INTO links (link_id, clinic_id, kind, url_sealed, session_id, room_id, "
                "client_id, attendee_id, issued_at, replaces_link_id, replaces_link_sunset_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                event.link_id,
                clinic,
                event.kind.value,
                event.url_sealed,
                event.session_id,
                event.room_id,
                event.client_id,
                event.attendee_id,
                envelope.occurred_at,
                event.replaces_link_id,
                sunset,
            )
            if event.replaces_link_id is not None:
                # Regenerated (stopped at once) or retired (works until its sunset): either
                # way every message from now on carries the new link, and those who were
                # mailed the old one are sent the new one.
                await conn.execute(
                    "UPDATE links SET active = false WHERE link_id = $1", event.replaces_link_id
                )
                if event.kind in HELD_BY_RECIPIENTS:
                    await _tell_new_link(conn, clinic, event, now)
        case LinkRevoked():
            await conn.execute("UPDATE links SET active = false WHERE link_id = $1", event.link_id)


async def _tell_new_link(
    conn: Executor, clinic: str, event: LinkIssued | LinkRegenerated, now: datetime
) -> None:
    """The people who were mailed the old link, for the sessions still ahead, get the new one.
    Those whose invitation is still planned get the new link in it."""
    # Attendees hold the session's own link (or its room's) unless they have one of their own.
    no_drop_in = (
        "(r.kind = 'client' OR NOT EXISTS (SELECT 1 FROM links l "
        "WHERE l.attendee_id = r.recipient_id AND l.active))"
    )
    match event.kind:
        case LinkKind.session:
            where, arg = f"s.session_id = $2 AND {no_drop_in}", event.session_id
        case LinkKind.drop_in:
            where, arg = "r.recipient_id = $2 AND r.kind = 'attendee'", event.attendee_id
        case _:  # a room: every session held in it, for those without a link of their own
            where = f"s.room_id = $2 AND s.video_mode <> 'session_link' AND {no_drop_in}"
            arg = event.room_id
    rows = await conn.fetch(
        "SELECT s.session_id, s.revision, r.recipient_id, r.kind FROM sessions s "
        "JOIN recipients r USING (session_id) "
        f"WHERE s.clinic_id = $1 AND {where} AND NOT r.removed "
        "AND s.status IN ('scheduled', 'live') AND s.ends_at > $3 "
        "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.session_id = s.session_id "
        f"AND d.recipient_id = r.recipient_id AND d.status IN {TOLD})",
        clinic,
        arg,
        now,
    )
    for row in rows:
        await plan(
            conn,
            clinic,
            row["session_id"],
            (row["recipient_id"], row["kind"]),
            MessageKind.new_link,
            row["revision"],
            now,
            now,
            ref=str(event.link_id),
        )
