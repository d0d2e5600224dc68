"""The seats of the rooms one media node owns: who holds one, whose is only reserved.

Pure and synchronous; the caller passes the time. The cap holds under concurrent joins
because of where and how the ledger runs, not because of a lock: every request for a room is
answered by the one node that owns the room, in that node's single asyncio loop, and
:meth:`SeatLedger.request` counts and grants with no ``await`` in between, so no other request
can slip in between the count and the grant. Keep it synchronous.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from contracts.signaling import CallRole

MAX_SEATS = 16
"""The platform's cap on people in one room, whatever a clinic asks for."""


@dataclass
class Seat:
    role: CallRole
    reserved_until: datetime | None
    """When the reservation lapses; ``None`` once a media connection claimed the seat."""

    def lapsed(self, now: datetime) -> bool:
        return self.reserved_until is not None and self.reserved_until <= now


@dataclass
class RoomSeats:
    cap: int
    seats: dict[UUID, Seat] = field(default_factory=dict)

    def drop_lapsed(self, now: datetime) -> None:
        for participant_id in [p for p, seat in self.seats.items() if seat.lapsed(now)]:
            del self.seats[participant_id]


@dataclass(frozen=True)
class Granted:
    reserved_until: datetime | None
    """``None`` when the participant's seat was already claimed."""
    taken: int
    cap: int


@dataclass(frozen=True)
class RoomFull:
    taken: int
    cap: int


class SeatLedger:
    """Seats per room, each reserved for ``reservation`` until a media connection claims it."""

    def __init__(self, reservation: timedelta) -> None:
        self.reservation = reservation
        self._rooms: dict[UUID, RoomSeats] = {}

    def request(
        self, room_id: UUID, participant_id: UUID, role: CallRole, cap: int, now: datetime
    ) -> Granted | RoomFull:
        """A seat for the participant, or the room is full (at ``min(cap, 16)`` seats).

        Asking again for a participant who holds a seat returns that seat (renewing its
        reservation if it is not claimed yet), whatever the count.
        """
        if cap < 1:
            raise ValueError(f"a room's cap is at least 1, not {cap}")
        room = self._rooms.setdefault(room_id, RoomSeats(cap))
        room.cap = min(cap, MAX_SEATS)  # the clinic's latest setting
        room.drop_lapsed(now)
        seat = room.seats.get(participant_id)
        if seat is None:
            if len(room.seats) >= room.cap:
                return RoomFull(len(room.seats), room.cap)
            seat = room.seats[participant_id] = Seat(role, now + self.reservation)
        elif seat.reserved_until is not None:
            seat.reserved_until = now + self.reservation
        seat.role = role
        return Granted(seat.reserved_until, len(room.seats), room.cap)

    def claim(self, room_id: UUID, participant_id: UUID, now: datetime) -> bool:
        """Turn the participant's reservation into a held seat; False if it lapsed or never was."""
        room = self._rooms.get(room_id)
        if room is None:
            return False
        room.drop_lapsed(now)
        seat = room.seats.get(participant_id)
        if seat is None:
            return False
        seat.reserved_until = None
        return True

    def drop_lapsed(self, room_id: UUID, now: datetime) -> None:
        """Forget the reservations in the room that lapsed by ``now`` (nobody claimed them)."""
        room = self._rooms.get(room_id)
        if room is not None:
            room.drop_lapsed(now)

    def release(self, room_id: UUID, participant_id: UUID | None = None) -> int:
        """Free one participant's seat, or every seat of the room; how many were freed."""
        room = self._rooms.get(room_id)
        if room is None:
            return 0
        if participant_id is None:
            freed = len(room.seats)
            room.seats.clear()
        else:
            freed = int(room.seats.pop(participant_id, None) is not None)
        if not room.seats:
            del self._rooms[room_id]
        return freed

    def holders(self, room_id: UUID, now: datetime) -> list[UUID]:
        """Who holds or has reserved a seat in the room (lapsed reservations left out)."""
        room = self._rooms.get(room_id)
        if room is None:
            return []
        return [p for p, seat in room.seats.items() if not seat.lapsed(now)]

    def taken(self, room_id: UUID, now: datetime) -> int:
        """Seats held or reserved (and not lapsed) in the room."""
        room = self._rooms.get(room_id)
        if room is None:
            return 0
        return sum(not seat.lapsed(now) for seat in room.seats.values())

    def forget(self, room_id: UUID) -> None:
        """Drop the room's seats without counting them (the room moved to another node)."""
        self._rooms.pop(room_id, None)
