"""What the links service publishes about the links it issues, and how it answers "may I join?".

A link's token exists in clear only inside ``url_sealed`` (AES-GCM, see ``runtime/sealing.py``),
so that notify can mail it and scheduling can show it in a client portal; the links service
keeps nothing but the token's SHA-256.
"""

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events import Event, EventRegistry
from contracts.personal import personal_data, secret
from contracts.signaling import CallFeatures, CallRole

links_events = EventRegistry("links")

RESOLVE_SUBJECT = "rpc.links.resolve"
"""NATS request/reply: a :class:`ResolveRequest` in, a :class:`Decision` out."""


class LinkKind(StrEnum):
    practitioner_room = "practitioner_room"
    """Readable and persistent: ``/r/{clinic}/{room}``; anyone may knock, a host admits."""
    client_room = "client_room"
    """A client's personalised room; stable until regenerated."""
    session = "session"
    """One appointment; open from start - early join to end + buffer, and while live."""
    guest = "guest"
    """A session's shareable guest link (link sharing on)."""
    drop_in = "drop_in"
    """One invited attendee's own link (link sharing on)."""
    host = "host"
    """A practitioner's way in as host: their room, or any of their sessions."""


class Role(StrEnum):
    host = "host"
    client = "client"
    guest = "guest"


class RevokedBecause(StrEnum):
    session_cancelled = "session_cancelled"
    room_deleted = "room_deleted"
    sharing_disabled = "sharing_disabled"
    attendee_removed = "attendee_removed"


class _Link(Event):
    link_id: UUID
    kind: LinkKind
    role: Role
    url_sealed: str = secret(
        description="The join link, token included, sealed with the link key. Unseal to "
        "deliver it; never log it."
    )
    path: str | None = Field(
        default=None, description="Readable links only (practitioner rooms): the path, in clear."
    )
    session_id: UUID | None = None
    room_id: UUID | None = None
    client_id: UUID | None = None
    attendee_id: UUID | None = None
    practitioner_id: UUID | None = None


@links_events.register
class LinkIssued(_Link):
    """A new link works (within its window, for session links).

    A retired link's successor names the link it replaces and until when that one still
    works: the people who were sent the old link should be sent this one (``url_sealed``).

    v2: ``replaces_link_sunset_at``."""

    schema_version = 2
    replaces_link_id: UUID | None = Field(
        default=None, description="Set when a retired link gets its successor."
    )
    replaces_link_sunset_at: AwareDatetime | None = Field(
        default=None,
        description="With ``replaces_link_id``: the replaced link works (with a warning) until "
        "then, and is refused after.",
    )


@links_events.upcaster("LinkIssued", from_version=1)
def _sunset_not_recorded(data: dict[str, Any]) -> dict[str, Any]:
    """v1 successors did not say when the link they replaced stops working."""
    return {**data, "replaces_link_sunset_at": None}


@links_events.register
class LinkRegenerated(_Link):
    """A new link replaced ``replaces_link_id``, which is refused from this event on."""

    replaces_link_id: UUID


@links_events.register
class LinkRevoked(Event):
    """The link stopped working."""

    link_id: UUID
    because: RevokedBecause


@links_events.register
class LinkDeprecated(Event):
    """A retired link: it works with a warning until ``sunset_at``, then is refused with a
    hint to use ``replaced_by``."""

    link_id: UUID
    sunset_at: AwareDatetime
    replaced_by: UUID | None = None


class Refusal(StrEnum):
    """Why a link may not be used now; each comes with an HTTP status and a sentence."""

    unknown = "unknown"
    not_yet_open = "not_yet_open"
    ended = "ended"
    regenerated = "regenerated"
    sharing_disabled = "sharing_disabled"
    revoked = "revoked"
    retired = "retired"
    plan_not_included = "plan_not_included"
    clinic_suspended = "clinic_suspended"
    rate_limited = "rate_limited"


REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.unknown: 404,
    Refusal.not_yet_open: 423,
    Refusal.ended: 410,
    Refusal.regenerated: 410,
    Refusal.sharing_disabled: 410,
    Refusal.revoked: 410,
    Refusal.retired: 410,
    Refusal.plan_not_included: 403,
    Refusal.clinic_suspended: 403,
    Refusal.rate_limited: 429,
}


class ResolveRequest(BaseModel):
    """Either a token (from ``/j/{token}`` or ``/h/{token}``) or a readable room path."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = secret(default=None, description="The token from the link.")
    clinic_slug: str | None = None
    room_slug: str | None = None
    session_id: UUID | None = Field(
        default=None, description="Host tokens: the session to join as host."
    )
    client_address: str | None = Field(
        default=None, description="The browser's address, for rate limiting unknown tokens."
    )


class Decision(BaseModel):
    """May this link join now, as whom, and if not, why not."""

    allowed: bool
    status: int = Field(description="200 when allowed; else the refusal's HTTP status.")
    reason: Refusal | None = None
    message: str = Field(description="A sentence for the person holding the link.")
    warning: str | None = Field(default=None, description="E.g. a retired link's sunset.")
    role: CallRole | None = Field(
        default=None,
        description="Allowed: the role the call gives (a client's session and client room "
        "links join as guests); ``kind`` says whose link it is.",
    )
    kind: LinkKind | None = None
    link_id: UUID | None = None
    clinic_id: str | None = None
    session_id: UUID | None = None
    room_id: UUID | None = None
    practitioner_id: UUID | None = None
    room_title: str | None = personal_data(
        default=None,
        description="Allowed, for a call held in a room (a room link, or a session held in "
        "one): the room's title as the practitioner chose it, to show on the join page. "
        "May name the client; never log it. None when the room has none, its client was "
        "erased, or scheduling could not open it in time.",
    )
    admission: str | None = Field(default=None, description="waiting_room | direct")
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    live: bool = False
    max_participants: int | None = None
    loudest_speakers: int | None = None
    rejoin_grace_minutes: int | None = None
    call: CallFeatures | None = Field(
        default=None, description="Allowed: what the clinic allows in its calls."
    )
    replaced_by_hint: str | None = Field(
        default=None, description="Refused old links: where the newest link can be found."
    )
    retry_after_s: float | None = Field(default=None, description="Rate limited: wait this long.")
