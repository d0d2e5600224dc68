"""Media negotiation: the token that lets someone in the call reach their media node, and the
offers, answers and candidates relayed between the browser and that node."""

from datetime import UTC, datetime
from functools import partial

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.media import (
    MediaSignal,
    MediaSignalReply,
    Negotiation,
    SignalKind,
    signal_subject,
)
from contracts.signaling_protocol import Admitted, Signal
from runtime import refusals
from runtime.participant_tokens import mint
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.domain import Status
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)
NEGOTIATION = set(Negotiation.model_fields)
SEAT_GONE = {"no_seat", "not_owner"}
"""A media node's refusals that mean it holds no seat for the person: never sent to a
browser (signaling asks for the seat again, or ends the place and says so)."""


class MediaNegotiation:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    def token(self, conn: Connection, node_id: str) -> tuple[str, datetime]:
        pid, room_id, clinic_id, role = conn.place()
        token, expires = mint(
            self.replica.key,
            participant_id=str(pid),
            room_id=str(room_id),
            clinic_id=clinic_id,
            role=role,
            node_id=node_id,
            ttl_s=self.replica.settings.token_ttl_s,
        )
        return token, datetime.fromtimestamp(expires, UTC)

    def send_admitted(self, conn: Connection, node_id: str, media_url: str | None) -> None:
        token, expires = self.token(conn, node_id)
        conn.send(
            Admitted(
                participant_token=token,
                media_node=node_id,
                media_url=media_url,
                expires_at=expires,
            )
        )

    async def signal(self, conn: Connection, message: Signal) -> None:
        pid, room_id, clinic_id, role = conn.place()
        room = await self.replica.rooms.state(room_id, clinic_id)
        me = room.people.get(pid)
        if me is None or me.status is not Status.in_call or not me.media_node:
            raise refusals.Conflict("not_in_call", "Media can only be set up once you are in.")
        if message.kind is SignalKind.offer and domain.awaiting_consent(room, pid):
            raise domain.CONSENT_NEEDED  # enforced here, not only by the page
        reply = await self._relay(conn, me.media_node, message)
        if not reply.ok and reply.reason in SEAT_GONE and message.kind is SignalKind.offer:
            # The node holds no seat for them: their reservation lapsed before their media
            # connected, or the node gave the room up meanwhile. Ask again (that places the
            # room again if need be); on the same node the offer goes through, otherwise
            # their place ends and they are told to join again.
            seat = await self.seats.seat(conn, pid, role)
            if seat.granted and seat.node_id == me.media_node:
                reply = await self._relay(conn, me.media_node, message)
            else:
                if seat.granted:
                    await self.seats.release(clinic_id, room_id, pid)
                now = self.replica.clock()
                await self.replica.rooms.run(
                    room_id,
                    clinic_id,
                    partial(domain.seat_lapsed, participant_ids=[pid], now=now),
                )
                return
        if not reply.ok:
            raise refusals.Invalid(reply.reason or "media_refused", reply.message)
        if reply.answer is not None:
            conn.send(_signal_frame(reply.answer))

    async def _relay(self, conn: Connection, node: str, message: Signal) -> MediaSignalReply:
        pid, room_id, _, _ = conn.place()
        token, _ = self.token(conn, node)
        request = MediaSignal(
            participant_token=token,
            participant_id=pid,
            room_id=room_id,
            **message.model_dump(include=NEGOTIATION),
        )
        return await self.seats.ask(signal_subject(node), request, MediaSignalReply)

    async def from_media(self, conn: Connection, msg: Msg) -> None:
        try:
            signal = MediaSignal.model_validate_json(msg.data)
        except ValidationError:
            log.warning("a media node sent a signal that cannot be read")
            return
        conn.send(_signal_frame(signal))


def _signal_frame(signal: MediaSignal) -> Signal:
    return Signal(**signal.model_dump(include=NEGOTIATION))
