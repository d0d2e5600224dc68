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
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, Field

from contracts.events import Event, EventRegistry
from contracts.signaling import CallRole

SEAT_SUBJECT = "rpc.media.seat"
"""Request/reply: a :class:`SeatRequest` in, a :class:`SeatAnswer` out."""
RELEASE_SUBJECT = "rpc.media.release"
"""Request/reply: a :class:`SeatRelease` in, a :class:`SeatReleased` out."""
PARTICIPANT_TOKEN_AUDIENCE = "antechamber-media"  # noqa: S105 - a name, not a secret
PARTICIPANT_TOKEN_ISSUER = "antechamber-signaling"  # noqa: S105
PARTICIPANT_TOKEN_ALGORITHM = "HS256"  # noqa: S105


def node_subject(node_id: str, action: str) -> str:
    """Request/reply on one media node: ``seat`` and ``release`` as on the shared subjects
    (for the rooms it owns), and ``signal``."""
    return f"rpc.media.node.{node_id}.{action}"


def signal_subject(node_id: str) -> str:
    """Request/reply on one media node: a :class:`MediaSignal` in, a :class:`MediaSignalReply`."""
    return node_subject(node_id, "signal")


def participant_subject(participant_id: UUID) -> str:
    """Where a media node sends a :class:`MediaSignal` to one participant's browser."""
    return f"media.participant.{participant_id}"


class SeatRequest(BaseModel):
    clinic_id: str
    room_id: UUID
    participant_id: UUID
    role: CallRole
    cap: int = Field(ge=1, le=16, description="The clinic's max_participants (at most 16).")


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


class SeatRelease(BaseModel):
    clinic_id: str
    room_id: UUID
    participant_id: UUID | None = Field(
        default=None, description="One seat; none releases every seat of the room (call over)."
    )


class SeatReleased(BaseModel):
    released: int
    taken: int


class SignalKind(StrEnum):
    offer = "offer"
    answer = "answer"
    candidate = "candidate"
    bye = "bye"


class MediaSignal(BaseModel):
    """One WebRTC negotiation message between a participant's browser and the media node."""

    participant_token: str | None = Field(
        default=None, description="The JWT from signaling (browser to node only)."
    )
    participant_id: UUID
    kind: SignalKind
    sdp: str | None = None
    candidate: str | None = None
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class MediaSignalReply(BaseModel):
    ok: bool
    reason: str | None = None
    message: str = ""
    answer: MediaSignal | None = None


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
