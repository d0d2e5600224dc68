"""Reads of the read models; every one is scoped to a clinic.

Personal values rest sealed; a read fetches the keys it needs in the same statement and
opens them here, so plain values exist only in the answer.
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from contracts.scheduling import SessionScheduled, scheduling_events
from runtime.db import Queryable
from runtime.eventstore import RecordedEvent
from runtime.pagination import Page, cursor_time, encode_cursor, time_and_id
from runtime.personal_data import open_data
from runtime.refusals import not_found
from runtime.sealing import Sealer
from services.scheduling.domain import client_erased
from services.scheduling.models import (
    ApiKeyView,
    AttendeeView,
    ClientView,
    ClinicView,
    PractitionerView,
    RoomView,
    SessionView,
    UpcomingSession,
)
from services.scheduling.person_keys import opened


def _page(items: list[Any], limit: int, *key: str) -> tuple[list[Any], str | None]:
    """Trim the one extra row fetched to learn whether another page exists."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    last = items[-1]
    return items, encode_cursor(*(last[k] for k in key))


async def clinic(conn: Queryable, clinic_id: str) -> ClinicView:
    row = await conn.fetchrow("SELECT * FROM clinics WHERE clinic_id = $1", clinic_id)
    if row is None:
        raise not_found("clinic")
    return ClinicView.model_validate(dict(row))


async def clinics(conn: Queryable, after: list[str] | None, limit: int) -> Page[ClinicView]:
    rows = await conn.fetch(
        "SELECT * FROM clinics WHERE ($1::timestamptz IS NULL OR (registered_at, clinic_id) > "
        "($1, $2)) ORDER BY registered_at, clinic_id LIMIT $3",
        cursor_time(after[0]) if after else None,
        after[1] if after else "",
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "registered_at", "clinic_id")
    return Page(items=[ClinicView.model_validate(dict(r)) for r in items], next_cursor=cursor)


async def api_keys(conn: Queryable, clinic_id: str, key_id: UUID | None = None) -> list[ApiKeyView]:
    rows = await conn.fetch(
        "SELECT key_id, prefix, label, issued_at, revoked_at FROM api_keys "
        "WHERE clinic_id = $1 AND ($2::uuid IS NULL OR key_id = $2) ORDER BY issued_at, key_id",
        clinic_id,
        key_id,
    )
    return [ApiKeyView.model_validate(dict(r)) for r in rows]


def _practitioner(row: asyncpg.Record, clinic_slug: str) -> PractitionerView:
    return PractitionerView(**dict(row), room_path=f"/r/{clinic_slug}/{row['room_slug']}")


async def practitioner(
    conn: Queryable, clinic_id: str, clinic_slug: str, practitioner_id: UUID
) -> PractitionerView:
    row = await conn.fetchrow(
        "SELECT practitioner_id, display_name, room_id, room_slug, added_at FROM practitioners "
        "WHERE clinic_id = $1 AND practitioner_id = $2",
        clinic_id,
        practitioner_id,
    )
    if row is None:
        raise not_found("practitioner")
    return _practitioner(row, clinic_slug)


async def practitioners(
    conn: Queryable, clinic_id: str, clinic_slug: str, after: list[str] | None, limit: int
) -> Page[PractitionerView]:
    rows = await conn.fetch(
        "SELECT practitioner_id, display_name, room_id, room_slug, added_at FROM practitioners "
        "WHERE clinic_id = $1 AND ($2::timestamptz IS NULL OR (added_at, practitioner_id) > "
        "($2, $3::uuid)) ORDER BY added_at, practitioner_id LIMIT $4",
        clinic_id,
        *time_and_id(after),
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "added_at", "practitioner_id")
    return Page(items=[_practitioner(r, clinic_slug) for r in items], next_cursor=cursor)


_CLIENT = (
    "SELECT c.client_id, c.display_name, c.email, c.phone, c.linked_accounts, "
    "c.alternate_contacts, c.added_at, c.updated_at, c.erased_at, k.key FROM clients c "
    "LEFT JOIN person_keys k ON k.clinic_id = c.clinic_id AND k.person_id = c.client_id"
)


def _client(row: Mapping[str, Any], clinic_id: str) -> ClientView:
    key = bytes(row["key"]) if row["key"] is not None else None
    keys = {row["client_id"]: key} if key is not None else {}
    fields = {k: v for k, v in row.items() if k not in ("key", "erased_at")}
    for name in ("display_name", "email", "phone"):
        fields[name] = opened(row[name], key, clinic_id)
    for name in ("linked_accounts", "alternate_contacts"):
        fields[name] = open_data(row[name], keys, clinic_id)
    return ClientView.model_validate(fields)


async def client(conn: Queryable, clinic_id: str, client_id: UUID) -> ClientView:
    row = await conn.fetchrow(
        f"{_CLIENT} WHERE c.clinic_id = $1 AND c.client_id = $2", clinic_id, client_id
    )
    if row is None:
        raise not_found("client")
    if row["erased_at"] is not None:
        raise client_erased()
    return _client(dict(row), clinic_id)


