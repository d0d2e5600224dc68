"""How signaling talks to the media nodes: seats, and the WebRTC offer/answer relay.

The media node that owns a room is the only authority on its seats. Signaling asks any node
(``SEAT_SUBJECT``, a queue group); the node that answers places the room (a NATS KV bucket,
compare-and-set) and answers for its owner. A granted seat is a *reservation*: it lapses if
no media connection claims it within ``reserved_until``; it is released when the person
leaves, is removed or drops for good (``RELEASE_SUBJECT``).

Browsers never talk NATS: signaling relays their SDP and ICE candidates to the owning node
(``signal_subject(node)``) with the participant token it minted, and forwards what the node
sends back (``participant_subject(participant)``).
"""

from enum import StrEnum
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

from contracts.events import Event, EventRegistry
from contracts.signaling import CallRole

SEAT_SUBJECT = "rpc.media.seat"
"""Request/reply: a :class:`SeatRequest` in, a :class:`SeatAnswer` out."""
RELEASE_SUBJECT = "rpc.media.release"
"""Request/reply: a :class:`SeatRelease` in, a :class:`SeatReleased` out."""
LIVE_NODES_SUBJECT = "rpc.media.live"
"""Request/reply: a :class:`NodesQuery` in, a :class:`LiveNodes` out. Signaling asks it for
the nodes its calls are on, to move a call whose node died (docs/media.md, failover)."""
PARTICIPANT_TOKEN_AUDIENCE = "antechamber-media"  # noqa: S105 - a name, not a secret
PARTICIPANT_TOKEN_ISSUER = "antechamber-signaling"  # noqa: S105
PARTICIPANT_TOKEN_ALGORITHM = "HS256"  # noqa: S105
MAX_SDP = 64 * 1024
"""Longer session descriptions are refused (a 16-person offer is about 20 KiB)."""


def node_subject(node_id: str, action: str) -> str:
    """Request/reply on one media node: ``seat`` and ``release`` as on the shared subjects
    (for the rooms it owns), and ``signal``."""
    return f"rpc.media.node.{node_id}.{action}"


def signal_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`MediaSignal` in, a :class:`MediaSignalReply`."""
    return node_subject(node_id, "signal")


def record_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`RecordingCommand` in, a
    :class:`RecordingReply` out."""
    return node_subject(node_id, "record")


def share_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`ScreenShareCommand` in, a
    :class:`ScreenShareReply` out (signaling's alone: a browser's word is never taken)."""
    return node_subject(node_id, "share")


def mute_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`MuteCommand` in, a :class:`MuteReply` out
    (signaling's alone: a host muted someone, or they turned their microphone on again)."""
    return node_subject(node_id, "mute")


ALL_NODE_SUBJECTS = "rpc.media.node.*.>"
"""Every node's request/reply subjects: signaling's to call."""
ALL_PARTICIPANT_SUBJECTS = "media.participant.*"
"""Where nodes send to browsers (through signaling)."""


def participant_subject(participant_id: UUID) -> str:
    """Where a media node sends a :class:`MediaSignal` to one participant's browser."""
    return f"media.participant.{participant_id}"


ALL_QUALITY_SUBJECTS = "media.quality.*"
"""Where nodes publish each room's :class:`RoomQuality` (core NATS): signaling's to follow."""


def quality_subject(room_id: UUID) -> str:
    """Where the node holding a room publishes its :class:`RoomQuality` every few seconds."""
    return f"media.quality.{room_id.hex}"


class SeatRequest(BaseModel):
    clinic_id: str
    room_id: UUID
    participant_id: UUID
    role: CallRole
    cap: int = Field(ge=1, le=16, description="The clinic's max_participants (at most 16).")
    loudest_speakers: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description="The clinic's loudest_speakers, for the room (none: the node's default).",
    )


class SeatRefusal(StrEnum):
    room_full = "room_full"
    no_capacity = "no_capacity"
    """No live media node can take another room."""


