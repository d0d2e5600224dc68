"""What the links service publishes about the links it issues.

A link's token exists in clear only in ``url`` here, so that notify can mail it and scheduling
can show it in a client portal; the links service keeps nothing but its hash.
"""

from enum import StrEnum
from uuid import UUID

from pydantic import AwareDatetime, Field

from contracts.events import Event, EventRegistry
from contracts.personal import secret

links_events = EventRegistry("links")


class LinkKind(StrEnum):
    practitioner_room = "practitioner_room"
    """Readable and persistent: ``/r/{clinic}/{room}``; anyone may knock."""
    client_room = "client_room"
    """A client's personalised room; stable until regenerated."""
    session = "session"
    """One appointment; open from start - early join to end + buffer."""
    guest = "guest"
    """A session's shareable guest link (link sharing on)."""
    drop_in = "drop_in"
    """One invited attendee's own link."""
    host = "host"
    """A practitioner's way in as host."""


class RevokedBecause(StrEnum):
    session_cancelled = "session_cancelled"
    room_deleted = "room_deleted"
    sharing_disabled = "sharing_disabled"
    attendee_removed = "attendee_removed"
    regenerated = "regenerated"
    retired = "retired"


class _Link(Event):
    link_id: UUID
    kind: LinkKind
    url: str = secret(description="The join link, token included. Deliver it; never log it.")
    session_id: UUID | None = None
    room_id: UUID | None = None
    client_id: UUID | None = None
    attendee_id: UUID | None = None
    practitioner_id: UUID | None = None
    opens_at: AwareDatetime | None = Field(default=None, description="Session links only.")
    closes_at: AwareDatetime | None = Field(default=None, description="Session links only.")


@links_events.register
class LinkIssued(_Link):
    """A new link exists and works (within its window, for session links)."""


@links_events.register
class LinkRegenerated(_Link):
    """A link replaced ``replaces_link_id``, which is refused from this event on."""

    replaces_link_id: UUID


@links_events.register
class LinkRevoked(Event):
    """The link stopped working."""

    link_id: UUID
    because: RevokedBecause
