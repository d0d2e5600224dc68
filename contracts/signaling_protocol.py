"""The WebSocket protocol between a browser and the signaling service, version 1.

One JSON object per text frame, told apart by ``type``. The browser sends a :class:`Join`
first; everything else follows from the answer. The JSON schema of both directions is
``docs/signaling-protocol.json`` (``antechamber protocol-schema`` writes it); the guide is
``docs/signaling.md``.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.media import Negotiation, ParticipantQuality
from contracts.network_test import Direction
from contracts.personal import personal_data
from contracts.signaling import (
    CallFeatures,
    CallRole,
    ConsentStatus,
    EndedBecause,
    RecordingConsent,
)

PROTOCOL_VERSION = 1
WEBSOCKET_PATH = "/v1/signaling"
MAX_NAME_LENGTH = 80
MAX_MESSAGE_LENGTH = 500


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- browser to signaling -------------------------------------------------------------------


class _Link(_Message):
    """Which link: a token (``/j/``, ``/h/``), or a room link's clinic and room."""

    v: Literal[1] = 1
    token: str | None = Field(default=None, description="The token of a /j/ or /h/ link.")
    clinic: str | None = Field(default=None, description="A room link's clinic slug.")
    room: str | None = Field(default=None, description="A room link's room slug.")
    session_id: UUID | None = Field(
        default=None, description="With a host link: the session to host."
    )


class Join(_Link):
    """Enter a room with a link (or come back with a resume token)."""

    type: Literal["join"] = "join"
    name: str = Field(default="", max_length=MAX_NAME_LENGTH, description="The name to show.")
    resume: str | None = Field(
        default=None, description="The resume token from an earlier welcome (after a drop)."
    )


class Check(_Link):
    """May this link join now? Answered with ``link_ready`` or ``refused``, then the socket is
    closed. Nobody knocks: a join page asks it before it asks for a name and a camera."""

    type: Literal["check"] = "check"


class NetworkTest(_Link):
    """Test the network to the media node that will host this link's call, before joining:
    answered with ``network_test_ready`` (or ``refused``); then the browser offers media in
    ``signal`` frames, measures for ``duration_s`` and sends ``network_test_report``; the
    answer is ``network_test_result``, then the socket is closed. Nobody knocks and no seat
    is taken (docs/signaling.md, "Pre-call network test")."""

    type: Literal["network_test"] = "network_test"


class DownlinkReport(Direction):
    """What the browser received of the node's echo (``getStats()`` inbound-rtp)."""


class NetworkTestReport(_Message):
    """The browser's half of a network test's figures, sent when it has measured."""

    type: Literal["network_test_report"] = "network_test_report"
    connected: bool = Field(description="ICE and DTLS reached connected.")
    rtt_ms: float | None = Field(
        default=None, ge=0, le=60_000, description="The selected candidate pair's round trip."
    )
    relayed: bool | None = Field(default=None, description="The media went through TURN.")
    downlink: DownlinkReport | None = None


class _OnParticipant(_Message):
    participant_id: UUID


class Admit(_OnParticipant):
    type: Literal["admit"] = "admit"


class Deny(_OnParticipant):
    type: Literal["deny"] = "deny"
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH)


class Hold(_OnParticipant):
    type: Literal["hold"] = "hold"
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH)


class Remove(_OnParticipant):
    type: Literal["remove"] = "remove"
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH)


class Lock(_Message):
    type: Literal["lock"] = "lock"


class Unlock(_Message):
    type: Literal["unlock"] = "unlock"


class MuteKnocks(_Message):
    type: Literal["mute_knocks"] = "mute_knocks"


class UnmuteKnocks(_Message):
    type: Literal["unmute_knocks"] = "unmute_knocks"


class EndForAll(_Message):
    """End the meeting for everyone (hosts only; the server never does it on its own)."""

    type: Literal["end_for_all"] = "end_for_all"
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH)


class Leave(_Message):
    type: Literal["leave"] = "leave"


class StartRecording(_Message):
    """Host only: record the call (everyone in the room is told)."""

    type: Literal["start_recording"] = "start_recording"


class StopRecording(_Message):
    type: Literal["stop_recording"] = "stop_recording"


