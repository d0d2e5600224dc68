"""Seats on the media nodes: asked for when someone enters, given back when they leave.

The media service places the room on a node and keeps a place there for each person let in;
signaling asks for the seat before it records anyone in the call, and releases it when they
are gone for good.
"""

from datetime import datetime
from functools import partial
from typing import TypeVar
from uuid import UUID

import structlog
from pydantic import BaseModel

from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    SeatAnswer,
    SeatRelease,
    SeatReleased,
    SeatRequest,
)
from contracts.signaling import CallRole
from runtime import refusals
from runtime.rpc import RpcError, call
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.replica import Replica
from services.signaling.rooms import Rooms

log = structlog.get_logger(__name__)
A = TypeVar("A", bound=BaseModel)

UNAVAILABLE = "The video service is not available right now; please try again in a minute."


class Unavailable(refusals.Refused):
    status = 503


async def announce_seat_refused(rooms: Rooms, room_id: UUID, guest: UUID, message: str) -> None:
    """The guest keeps waiting (the call is full); they and the hosts are told, on every
    replica."""
    await rooms.announce_notice(
        room_id, {"kind": "seat_refused", "participant_id": str(guest), "message": message}
    )


class MediaSeats:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def seat(self, conn: Connection, participant_id: UUID, role: CallRole) -> SeatAnswer:
        """A seat in ``conn``'s room, with its connection's cap and loudest speakers."""
        _, room_id, clinic_id, _ = conn.place()
        return await self.seat_in(
            clinic_id, room_id, participant_id, role, conn.cap, conn.loudest_speakers
        )

    async def seat_in(
        self,
        clinic_id: str,
        room_id: UUID,
        participant_id: UUID,
        role: CallRole,
        cap: int,
        loudest_speakers: int | None,
    ) -> SeatAnswer:
        request = SeatRequest(
            clinic_id=clinic_id,
            room_id=room_id,
            participant_id=participant_id,
            role=role,
            cap=cap,
            loudest_speakers=loudest_speakers,
        )
        # Asking again for the same participant returns the same seat: safe to send twice.
        return await self.ask(SEAT_SUBJECT, request, SeatAnswer, attempts=2)

    async def ask(self, subject: str, request: BaseModel, answer: type[A], attempts: int = 1) -> A:
        """A media request; a media service that does not answer is ``media_unavailable``."""
        replica = self.replica
        try:
            return await call(
                replica.ctx.nats,
                subject,
                request,
                answer,
                replica.settings.rpc_wait_s,
                attempts=attempts,
                identity=replica.ctx.identity,  # media serves signaling alone
            )
        except RpcError as exc:
            log.warning("the media service did not answer", subject=subject, error=str(exc))
            raise Unavailable("media_unavailable", UNAVAILABLE) from exc

    async def release(self, clinic_id: str, room_id: UUID, participant_id: UUID | None) -> None:
        request = SeatRelease(clinic_id=clinic_id, room_id=room_id, participant_id=participant_id)
        replica = self.replica
        try:
            await call(
                replica.ctx.nats,
                RELEASE_SUBJECT,
                request,
                SeatReleased,
                replica.settings.rpc_wait_s,
                attempts=2,  # releasing twice frees nothing more
                identity=replica.ctx.identity,
            )
        except RpcError as exc:
            # The node lets an unclaimed reservation lapse on its own; a held seat is freed
            # when the media connection goes.
            log.warning("a seat could not be released", error=str(exc))

    async def free_lapsed(
        self,
        room_id: UUID,
        clinic_id: str,
        before: domain.Room,
        answer: SeatAnswer,
        now: datetime,
    ) -> bool:
        """The call is full by signaling's count, yet the media node granted a seat: guests who
        were in the call ``before`` the seat was asked for and hold none now lost it (their
        reservation lapsed before their media connected, or the node gave the empty room up).
        End their places, so the call and the seats agree again and whoever needs the place
        gets it; True if anyone's place ended.

        Only people already in the call before the request count: anyone seated later may
        have been granted after this answer was made, and holds a seat it does not list."""
        if not answer.granted or not answer.holders:
            return False
        holding = set(answer.holders)
        # Guests only: a host's place is kept for them whatever the node says (the cap keeps
        # one), and the call manager must not lose its host to a camera prompt left open.
        candidates = [
            p.participant_id
            for p in before.in_call()
            if p.role is CallRole.guest and p.participant_id not in holding
        ]
        if not candidates:
            return False
        rooms = self.replica.rooms
        events = await rooms.run(
            room_id, clinic_id, partial(domain.seat_lapsed, participant_ids=candidates, now=now)
        )
        if events:
            log.info("places of lapsed seats ended", room_id=str(room_id), count=len(candidates))
        return bool(events)
