"""The scheduling read models, kept in the append's transaction.

Personal values are kept as the events carry them, sealed (``person_keys``): the queries open
them. ``ClientErased`` removes them, with what the events held in clear before sealing began.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from contracts.events import Event
from contracts.scheduling import (
    ApiKeyIssued,
    ApiKeyRevoked,
    AttendeeInvited,
    AttendeeRemoved,
    ClientAdded,
    ClientErased,
    ClientUpdated,
    ClinicRegistered,
    ClinicReinstated,
    ClinicSettingsChanged,
    ClinicSuspended,
    LinkSharingDisabled,
    LinkSharingEnabled,
    PractitionerAdded,
    RoomCreated,
    RoomDeleted,
    RoomRenamed,
    SessionCancelled,
    SessionCompleted,
    SessionEndedEarly,
    SessionRescheduled,
    SessionScheduled,
    SessionWentLive,
    scheduling_events,
)
from runtime.db import Executor
from runtime.eventstore import RecordedEvent


def _contacts(event: ClientAdded | ClientUpdated) -> tuple[list[Any], list[Any]]:
    return (
        [c.model_dump(mode="json") for c in event.linked_accounts],
        [c.model_dump(mode="json") for c in event.alternate_contacts],
    )


class SchedulingReadModel:
    """Clinics, keys, practitioners, clients, rooms, sessions and attendees."""

    name = "scheduling"
    tables: Sequence[str] = (
        "clinics",
        "api_keys",
        "practitioners",
        "clients",
        "rooms",
        "sessions",
        "attendees",
    )

    async def apply(self, conn: Executor, recorded: RecordedEvent) -> None:
        event = scheduling_events.decode(recorded.type, recorded.schema_version, recorded.data)
        apply = _APPLY.get(type(event))
        if apply is not None:
            await apply(conn, recorded, event)


Apply = Callable[[Executor, RecordedEvent, Any], Awaitable[None]]


async def _clinic_registered(conn: Executor, r: RecordedEvent, e: ClinicRegistered) -> None:
    await conn.execute(
        "INSERT INTO clinics (clinic_id, name, slug, settings, registered_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $5)",
        r.clinic_id,
        e.name,
        e.slug,
        e.settings.model_dump(mode="json"),
        r.occurred_at,
    )


async def _settings_changed(conn: Executor, r: RecordedEvent, e: ClinicSettingsChanged) -> None:
    await conn.execute(
        "UPDATE clinics SET settings = $2, updated_at = $3 WHERE clinic_id = $1",
        r.clinic_id,
        e.settings.model_dump(mode="json"),
        r.occurred_at,
    )


async def _suspension(conn: Executor, r: RecordedEvent, e: Event) -> None:
    await conn.execute(
        "UPDATE clinics SET suspended = $2, updated_at = $3 WHERE clinic_id = $1",
        r.clinic_id,
        isinstance(e, ClinicSuspended),
        r.occurred_at,
    )


async def _key_issued(conn: Executor, r: RecordedEvent, e: ApiKeyIssued) -> None:
    await conn.execute(
        "INSERT INTO api_keys (key_id, clinic_id, prefix, label, issued_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        e.key_id,
        r.clinic_id,
        e.prefix,
        e.label,
        r.occurred_at,
    )


async def _key_revoked(conn: Executor, r: RecordedEvent, e: ApiKeyRevoked) -> None:
    await conn.execute(
        "UPDATE api_keys SET revoked_at = $3 WHERE key_id = $1 AND clinic_id = $2",
        e.key_id,
        r.clinic_id,
        r.occurred_at,
    )


async def _practitioner_added(conn: Executor, r: RecordedEvent, e: PractitionerAdded) -> None:
    await conn.execute(
        "INSERT INTO practitioners (practitioner_id, clinic_id, display_name, room_id, "
        "room_slug, added_at) VALUES ($1, $2, $3, $4, $5, $6)",
        e.practitioner_id,
        r.clinic_id,
        e.display_name,
        e.room_id,
        e.room_slug,
        r.occurred_at,
    )


async def _client_added(conn: Executor, r: RecordedEvent, e: ClientAdded) -> None:
    linked, alternate = _contacts(e)
    await conn.execute(
        "INSERT INTO clients (client_id, clinic_id, display_name, email, phone, "
        "linked_accounts, alternate_contacts, added_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        e.client_id,
        r.clinic_id,
        e.display_name,
        e.email,
        e.phone,
        linked,
        alternate,
        r.occurred_at,
    )


async def _client_updated(conn: Executor, r: RecordedEvent, e: ClientUpdated) -> None:
    linked, alternate = _contacts(e)
    await conn.execute(
        "UPDATE clients SET display_name = $3, email = $4, phone = $5, "
        "linked_accounts = $6, alternate_contacts = $7, updated_at = $8 "
        "WHERE client_id = $1 AND clinic_id = $2 AND erased_at IS NULL",
        e.client_id,
        r.clinic_id,
        e.display_name,
        e.email,
        e.phone,
        linked,
        alternate,
        r.occurred_at,
    )


async def _client_erased(conn: Executor, r: RecordedEvent, e: ClientErased) -> None:
    await conn.execute(
        "UPDATE clients SET display_name = NULL, email = NULL, phone = NULL, "
        "linked_accounts = '[]', alternate_contacts = '[]', erased_at = $3, updated_at = $3 "
        "WHERE client_id = $1 AND clinic_id = $2",
        e.client_id,
        r.clinic_id,
        r.occurred_at,
    )
    await conn.execute(
        "UPDATE attendees SET email = NULL, display_name = NULL "
        "WHERE clinic_id = $2 AND (client_id = $1 OR attendee_id = ANY($3::uuid[]))",
        e.client_id,
        r.clinic_id,
        list(e.attendee_ids),
    )
    await conn.execute(
        "UPDATE rooms SET title = '' WHERE client_id = $1 AND clinic_id = $2",
        e.client_id,
        r.clinic_id,
    )


async def _room_created(conn: Executor, r: RecordedEvent, e: RoomCreated) -> None:
    await conn.execute(
        "INSERT INTO rooms (room_id, clinic_id, kind, practitioner_id, client_id, slug, title, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        e.room_id,
        r.clinic_id,
        e.kind.value,
        e.practitioner_id,
        e.client_id,
        e.slug,
        e.title,
        r.occurred_at,
    )


async def _room_renamed(conn: Executor, r: RecordedEvent, e: RoomRenamed) -> None:
    await conn.execute(
        "UPDATE rooms SET title = $3 WHERE room_id = $1 AND clinic_id = $2",
        e.room_id,
        r.clinic_id,
        e.title,
    )


async def _room_deleted(conn: Executor, r: RecordedEvent, e: RoomDeleted) -> None:
    await conn.execute(
        "UPDATE rooms SET deleted_at = $3 WHERE room_id = $1 AND clinic_id = $2",
        e.room_id,
        r.clinic_id,
        r.occurred_at,
    )


async def _session_scheduled(conn: Executor, r: RecordedEvent, e: SessionScheduled) -> None:
    await conn.execute(
        "INSERT INTO sessions (session_id, clinic_id, practitioner_id, client_ids, starts_at, "
        "ends_at, time_zone, video_mode, room_id, link_sharing, guest_admission, source, "
        "status, scheduled_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'scheduled', $13, $13)",
        e.session_id,
        r.clinic_id,
        e.practitioner_id,
        list(e.client_ids),
        e.starts_at,
        e.ends_at,
        e.time_zone,
        e.video_mode.value,
        e.room_id,
        e.link_sharing,
        e.guest_admission.value,
        e.source.value,
        r.occurred_at,
    )


async def _session_rescheduled(conn: Executor, r: RecordedEvent, e: SessionRescheduled) -> None:
    await conn.execute(
        "UPDATE sessions SET starts_at = $3, ends_at = $4, time_zone = $5, updated_at = $6 "
        "WHERE session_id = $1 AND clinic_id = $2",
        e.session_id,
        r.clinic_id,
        e.starts_at,
        e.ends_at,
        e.time_zone,
        r.occurred_at,
    )


_STATUS = {
    SessionCancelled: "cancelled",
    SessionWentLive: "live",
    SessionEndedEarly: "ended",
    SessionCompleted: "completed",
}


async def _status(conn: Executor, r: RecordedEvent, e: Event) -> None:
    because = e.because.value if isinstance(e, SessionCompleted) else None
    await conn.execute(
        "UPDATE sessions SET status = $3, completed_because = $4, updated_at = $5 "
        "WHERE session_id = $1 AND clinic_id = $2",
        e.session_id,  # type: ignore[attr-defined]
        r.clinic_id,
        _STATUS[type(e)],
        because,
        r.occurred_at,
    )


async def _link_sharing(conn: Executor, r: RecordedEvent, e: Event) -> None:
    await conn.execute(
        "UPDATE sessions SET link_sharing = $3, updated_at = $4 "
        "WHERE session_id = $1 AND clinic_id = $2",
        e.session_id,  # type: ignore[attr-defined]
        r.clinic_id,
        isinstance(e, LinkSharingEnabled),
        r.occurred_at,
    )


async def _attendee_invited(conn: Executor, r: RecordedEvent, e: AttendeeInvited) -> None:
    await conn.execute(
        "INSERT INTO attendees (attendee_id, session_id, clinic_id, email, display_name, "
        "client_id, contact_id, invited_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        e.attendee_id,
        e.session_id,
        r.clinic_id,
        e.email,
        e.display_name,
        e.client_id,
        e.contact_id,
        r.occurred_at,
    )


async def _attendee_removed(conn: Executor, r: RecordedEvent, e: AttendeeRemoved) -> None:
    await conn.execute(
        "DELETE FROM attendees WHERE attendee_id = $1 AND clinic_id = $2",
        e.attendee_id,
        r.clinic_id,
    )


_APPLY: dict[type[Event], Apply] = {
    ClinicRegistered: _clinic_registered,
    ClinicSettingsChanged: _settings_changed,
    ClinicSuspended: _suspension,
    ClinicReinstated: _suspension,
    ApiKeyIssued: _key_issued,
    ApiKeyRevoked: _key_revoked,
    PractitionerAdded: _practitioner_added,
    ClientAdded: _client_added,
    ClientUpdated: _client_updated,
    ClientErased: _client_erased,
    RoomCreated: _room_created,
    RoomRenamed: _room_renamed,
    RoomDeleted: _room_deleted,
    SessionScheduled: _session_scheduled,
    SessionRescheduled: _session_rescheduled,
    SessionCancelled: _status,
    SessionWentLive: _status,
    SessionEndedEarly: _status,
    SessionCompleted: _status,
    LinkSharingEnabled: _link_sharing,
    LinkSharingDisabled: _link_sharing,
    AttendeeInvited: _attendee_invited,
    AttendeeRemoved: _attendee_removed,
}