class Signal(_Message, Negotiation):
    """WebRTC negotiation with the media node (both directions).

    The browser offers first; the node may offer again later (people joined or left), with
    ``streams`` saying whose media each mid carries; ``bye`` from the node has a reason."""

    type: Literal["signal"] = "signal"


class Ping(_Message):
    type: Literal["ping"] = "ping"


# --- the waiting room (docs/signaling.md, "Talking to the waiting room") ---------------------

MAX_WAITING_REPLY_LENGTH = 200


class MessageWaiting(_Message):
    """Host only: a message to one guest in the waiting room, or to everyone waiting."""

    type: Literal["message_waiting"] = "message_waiting"
    participant_id: UUID | None = Field(
        default=None, description="The waiting guest; null: everyone waiting (on hold too)."
    )
    text: str = Field(max_length=MAX_MESSAGE_LENGTH, description="1 to 500 characters.")


class ReplyWaiting(_Message):
    """A waiting guest answers the hosts (only when the clinic allows replies)."""

    type: Literal["reply_waiting"] = "reply_waiting"
    text: str = Field(max_length=MAX_WAITING_REPLY_LENGTH, description="1 to 200 characters.")


class AdmitAll(_Message):
    """Host only: admit everyone waiting (on hold too, not those whose connection is down),
    in the order they came, while places last."""

    type: Literal["admit_all"] = "admit_all"


class SendToWaitingRoom(_OnParticipant):
    """Host only: a guest in the call goes back to the waiting room (their media stops)."""

    type: Literal["send_to_waiting_room"] = "send_to_waiting_room"
    message: str = Field(default="", max_length=MAX_MESSAGE_LENGTH)


# --- screen sharing (docs/signaling.md, "Screen sharing") ------------------------------------


class StartScreenShare(_Message):
    """Share my screen (any host; a guest when the clinic allows it). At most one share in a
    call at a time; the media node then offers a mid to send it on (``screen_mid``)."""

    type: Literal["start_screen_share"] = "start_screen_share"


class StopScreenShare(_Message):
    """Stop my own share (no ``participant_id``), or, as a host, someone else's."""

    type: Literal["stop_screen_share"] = "stop_screen_share"
    participant_id: UUID | None = Field(
        default=None, description="The sharer (a host stopping another's share); null: mine."
    )


# --- in-call chat (docs/signaling.md, "Chat") -----------------------------------------------

MAX_CHAT_LENGTH = 1000


class Chat(_Message):
    """A chat message to everyone in the call (hosts and admitted guests). Answered by the
    ``chat`` frame that everyone in the call gets, the sender too; a longer text is refused
    with ``chat_too_long``, too many at once with ``chat_rate_limited``."""

    type: Literal["chat"] = "chat"
    text: str = Field(
        description=f"1 to {MAX_CHAT_LENGTH} characters once the spaces around it are trimmed.",
        # Documented for clients, checked by signaling itself so that a long message gets its
        # own refusal (chat_too_long) instead of a generic invalid_message.
        json_schema_extra={"maxLength": MAX_CHAT_LENGTH},
    )


# --- microphone and camera (docs/signaling.md, "Mute state") ---------------------------------


class MediaState(_Message):
    """My microphone and camera, as I turned them (true: on): sent when I am in the call and
    whenever I change either. Everyone in the call sees it (``Present``)."""

    type: Literal["media_state"] = "media_state"
    audio: bool = Field(description="My microphone is on.")
    video: bool = Field(description="My camera is on.")


class Mute(_OnParticipant):
    """Host only: mute someone's microphone (anyone else in the call, hosts too). Their page
    is told and the media node stops forwarding their audio until they unmute themselves."""

    type: Literal["mute"] = "mute"


class AskUnmute(_OnParticipant):
    """Host only: ask someone whose microphone is off to turn it on (a host can never turn
    it on for them)."""

    type: Literal["ask_unmute"] = "ask_unmute"


# --- recording consent (docs/signaling.md, "Recording consent") ------------------------------


