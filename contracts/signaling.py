"""What the signaling service publishes about calls: waiting rooms, admissions, presence.

Every event belongs to one *room*: the room a call happens in (a practitioner's room or a
client room), or, for an appointment with its own session link, the session itself (its
``room_id`` is then the session's id). Scheduling completes sessions from these; links
counts who is inside (a session stays open past its end while anyone is in the call).
"""

from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events import Event, EventRegistry
from contracts.personal import personal_data

signaling_events = EventRegistry("signaling")


class CallRole(StrEnum):
    host = "host"
    guest = "guest"


class EndedBecause(StrEnum):
    ended_for_all = "ended_for_all"
    """A host ended the meeting for everyone."""
    last_left = "last_left"
    """The last participant left (or dropped and did not come back within the grace)."""


class LeftBecause(StrEnum):
    left = "left"
    """They left (or withdrew their knock)."""
    removed = "removed"
    """A host removed them."""
    disconnected = "disconnected"
    """Their connection dropped and they did not come back within the rejoin grace."""
    ended = "ended"
    """A host ended the meeting for everyone."""
    seat_lapsed = "seat_lapsed"
    """Their media never connected and their seat on the media node lapsed; their place went
    to someone else (or could not be renewed), and they were told to join again."""


class RecordingConsent(StrEnum):
    all = "all"
    """A recording starts only once everyone in the call has consented."""
    notice = "notice"
    """A recording starts at once; everyone is told, and may leave."""


DEFAULT_WAITING_MESSAGES = (
    "I'll be with you in about 5 minutes.",
    "I'm running late, please stay on this page.",
)
MAX_WAITING_MESSAGE_LENGTH = 200


