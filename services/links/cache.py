"""What a resolution reads, kept on each replica until Postgres says it changed.

The rows are cached, not the decision: ``decide(found, now)`` still runs on every request
with the current time. Each entry is tagged with the rows it was read from (``link:<id>``,
``clinic:<id>``, ``session:<id>``, ``room:<id>``); the triggers of
``sql/0002_change_notices.sql`` send those tags when a row changes, and every replica's
listener drops the entries at once (``runtime.invalidation``). Only what exists is kept: an
unknown token or room costs a query each time, so nobody can fill the cache with guesses.
"""

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from contracts.scheduling import ClinicSettings
from runtime.invalidation import Invalidations, TaggedCache
from services.links.resolution import Found, SessionWindow

SERVICE = "links"
ROOM_HORIZON = timedelta(hours=6)
"""How far ahead a room's sessions are read; the entry is read again after that."""
ROOM_SESSIONS_READ = 32
"""At most this many of a room's sessions per read (a room holds one call at a time)."""


@dataclass(frozen=True)
class RoomSessions:
    """A room's scheduled sessions that are open at some moment of ``[read_at, until)``,
    by start; which one is open is picked per request, so the entry stays right over time."""

    read_at: datetime
    until: datetime
    sessions: tuple[SessionWindow, ...]

    def covers(self, now: datetime) -> bool:
        return self.read_at <= now < self.until

    def open_at(self, now: datetime, settings: ClinicSettings) -> SessionWindow | None:
        """The first to start of those whose window is open at ``now``."""
        for session in self.sessions:
            if session.opens_at(settings) <= now < session.closes_at(settings):
                return session
        return None


@dataclass(frozen=True)
class HostSession:
    """A session a host link may name, with what makes it theirs."""

    clinic_id: str
    window: SessionWindow


@dataclass(frozen=True)
class StoredTitle:
    """A room's title as ``rooms.title`` holds it: plain, sealed for its client, or None
    (its client was erased, it was deleted, or it was created before titles were kept)."""

    title: str | None


def link_tags(found: Found) -> list[str]:
    tags = [f"link:{found.link_id}", f"clinic:{found.clinic_id}"]
    if found.session is not None:
        tags.append(f"session:{found.session.session_id}")
    return tags


class ResolutionCache:
    """The replica's cached links, rooms' sessions and hosts' sessions, and their listener."""

    def __init__(self, entries: int) -> None:
        self.by_token: TaggedCache[bytes, Found] = TaggedCache(SERVICE, "link_by_token", entries)
        """Links by their token's SHA-256."""
        self.by_room_path: TaggedCache[tuple[str, str], Found] = TaggedCache(
            SERVICE, "link_by_room_path", entries
        )
        """Readable room links by (clinic slug, room slug)."""
        self.room_sessions: TaggedCache[UUID, RoomSessions] = TaggedCache(
            SERVICE, "room_sessions", entries
        )
        self.host_sessions: TaggedCache[UUID, HostSession] = TaggedCache(
            SERVICE, "host_session", entries
        )
        self.room_titles: TaggedCache[tuple[str, UUID], StoredTitle] = TaggedCache(
            SERVICE, "room_title", entries
        )
        """Rooms' titles as stored, by (clinic id, room id); opened per request."""
        self._changes: Invalidations | None = None

    @property
    def caches(self) -> list[TaggedCache[Any, Any]]:
        return [
            self.by_token,
            self.by_room_path,
            self.room_sessions,
            self.host_sessions,
            self.room_titles,
        ]

    async def watch(self, dsn: str) -> None:
        """Listen for the links schema's change notices until cancelled (a service task)."""
        self._changes = Invalidations(dsn, SERVICE, self.caches)
        await self._changes.run()

    @contextlib.contextmanager
    def noticing(self, tag: str) -> Iterator[asyncio.Event]:
        """Set when a change tagged ``tag`` commits (``Invalidations.noticing``); never set
        before the listener has started, so a waiter also reads again on a timer."""
        if self._changes is None:
            yield asyncio.Event()
            return
        with self._changes.noticing(tag) as event:
            yield event

    async def synced(self) -> None:
        """Return once every change committed before the call is applied on this replica: a
        change answered to a client is then refused on its next resolve here."""
        if self._changes is not None:
            await self._changes.synced()
