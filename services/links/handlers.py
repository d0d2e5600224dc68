"""Issuing links in reaction to scheduling, tracking calls from signaling, and the commands.

Each link slot is a stream (``guest-<session>``, ``room-<room>``, ...). Issuing makes a token
(256 bits from ``secrets``), appends the event with the URL sealed, and stores the token's
SHA-256 in the same transaction; the token itself is then forgotten.
"""

import asyncio
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from uuid import UUID, uuid4

import structlog

from contracts.envelope import RawEnvelope
from contracts.events import Event
from contracts.links import LinkKind, RevokedBecause, Role, links_events
from contracts.scheduling import (
    AttendeeInvited,
    AttendeeRemoved,
    ClientErased,
    ClinicRegistered,
    ClinicReinstated,
    ClinicSettingsChanged,
    ClinicSuspended,
    LinkSharingDisabled,
    LinkSharingEnabled,
    PractitionerAdded,
    RoomCreated,
    RoomDeleted,
    RoomKind,
    RoomRenamed,
    SessionCancelled,
    SessionCompleted,
    SessionRescheduled,
    SessionScheduled,
    VideoMode,
)
from contracts.signaling import ParticipantLeft, SessionEnded, SessionStarted
from runtime import commands
from runtime.clock import Clock, system_clock
from runtime.commands import Decide
from runtime.context import ServiceContext
from runtime.db import Executor
from runtime.eventstore import Cause, EventStore, RecordedEvent
from runtime.ratelimit import RateLimiter
from runtime.refusals import NotFound
from runtime.sealing import Sealer, SealingSettings, secret_digest
from services.links import domain
from services.links.cache import ResolutionCache
from services.links.config import LinksSettings
from services.links.domain import NewLink, Slot
from services.links.titles import RoomTitles

log = structlog.get_logger(__name__)


@dataclass
class Links:
    """What the links service's handlers share, built once per process."""

    settings: LinksSettings = field(default_factory=LinksSettings)
    sealer_source: Callable[[], Sealer] = field(
        default=lambda: SealingSettings().sealer()  # read at start, not at import
    )
    clock: Clock = system_clock
    resolutions: Counter[tuple[UUID, str]] = field(default_factory=Counter)
    _saving: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @cached_property
    def sealer(self) -> Sealer:
        return self.sealer_source()

    @cached_property
    def cache(self) -> ResolutionCache:
        return ResolutionCache(self.settings.resolve_cache_entries)

    async def watch_changes(self, ctx: ServiceContext) -> None:
        """Background task: keep ``cache`` honest with the links schema's change notices."""
        await self.cache.watch(ctx.settings.database_url.get_secret_value())

    @cached_property
    def titles(self) -> RoomTitles:
        return RoomTitles(self.settings.resolve_room_title_wait_s)

    @cached_property
    def unknown_tokens(self) -> RateLimiter:
        s = self.settings
        return RateLimiter(s.resolve_unknown_per_minute, s.resolve_unknown_burst)

    def url(self, kind: LinkKind, token: str) -> str:
        prefix = "h" if kind is LinkKind.host else "j"
        return f"{self.settings.public_url.rstrip('/')}/{prefix}/{token}"

    async def flush_resolutions(self, ctx: ServiceContext) -> None:
        """Background task: save the resolution counts every ``audit_flush_s``."""
        while True:
            await asyncio.sleep(self.settings.audit_flush_s)
            await self.save_resolutions(ctx)

    async def save_resolutions(self, ctx: ServiceContext) -> None:
        # One save at a time: a caller (the audit) returns only once the counts taken by a
        # save already in progress (the background flush) are written too.
        async with self._saving:
            counts, self.resolutions = self.resolutions, Counter()
            if not counts:
                return
            try:
                await ctx.pool.executemany(
                    "INSERT INTO link_resolutions (link_id, outcome, count, last_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (link_id, outcome) DO UPDATE "
                    "SET count = link_resolutions.count + EXCLUDED.count, "
                    "last_at = EXCLUDED.last_at",
                    [(link, outcome, n, self.clock()) for (link, outcome), n in counts.items()],
                )
            except Exception:
                self.resolutions.update(counts)  # keep them for the next round
                log.warning("resolution counts not saved yet", exc_info=True)


