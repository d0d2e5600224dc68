"""Commands and subscribed events, turned into domain decisions and appended events.

Each command runs on one aggregate's stream through ``runtime.commands.execute``: another
clinic's stream reads as absent, so its objects answer "not found". Every append goes through
``person_keys.KEYS``, which seals the personal values about a client before they are stored.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar
from uuid import UUID, uuid4

import asyncpg

from contracts.envelope import RawEnvelope
from contracts.events import Event
from contracts.links import LinkIssued, LinkRegenerated, LinkRevoked
from contracts.scheduling import (
    ClinicSettings,
    Contact,
    GuestAdmission,
    KeyCheck,
    KeyOwner,
    RoomKind,
    SealedValues,
    SessionSource,
    VideoMode,
    scheduling_events,
)
from contracts.signaling import SessionEnded, SessionStarted
from runtime import commands
from runtime.commands import Decide, Evolve
from runtime.context import ServiceContext
from runtime.db import Executor, Queryable
from runtime.eventstore import Cause, ConcurrencyError, EventStore, RecordedEvent
from runtime.personal_data import is_sealed, open_data
from runtime.refusals import Conflict, Invalid, NotFound, not_found
from runtime.rpc import parse
from runtime.sealing import secret_digest
from services.scheduling import domain, person_keys, sessions
from services.scheduling.domain import Client, Room
from services.scheduling.keys import ClinicKeys
from services.scheduling.person_keys import KEYS
from services.scheduling.queries import existing_client
from services.scheduling.sessions import Appointment, Attendee

S = TypeVar("S")
API_KEY_PREFIX = "ac_"
"""Clinic API keys start with this, so scanners and people recognise them."""


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    prefix: str
    evolve: Evolve[S]

    def stream(self, key: object) -> str:
        return f"{self.prefix}-{key}"


CLINIC = Aggregate("clinic", domain.evolve_clinic)
PRACTITIONER: Aggregate[None] = Aggregate("practitioner", lambda state, _event: state)
CLIENT = Aggregate("client", domain.evolve_client)
ROOM = Aggregate("room", domain.evolve_room)
SESSION = Aggregate("session", sessions.evolve_session)


async def execute(
    store: EventStore,
    aggregate: Aggregate[S],
    key: object,
    clinic_id: str,
    decide: Decide[S],
    *,
    cause: Cause | None = None,
    conn: Executor | None = None,
) -> list[RecordedEvent]:
    """Run ``decide`` on the aggregate (``runtime.commands.execute``)."""
    return await commands.execute(
        store,
        aggregate.stream(key),
        clinic_id,
        scheduling_events,
        aggregate.evolve,
        decide,
        absent=not_found(aggregate.prefix),
        cause=cause,
        conn=conn,
        keys=KEYS,
    )


async def append(
    store: EventStore,
    stream_id: str,
    expected_version: int,
    events: Sequence[Event],
    clinic_id: str,
    conn: Executor | None = None,
) -> list[RecordedEvent]:
    """``store.append`` with the events' personal values sealed first."""
    sealed = await KEYS.seal(conn or store.pool, clinic_id, events)
    return await store.append(stream_id, expected_version, sealed, clinic_id=clinic_id, conn=conn)


# -- clinics and keys --------------------------------------------------------------------------


async def register_clinic(
    store: EventStore, name: str, slug: str, settings: ClinicSettings, clinic_id: str | None = None
) -> str:
    clinic_id = clinic_id or f"c_{secrets.token_hex(8)}"
    events = domain.register_clinic(None, name, slug, settings)
    try:
        await append(store, CLINIC.stream(clinic_id), 0, events, clinic_id)
    except ConcurrencyError as exc:
        raise Conflict("clinic_exists", "A clinic with that id is already registered.") from exc
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            "clinic_slug_taken", f"Another clinic already uses the slug {slug!r}."
        ) from exc
    return clinic_id


async def issue_api_key(store: EventStore, clinic_id: str, label: str) -> tuple[UUID, str]:
    """A new key's id and its secret, which is returned this once and stored only hashed."""
    key_id = uuid4()
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = secret[:11]
    async with store.transaction() as conn:
        await execute(
            store,
            CLINIC,
            clinic_id,
            clinic_id,
            lambda s: domain.issue_api_key(s, key_id, prefix, label),
            conn=conn,
        )
        await conn.execute(
            "INSERT INTO api_key_secrets (key_id, secret_hash) VALUES ($1, $2)",
            key_id,
            secret_digest(secret),
        )
    return key_id, secret