class CallFeatures(BaseModel):
    """What a clinic allows in its calls (part of its settings; links hands them to signaling
    with every allowed link, and a connection keeps those it joined with)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    waiting_messages: tuple[
        Annotated[str, Field(min_length=1, max_length=MAX_WAITING_MESSAGE_LENGTH)], ...
    ] = Field(
        default=DEFAULT_WAITING_MESSAGES,
        max_length=10,
        description="Canned messages a host can send to people in the waiting room.",
    )
    guest_replies: bool = Field(
        default=False, description="People in the waiting room may answer a host's message."
    )
    guest_screen_share: bool = Field(
        default=False, description="Guests may share their screen (hosts always may)."
    )
    recording_consent: RecordingConsent = Field(
        default=RecordingConsent.all,
        description="all: a recording starts once everyone consented; notice: at once, "
        "with a notice.",
    )
    chat_retention_days: int = Field(
        default=0,
        ge=0,
        le=3650,
        description="0: chat is never stored. Otherwise it is kept with the session this "
        "many days, then deleted.",
    )


class _InRoom(Event):
    room_id: UUID = Field(description="The room of the call (a session link's call: the session).")
    session_id: UUID | None = Field(
        default=None, description="The appointment, when the call was joined through one."
    )


class _Person(_InRoom):
    participant_id: UUID = Field(description="One person's presence in this room, random.")


@signaling_events.register
class SessionStarted(_InRoom):
    """The first host entered a room; a call began."""

    started_at: AwareDatetime


@signaling_events.register
class GuestKnocked(_Person):
    """A guest is in the waiting room, asking to be let in."""

    display_name: str = personal_data(description="The name the guest typed.")
    link_id: UUID | None = Field(default=None, description="The link they came in with.")
    muted: bool = Field(
        description="True when knocks are muted: listed for the host, without an alert."
    )
    knocked_at: AwareDatetime
    direct: bool = Field(
        default=False,
        description=(
            "True for a guest of a direct-admission link who arrived before any host: they "
            "wait, and are let in without an admit when the first host enters."
        ),
    )


@signaling_events.register
class GuestPutOnHold(_Person):
    """A host asked a waiting guest to keep waiting, with a message."""

    message: str = personal_data(default="", description="What the host told the guest.")
    by: UUID = Field(description="The host's participant id.")


@signaling_events.register
class ParticipantAdmitted(_Person):
    """A guest got a seat in the call: a host admitted them, or the room admits directly."""

    by: UUID | None = Field(default=None, description="The host who admitted; none when direct.")
    media_node: str = Field(description="The media node that holds the seat.")
    media_url: str | None = Field(default=None, description="That node's public address.")


@signaling_events.register
class ParticipantDenied(_Person):
    """A host turned a waiting guest away."""

    message: str = personal_data(default="", description="What the host told the guest.")
    by: UUID


@signaling_events.register
class KnockWithdrawn(_Person):
    """A waiting guest left the waiting room (or dropped and did not come back)."""

    reason: LeftBecause


@signaling_events.register
class ParticipantJoined(_Person):
    """Someone entered the call (a host, or a guest who was admitted)."""

    role: CallRole
    display_name: str = personal_data(default="", description="The name they gave.")
    link_id: UUID | None = Field(default=None, description="The link they came in with.")
    media_node: str | None = Field(default=None, description="The media node holding the seat.")
    media_url: str | None = Field(default=None, description="That node's public address.")


@signaling_events.register
class ParticipantDisconnected(_Person):
    """A connection dropped; the person keeps their place until ``grace_until``."""

    grace_until: AwareDatetime


@signaling_events.register
class ParticipantReconnected(_Person):
    """Someone whose connection dropped came back within the grace (with a resume token)."""


@signaling_events.register
class ParticipantRemoved(_Person):
    """A host removed someone from the call."""

    message: str = personal_data(default="", description="What the host told them.")
    by: UUID


@signaling_events.register
class ParticipantLeft(_Person):
    """Someone is no longer in the call, for ``reason``."""

    link_id: UUID | None = Field(default=None, description="The link they came in with.")
    reason: LeftBecause


@signaling_events.register
class MediaMoved(_InRoom):
    """The media node that held the call died (its heartbeat is older than the media
    service's ``node_ttl_s``), and the call moved to a live node: everyone in the call keeps
    their place, and each one connected is sent a fresh ``admitted`` for the new node."""

    from_node: str = Field(description="The media node that died.")
    media_node: str = Field(description="The media node that holds the call now.")
    media_url: str | None = Field(default=None, description="That node's public address.")
    participant_ids: list[UUID] = Field(
        description="Whose seats moved: everyone in the call who was on the dead node."
    )


@signaling_events.register
class RoomLocked(_InRoom):
    """A host locked the room: new knocks are refused until it is unlocked."""

    by: UUID


@signaling_events.register
class RoomUnlocked(_InRoom):
    by: UUID


@signaling_events.register
class KnocksMuted(_InRoom):
    """New knocks are listed without an alert (automatic after the first admission)."""

    by: UUID | None = Field(default=None, description="The host; none when automatic.")


@signaling_events.register
class KnocksUnmuted(_InRoom):
    """New knocks alert the hosts again."""

    by: UUID


class RecordingStoppedBecause(StrEnum):
    host_stopped = "host_stopped"
    session_ended = "session_ended"
    media_node_lost = "media_node_lost"
    """The media node that recorded died; the call moved on (``MediaMoved``) unrecorded."""


@signaling_events.register
class RecordingStarted(_InRoom):
    """A host started recording the call; everyone in the room is told it is on."""

    recording_id: UUID
    media_node: str = Field(description="The media node that records it.")
    by: UUID


@signaling_events.register
class RecordingStopped(_InRoom):
    """The recording is off: a host stopped it, or the call ended."""

    recording_id: UUID
    media_node: str = Field(description="The media node that recorded it.")
    because: RecordingStoppedBecause
    by: UUID | None = None


@signaling_events.register
class SessionEnded(_InRoom):
    """The call in a room is over."""

    because: EndedBecause
    ended_at: AwareDatetime
    message: str = personal_data(default="", description="What the host told everyone.")