async def in_slot(
    store: EventStore,
    slot_id: str,
    clinic_id: str,
    decide: Decide[Slot],
    *,
    conn: Executor,
    cause: Cause | None = None,
) -> list[RecordedEvent]:
    """Run ``decide`` on the slot (``runtime.commands.execute``) in the caller's transaction."""
    return await commands.execute(
        store,
        slot_id,
        clinic_id,
        links_events,
        domain.evolve,
        decide,
        absent=NotFound("link_not_found", "There is no link with that id."),
        cause=cause,
        conn=conn,
    )


@dataclass(frozen=True)
class Minted:
    link: NewLink
    token: str | None


def mint(links: Links, kind: LinkKind, role: Role, path: str | None = None, **ids: Any) -> Minted:
    """A new link: a fresh token (none for readable room links) and its sealed URL."""
    if kind is LinkKind.practitioner_room:
        assert path is not None
        url, token = f"{links.settings.public_url.rstrip('/')}{path}", None
    else:
        token = secrets.token_urlsafe(32)
        url = links.url(kind, token)
    new = NewLink(uuid4(), kind, role, links.sealer.seal(url), path, **ids)
    return Minted(new, token)


async def store_secrets(
    conn: Executor, minted: list[Minted], appended: list[RecordedEvent]
) -> None:
    """Keep the hash of each token whose link was actually issued."""
    issued = {r.data["link_id"] for r in appended if "url_sealed" in r.data}
    rows = [
        (secret_digest(m.token), m.link.link_id)
        for m in minted
        if m.token is not None and str(m.link.link_id) in issued
    ]
    if rows:
        await conn.executemany(
            "INSERT INTO link_secrets (token_hash, link_id) VALUES ($1, $2)", rows
        )


async def issue_in(
    ctx: ServiceContext,
    links: Links,
    conn: Executor,
    envelope: RawEnvelope,
    slot_id: str,
    kind: LinkKind,
    role: Role,
    path: str | None = None,
    **ids: Any,
) -> None:
    minted = mint(links, kind, role, path, **ids)
    appended = await in_slot(
        ctx.store,
        slot_id,
        envelope.clinic_id,
        lambda slot: domain.issue(slot, minted.link),
        conn=conn,
        cause=Cause.of(envelope),
    )
    await store_secrets(conn, [minted], appended)


async def revoke_in(
    ctx: ServiceContext,
    conn: Executor,
    envelope: RawEnvelope,
    slot_id: str,
    because: RevokedBecause,
) -> None:
    await in_slot(
        ctx.store,
        slot_id,
        envelope.clinic_id,
        lambda slot: domain.revoke(slot, because),
        conn=conn,
        cause=Cause.of(envelope),
    )


# -- scheduling's events -----------------------------------------------------------------------


