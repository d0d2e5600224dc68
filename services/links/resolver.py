"""Answering a resolve request (over HTTP or NATS): look the link up (in the replica's cache,
else in Postgres), decide with the current time, count; a call held in a room gets the room's
title (``services.links.titles``)."""

import asyncio
import contextlib
import time
from dataclasses import replace
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

import asyncpg

from contracts.links import Decision, LinkKind, Refusal, ResolveRequest, RevokedBecause, Role
from contracts.scheduling import ClinicSettings
from runtime.context import ServiceContext
from runtime.db import Queryable
from runtime.sealing import secret_digest
from services.links.cache import (
    ROOM_HORIZON,
    ROOM_SESSIONS_READ,
    HostSession,
    ResolutionCache,
    RoomSessions,
    StoredTitle,
    link_tags,
)
from services.links.domain import State
from services.links.handlers import Links
from services.links.resolution import UNKNOWN, Found, SessionWindow, decide, refused

_LINK = """
    SELECT l.link_id, l.kind, l.role, l.state, l.revoked_because, l.sunset_at, l.clinic_id,
           l.room_id, l.practitioner_id, c.settings::text AS settings, c.suspended, p.left_at,
           s.session_id, s.practitioner_id AS s_practitioner, s.room_id AS s_room,
           s.starts_at, s.ends_at, s.time_zone, s.status, s.live, s.guest_admission
      FROM links l
      JOIN clinics c ON c.clinic_id = l.clinic_id
      LEFT JOIN sessions s ON s.session_id = l.session_id
      LEFT JOIN link_presence p ON p.link_id = l.link_id
"""
BY_TOKEN = f"{_LINK} JOIN link_secrets k ON k.link_id = l.link_id WHERE k.token_hash = $1"
BY_ROOM_PATH = (
    f"{_LINK} JOIN rooms r ON r.room_id = l.room_id "
    "WHERE c.slug = $1 AND r.slug = $2 AND l.kind = 'practitioner_room' AND NOT r.deleted "
    "ORDER BY l.issued_at DESC LIMIT 1"
)
_SESSION = """
    SELECT session_id, clinic_id, practitioner_id AS s_practitioner, room_id AS s_room, starts_at,
           ends_at, time_zone, status, live, guest_admission
      FROM sessions
"""
SESSION = f"{_SESSION} WHERE session_id = $1"
ROOM_SESSIONS = (
    f"{_SESSION} WHERE room_id = $1 AND status = 'scheduled' "
    "AND starts_at < $3::timestamptz + make_interval(mins => $4) "
    "AND ends_at + make_interval(mins => $5) > $2 "
    f"ORDER BY starts_at LIMIT {ROOM_SESSIONS_READ}"
)
"""A room's appointments whose window is open at some moment from $2 to $3."""
ROOM_TITLE = "SELECT title FROM rooms WHERE room_id = $1 AND clinic_id = $2"
_ROOMS = frozenset({LinkKind.practitioner_room, LinkKind.client_room})
RECHECK_S = 0.25
"""While waiting for a new session: how often it is read again without a notice."""


@lru_cache(maxsize=4096)
def clinic_settings(stored: str) -> ClinicSettings:
    """Settings as stored (JSON text), parsed once per distinct value rather than per lookup."""
    return ClinicSettings.model_validate_json(stored)


