"""Rooms as this replica sees them: a cached fold of each room's stream, kept current.

A command on a room runs under the room's lock on this replica, decides on the cached state
and appends with the version it decided on; when another replica appended first, the store
refuses, the cache catches up and the command decides again. What was appended is applied
here at once and announced on ``signaling.room.<room_id>`` (core NATS) with the events
themselves, so every replica holding someone of that room reacts within a round trip. A
replica that missed an announcement (a gap in versions, a NATS reconnect) reads the missing
events from Postgres, the source of truth; ``resync`` does that for every watched room.

A replica keeps following a room for ``linger_s`` after the last of its people there left, so
the next knock there decides on the cached room instead of reading the room's whole stream.
"""

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts.events import Event
from contracts.signaling import signaling_events
from runtime.context import ServiceContext
from runtime.eventstore import ConcurrencyError, RecordedEvent
from runtime.refusals import Conflict, NotFound, Refused
from services.signaling.domain import Room, evolve

log = structlog.get_logger(__name__)
CONFLICT_RETRIES = 30
NOT_IN_CLINIC = NotFound("room_not_found", "There is no room with that id.")

React = Callable[[UUID, Room, list[Event]], Awaitable[None]]
Notice = Callable[[UUID, dict[str, Any]], Awaitable[None]]
Decide = Callable[[Room], list[Event]]


ALL_ROOM_SUBJECTS = "signaling.room.*"
"""Where signaling replicas tell each other about rooms (core NATS, signaling's alone)."""


def room_subject(room_id: UUID) -> str:
    return f"signaling.room.{room_id.hex}"


def stream_of(room_id: UUID) -> str:
    return f"room-{room_id}"


@dataclass
class Cached:
    room: Room
    version: int = 0
    clinic_id: str | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watchers: int = 0
    subscription: Subscription | None = None
    lingering: asyncio.TimerHandle | None = None
    """Set while nobody of the room is here and it is still followed."""