async def authenticate(keys: ClinicKeys, ctx: ServiceContext, data: bytes) -> bytes:
    """RPC: the clinic that a key (by its hash) belongs to, for the other services' APIs."""
    request = parse(KeyCheck, data)
    if isinstance(request, bytes):
        return request
    holder = await keys.holder(ctx.pool, bytes.fromhex(request.key_sha256))
    owner = (
        KeyOwner(known=True, clinic_id=holder.clinic_id, suspended=holder.suspended)
        if holder
        else KeyOwner(known=False)
    )
    return owner.model_dump_json().encode()


async def unseal(ctx: ServiceContext, request: SealedValues) -> bytes:
    """RPC: personal values opened for a service that must use them (notify's mails). One
    read for the whole batch; the answer is never logged."""
    opened = await person_keys.open_values(ctx.pool, request)
    return opened.model_dump_json().encode()


# -- people and rooms --------------------------------------------------------------------------


async def add_practitioner(store: EventStore, clinic_id: str, name: str, room_slug: str) -> UUID:
    practitioner_id, room_id = uuid4(), uuid4()
    added, room = domain.add_practitioner(practitioner_id, room_id, name, room_slug)
    try:
        async with store.transaction() as conn:
            await append(store, PRACTITIONER.stream(practitioner_id), 0, added, clinic_id, conn)
            await append(store, ROOM.stream(room_id), 0, room, clinic_id, conn)
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(
            "room_slug_taken", f"Another practitioner of this clinic has the room {room_slug!r}."
        ) from exc
    return practitioner_id


async def add_client(
    store: EventStore, clinic_id: str, client: Client, conn: Executor | None = None
) -> None:
    events = domain.add_client(None, client)
    await append(store, CLIENT.stream(client.client_id), 0, events, clinic_id, conn)


async def practitioner_room(conn: Queryable, clinic_id: str, practitioner_id: UUID) -> UUID:
    room_id: UUID | None = await conn.fetchval(
        "SELECT room_id FROM practitioners WHERE clinic_id = $1 AND practitioner_id = $2",
        clinic_id,
        practitioner_id,
    )
    if room_id is None:
        raise not_found("practitioner")
    return room_id


async def find_room(conn: Queryable, clinic_id: str, room_id: UUID) -> Room:
    row = await conn.fetchrow(
        "SELECT room_id, kind, practitioner_id, client_id, title, deleted_at IS NOT NULL AS gone "
        "FROM rooms WHERE clinic_id = $1 AND room_id = $2",
        clinic_id,
        room_id,
    )
    if row is None or row["gone"]:
        raise not_found("room")
    return Room(
        row["room_id"],
        RoomKind(row["kind"]),
        row["practitioner_id"],
        row["client_id"],
        row["title"],
    )


async def create_client_room(
    store: EventStore, clinic_id: str, client_id: UUID, practitioner_id: UUID, title: str
) -> UUID:
    await existing_client(store.pool, clinic_id, client_id)
    await practitioner_room(store.pool, clinic_id, practitioner_id)
    room_id = uuid4()
    events = domain.create_client_room(None, room_id, practitioner_id, client_id, title)
    await append(store, ROOM.stream(room_id), 0, events, clinic_id)
    return room_id


@dataclass(frozen=True)
class Erasure:
    client_id: UUID
    erased_at: datetime
    already_erased: bool
    attendee_ids: tuple[UUID, ...]
    room_ids: tuple[UUID, ...]
    history_in_clear: bool


async def erase_client(store: EventStore, clinic_id: str, client_id: UUID) -> Erasure:
    """Erase a client's personal data: ``ClientErased``, their rooms deleted, their key gone,
    in one transaction. Again: nothing more is done, and the first erasure is reported."""
    async with store.transaction() as conn:
        attendee_ids = await conn.fetchval(
            "SELECT array(SELECT attendee_id FROM attendees WHERE clinic_id = $1 "
            "AND client_id = $2 ORDER BY attendee_id)",
            clinic_id,
            client_id,
        )
        rooms = await conn.fetchval(
            "SELECT array(SELECT room_id FROM rooms WHERE clinic_id = $1 AND client_id = $2 "
            "AND kind = 'client' AND deleted_at IS NULL ORDER BY room_id)",
            clinic_id,
            client_id,
        )
        erased = await execute(
            store,
            CLIENT,
            client_id,
            clinic_id,
            lambda s: domain.erase_client(s, attendee_ids),
            conn=conn,
        )
        for room_id in rooms if erased else ():
            await execute(store, ROOM, room_id, clinic_id, domain.delete_room, conn=conn)
        history = await store.read_stream(CLIENT.stream(client_id), conn=conn)
        erased_at = await person_keys.erase(conn, clinic_id, client_id, datetime.now(UTC))
        # Answers kept for Idempotency-Key replays (24 hours) hold the plain values that the
        # caller was shown: those that name the client or their contacts' invitations go.
        await conn.execute(
            "DELETE FROM idempotency_keys WHERE body IS NOT NULL AND EXISTS (SELECT 1 FROM "
            "unnest($1::text[]) AS id WHERE position(convert_to(id, 'UTF8') IN body) > 0)",
            [str(i) for i in (client_id, *attendee_ids)],
        )
    return Erasure(
        client_id=client_id,
        erased_at=erased_at,
        already_erased=not erased,
        attendee_ids=tuple(attendee_ids) if erased else (),
        room_ids=tuple(rooms) if erased else (),
        history_in_clear=any(_in_clear(r.data) for r in history),
    )