class RecordingConsentAnswer(_Message):
    """My answer to a ``consent_request`` (anyone asked, in the call or waiting). A decline
    stops the recording, or keeps it from starting; consenting cannot be taken back by a
    second consent, but a decline later still stops it."""

    type: Literal["recording_consent"] = "recording_consent"
    request_id: UUID
    given: bool = Field(description="true: I consent to be recorded; false: I decline.")


ClientMessage = Annotated[
    Join
    | Check
    | NetworkTest
    | NetworkTestReport
    | Admit
    | Deny
    | Hold
    | Remove
    | Lock
    | Unlock
    | MuteKnocks
    | UnmuteKnocks
    | EndForAll
    | Leave
    | StartRecording
    | StopRecording
    | Signal
    | Ping
    | MessageWaiting
    | ReplyWaiting
    | AdmitAll
    | SendToWaitingRoom
    | StartScreenShare
    | StopScreenShare
    | Chat
    | MediaState
    | Mute
    | AskUnmute
    | RecordingConsentAnswer,
    Field(discriminator="type"),
]
HOST_ONLY = frozenset(
    {"admit", "deny", "hold", "remove", "lock", "unlock", "mute_knocks", "unmute_knocks"}
    | {"end_for_all", "start_recording", "stop_recording"}
    | {"message_waiting", "admit_all", "send_to_waiting_room"}
    | {"mute", "ask_unmute"}
)

# --- signaling to browser -------------------------------------------------------------------


def _room_title() -> Any:
    return personal_data(
        default=None,
        description="The title the practitioner gave the room the call is held in, to show "
        "on the page; null for a session with a link of its own, when it cannot be told (the "
        "client was erased, or it could not be opened in time), and in a resumed welcome.",
    )


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    v: Literal[1] = 1
    participant_id: UUID
    role: CallRole
    room_id: UUID
    session_id: UUID | None
    resume_token: str = Field(description="Send it in a join to come back after a drop.")
    rejoin_grace_s: float
    warning: str | None = Field(default=None, description="E.g. a retired link's sunset.")
    room_title: str | None = _room_title()
    call: CallFeatures | None = Field(
        default=None,
        description="What the clinic allows in this call (canned waiting-room messages, "
        "guest replies, guest screen sharing, recording consent, chat retention).",
    )


class WaitingState(StrEnum):
    waiting_for_host = "waiting_for_host"
    host_notified = "host_notified"
    on_hold = "on_hold"
    room_full = "room_full"
    """The host tried to let them in but the call is full; they keep their place."""
    sent_back = "sent_back"
    """A host moved them from the call back to the waiting room; they can be admitted again."""


class LinkReady(_Message):
    """The answer to a ``check``: the link may join now, as ``role``."""

    type: Literal["link_ready"] = "link_ready"
    role: CallRole
    admission: Literal["waiting_room", "direct"] = Field(
        description="Whether a guest waits for a host to let them in, or enters at once."
    )
    live: bool = Field(description="Someone is in the call already.")
    closes_at: datetime | None = None
    warning: str | None = Field(default=None, description="E.g. a retired link's sunset.")
    room_title: str | None = _room_title()


class Waiting(_Message):
    type: Literal["waiting"] = "waiting"
    state: WaitingState
    message: str = Field(description="A sentence to show the guest.")


class Admitted(_Message):
    """A seat: connect to the media node with this token (short-lived; a resume renews it)."""

    type: Literal["admitted"] = "admitted"
    participant_token: str
    media_node: str
    media_url: str | None
    expires_at: datetime


class Refused(_Message):
    """May not join; ``reason`` and ``message`` are the links service's when it refused."""

    type: Literal["refused"] = "refused"
    reason: str
    status: int
    message: str
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    retry_after_s: float | None = None
    replaced_by_hint: str | None = None
    warning: str | None = Field(
        default=None,
        description="What the person should know beyond the refusal (a link being retired).",
    )


class Denied(_Message):
    type: Literal["denied"] = "denied"
    message: str


class Removed(_Message):
    type: Literal["removed"] = "removed"
    message: str


class Ended(_Message):
    type: Literal["ended"] = "ended"
    because: EndedBecause
    message: str


