"""What the signaling service publishes about calls: who is in a room, when a call starts and ends.

Scheduling completes sessions from these; links counts who is inside (a session stays open
past its end while anyone is in the call). The signaling service implements them.
"""

from enum import StrEnum
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events import Event, EventRegistry

signaling_events = EventRegistry("signaling")


class Role(StrEnum):
    host = "host"
    guest = "guest"


class EndedBecause(StrEnum):
    ended_for_all = "ended_for_all"
    """A host ended the meeting for everyone."""
    everyone_left = "everyone_left"
    """The last participant left (or dropped and did not come back within the grace)."""


@signaling_events.register
class SessionStarted(Event):
    """The first host entered a room; a call began."""

    room_id: UUID
    session_id: UUID | None = Field(
        default=None, description="The appointment, when the call was joined through one."
    )
    started_at: AwareDatetime


@signaling_events.register
class ParticipantJoined(Event):
    room_id: UUID
    session_id: UUID | None = None
    participant_id: UUID
    role: Role
    link_id: UUID | None = Field(default=None, description="The link they came in with.")


@signaling_events.register
class ParticipantLeft(Event):
    room_id: UUID
    session_id: UUID | None = None
    participant_id: UUID
    link_id: UUID | None = Field(default=None, description="The link they came in with.")
    reason: str = Field(description="left | removed | disconnected | ended")


@signaling_events.register
class SessionEnded(Event):
    """The call in a room is over."""

    room_id: UUID
    session_id: UUID | None = None
    because: EndedBecause
    ended_at: AwareDatetime