def _window(row: Any) -> SessionWindow | None:
    if row is None or row["session_id"] is None:
        return None
    return SessionWindow(
        session_id=row["session_id"],
        practitioner_id=row["s_practitioner"],
        room_id=row["s_room"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        time_zone=row["time_zone"],
        status=row["status"],
        live=row["live"],
        guest_admission=row["guest_admission"],
    )


def _found(row: asyncpg.Record, session: SessionWindow | None) -> Found:
    return Found(
        link_id=row["link_id"],
        kind=LinkKind(row["kind"]),
        role=Role(row["role"]),
        state=State(row["state"]),
        revoked_because=RevokedBecause(row["revoked_because"]) if row["revoked_because"] else None,
        sunset_at=row["sunset_at"],
        clinic_id=row["clinic_id"],
        settings=clinic_settings(row["settings"]),
        suspended=row["suspended"],
        room_id=row["room_id"],
        practitioner_id=row["practitioner_id"],
        session=session,
        left_at=row["left_at"],
    )


async def find(
    db: Queryable,
    cache: ResolutionCache,
    request: ResolveRequest,
    now: datetime,
    new_session_wait_s: float,
) -> Found | None:
    found = await _link(db, cache, request)
    if found is None:
        return None
    if found.kind is LinkKind.host and request.session_id is not None:
        # A host joins one of their sessions: it must be theirs, in their clinic.
        host = await _host_session_soon(db, cache, request.session_id, new_session_wait_s)
        if (
            host is None
            or host.clinic_id != found.clinic_id
            or host.window.practitioner_id != found.practitioner_id
        ):
            return replace(found, session=None, session_not_theirs=True)
        return replace(found, session=host.window)
    if found.kind in _ROOMS and found.room_id is not None:
        # The appointment being held in this room now, if any, so the call is tied to it.
        sessions = await _room_sessions(db, cache, found, now)
        return replace(found, session=sessions.open_at(now, found.settings))
    return found


async def _link(db: Queryable, cache: ResolutionCache, request: ResolveRequest) -> Found | None:
    if request.token:
        digest = secret_digest(request.token)

        async def by_token() -> tuple[Found, list[str]] | None:
            row = await db.fetchrow(BY_TOKEN, digest)
            if row is None:
                return None
            found = _found(row, _window(row))
            return found, link_tags(found)

        return await cache.by_token.read_through(digest, by_token)
    if request.clinic_slug and request.room_slug:
        path = (request.clinic_slug, request.room_slug)

        async def by_room_path() -> tuple[Found, list[str]] | None:
            row = await db.fetchrow(BY_ROOM_PATH, *path)
            if row is None:
                return None
            found = _found(row, None)
            # The newest link of the room answers: a link issued for it later is noticed
            # by room.
            return found, [*link_tags(found), f"room:{found.room_id}"]

        return await cache.by_room_path.read_through(path, by_room_path)
    return None


async def _host_session(
    db: Queryable, cache: ResolutionCache, session_id: UUID
) -> HostSession | None:
    async def read() -> tuple[HostSession, list[str]] | None:
        row = await db.fetchrow(SESSION, session_id)
        window = _window(row)
        if row is None or window is None:
            return None
        return HostSession(row["clinic_id"], window), [f"session:{session_id}"]

    return await cache.host_sessions.read_through(session_id, read)


async def _host_session_soon(
    db: Queryable, cache: ResolutionCache, session_id: UUID, wait_s: float
) -> HostSession | None:
    """The session a host token names. One this service has not heard of is waited for, up
    to ``wait_s``: the API that created it may have answered before its event reached here,
    and the link it handed out must work at once. Woken by the session's change notice
    (whichever replica records it), and reading again every ``RECHECK_S`` in case the
    notice is lost."""
    deadline = time.monotonic() + wait_s
    with cache.noticing(f"session:{session_id}") as recorded:
        while True:
            recorded.clear()  # before the read: a notice during it wakes the wait at once
            host = await _host_session(db, cache, session_id)
            left = deadline - time.monotonic()
            if host is not None or left <= 0:
                return host
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, RECHECK_S)):
                    await recorded.wait()


async def _room_sessions(
    db: Queryable, cache: ResolutionCache, found: Found, now: datetime
) -> RoomSessions:
    assert found.room_id is not None
    hit = cache.room_sessions.get(found.room_id)
    if hit is not None and hit.covers(now):
        return hit
    since = cache.room_sessions.generation
    until = now + ROOM_HORIZON
    early, buffer = found.settings.early_join_minutes, found.settings.buffer_minutes
    rows = await db.fetch(ROOM_SESSIONS, found.room_id, now, until, early, buffer)
    windows = tuple(w for w in map(_window, rows) if w is not None)
    if len(rows) == ROOM_SESSIONS_READ:
        # Sessions past the last one read start no earlier, so none opens before it does.
        until = min(until, windows[-1].opens_at(found.settings))
    read = RoomSessions(now, until, windows)
    if read.until > now:
        # Which sessions were read depends on the clinic's early join and buffer: noticed too.
        tags = [f"room:{found.room_id}", f"clinic:{found.clinic_id}"]
        cache.room_sessions.put(found.room_id, read, tags, since)
    return read


async def _stored_title(
    db: Queryable, cache: ResolutionCache, clinic_id: str, room_id: UUID
) -> str | None:
    async def read() -> tuple[StoredTitle, list[str]] | None:
        row = await db.fetchrow(ROOM_TITLE, room_id, clinic_id)
        return None if row is None else (StoredTitle(row["title"]), [f"room:{room_id}"])

    stored = await cache.room_titles.read_through((clinic_id, room_id), read)
    return stored.title if stored is not None else None


async def resolve(
    links: Links, ctx: ServiceContext, db: Queryable, request: ResolveRequest
) -> Decision:
    """The decision for ``request``, reading what is stored from ``db`` (the service's pool)
    and asking scheduling through ``ctx`` to open a client room's title."""
    address = request.client_address
    if address is not None and (wait := links.unknown_tokens.blocked(address)) is not None:
        return refused(
            Refusal.rate_limited,
            f"Too many links that do not exist were tried from here; wait {wait:.0f} seconds.",
            retry_after_s=wait,
        )
    now = links.clock()
    found = await find(db, links.cache, request, now, links.settings.resolve_new_session_wait_s)
    decision = decide(found, now) if found is not None else UNKNOWN
    if decision.link_id is not None:
        outcome = "allowed" if decision.allowed else str(decision.reason)
        links.resolutions[(decision.link_id, outcome)] += 1
    elif address is not None:
        links.unknown_tokens.retry_after(address)  # one try spent
    if decision.allowed and decision.room_id is not None and decision.clinic_id is not None:
        stored = await _stored_title(db, links.cache, decision.clinic_id, decision.room_id)
        title = await links.titles.open(ctx, decision.clinic_id, stored)
        decision = decision.model_copy(update={"room_title": title})
    return decision
