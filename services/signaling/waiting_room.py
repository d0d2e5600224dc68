"""Talking to the waiting room, and moving people between it and the call in bulk: a host's
messages to waiting guests (one or everyone), guests' replies when the clinic allows them,
admit all, and sending a guest back from the call.

A message is an event without its text (``WaitingRoomMessaged``, ``WaitingGuestReplied``):
the domain checks the rules as it appends it, and only then does the text travel, in a
notice to the people of the room on every replica (the guest concerned and every host), so
it is never stored.
"""

from functools import partial
from typing import Any
from uuid import UUID, uuid4

from contracts.signaling import CallRole
from contracts.signaling_protocol import WaitingMessage
from runtime import refusals
from runtime.ratelimit import RateLimiter
from services.signaling import domain
from services.signaling.admission import Admission
from services.signaling.connection import Connection
from services.signaling.replica import Replica
from services.signaling.seats import announce_seat_refused

NOTICE = "waiting_message"
HOST_MESSAGES = (60.0, 10)
"""Per host: one message a second, in bursts of ten (per minute, burst)."""
GUEST_REPLIES = (6.0, 3)
"""Per waiting guest: one reply every ten seconds, in bursts of three."""
GONE_MEANWHILE = {domain.NOT_HERE.code, domain.NOT_WAITING.code}


class TooFast(refusals.Refused):
    status = 429


def _too_fast(wait_s: float) -> TooFast:
    return TooFast(
        "messages_too_fast",
        f"You are sending messages too quickly; try again in {max(1, round(wait_s))} s.",
    )


def _text(text: str) -> str:
    text = text.strip()
    if not text:
        raise refusals.Invalid("empty_message", "Write a message before sending it.")
    return text


class WaitingRoom:
    def __init__(self, replica: Replica, admission: Admission) -> None:
        self.replica = replica
        self.admission = admission
        self._hosts = RateLimiter(*HOST_MESSAGES)
        self._guests = RateLimiter(*GUEST_REPLIES)

    async def message(self, conn: Connection, participant_id: UUID | None, text: str) -> None:
        """A host writes to one waiting guest, or to everyone waiting."""
        me, room_id, clinic_id, _ = conn.place()
        text = _text(text)
        if (wait := self._hosts.blocked(str(me))) is not None:
            raise _too_fast(wait)
        canned = text in conn.features.waiting_messages
        decide = partial(
            domain.message_waiting, by=me, participant_id=participant_id, canned=canned
        )
        events = await self.replica.rooms.run(room_id, clinic_id, decide)
        self._hosts.retry_after(str(me))  # only a message that went counts
        to = [pid for e in events for pid in getattr(e, "participant_ids", [])]
        await self._tell(conn, participant_id, CallRole.host, text, to)

    async def reply(self, conn: Connection, text: str) -> None:
        """A waiting guest answers the hosts."""
        me, room_id, clinic_id, _ = conn.place()
        text = _text(text)
        allowed, rooms = conn.features.guest_replies, self.replica.rooms
        # Why they may not reply (in the call, replies off) comes before "too fast".
        await rooms.check(room_id, clinic_id, lambda r: domain.check_reply(r, me, allowed))
        if (wait := self._guests.blocked(str(me))) is not None:
            raise _too_fast(wait)
        await rooms.run(
            room_id, clinic_id, partial(domain.reply_waiting, participant_id=me, allowed=allowed)
        )
        self._guests.retry_after(str(me))  # only a reply that went counts
        await self._tell(conn, me, CallRole.guest, text, [me])

    async def _tell(
        self,
        conn: Connection,
        participant_id: UUID | None,
        from_role: CallRole,
        text: str,
        to: list[UUID],
    ) -> None:
        me, room_id, clinic_id, _ = conn.place()
        room = await self.replica.rooms.state(room_id, clinic_id)
        sender = room.people.get(me)
        frame = WaitingMessage(
            message_id=uuid4(),
            from_role=from_role,
            participant_id=participant_id,
            sender_name=sender.display_name if sender else "",
            text=text,
            sent_at=self.replica.clock(),
        )
        notice = {
            "kind": NOTICE,
            "frame": frame.model_dump(mode="json"),
            "to": [str(pid) for pid in to],
        }
        await self.replica.rooms.announce_notice(room_id, notice)

    async def admit_all(self, conn: Connection) -> None:
        """Everyone waiting, in the order they came, through the admission a single admit
        takes, while places last; once the call is full, the rest are told as a single
        admit would tell them (``waiting`` room_full, ``seat_refused`` for the hosts)."""
        me, room_id, clinic_id, _ = conn.place()
        rooms = self.replica.rooms
        queue = domain.to_admit_all(await rooms.state(room_id, clinic_id), me)
        refused: str | None = None
        for guest in queue:
            if refused is not None:
                await announce_seat_refused(rooms, room_id, guest, refused)
                continue
            try:
                refused = await self.admission.admit(conn, guest)
            except refusals.Refused as exc:
                if exc.code not in GONE_MEANWHILE:
                    raise  # left, or let in by another host, meanwhile: on to the next

    async def send_back(self, conn: Connection, participant_id: UUID, message: str) -> None:
        """A host moves a guest from the call back to the waiting room. Their seat is
        released before the host is answered, so an admit that follows asks for a new one
        (the node closes their media connection, and the others are offered the room
        without them)."""
        me, room_id, clinic_id, _ = conn.place()
        decide = partial(
            domain.send_to_waiting_room, by=me, participant_id=participant_id, message=message
        )
        if await self.replica.rooms.run(room_id, clinic_id, decide):
            await self.admission.seats.release(clinic_id, room_id, participant_id)


def deliver(here: dict[UUID, Connection], notice: dict[str, Any]) -> None:
    """A waiting-room message to the people of the room connected here: every host, and the
    waiting guests it is to (or from)."""
    frame = WaitingMessage.model_validate(notice["frame"])
    to = set(notice["to"])
    for conn in here.values():
        if conn.role is CallRole.host or str(conn.participant_id) in to:
            conn.send(frame)