class WaitingGuest(BaseModel):
    participant_id: UUID
    display_name: str
    waiting_since: datetime
    muted: bool = Field(description="Knocked while knocks were muted: listed, no alert.")
    on_hold: bool
    disconnected: bool
    attended: bool = Field(
        default=False,
        description="A host has turned to them since they began waiting: written to them, "
        "or sent them back from the call. The reference client alerts only for the others.",
    )


class Present(BaseModel):
    participant_id: UUID
    display_name: str
    role: CallRole
    disconnected: bool
    audio_on: bool = Field(
        default=True,
        description="Their microphone is on (as their page last said; on until it says).",
    )
    video_on: bool = Field(
        default=True, description="Their camera is on (as their page last said; on until it says)."
    )
    muted_by_host: bool = Field(
        default=False,
        description="A host muted their microphone and they have not turned it on since: "
        "the media node forwards none of their audio.",
    )


class RoomView(_Message):
    """The call manager's view (hosts): who waits, who is in, locked, muted."""

    type: Literal["room"] = "room"
    live: bool
    locked: bool
    knocks_muted: bool
    max_participants: int
    waiting: list[WaitingGuest]
    participants: list[Present]


class Participants(_Message):
    """Who is in the call (everyone in the call gets it when it changes)."""

    type: Literal["participants"] = "participants"
    participants: list[Present]


class Knock(_Message):
    """An alert for hosts: a guest knocked while knocks were not muted."""

    type: Literal["knock"] = "knock"
    participant_id: UUID
    display_name: str


class SeatRefused(_Message):
    """For hosts: a guest could not be let in (room full)."""

    type: Literal["seat_refused"] = "seat_refused"
    participant_id: UUID
    reason: str
    message: str


class WaitingMessage(_Message):
    """A message in the waiting room: a host's to a waiting guest (or to everyone waiting),
    or a guest's reply. The guest concerned and every host in the call get it."""

    type: Literal["waiting_message"] = "waiting_message"
    message_id: UUID
    from_role: CallRole
    participant_id: UUID | None = Field(
        description="The waiting guest it is to or from; null: a host's message to everyone "
        "waiting."
    )
    sender_name: str = personal_data(description="The name of whoever wrote it.")
    text: str = personal_data(description="What they wrote (never stored, never in events).")
    sent_at: datetime


class ScreenShare(_Message):
    """Everyone in the call: who shares their screen now (null: nobody). Their screen comes
    as a video track the node's offer labels ``kind: "screen"``; show it large."""

    type: Literal["screen_share"] = "screen_share"
    participant_id: UUID | None
    sender_name: str | None = personal_data(
        default=None, description="The sharer's name, to show with the share."
    )


class MutedByHost(_Message):
    """To the person a host muted: their microphone is off (turn the track off; the media
    node forwards none of their audio until they turn it on again themselves)."""

    type: Literal["muted_by_host"] = "muted_by_host"
    by_name: str = personal_data(description="The name of the host who muted them.")


class UnmuteRequested(_Message):
    """To someone whose microphone is off: a host asks them to turn it on (only they can)."""

    type: Literal["unmute_requested"] = "unmute_requested"
    by_name: str = personal_data(description="The name of the host who asks.")


class Recording(_Message):
    """Everyone in the room: the call is being recorded (``on``), or no longer."""

    type: Literal["recording"] = "recording"
    on: bool
    message: str


class ConsentRequest(_Message):
    """To each person asked to consent to a recording (in the call or waiting; under the
    policy ``all``): answer with ``recording_consent``. The page asks before it connects
    media (docs/signaling.md, "Recording consent")."""

    type: Literal["consent_request"] = "consent_request"
    request_id: UUID
    requested_by: str = personal_data(description="The name of the host who asks.")
    message: str = Field(description="The question to show.")


class ConsentClosed(_Message):
    """To someone who was asked: their question is settled (they answered, or the request
    is over); ``message`` says how it stands."""

    type: Literal["consent_closed"] = "consent_closed"
    request_id: UUID
    message: str


class ConsentPerson(BaseModel):
    participant_id: UUID
    display_name: str = personal_data(description="Their name, as the call shows it.")
    waiting: bool = Field(description="In the waiting room, not in the call.")