async def on_scheduling(
    links: Links, ctx: ServiceContext, conn: Executor, event: Event, envelope: RawEnvelope
) -> None:
    clinic = envelope.clinic_id
    match event:
        case ClinicRegistered():
            await conn.execute(
                "INSERT INTO clinics (clinic_id, slug, settings) VALUES ($1, $2, $3) "
                "ON CONFLICT (clinic_id) DO NOTHING",
                clinic,
                event.slug,
                event.settings.model_dump(mode="json"),
            )
        case ClinicSettingsChanged():
            await conn.execute(
                "UPDATE clinics SET settings = $2 WHERE clinic_id = $1",
                clinic,
                event.settings.model_dump(mode="json"),
            )
        case ClinicSuspended() | ClinicReinstated():
            await conn.execute(
                "UPDATE clinics SET suspended = $2 WHERE clinic_id = $1",
                clinic,
                isinstance(event, ClinicSuspended),
            )
        case PractitionerAdded():
            await issue_in(
                ctx,
                links,
                conn,
                envelope,
                f"host-{event.practitioner_id}",
                LinkKind.host,
                Role.host,
                practitioner_id=event.practitioner_id,
                room_id=event.room_id,
            )
        case RoomCreated():
            await _room_created(ctx, links, conn, envelope, event)
        case RoomRenamed():
            await conn.execute(
                "UPDATE rooms SET title = $3 WHERE room_id = $1 AND clinic_id = $2",
                event.room_id,
                clinic,
                event.title,  # as published: a client room's sealed (services/links/titles.py)
            )
        case ClientErased():
            await conn.execute(
                "UPDATE rooms SET title = NULL WHERE clinic_id = $1 AND client_id = $2",
                clinic,
                event.client_id,
            )
            links.titles.forget([event.client_id])
        case RoomDeleted():
            await conn.execute(
                "UPDATE rooms SET deleted = true, title = NULL "
                "WHERE room_id = $1 AND clinic_id = $2",
                event.room_id,
                clinic,
            )
            await revoke_in(
                ctx, conn, envelope, f"room-{event.room_id}", RevokedBecause.room_deleted
            )
        case SessionScheduled():
            await _session_scheduled(ctx, links, conn, envelope, event)
        case SessionRescheduled():
            await conn.execute(
                "UPDATE sessions SET starts_at = $3, ends_at = $4, time_zone = $5 "
                "WHERE session_id = $1 AND clinic_id = $2",
                event.session_id,
                clinic,
                event.starts_at,
                event.ends_at,
                event.time_zone,
            )
        case SessionCancelled():
            await _set_status(conn, clinic, event.session_id, "cancelled")
            for slot in await _session_slots(conn, event.session_id):
                await revoke_in(ctx, conn, envelope, slot, RevokedBecause.session_cancelled)
        case SessionCompleted():
            await _set_status(conn, clinic, event.session_id, "completed")
        case AttendeeInvited():
            await conn.execute(
                "INSERT INTO attendees (attendee_id, session_id, clinic_id) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                event.attendee_id,
                event.session_id,
                clinic,
            )
            sharing = await conn.fetchval(
                "SELECT link_sharing FROM sessions WHERE session_id = $1 AND clinic_id = $2",
                event.session_id,
                clinic,
            )
            if sharing:
                await _issue_drop_in(
                    ctx, links, conn, envelope, event.session_id, event.attendee_id
                )
        case AttendeeRemoved():
            await conn.execute("DELETE FROM attendees WHERE attendee_id = $1", event.attendee_id)
            await revoke_in(
                ctx, conn, envelope, f"dropin-{event.attendee_id}", RevokedBecause.attendee_removed
            )
        case LinkSharingEnabled():
            await _set_sharing(conn, clinic, event.session_id, True)
            await _issue_guest(ctx, links, conn, envelope, event.session_id)
            for attendee_id in await _attendees(conn, event.session_id):
                await _issue_drop_in(ctx, links, conn, envelope, event.session_id, attendee_id)
        case LinkSharingDisabled():
            await _set_sharing(conn, clinic, event.session_id, False)
            slots = [f"guest-{event.session_id}"]
            slots += [f"dropin-{a}" for a in await _attendees(conn, event.session_id)]
            for slot in slots:
                await revoke_in(ctx, conn, envelope, slot, RevokedBecause.sharing_disabled)


async def _room_created(
    ctx: ServiceContext, links: Links, conn: Executor, envelope: RawEnvelope, event: RoomCreated
) -> None:
    await conn.execute(
        "INSERT INTO rooms (room_id, clinic_id, kind, practitioner_id, client_id, slug, title) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id) DO NOTHING",
        event.room_id,
        envelope.clinic_id,
        event.kind.value,
        event.practitioner_id,
        event.client_id,
        event.slug,
        event.title,  # as published: a client room's sealed (services/links/titles.py)
    )
    slot = f"room-{event.room_id}"
    if event.kind is RoomKind.practitioner:
        clinic_slug = await conn.fetchval(
            "SELECT slug FROM clinics WHERE clinic_id = $1", envelope.clinic_id
        )
        await issue_in(
            ctx,
            links,
            conn,
            envelope,
            slot,
            LinkKind.practitioner_room,
            Role.guest,
            f"/r/{clinic_slug}/{event.slug}",
            room_id=event.room_id,
            practitioner_id=event.practitioner_id,
        )
    else:
        await issue_in(
            ctx,
            links,
            conn,
            envelope,
            slot,
            LinkKind.client_room,
            Role.client,
            client_id=event.client_id,
            room_id=event.room_id,
            practitioner_id=event.practitioner_id,
        )


