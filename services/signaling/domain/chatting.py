"""In-call chat: messages are counted, the text itself never reaches the aggregate."""

from uuid import UUID

from contracts.events import Event
from contracts.signaling import ChatMessageSent
from runtime.refusals import Conflict
from services.signaling.domain.room import Room, event_ids

CHAT_NOT_IN_CALL = Conflict(
    "not_in_call", "You can chat once you are in the call; the waiting room has no chat."
)


def chat(room: Room, by: UUID, message_id: UUID) -> list[Event]:
    """Someone in the call sends a chat message: counted, never recorded."""
    person = room.people.get(by)
    if person is None or person.waiting:
        raise CHAT_NOT_IN_CALL
    return [
        ChatMessageSent(
            **event_ids(room, person),
            participant_id=by,
            message_id=message_id,
            count=room.chat_messages + 1,
        )
    ]