class Rooms:
    def __init__(
        self,
        ctx: ServiceContext,
        replica_id: str,
        react: React,
        notice: Notice,
        linger_s: float = 0.0,
    ) -> None:
        self.ctx = ctx
        self.replica_id = replica_id
        self.react = react
        self.notice = notice
        self.linger_s = linger_s
        self._rooms: dict[UUID, Cached] = {}
        self._unsubscribing: set[asyncio.Task[None]] = set()
        self._after_append: list[Callable[[UUID, str, list[Event]], None]] = []

    def after_append(self, hook: Callable[[UUID, str, list[Event]], None]) -> None:
        self._after_append.append(hook)

    # --- reading ----------------------------------------------------------------------------

    def _cached(self, room_id: UUID) -> Cached:
        cached = self._rooms.get(room_id)
        if cached is None:
            cached = self._rooms[room_id] = Cached(Room(room_id=room_id))
        return cached

    def _apply(
        self, cached: Cached, recorded: list[RecordedEvent], appended: list[Event] | None = None
    ) -> list[Event]:
        """Fold what the store recorded into the cached room; ``appended``, the events just
        appended here (recorded in that order), need no decoding from their data."""
        applied = []
        for i, r in enumerate(recorded):
            if r.version <= cached.version:
                continue
            if cached.clinic_id is None:
                cached.clinic_id = r.clinic_id
            event = (
                appended[i]
                if appended is not None
                else signaling_events.decode(r.type, r.schema_version, r.data)
            )
            cached.room = evolve(cached.room, event)
            cached.version = r.version
            applied.append(event)
        return applied

    async def _catch_up(self, room_id: UUID, cached: Cached) -> list[Event]:
        missing = await self.ctx.store.read_stream(stream_of(room_id), cached.version)
        return self._apply(cached, missing)

    async def _catch_up_and_tell(self, room_id: UUID, cached: Cached) -> bool:
        """Read what this replica missed and tell its people; whether there was any."""
        missed = await self._catch_up(room_id, cached)
        if missed:
            await self.react(room_id, cached.room, missed)
        return bool(missed)

    async def _current(self, room_id: UUID, clinic_id: str, cached: Cached) -> bool:
        """Make the cached room usable (under its lock); whether it was just read from the
        store (a watched room is kept current by announcements and is not read)."""
        read = cached.subscription is None
        if read:
            await self._catch_up(room_id, cached)
        self._check_clinic(cached, clinic_id)
        return read

    async def _decide(
        self, room_id: UUID, cached: Cached, decide: Decide, *, fresh: bool
    ) -> list[Event]:
        """``decide`` on the cached room. Refused on what this replica knows, and not just read
        from the store, it decides once more on the store's: an announcement may still be on
        its way (a knock another replica just took)."""
        try:
            return decide(cached.room)
        except Refused:
            if fresh or not await self._catch_up_and_tell(room_id, cached):
                raise
            return decide(cached.room)

    def known(self, room_id: UUID) -> Room | None:
        """The room as last folded here, without waiting for its lock (None: not cached)."""
        cached = self._rooms.get(room_id)
        return cached.room if cached is not None else None

    def followed(self) -> list[tuple[UUID, str, Room]]:
        """(room, clinic, state) of every room kept current here by announcements."""
        return [
            (room_id, cached.clinic_id, cached.room)
            for room_id, cached in self._rooms.items()
            if cached.subscription is not None and cached.clinic_id is not None
        ]

    async def state(self, room_id: UUID, clinic_id: str) -> Room:
        """The room as this replica knows it."""
        cached = self._cached(room_id)
        async with cached.lock:
            await self._current(room_id, clinic_id, cached)
            return cached.room

    async def check(self, room_id: UUID, clinic_id: str, check: Callable[[Room], None]) -> None:
        """Run a domain check (which raises a refusal) as a command would decide: a refusal
        on a room kept by announcements is confirmed against the store first."""

        def decide(room: Room) -> list[Event]:
            check(room)
            return []

        cached = self._cached(room_id)
        async with cached.lock:
            fresh = await self._current(room_id, clinic_id, cached)
            await self._decide(room_id, cached, decide, fresh=fresh)

    @staticmethod
    def _check_clinic(cached: Cached, clinic_id: str) -> None:
        if cached.clinic_id is not None and cached.clinic_id != clinic_id:
            raise NOT_IN_CLINIC

    # --- watching (someone of the room is connected here) -----------------------------------

    async def watch(self, room_id: UUID) -> None:
        """Follow the room (someone of it is here): read once, then kept by announcements."""
        cached = self._cached(room_id)
        cached.watchers += 1
        if cached.lingering is not None:
            cached.lingering.cancel()
            cached.lingering = None
        if cached.subscription is None:
            async with cached.lock:
                if cached.subscription is None:  # not by a join that held the lock before
                    # Subscribe first, then read: an announcement that arrives meanwhile is
                    # either already in what is read, or applied after it (versions tell which).
                    cached.subscription = await self.ctx.nats.subscribe(
                        room_subject(room_id), cb=self._on_announcement
                    )
                    await self._catch_up(room_id, cached)

    async def unwatch(self, room_id: UUID) -> None:
        cached = self._rooms.get(room_id)
        if cached is None:
            return
        cached.watchers -= 1
        if cached.watchers > 0 or cached.lingering is not None:
            return
        if self.linger_s > 0 and cached.subscription is not None:
            cached.lingering = asyncio.get_running_loop().call_later(
                self.linger_s, self._linger_over, room_id, cached
            )
        else:
            await self._forget(room_id, cached)

    def _linger_over(self, room_id: UUID, cached: Cached) -> None:
        cached.lingering = None
        if cached.watchers <= 0 and self._rooms.get(room_id) is cached:
            task = asyncio.create_task(self._forget(room_id, cached))
            self._unsubscribing.add(task)
            task.add_done_callback(self._unsubscribing.discard)

    async def _forget(self, room_id: UUID, cached: Cached) -> None:
        if self._rooms.get(room_id) is cached:
            del self._rooms[room_id]
        if cached.subscription is not None:
            subscription, cached.subscription = cached.subscription, None
            await subscription.unsubscribe()

    async def _on_announcement(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
            if body.get("origin") == self.replica_id:
                return
            room_id = UUID(body["room_id"])
            if "notice" in body:
                await self.notice(room_id, body["notice"])
                return
            cached = self._rooms.get(room_id)
            if cached is None:
                return
            async with cached.lock:
                first = int(body["first_version"])
                last = first + len(body["events"]) - 1
                if last <= cached.version:
                    return  # already read from the store
                if first != cached.version + 1:  # a gap: some announcement was missed
                    await self._catch_up_and_tell(room_id, cached)
                    return
                events = [signaling_events.decode(*e) for e in body["events"]]
                for event in events:
                    cached.room = evolve(cached.room, event)
                cached.version = last
                await self.react(room_id, cached.room, events)
        except Exception:
            log.exception("a room announcement could not be applied")

    async def resync(self) -> None:
        """Catch up the watched rooms that the store has moved past (missed announcements),
        found with one query for all of them."""
        watched = {stream_of(r): r for r, c in self._rooms.items() if c.subscription is not None}
        if not watched:
            return
        rows = await self.ctx.pool.fetch(
            "SELECT stream_id, max(version) AS version FROM events "
            "WHERE stream_id = ANY($1::text[]) GROUP BY stream_id",
            list(watched),
        )
        for row in rows:
            room_id = watched[row["stream_id"]]
            cached = self._rooms.get(room_id)
            if cached is None or cached.version >= row["version"]:
                continue
            async with cached.lock:
                await self._catch_up_and_tell(room_id, cached)

    # --- commands ---------------------------------------------------------------------------

    async def run(self, room_id: UUID, clinic_id: str, decide: Decide) -> list[Event]:
        """Decide on the current state and append; raises the domain's refusals."""
        cached = self._cached(room_id)
        async with cached.lock:
            fresh = await self._current(room_id, clinic_id, cached)
            for attempt in range(CONFLICT_RETRIES):
                events = await self._decide(room_id, cached, decide, fresh=fresh)
                if not events:
                    return []
                try:
                    recorded = await self.ctx.store.append(
                        stream_of(room_id), cached.version, events, clinic_id=clinic_id
                    )
                except ConcurrencyError:
                    await self._catch_up_and_tell(room_id, cached)
                    self._check_clinic(cached, clinic_id)
                    fresh = True  # just read from the store
                    if attempt > 2:
                        await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # noqa: S311
                    continue
                applied = self._apply(cached, recorded, events)
                for hook in self._after_append:
                    hook(room_id, clinic_id, applied)
                # The people here first: announcing to the other replicas is no reason to
                # keep them waiting (the publish does not wait for NATS, but encodes).
                await self.react(room_id, cached.room, applied)
                await self._announce(room_id, recorded)
                if self._unfollowed(room_id, cached):
                    del self._rooms[room_id]  # nobody of the room is here: don't keep it
                return applied
        raise Conflict("changed_concurrently", "The room changed many times at once; try again.")

    def _unfollowed(self, room_id: UUID, cached: Cached) -> bool:
        """Cached for one command only: nobody of the room is here, nor joining."""
        return (
            cached.watchers <= 0
            and cached.subscription is None
            and self._rooms.get(room_id) is cached
        )

    async def _announce(self, room_id: UUID, recorded: list[RecordedEvent]) -> None:
        body = {
            "origin": self.replica_id,
            "room_id": str(room_id),
            "first_version": recorded[0].version,
            "events": [(r.type, r.schema_version, r.data) for r in recorded],
        }
        await self.ctx.nats.publish(room_subject(room_id), json.dumps(body).encode())

    async def announce_notice(self, room_id: UUID, notice: dict[str, Any]) -> None:
        """Something for the people of a room that is not an event (e.g. "room full")."""
        await self.notice(room_id, notice)
        body = {"origin": self.replica_id, "room_id": str(room_id), "notice": notice}
        await self.ctx.nats.publish(room_subject(room_id), json.dumps(body).encode())