class SeatAnswer(BaseModel):
    granted: bool
    reason: SeatRefusal | None = None
    message: str = Field(description="A sentence for the person (and the host) when refused.")
    node_id: str | None = Field(default=None, description="The node that owns the room.")
    media_url: str | None = Field(default=None, description="The node's public address.")
    reserved_until: AwareDatetime | None = None
    taken: int = Field(description="Seats held in the room after this answer.")
    cap: int
    holders: list[UUID] = Field(
        default_factory=list,
        description=(
            "Who holds or has reserved a seat in the room after a grant (lapsed reservations "
            "left out). Signaling ends the places of guests it had in the call before it asked "
            "who are not among them (their media never connected) when it needs the room."
        ),
    )


class SeatRelease(BaseModel):
    clinic_id: str
    room_id: UUID
    participant_id: UUID | None = Field(
        default=None, description="One seat; none releases every seat of the room (call over)."
    )


class SeatReleased(BaseModel):
    released: int
    taken: int


class NodesQuery(BaseModel):
    node_ids: list[str] = Field(
        max_length=1000, description="The media nodes whose liveness is asked about."
    )


class LiveNodes(BaseModel):
    live: list[str] = Field(
        description=(
            "Those of the nodes asked about that live: their heartbeat is younger than the "
            "media service's node_ttl_s. Any other has died or left the cluster."
        )
    )


class SignalKind(StrEnum):
    offer = "offer"
    answer = "answer"
    candidate = "candidate"
    bye = "bye"


class MediaStream(BaseModel):
    """Whose media a receiving transceiver carries, so a page can label its tiles."""

    mid: str = Field(max_length=32)
    participant_id: UUID
    kind: Literal["audio", "video", "screen"] = Field(
        description="screen: the video of the call's screen share (show it large)."
    )


class Negotiation(BaseModel):
    """One WebRTC negotiation message: the fields the browser's ``signal`` frame and the
    node's :class:`MediaSignal` share.

    The browser makes the first offer (with what it publishes); after that the node offers
    whenever the set of tracks it forwards to this participant changes (someone joined or
    left), and the browser answers. ``bye`` ends the media connection either way; from the
    node it carries ``reason`` and ``message``.
    """

    kind: SignalKind
    sdp: str | None = Field(default=None, max_length=MAX_SDP)
    candidate: str | None = Field(default=None, max_length=1024)
    sdp_mid: str | None = Field(default=None, max_length=32)
    sdp_mline_index: int | None = Field(default=None, ge=0, le=1024)
    streams: list[MediaStream] = Field(
        default_factory=list, description="With a node's offer: who each sending mid carries."
    )
    reason: str | None = Field(default=None, description="With a node's bye: why.")
    message: str | None = Field(default=None, description="With a node's bye: a sentence.")
    screen_mid: str | None = Field(
        default=None,
        max_length=32,
        description="With a node's offer to the person signaling granted the screen share: "
        "the mid on which the node receives their screen (answer it sendonly with the "
        "shared surface's track); none otherwise. The node takes a screen from no one else.",
    )


class MediaSignal(Negotiation):
    """A negotiation message between signaling (for one participant) and a media node."""

    participant_token: str | None = Field(
        default=None, description="The JWT from signaling (browser to node only)."
    )
    participant_id: UUID
    room_id: UUID | None = Field(
        default=None, description="The room the token is for (browser to node only)."
    )


class MediaSignalReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""
    answer: MediaSignal | None = None


class DirectionQuality(BaseModel):
    """One direction of a participant's link to the media node; null: not measured (nothing
    flowed that way since the last measurement)."""

    loss_pct: float | None = Field(
        default=None, ge=0, le=100, description="Packets lost, in percent, before repair."
    )
    jitter_ms: float | None = Field(
        default=None, ge=0, description="Interarrival jitter (RFC 3550), audio where there is."
    )


