"""What a joined person asks for: the hosts' commands on the room (admit, deny, hold, remove,
end, lock, recording, knock alerts), leaving, and media negotiation; the domain's refusals
become error frames."""

from functools import partial
from uuid import UUID

from pydantic import BaseModel

from contracts.signaling import CallRole
from contracts.signaling_protocol import (
    Admit,
    Deny,
    EndForAll,
    Error,
    Hold,
    Leave,
    Lock,
    MuteKnocks,
    Remove,
    Signal,
    StartRecording,
    StopRecording,
    Unlock,
    UnmuteKnocks,
)
from runtime import refusals
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.connections import Connections
from services.signaling.domain import Status
from services.signaling.negotiation import MediaNegotiation
from services.signaling.recording import RecordingControl
from services.signaling.replica import Replica
from services.signaling.rooms import Decide
from services.signaling.seats import MediaSeats, announce_seat_refused


class Commands:
    def __init__(
        self,
        replica: Replica,
        connections: Connections,
        seats: MediaSeats,
        negotiation: MediaNegotiation,
        recording: RecordingControl,
    ) -> None:
        self.replica = replica
        self.connections = connections
        self.seats = seats
        self.negotiation = negotiation
        self.recording = recording

    async def command(self, conn: Connection, message: BaseModel) -> None:
        """Run one frame of a joined person; the domain's refusals become error frames."""
        me, room_id, clinic_id, _ = conn.place()
        now = self.replica.clock()
        decide: Decide
        try:
            match message:
                case Admit():
                    await self._admit(conn, message.participant_id)
                    return
                case Leave():
                    await self.connections.leave(conn)
                    return
                case Signal():
                    await self.negotiation.signal(conn, message)
                    return
                case StartRecording():
                    await self.recording.start(conn)
                    return
                case StopRecording():
                    decide = partial(domain.stop_recording, by=me)
                case Deny(participant_id=guest, message=text):
                    decide = partial(domain.deny, by=me, participant_id=guest, message=text)
                case Hold(participant_id=guest, message=text):
                    decide = partial(domain.hold, by=me, participant_id=guest, message=text)
                case Remove(participant_id=person, message=text):
                    decide = partial(
                        domain.remove, by=me, participant_id=person, message=text, now=now
                    )
                case EndForAll(message=text):
                    decide = partial(domain.end_for_all, by=me, message=text, now=now)
                case Lock():
                    decide = partial(domain.lock, by=me)
                case Unlock():
                    decide = partial(domain.unlock, by=me)
                case MuteKnocks():
                    decide = partial(domain.mute_knocks, by=me)
                case UnmuteKnocks():
                    decide = partial(domain.unmute_knocks, by=me)
                case _:
                    return
            await self.replica.rooms.run(room_id, clinic_id, decide)
        except refusals.Refused as exc:
            conn.send(Error(code=exc.code, message=exc.detail))

    async def _admit(self, conn: Connection, guest: UUID) -> None:
        rooms, now = self.replica.rooms, self.replica.clock()
        me, room_id, clinic_id, _ = conn.place()
        full: domain.RoomFull | None = None
        before = await rooms.state(room_id, clinic_id)
        try:
            await rooms.check(
                room_id, clinic_id, lambda r: domain.check_admit(r, me, guest, conn.cap)
            )
        except domain.RoomFull as exc:
            full = exc  # by the room's own count; the media node may know of lapsed seats
        seat = await self.seats.seat(conn, guest, CallRole.guest)
        freed = full is not None and await self.seats.free_lapsed(
            room_id, clinic_id, before, seat, now
        )
        if full is not None and not freed:
            # Full indeed (the usual case: the seats are all in use): the guest keeps their
            # place and both sides are told.
            if seat.granted:
                await self.seats.release(clinic_id, room_id, guest)
            await announce_seat_refused(rooms, room_id, guest, full.detail)
            return
        if not seat.granted:
            await announce_seat_refused(rooms, room_id, guest, seat.message)
            return
        try:
            await rooms.run(
                room_id,
                clinic_id,
                lambda r: domain.admit(r, me, guest, seat.node_id or "", seat.media_url, conn.cap),
            )
        except refusals.Refused as exc:
            # Another host may have let them in meanwhile (media answered both of us with
            # the same seat): their seat is then in use, not ours to give back.
            person = (await rooms.state(room_id, clinic_id)).people.get(guest)
            if person is None or person.status is not Status.in_call:
                await self.seats.release(clinic_id, room_id, guest)
            if not isinstance(exc, domain.RoomFull):
                raise
            await announce_seat_refused(rooms, room_id, guest, exc.detail)