def _in_clear(data: object) -> bool:
    """Whether an event appended before sealing began holds a name, address or phone in clear."""
    if isinstance(data, dict):
        return any(
            isinstance(value, str) and value and not is_sealed(value)
            for name, value in data.items()
            if name in ("display_name", "email", "phone")
        ) or any(_in_clear(value) for value in data.values())
    if isinstance(data, list):
        return any(_in_clear(value) for value in data)
    return False


# -- sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleRequest:
    practitioner_id: UUID
    client_ids: tuple[UUID, ...]
    starts_at: datetime
    ends_at: datetime
    time_zone: str | None
    video_mode: VideoMode
    room_id: UUID | None
    link_sharing: bool
    guest_admission: GuestAdmission | None


async def schedule_session(
    store: EventStore,
    clinic_id: str,
    settings: ClinicSettings,
    request: ScheduleRequest,
    source: SessionSource,
    now: datetime,
    conn: Executor | None = None,
) -> RecordedEvent:
    """Schedule; with ``conn`` it reads and commits in the caller's transaction.

    Returns the ``SessionScheduled`` as appended, from which the caller can answer.
    """
    r = request
    session_id = uuid4()
    db: Queryable = conn or store.pool
    own_room = await _check_people(db, clinic_id, r.practitioner_id, r.client_ids)
    room: Room | None = None
    if r.video_mode is VideoMode.practitioner_room:
        if r.room_id not in (None, own_room):
            raise Invalid("room_of_another_practitioner", "That room is not the practitioner's.")
        # A practitioner's room is never deleted, so it needs no lookup.
        room = Room(own_room, RoomKind.practitioner, r.practitioner_id, None, "")
    elif r.video_mode is VideoMode.client_room:
        if r.room_id is None:
            raise Invalid("room_required", "Choose the client room (room_id) for this mode.")
        room = await find_room(db, clinic_id, r.room_id)
    elif r.room_id is not None:
        raise Invalid("room_not_used", "A session link needs no room; leave room_id out.")
    appointment = Appointment(
        session_id=session_id,
        practitioner_id=r.practitioner_id,
        client_ids=r.client_ids,
        starts_at=r.starts_at,
        ends_at=r.ends_at,
        time_zone=r.time_zone or settings.time_zone,
        video_mode=r.video_mode,
        room=room,
        link_sharing=r.link_sharing,
        guest_admission=r.guest_admission or settings.guest_admission,
        source=source,
    )
    events = sessions.schedule_session(None, appointment, settings, now)
    [scheduled] = await append(store, SESSION.stream(session_id), 0, events, clinic_id, conn)
    return scheduled


async def _check_people(
    conn: Queryable, clinic_id: str, practitioner_id: UUID, client_ids: Sequence[UUID]
) -> UUID:
    """The practitioner's room, once the practitioner and every client are the clinic's."""
    wanted = list(set(client_ids))
    row = await conn.fetchrow(
        "SELECT p.room_id, c.known, c.erased FROM practitioners p, "
        "(SELECT count(*) AS known, count(erased_at) AS erased FROM clients "
        "WHERE clinic_id = $1 AND client_id = ANY($3::uuid[])) c "
        "WHERE p.clinic_id = $1 AND p.practitioner_id = $2",
        clinic_id,
        practitioner_id,
        wanted,
    )
    if row is None:
        raise not_found("practitioner")
    if row["known"] != len(wanted):
        raise not_found("client")
    if row["erased"]:
        raise domain.client_erased()
    room_id: UUID = row["room_id"]
    return room_id


