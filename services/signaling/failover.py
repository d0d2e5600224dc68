"""Media-node failover: a call whose media node died moves to a live node, and nobody in it
waits again.

Every sweep, this replica asks the media service which of the nodes its calls are on live
(``LIVE_NODES_SUBJECT``): media judges, by its own rule (a node's heartbeat card younger than
its ``node_ttl_s``), so the two services never disagree on a setting. For a call on a dead
node it asks again for the seat of everyone in the call on that node, through the normal seat
request: the first places the room on a live node (media takes a dead owner's room over with
compare-and-set), the others are seated there. Then it records ``MediaMoved`` on the room. Two
replicas with people in the same call may both get that far (the seat requests are safe to
repeat), but the event is appended once: the room's version decides, and the replica that
decides again finds nobody left on the dead node. Every replica then sends its people of the
room a fresh ``admitted`` for the new node (``views``).
"""

import asyncio
from functools import partial
from uuid import UUID

import structlog

from contracts.media import (
    LIVE_NODES_SUBJECT,
    LiveNodes,
    NodesQuery,
    SeatAnswer,
)
from runtime import refusals
from services.signaling import domain
from services.signaling.domain import Person, Room
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)

MOVES_AT_ONCE = 8
"""Calls one replica moves in one sweep; any more move in the next sweeps."""

Settings = tuple[int, int | None]
"""A person's seat settings as their connection recorded them: (cap, loudest_speakers)."""


class MediaFailover:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    async def check(self) -> None:
        """Move the calls of the people connected here whose media node died."""
        calls = await self._calls_here()
        nodes = {p.media_node for room in calls.values() for p in room.in_call() if p.media_node}
        if not nodes:
            return
        try:
            answer = await self.seats.ask(
                LIVE_NODES_SUBJECT, NodesQuery(node_ids=sorted(nodes)), LiveNodes
            )
        except refusals.Refused:
            return  # media is not answering at all: nothing could be placed either
        live = set(answer.live)
        if nodes <= live:
            return
        moves = [
            (room_id, clinic_id, dead)
            for (room_id, clinic_id), room in calls.items()
            for dead in sorted(domain.on_dead_nodes(room, live))
        ]
        log.info(
            "media nodes died under calls; moving them",
            nodes=sorted(nodes - live),
            calls=len(moves),
            now=min(len(moves), MOVES_AT_ONCE),
        )
        await asyncio.gather(*(self.move(*move) for move in moves[:MOVES_AT_ONCE]))

    async def _calls_here(self) -> dict[tuple[UUID, str], Room]:
        replica = self.replica
        calls = {}
        for room_id, here in list(replica.local.items()):
            clinic_id = next((c.clinic_id for c in list(here.values()) if c.clinic_id), None)
            if clinic_id is None:
                continue
            room = await replica.rooms.state(room_id, clinic_id)
            if room.in_call():
                calls[room_id, clinic_id] = room
        return calls

    async def move(self, room_id: UUID, clinic_id: str, dead: str) -> None:
        """Seat everyone of the call who was on ``dead`` on the node media places the room
        on now, and record the move; on any failure the next sweep tries again."""
        replica = self.replica
        room = await replica.rooms.state(room_id, clinic_id)
        people = [p for p in room.in_call() if p.media_node == dead]
        if not people:
            return
        try:
            settings = await self._seat_settings(room_id)
            first = await self._seat(clinic_id, room_id, people[0], settings)
            if not first.granted or not first.node_id:
                log.warning(
                    "a call on a dead media node could not be placed again",
                    room_id=str(room_id),
                    reason=first.reason,
                )
                return
            if first.node_id == dead:
                log.info("the media node answers again; the call stays", room_id=str(room_id))
                return
            others = await asyncio.gather(
                *(self._seat(clinic_id, room_id, p, settings) for p in people[1:])
            )
        except refusals.Refused as refused:
            log.warning("moving a call off a dead media node failed", error=refused.detail)
            return
        if any(not s.granted or s.node_id != first.node_id for s in others):
            # Their offer to the new node finds no seat and asks again (negotiation).
            log.warning("some seats were not granted on the call's new node", room_id=str(room_id))
        events = await replica.rooms.run(
            room_id,
            clinic_id,
            partial(
                domain.move_media,
                from_node=dead,
                media_node=first.node_id,
                media_url=first.media_url,
            ),
        )
        if events:
            log.info(
                "call moved to another media node",
                room_id=str(room_id),
                from_node=dead,
                to_node=first.node_id,
                people=len(people),
            )

    async def _seat_settings(self, room_id: UUID) -> dict[UUID, Settings]:
        rows = await self.replica.ctx.pool.fetch(
            "SELECT participant_id, cap, loudest_speakers FROM connections WHERE room_id = $1",
            room_id,
        )
        return {r["participant_id"]: (r["cap"], r["loudest_speakers"]) for r in rows}

    async def _seat(
        self, clinic_id: str, room_id: UUID, person: Person, settings: dict[UUID, Settings]
    ) -> SeatAnswer:
        # Anyone without a recorded connection (none should be in the call) gets the most
        # common settings of the others: the room's cap is the clinic's.
        known = list(settings.values())
        cap, loudest = settings.get(
            person.participant_id, max(known, key=known.count) if known else (16, None)
        )
        return await self.seats.seat_in(
            clinic_id, room_id, person.participant_id, person.role, cap, loudest
        )
