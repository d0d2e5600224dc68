"""Answering a resolve request (over HTTP or NATS): look the link up, decide, count."""

from datetime import datetime
from functools import lru_cache
from typing import Any

import asyncpg

from contracts.links import Decision, LinkKind, Refusal, ResolveRequest, RevokedBecause, Role
from contracts.scheduling import ClinicSettings
from runtime.db import Queryable
from runtime.sealing import secret_digest
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
    SELECT session_id, practitioner_id AS s_practitioner, room_id AS s_room, starts_at,
           ends_at, time_zone, status, live, guest_admission
      FROM sessions
"""
SESSION_OF_HOST = f"{_SESSION} WHERE session_id = $1 AND clinic_id = $2 AND practitioner_id = $3"
SESSION_IN_ROOM = (
    f"{_SESSION} WHERE room_id = $1 AND status = 'scheduled' "
    "AND starts_at - make_interval(mins => $3) <= $2 AND ends_at + make_interval(mins => $4) > $2 "
    "ORDER BY starts_at LIMIT 1"
)
"""The appointment whose window is open in a room now."""


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


async def find(db: Queryable, request: ResolveRequest, now: datetime) -> Found | None:
    if request.token:
        row = await db.fetchrow(BY_TOKEN, secret_digest(request.token))
    elif request.clinic_slug and request.room_slug:
        row = await db.fetchrow(BY_ROOM_PATH, request.clinic_slug, request.room_slug)
    else:
        return None
    if row is None:
        return None
    session = _window(row)
    kind = LinkKind(row["kind"])
    if kind is LinkKind.host and request.session_id is not None:
        # A host joins one of their sessions: it must be theirs, in their clinic.
        found = await db.fetchrow(
            SESSION_OF_HOST, request.session_id, row["clinic_id"], row["practitioner_id"]
        )
        if found is None:
            return None
        session = _window(found)
    elif kind in (LinkKind.practitioner_room, LinkKind.client_room) and row["room_id"]:
        # The appointment being held in this room now, if any, so the call is tied to it.
        settings = clinic_settings(row["settings"])
        session = _window(
            await db.fetchrow(
                SESSION_IN_ROOM,
                row["room_id"],
                now,
                settings.early_join_minutes,
                settings.buffer_minutes,
            )
        )
    return _found(row, session)


async def resolve(links: Links, db: Queryable, request: ResolveRequest) -> Decision:
    address = request.client_address
    if address is not None and (wait := links.unknown_tokens.blocked(address)) is not None:
        return refused(
            Refusal.rate_limited,
            f"Too many links that do not exist were tried from here; wait {wait:.0f} seconds.",
            retry_after_s=wait,
        )
    now = links.clock()
    found = await find(db, request, now)
    decision = decide(found, now) if found is not None else UNKNOWN
    if decision.link_id is not None:
        outcome = "allowed" if decision.allowed else str(decision.reason)
        links.resolutions[(decision.link_id, outcome)] += 1
    elif address is not None:
        links.unknown_tokens.retry_after(address)  # one try spent
    return decision