async def clients(
    conn: Queryable, clinic_id: str, after: list[str] | None, limit: int
) -> Page[ClientView]:
    """The clinic's clients; the erased are not listed."""
    rows = await conn.fetch(
        f"{_CLIENT} WHERE c.clinic_id = $1 AND c.erased_at IS NULL AND ($2::timestamptz IS NULL "
        "OR (c.added_at, c.client_id) > ($2, $3::uuid)) ORDER BY c.added_at, c.client_id LIMIT $4",
        clinic_id,
        *time_and_id(after),
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "added_at", "client_id")
    return Page(items=[_client(dict(r), clinic_id) for r in items], next_cursor=cursor)


_ROOM = (
    "SELECT r.room_id, r.kind, r.practitioner_id, r.client_id, r.slug, r.title, r.created_at, "
    "k.key FROM rooms r "
    "LEFT JOIN person_keys k ON k.clinic_id = r.clinic_id AND k.person_id = r.client_id"
)


def _room(row: Mapping[str, Any], clinic_id: str) -> RoomView:
    fields = {k: v for k, v in row.items() if k != "key"}
    key = bytes(row["key"]) if row["key"] is not None else None
    fields["title"] = opened(row["title"], key, clinic_id) or ""
    return RoomView.model_validate(fields)


async def room(conn: Queryable, clinic_id: str, room_id: UUID) -> RoomView:
    row = await conn.fetchrow(
        f"{_ROOM} WHERE r.clinic_id = $1 AND r.room_id = $2 AND r.deleted_at IS NULL",
        clinic_id,
        room_id,
    )
    if row is None:
        raise not_found("room")
    return _room(dict(row), clinic_id)


async def rooms(
    conn: Queryable,
    clinic_id: str,
    client_id: UUID | None,
    practitioner_id: UUID | None,
    after: list[str] | None,
    limit: int,
) -> Page[RoomView]:
    rows = await conn.fetch(
        f"{_ROOM} WHERE r.clinic_id = $1 AND r.deleted_at IS NULL "
        "AND ($2::uuid IS NULL OR r.client_id = $2) "
        "AND ($3::uuid IS NULL OR r.practitioner_id = $3) "
        "AND ($4::timestamptz IS NULL OR (r.created_at, r.room_id) > ($4, $5::uuid)) "
        "ORDER BY r.created_at, r.room_id LIMIT $6",
        clinic_id,
        client_id,
        practitioner_id,
        *time_and_id(after),
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "created_at", "room_id")
    return Page(items=[_room(dict(r), clinic_id) for r in items], next_cursor=cursor)


_SESSION = (
    "SELECT session_id, practitioner_id, client_ids, starts_at, ends_at, time_zone, video_mode, "
    "room_id, link_sharing, guest_admission, source, status, completed_because, scheduled_at, "
    "updated_at FROM sessions"
)


def _local(value: datetime, time_zone: str) -> datetime:
    """``value`` in the session's zone; in UTC when that is past what Python holds (a session
    stored at the end of 9999, before the API bounded times, in a zone ahead of UTC)."""
    try:
        return value.astimezone(ZoneInfo(time_zone))
    except OverflowError:
        return value


def _session(row: Mapping[str, Any], attendees: list[AttendeeView]) -> SessionView:
    return SessionView(
        **dict(row),
        local_starts_at=_local(row["starts_at"], row["time_zone"]),
        local_ends_at=_local(row["ends_at"], row["time_zone"]),
        attendees=attendees,
    )


def _attendee(found: dict[str, Any], clinic_id: str) -> AttendeeView:
    """An attendee's row, its personal values opened with the key that came with it (their
    client's for a contact, else their own)."""
    key = bytes.fromhex(found.pop("key")) if found.get("key") else None
    for name in ("email", "display_name"):
        found[name] = opened(found[name], key, clinic_id)
    return AttendeeView.model_validate(found)


def scheduled_session(recorded: RecordedEvent) -> SessionView:
    """A session just scheduled, from its ``SessionScheduled`` as appended: what ``session``
    reads once the projection holds it (times in UTC, as Postgres gives them), unread."""
    event = scheduling_events.decode(recorded.type, recorded.schema_version, recorded.data)
    if not isinstance(event, SessionScheduled):
        raise TypeError(f"{recorded.type} does not schedule a session")
    row = {
        "session_id": event.session_id,
        "practitioner_id": event.practitioner_id,
        "client_ids": list(event.client_ids),
        "starts_at": event.starts_at.astimezone(UTC),
        "ends_at": event.ends_at.astimezone(UTC),
        "time_zone": event.time_zone,
        "video_mode": event.video_mode,
        "room_id": event.room_id,
        "link_sharing": event.link_sharing,
        "guest_admission": event.guest_admission,
        "source": event.source,
        "status": "scheduled",
        "completed_because": None,
        "scheduled_at": recorded.occurred_at,
        "updated_at": recorded.occurred_at,
    }
    return _session(row, [])