async def _session_scheduled(
    ctx: ServiceContext,
    links: Links,
    conn: Executor,
    envelope: RawEnvelope,
    event: SessionScheduled,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (session_id, clinic_id, practitioner_id, room_id, video_mode, "
        "starts_at, ends_at, time_zone, link_sharing, guest_admission) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (session_id) DO NOTHING",
        event.session_id,
        envelope.clinic_id,
        event.practitioner_id,
        event.room_id,
        event.video_mode.value,
        event.starts_at,
        event.ends_at,
        event.time_zone,
        event.link_sharing,
        event.guest_admission.value,
    )
    if event.video_mode is VideoMode.session_link:
        await issue_in(
            ctx,
            links,
            conn,
            envelope,
            f"session-{event.session_id}",
            LinkKind.session,
            Role.client,
            session_id=event.session_id,
            practitioner_id=event.practitioner_id,
            client_id=event.client_ids[0] if len(event.client_ids) == 1 else None,
        )
    if event.link_sharing:
        await _issue_guest(ctx, links, conn, envelope, event.session_id)


async def _issue_guest(
    ctx: ServiceContext, links: Links, conn: Executor, envelope: RawEnvelope, session_id: UUID
) -> None:
    await issue_in(
        ctx,
        links,
        conn,
        envelope,
        f"guest-{session_id}",
        LinkKind.guest,
        Role.guest,
        session_id=session_id,
    )


async def _issue_drop_in(
    ctx: ServiceContext,
    links: Links,
    conn: Executor,
    envelope: RawEnvelope,
    session_id: UUID,
    attendee_id: UUID,
) -> None:
    await issue_in(
        ctx,
        links,
        conn,
        envelope,
        f"dropin-{attendee_id}",
        LinkKind.drop_in,
        Role.guest,
        session_id=session_id,
        attendee_id=attendee_id,
    )


async def _set_status(conn: Executor, clinic_id: str, session_id: UUID, status: str) -> None:
    await conn.execute(
        "UPDATE sessions SET status = $3 WHERE session_id = $1 AND clinic_id = $2",
        session_id,
        clinic_id,
        status,
    )


async def _set_sharing(conn: Executor, clinic_id: str, session_id: UUID, on: bool) -> None:
    await conn.execute(
        "UPDATE sessions SET link_sharing = $3 WHERE session_id = $1 AND clinic_id = $2",
        session_id,
        clinic_id,
        on,
    )


async def _attendees(conn: Executor, session_id: UUID) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT attendee_id FROM attendees WHERE session_id = $1 ORDER BY attendee_id", session_id
    )
    return [r["attendee_id"] for r in rows]


async def _session_slots(conn: Executor, session_id: UUID) -> list[str]:
    slots = [f"session-{session_id}", f"guest-{session_id}"]
    return slots + [f"dropin-{a}" for a in await _attendees(conn, session_id)]


# -- signaling's events ------------------------------------------------------------------------


async def on_signaling(
    _links: Links, _ctx: ServiceContext, conn: Executor, event: Event, envelope: RawEnvelope
) -> None:
    match event:
        case SessionStarted() | SessionEnded() if event.session_id is not None:
            await conn.execute(
                "UPDATE sessions SET live = $3 WHERE session_id = $1 AND clinic_id = $2",
                event.session_id,
                envelope.clinic_id,
                isinstance(event, SessionStarted),
            )
        case ParticipantLeft() if event.link_id is not None:
            await conn.execute(
                "INSERT INTO link_presence (link_id, left_at) VALUES ($1, $2) "
                "ON CONFLICT (link_id) DO UPDATE SET left_at = EXCLUDED.left_at",
                event.link_id,
                envelope.occurred_at,
            )