class ParticipantQuality(BaseModel):
    """One participant's network quality as their media node measures it (docs/media.md)."""

    participant_id: UUID
    grade: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="5 excellent, 4 good, 3 fair, 2 poor, 1 bad: the worst of loss, round "
        "trip and jitter against published limits; null until something was measured.",
    )
    rtt_ms: float | None = Field(
        default=None, ge=0, description="Round trip between the participant and the node."
    )
    sending: DirectionQuality = Field(description="What the node receives from them.")
    receiving: DirectionQuality = Field(description="What they receive from the node.")
    available_kbps: int | None = Field(
        default=None, ge=0, description="What they estimate they can receive (their REMB)."
    )


class RoomQuality(BaseModel):
    """Published by the node that holds a room on :func:`quality_subject`, every
    ``quality_interval_s``: everyone connected to it in the room."""

    room_id: UUID
    clinic_id: str
    node_id: str
    measured_at: AwareDatetime
    participants: list[ParticipantQuality] = Field(max_length=64)


class RecordingAction(StrEnum):
    start = "start"
    stop = "stop"


class RecordingCommand(BaseModel):
    """Start or stop recording a room, sent by signaling (a host asked) to the room's node."""

    clinic_id: str
    room_id: UUID
    recording_id: UUID
    action: RecordingAction


class RecordingReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""


class ScreenShareAction(StrEnum):
    grant = "grant"
    revoke = "revoke"


class ScreenShareCommand(BaseModel):
    """Signaling granted a room's screen share to one participant (the node takes a screen
    track from them alone, ending any other), or it ended (``revoke``: only if still theirs)."""

    clinic_id: str
    room_id: UUID
    participant_id: UUID
    action: ScreenShareAction


class ScreenShareReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""


class MuteCommand(BaseModel):
    """A host muted a participant's microphone (``muted``): the node that holds the room
    forwards and records none of their audio, also after they reconnect, until signaling
    says otherwise (they turned it on again) or their seat is released."""

    clinic_id: str
    room_id: UUID
    participant_id: UUID
    muted: bool


class MuteReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""


class ParticipantClaims(BaseModel):
    """The claims of a participant token (a short-lived JWT signed by signaling)."""

    sub: str = Field(description="The participant id.")
    room: str
    clinic: str
    role: CallRole
    node: str = Field(description="The media node that holds the seat.")
    aud: str = PARTICIPANT_TOKEN_AUDIENCE
    iss: str = PARTICIPANT_TOKEN_ISSUER
    nbf: int
    exp: int


media_events = EventRegistry("media")


@media_events.register
class SeatRefused(Event):
    """A seat was refused: the room was full, or no media node could take the room."""

    room_id: UUID
    participant_id: UUID
    taken: int = Field(description="Seats held in the room when the request was refused.")
    cap: int
    reason: SeatRefusal


@media_events.register
class RoomPlaced(Event):
    """A room now lives on ``node_id``: placed afresh, or taken over from a dead node."""

    room_id: UUID
    node_id: str


def recording_stream(recording_id: UUID) -> str:
    return f"recording-{recording_id}"


@media_events.register
class RecordingAvailable(Event):
    """A recording's MP4 is written and can be downloaded (through the media API).

    With ``partial``, the recorder died before the recording was stopped (killed, crashed, or
    its media node restarted): the file plays up to where it was cut off, ``duration_s`` long.
    """

    recording_id: UUID
    room_id: UUID
    node_id: str
    duration_s: float = Field(description="How long the file plays, measured from it.")
    size_bytes: int
    started_at: AwareDatetime
    stopped_at: AwareDatetime
    partial: bool = Field(
        default=False,
        description=(
            "The recorder died before the recording was stopped: the file holds what was "
            "recorded until then (up to about a second before), and ``reason`` says why."
        ),
    )
    reason: str | None = Field(default=None, description="With ``partial``: why it ended early.")


@media_events.register
class RecordingFailed(Event):
    """A recording could not be written; ``reason`` says why (no media data in it)."""

    recording_id: UUID
    room_id: UUID
    node_id: str
    reason: str