async def session(conn: Queryable, clinic_id: str, session_id: UUID) -> SessionView:
    row = await conn.fetchrow(
        f"""
        SELECT s.*, (
            SELECT coalesce(jsonb_agg(to_jsonb(a) - 'session_id' - 'clinic_id'
                                      || jsonb_build_object('key', encode(k.key, 'hex'))
                                      ORDER BY a.invited_at), '[]')
              FROM attendees a
              LEFT JOIN person_keys k ON k.clinic_id = a.clinic_id
                                     AND k.person_id = coalesce(a.client_id, a.attendee_id)
             WHERE a.session_id = s.session_id AND a.clinic_id = $1
        ) AS attendee_list
          FROM ({_SESSION} WHERE clinic_id = $1 AND session_id = $2) s
        """,
        clinic_id,
        session_id,
    )
    if row is None:
        raise not_found("session")
    attendees = [_attendee(a, clinic_id) for a in row["attendee_list"]]
    fields = {k: v for k, v in dict(row).items() if k != "attendee_list"}
    return _session(fields, attendees)


async def attendee(
    conn: Queryable, clinic_id: str, session_id: UUID, attendee_id: UUID
) -> AttendeeView:
    """One attendee of a session (404 for an unknown session, then an unknown attendee)."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT to_jsonb(a) - 'session_id' - 'clinic_id'
                       || jsonb_build_object('key', encode(k.key, 'hex'))
                  FROM attendees a
                  LEFT JOIN person_keys k ON k.clinic_id = a.clinic_id
                                         AND k.person_id = coalesce(a.client_id, a.attendee_id)
                 WHERE a.clinic_id = s.clinic_id AND a.session_id = s.session_id
                   AND a.attendee_id = $3) AS found
          FROM sessions s
         WHERE s.clinic_id = $1 AND s.session_id = $2
        """,
        clinic_id,
        session_id,
        attendee_id,
    )
    if row is None:
        raise not_found("session")
    if row["found"] is None:
        raise not_found("attendee")
    return _attendee(row["found"], clinic_id)


async def sessions(
    conn: Queryable,
    clinic_id: str,
    practitioner_id: UUID | None,
    starts_from: datetime | None,
    starts_before: datetime | None,
    after: list[str] | None,
    limit: int,
) -> Page[SessionView]:
    """Sessions by start time (attendees are listed on each session's own page)."""
    rows = await conn.fetch(
        f"{_SESSION} WHERE clinic_id = $1 AND ($2::uuid IS NULL OR practitioner_id = $2) "
        "AND ($3::timestamptz IS NULL OR starts_at >= $3) "
        "AND ($4::timestamptz IS NULL OR starts_at < $4) "
        "AND ($5::timestamptz IS NULL OR (starts_at, session_id) > ($5, $6::uuid)) "
        "ORDER BY starts_at, session_id LIMIT $7",
        clinic_id,
        practitioner_id,
        starts_from,
        starts_before,
        *time_and_id(after),
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "starts_at", "session_id")
    return Page(items=[_session(r, []) for r in items], next_cursor=cursor)


async def existing_client(conn: Queryable, clinic_id: str, client_id: UUID) -> None:
    """Refuses an unknown client (404) and an erased one (410)."""
    erased = await conn.fetchval(
        "SELECT erased_at IS NOT NULL FROM clients WHERE clinic_id = $1 AND client_id = $2",
        clinic_id,
        client_id,
    )
    if erased is None:
        raise not_found("client")
    if erased:
        raise client_erased()


async def upcoming_sessions(
    conn: Queryable, clinic_id: str, client_id: UUID, now: datetime, sealer: Sealer
) -> list[UpcomingSession]:
    """What a client portal shows: the client's sessions still to come, each with its link."""
    await existing_client(conn, clinic_id, client_id)
    rows = await conn.fetch(
        """
        SELECT s.session_id, s.practitioner_id, s.starts_at, s.ends_at, s.time_zone,
               s.video_mode, s.status,
               (SELECT l.url_sealed FROM join_links l
                 WHERE l.clinic_id = s.clinic_id AND l.revoked_at IS NULL AND (
                       (s.video_mode = 'session_link' AND l.kind = 'session'
                          AND l.session_id = s.session_id)
                    OR (s.video_mode = 'practitioner_room' AND l.kind = 'practitioner_room'
                          AND l.room_id = s.room_id)
                    OR (s.video_mode = 'client_room' AND l.kind = 'client_room'
                          AND l.room_id = s.room_id))
                 ORDER BY l.issued_at DESC LIMIT 1) AS join_url
          FROM sessions s
         WHERE s.clinic_id = $1 AND s.client_ids @> ARRAY[$2::uuid] AND s.ends_at > $3
           AND s.status IN ('scheduled', 'live', 'ended')
         ORDER BY s.starts_at, s.session_id
         LIMIT 200
        """,
        clinic_id,
        client_id,
        now,
    )
    return [
        UpcomingSession(
            **{k: v for k, v in dict(r).items() if k != "join_url"},
            join_url=sealer.unseal(r["join_url"]) if r["join_url"] else None,
            local_starts_at=_local(r["starts_at"], r["time_zone"]),
        )
        for r in rows
    ]