async def overlapping(
    conn: Queryable, clinic_id: str, practitioner_id: UUID, starts_at: datetime, ends_at: datetime
) -> bool:
    """Whether the practitioner already has a session (not cancelled) in that time."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE clinic_id = $1 AND practitioner_id = $2 "
            "AND status <> 'cancelled' AND starts_at < $4 AND ends_at > $3)",
            clinic_id,
            practitioner_id,
            starts_at,
            ends_at,
        )
    )


async def attendee_from_contact(
    conn: Queryable, clinic_id: str, client_id: UUID, contact_id: UUID
) -> Attendee:
    row = await conn.fetchrow(
        "SELECT c.linked_accounts, c.alternate_contacts, c.erased_at, k.key FROM clients c "
        "LEFT JOIN person_keys k ON k.clinic_id = c.clinic_id AND k.person_id = c.client_id "
        "WHERE c.clinic_id = $1 AND c.client_id = $2",
        clinic_id,
        client_id,
    )
    if row is None:
        raise not_found("client")
    if row["erased_at"] is not None:
        raise domain.client_erased()
    keys = {client_id: bytes(row["key"])} if row["key"] is not None else {}
    contacts = open_data([*row["linked_accounts"], *row["alternate_contacts"]], keys, clinic_id)
    contact = next(
        (Contact.model_validate(c) for c in contacts if c["contact_id"] == str(contact_id)), None
    )
    if contact is None:
        raise not_found("contact")
    return Attendee(uuid4(), contact.email, contact.display_name, client_id, contact_id)


# -- what other services report ----------------------------------------------------------------


async def on_call_started(
    ctx: ServiceContext, conn: Executor, event: SessionStarted, envelope: RawEnvelope
) -> None:
    if event.session_id is not None:
        await _session_reaction(ctx, conn, event.session_id, envelope, sessions.call_started)


async def on_call_ended(
    ctx: ServiceContext, conn: Executor, event: SessionEnded, envelope: RawEnvelope
) -> None:
    if event.session_id is not None:
        await _session_reaction(
            ctx,
            conn,
            event.session_id,
            envelope,
            lambda s: sessions.call_ended(s, event.because, event.ended_at),
        )


async def on_recording(
    ctx: ServiceContext, conn: Executor, event: Event, envelope: RawEnvelope
) -> None:
    """A request to record a session's call, an answer, a recording: into its audit trail."""
    session_id = getattr(event, "session_id", None)
    if session_id is not None:
        await _session_reaction(
            ctx, conn, session_id, envelope, lambda s: sessions.recording_noted(s, event)
        )


async def _session_reaction(
    ctx: ServiceContext,
    conn: Executor,
    session_id: UUID,
    envelope: RawEnvelope,
    decide: Decide[sessions.Session],
) -> None:
    try:
        await execute(
            ctx.store,
            SESSION,
            session_id,
            envelope.clinic_id,
            decide,
            cause=Cause.of(envelope),
            conn=conn,
        )
    except NotFound:
        return  # a call in a room with no appointment here, or another clinic's id: nothing to do


async def on_link_issued(
    _ctx: ServiceContext, conn: Executor, event: LinkIssued, envelope: RawEnvelope
) -> None:
    await _record_link(conn, event, envelope)


async def on_link_regenerated(
    _ctx: ServiceContext, conn: Executor, event: LinkRegenerated, envelope: RawEnvelope
) -> None:
    await _link_gone(conn, event.replaces_link_id, envelope)
    await _record_link(conn, event, envelope)


async def on_link_revoked(
    _ctx: ServiceContext, conn: Executor, event: LinkRevoked, envelope: RawEnvelope
) -> None:
    await _link_gone(conn, event.link_id, envelope)


async def _link_gone(conn: Executor, link_id: UUID, envelope: RawEnvelope) -> None:
    await conn.execute(
        "UPDATE join_links SET revoked_at = $3 WHERE link_id = $1 AND clinic_id = $2",
        link_id,
        envelope.clinic_id,
        envelope.occurred_at,
    )


async def _record_link(
    conn: Executor, event: LinkIssued | LinkRegenerated, envelope: RawEnvelope
) -> None:
    await conn.execute(
        "INSERT INTO join_links (link_id, clinic_id, kind, url_sealed, session_id, room_id, "
        "client_id, attendee_id, practitioner_id, issued_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (link_id) DO NOTHING",
        event.link_id,
        envelope.clinic_id,
        event.kind.value,
        event.url_sealed,
        event.session_id,
        event.room_id,
        event.client_id,
        event.attendee_id,
        event.practitioner_id,
        envelope.occurred_at,
    )