class ConsentState(_Message):
    """Hosts: where the latest request to record stands, sent as it changes (who consented,
    who declined, who has yet to answer). A decline names who declined in ``message``."""

    type: Literal["consent_state"] = "consent_state"
    request_id: UUID
    status: ConsentStatus
    policy: RecordingConsent
    requested_by: str = personal_data(description="The name of the host who asked.")
    answer_by: datetime = Field(description="When it lapses if someone has not answered.")
    consented: list[ConsentPerson]
    declined: list[ConsentPerson]
    pending: list[ConsentPerson] = Field(
        description="Asked and not answered yet; the waiting among them do not hold it back."
    )
    message: str = Field(description="A sentence to show the host.")


class Quality(_Message):
    """Network quality as the media node measures it, every few seconds while it changes:
    hosts get everyone in the call, a guest only themselves (docs/media.md)."""

    type: Literal["quality"] = "quality"
    participants: list[ParticipantQuality]


class NetworkTestReady(_Message):
    """The answer to ``network_test``: offer media now (``signal`` frames), measure for
    ``duration_s``, then report. The node closes the test's connection ``max_s`` after the
    offer whatever happens, and refuses an offer after ``expires_at``."""

    type: Literal["network_test_ready"] = "network_test_ready"
    test_id: UUID
    media_node: str = Field(description="The node the call would be on.")
    placed: bool = Field(description="The call's room is on that node already.")
    duration_s: float = Field(description="How long to measure once media is connected.")
    max_s: float
    expires_at: datetime


class NetworkVerdict(StrEnum):
    good = "good"
    may_be_choppy = "may_be_choppy"
    video_will_not_work = "video_will_not_work"


class NetworkTestResult(_Message):
    """The verdict of a network test, with both directions' figures and what to do."""

    type: Literal["network_test_result"] = "network_test_result"
    verdict: NetworkVerdict
    headline: str = Field(description="A sentence to show.")
    advice: list[str] = Field(description="What to do, one sentence each (empty when good).")
    reasons: list[str] = Field(
        description="Which figures fell short: loss, rtt, jitter, bitrate, no_media."
    )
    rtt_ms: float | None
    uplink: Direction | None = Field(description="Browser to node, as the node received it.")
    downlink: Direction | None = Field(description="Node to browser, as the browser reported.")
    relayed: bool | None


class ChatMessage(_Message):
    """A chat message, to everyone in the call (its sender too, as the confirmation). Across
    replicas two messages may arrive in another order than they were sent: ``number`` is the
    order."""

    type: Literal["chat"] = "chat"
    message_id: UUID
    number: int = Field(
        description="The message's place in this call's chat: 1, 2, 3… (restarts each call)."
    )
    participant_id: UUID = Field(description="Who sent it.")
    sender_name: str = personal_data(description="Their name, as the call shows it.")
    role: CallRole
    text: str = personal_data(description="What they wrote (never in events).")
    sent_at: datetime


class Error(_Message):
    """The last frame could not be done; the connection stays (until abuse closes it, 1008)."""

    type: Literal["error"] = "error"
    code: str
    message: str


class Pong(_Message):
    type: Literal["pong"] = "pong"


ServerMessage = Annotated[
    Welcome
    | LinkReady
    | Waiting
    | Admitted
    | Refused
    | Denied
    | Removed
    | Ended
    | RoomView
    | Participants
    | Knock
    | SeatRefused
    | WaitingMessage
    | Recording
    | ScreenShare
    | Quality
    | NetworkTestReady
    | NetworkTestResult
    | Signal
    | ChatMessage
    | Error
    | Pong
    | MutedByHost
    | UnmuteRequested
    | ConsentRequest
    | ConsentClosed
    | ConsentState,
    Field(discriminator="type"),
]

client_messages: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
server_messages: TypeAdapter[ServerMessage] = TypeAdapter(ServerMessage)


def protocol_schema() -> dict[str, object]:
    """The JSON schema of both directions (``docs/signaling-protocol.json``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Antechamber signaling WebSocket protocol v{PROTOCOL_VERSION}",
        "description": (__doc__ or "").strip(),
        "x-path": WEBSOCKET_PATH,
        "properties": {
            "client_to_server": client_messages.json_schema(),
            "server_to_client": server_messages.json_schema(),
        },
    }
