"""Letting a waiting guest into the call: a seat asked of the media node, then the admission
recorded in the room, with "the call is full" told to the guest and the hosts when it is."""

from uuid import UUID

from contracts.signaling import CallRole
from runtime import refusals
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.domain import Status
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats, announce_seat_refused


class Admission:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    async def admit(self, conn: Connection, guest: UUID) -> str | None:
        """``conn``'s host lets ``guest`` in: None once they are seated; when the call is full
        (or no media node can take it), the sentence the guest, who keeps their place, and
        the hosts were told. Other refusals are raised."""
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
            return full.detail
        if not seat.granted:
            await announce_seat_refused(rooms, room_id, guest, seat.message)
            return seat.message
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
            return exc.detail
        return None
