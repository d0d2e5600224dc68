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


class ConsentStatus(StrEnum):
    """Where a request to record stands (the hosts' ``consent_state`` frame)."""

    asking = "asking"
    """Waiting for answers; it starts once everyone in the call consented."""
    recording = "recording"
    """The recording it asked for is on (people who arrive meanwhile are asked too)."""
    declined = "declined"
    """Someone declined: it did not start, or it stopped."""
    lapsed = "lapsed"
    """Not everyone in the call answered in time: it did not start."""
    cancelled = "cancelled"
    """A host withdrew it before it started."""
    stopped = "stopped"
    """The recording it started is over (a host stopped it, the call ended)."""


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


@signaling_events.register
class WaitingRoomMessaged(_InRoom):
    """A host wrote to people in the waiting room. The text itself is never recorded: it
    reaches the people of the room only."""

    by: UUID = Field(description="The host's participant id.")
    participant_ids: list[UUID] = Field(description="The waiting guests it was sent to.")
    canned: bool = Field(description="The text is one of the clinic's canned messages.")


@signaling_events.register
class WaitingGuestReplied(_Person):
    """A waiting guest answered the hosts (the clinic allows replies); the text is not
    recorded."""


@signaling_events.register
class ParticipantSentToWaitingRoom(_Person):
    """A host moved a guest from the call back to the waiting room: their seat on the media
    node is released and their media stops; they wait (keeping their arrival time) and can be
    admitted again."""

    by: UUID = Field(description="The host's participant id.")
    message: str = personal_data(default="", description="What the host told the guest.")


class RecordingStoppedBecause(StrEnum):
    host_stopped = "host_stopped"
    session_ended = "session_ended"
    media_node_lost = "media_node_lost"
    """The media node that recorded died; the call moved on (``MediaMoved``) unrecorded."""
    consent_declined = "consent_declined"
    """Someone asked to consent (a person who joined during the recording, or one who had
    consented) declined (``RecordingConsentDeclined``)."""


@signaling_events.register
class RecordingStarted(_InRoom):
    """A host started recording the call; everyone in the room is told it is on."""

    recording_id: UUID
    media_node: str = Field(description="The media node that records it.")
    by: UUID
    request_id: UUID | None = Field(
        default=None,
        description="The request it follows (``RecordingRequested``): under the policy "
        "``all``, started once everyone asked had consented; under ``notice``, at once.",
    )


@signaling_events.register
class RecordingStopped(_InRoom):
    """The recording is off: a host stopped it, or the call ended."""

    recording_id: UUID
    media_node: str = Field(description="The media node that recorded it.")
    because: RecordingStoppedBecause
    by: UUID | None = None


@signaling_events.register
class RecordingRequested(_InRoom):
    """A host asked to record the call, under the clinic's recording consent policy: with
    ``all``, everyone ``asked`` must consent and the recording starts only then (or never:
    a decline, or the request lapses at ``answer_by``); with ``notice``, it starts at once
    (``asked`` is empty) and everyone is told."""

    request_id: UUID
    by: UUID = Field(description="The host who asked (their consent is implied by asking).")
    policy: RecordingConsent
    asked: list[UUID] = Field(
        description="Everyone else in the room when it was asked, in the call or waiting."
    )
    answer_by: AwareDatetime = Field(
        description="When the request lapses if someone in the call has not answered by then."
    )


@signaling_events.register
class RecordingConsentAsked(_Person):
    """Someone arrived (knocked, or entered directly) while a recording was asked for or under
    way with the policy ``all``: they are asked too, before they enter."""

    request_id: UUID


@signaling_events.register
class RecordingConsentGiven(_Person):
    """``participant_id`` consented to be recorded."""

    request_id: UUID


@signaling_events.register
class RecordingConsentDeclined(_Person):
    """``participant_id`` declined to be recorded: the recording does not start, or stops
    (``RecordingStopped`` with ``consent_declined`` follows)."""

    request_id: UUID


@signaling_events.register
class RecordingRequestLapsed(_InRoom):
    """Not everyone in the call answered by ``answer_by``: the recording does not start."""

    request_id: UUID
    unanswered: list[UUID] = Field(description="Who had not answered.")


@signaling_events.register
class RecordingRequestCancelled(_InRoom):
    """A host withdrew a request that was still waiting for answers."""

    request_id: UUID
    by: UUID


@signaling_events.register
class SessionEnded(_InRoom):
    """The call in a room is over."""

    because: EndedBecause
    ended_at: AwareDatetime
    message: str = personal_data(default="", description="What the host told everyone.")
    chat_messages: int = Field(
        default=0, ge=0, description="How many chat messages were sent in this call."
    )


class ScreenShareStoppedBecause(StrEnum):
    stopped = "stopped"
    """The sharer stopped it (their own button, or their browser's "stop sharing")."""
    host_stopped = "host_stopped"
    """A host stopped someone else's share."""
    left = "left"
    """The sharer is no longer in the call: they left, dropped for good, were removed or
    sent back to the waiting room."""
    session_ended = "session_ended"
    media_node_lost = "media_node_lost"
    """The media node that forwarded it died; the call moved on (``MediaMoved``) unshared."""


@signaling_events.register
class ScreenShareStarted(_Person):
    """Someone in the call began sharing their screen (at most one at a time); the media
    node forwards it to everyone as a second video track."""

    media_node: str = Field(description="The media node that forwards the share.")


@signaling_events.register
class ScreenShareStopped(_Person):
    """The screen share of ``participant_id`` ended, for ``because``."""

    by: UUID | None = Field(
        default=None, description="Who stopped it: the sharer or a host; none when it ended."
    )
    because: ScreenShareStoppedBecause
    media_node: str = Field(description="The media node that forwarded it.")


@signaling_events.register
class ChatMessageSent(_Person):
    """Someone in the call (``participant_id``) sent a chat message to everyone in it. The
    text is never in an event: it reaches the people in the call only, and is kept with the
    session only when the clinic keeps chat (``CallFeatures.chat_retention_days``)."""

    message_id: UUID = Field(description="The message, as the chat frames name it.")
    count: int = Field(
        ge=1,
        description="This call's running number of chat messages, this one included (the "
        "count restarts with each call; ``SessionEnded.chat_messages`` has the total).",
    )


@signaling_events.register
class ParticipantMediaChanged(_Person):
    """Someone in the call turned their microphone or camera on or off, or (``by``) a host
    muted their microphone. A host's mute holds on the media node (their audio is not
    forwarded) until they turn their microphone on again themselves; no one else can."""

    audio_on: bool = Field(description="Their microphone is on.")
    video_on: bool = Field(description="Their camera is on.")
    by: UUID | None = Field(
        default=None,
        description="The host who muted their microphone; none when they changed it themselves.",
    )
