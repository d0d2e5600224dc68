"""In-call chat: text messages from someone in the call to everyone in it.

A message is checked here (1 to ``MAX_CHAT_LENGTH`` characters once trimmed, at most
``chat_burst`` at once and ``chat_per_minute`` sustained, per person), then counted by the room
(``ChatMessageSent``, which also checks that the sender is in the call; it carries no text),
kept with the session when the clinic keeps chat (``kept_chat``), and only then sent to the
people in the call on every replica as a room notice: the text travels in that notice alone.
"""

import math
from typing import Any
from uuid import UUID, uuid4

from contracts.events import Event
from contracts.signaling import ChatMessageSent
from contracts.signaling_protocol import MAX_CHAT_LENGTH, Chat, ChatMessage
from runtime.ratelimit import RateLimiter
from runtime.refusals import Invalid, Refused
from runtime.storable_text import unstorable
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.domain import Person, Room
from services.signaling.kept_chat import ChatSeal, KeptChat, KeptMessage
from services.signaling.replica import Replica

NOTICE = "chat"
"""The kind of room notice that carries a message to the other replicas."""


class TooFast(Refused):
    status = 429


EMPTY = Invalid("chat_empty", "Type a message before sending it.")
UNSTORABLE = Invalid(
    "chat_invalid", "A chat message may not contain NUL characters or unpaired surrogates."
)


def too_long(length: int) -> Invalid:
    return Invalid(
        "chat_too_long",
        f"A chat message can be at most {MAX_CHAT_LENGTH} characters; this one has {length}. "
        "Shorten it, or send it in parts.",
    )


def too_fast(wait_s: float) -> TooFast:
    seconds = max(1, math.ceil(wait_s))
    unit = "second" if seconds == 1 else "seconds"
    return TooFast(
        "chat_rate_limited",
        f"You are sending messages too quickly; try again in {seconds} {unit}.",
    )


class InCallChat:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        s = replica.settings
        self.limiter = RateLimiter(s.chat_per_minute, s.chat_burst)  # per person, this replica
        self._kept: KeptChat | None = None

    @property
    def kept(self) -> KeptChat:
        if self._kept is None:
            self._kept = KeptChat(ChatSeal(self.replica.key))
        return self._kept

    async def send(self, conn: Connection, message: Chat) -> None:
        """Send ``message`` to everyone in the call; raises a refusal for the sender."""
        me, room_id, clinic_id, _ = conn.place()
        text = message.text.strip()
        if not text:
            raise EMPTY
        if len(text) > MAX_CHAT_LENGTH:
            raise too_long(len(text))
        if unstorable(text):
            raise UNSTORABLE
        wait = self.limiter.retry_after(str(me))
        if wait is not None:
            raise too_fast(wait)
        replica, message_id, now = self.replica, uuid4(), self.replica.clock()
        sender: list[Person] = []

        def decide(room: Room) -> list[Event]:
            events = domain.chat(room, me, message_id)
            sender[:] = [room.people[me]]  # the sender as the room knew them when it counted
            return events

        events = await replica.rooms.run(room_id, clinic_id, decide)
        sent = next(e for e in events if isinstance(e, ChatMessageSent))
        person = sender[0]
        frame = ChatMessage(
            message_id=message_id,
            number=sent.count,
            participant_id=me,
            sender_name=person.display_name,
            role=person.role,
            text=text,
            sent_at=now,
        )
        days = conn.features.chat_retention_days
        if days > 0:
            kept = KeptMessage(
                message_id=message_id,
                clinic_id=clinic_id,
                room_id=room_id,
                session_id=sent.session_id,
                number=sent.count,
                participant_id=me,
                role=person.role,
                sender_name=person.display_name,
                text=text,
                sent_at=now,
            )
            await self.kept.keep(replica.ctx.pool, kept, days)
        notice = {"kind": NOTICE, "participant_id": str(me), "frame": frame.model_dump(mode="json")}
        await replica.rooms.announce_notice(room_id, notice)

    async def purge(self) -> int:
        """Delete the kept chat whose time is up (the run loop, every ``chat_purge_s``)."""
        return await self.kept.purge(self.replica.ctx.pool, self.replica.clock())


def deliver(here: dict[UUID, Connection], room: Room, notice: dict[str, Any]) -> None:
    """A chat notice, to the people of the room connected here who are in the call."""
    frame = ChatMessage.model_validate(notice["frame"])
    for pid, conn in list(here.items()):
        person = room.people.get(pid)
        if person is not None and not person.waiting:
            conn.send(frame)
