"""Media negotiation: the token that lets someone in the call reach their media node, and the
offers, answers and candidates relayed between the browser and that node."""

from datetime import UTC, datetime

import structlog
from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.media import MediaSignal, MediaSignalReply, Negotiation, signal_subject
from contracts.signaling_protocol import Admitted, Signal
from runtime import refusals
from runtime.participant_tokens import mint
from services.signaling.connection import Connection
from services.signaling.domain import Status
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)
NEGOTIATION = set(Negotiation.model_fields)


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
        pid, room_id, clinic_id, _ = conn.place()
        room = await self.replica.rooms.state(room_id, clinic_id)
        me = room.people.get(pid)
        if me is None or me.status is not Status.in_call or not me.media_node:
            raise refusals.Conflict("not_in_call", "Media can only be set up once you are in.")
        token, _ = self.token(conn, me.media_node)
        request = MediaSignal(
            participant_token=token,
            participant_id=pid,
            room_id=room_id,
            **message.model_dump(include=NEGOTIATION),
        )
        reply = await self.seats.ask(signal_subject(me.media_node), request, MediaSignalReply)
        if not reply.ok:
            raise refusals.Invalid(reply.reason or "media_refused", reply.message)
        if reply.answer is not None:
            conn.send(_signal_frame(reply.answer))

    async def from_media(self, conn: Connection, msg: Msg) -> None:
        try:
            signal = MediaSignal.model_validate_json(msg.data)
        except ValidationError:
            log.warning("a media node sent a signal that cannot be read")
            return
        conn.send(_signal_frame(signal))


def _signal_frame(signal: MediaSignal) -> Signal:
    return Signal(**signal.model_dump(include=NEGOTIATION))
