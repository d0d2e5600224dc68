"""What the notify service publishes: messages delivered, reminders skipped, deliveries failed.

Notify mails invitations, updates, cancellations, new links and reminders for the sessions
scheduling publishes, with each recipient's own link from links. No event here carries an
address, a name or a link: a recipient is named by the id scheduling gave them.
"""

from enum import StrEnum
from uuid import UUID

from pydantic import Field

from contracts.events import Event, EventRegistry

notify_events = EventRegistry("notify")


class MessageKind(StrEnum):
    """What a message is about; each kind has its own template per clinic."""

    invitation = "invitation"
    """A session was scheduled, or someone was invited to it (also: re-sent on demand)."""
    update = "update"
    """The session moved: the new time, the same calendar entry."""
    cancellation = "cancellation"
    """The session will not happen; the calendar entry is cancelled."""
    new_link = "new_link"
    """The recipient's link was regenerated; the old one no longer works."""
    reminder = "reminder"
    """The session starts soon (at the clinic's reminder offsets)."""


class RecipientKind(StrEnum):
    client = "client"
    attendee = "attendee"


class SkippedBecause(StrEnum):
    session_started = "session_started"
    """The reminder fell due while notify was down, and the session has started since."""


class FailedBecause(StrEnum):
    refused = "refused"
    """The mail server refused the message or the recipient for good (5xx)."""
    gave_up = "gave_up"
    """Temporary failures (4xx, timeouts, no connection) went on past the retry limit."""
    invalid_address = "invalid_address"
    """The recipient's address is not a valid email address."""
    no_link = "no_link"
    """No working link for this recipient arrived from links in time."""
    template = "template"
    """The clinic's template could not be rendered for this message."""
    erased = "erased"
    """The recipient's personal data was erased at the clinic's request: nothing is sent."""
    unconfirmed = "unconfirmed"
    """Notify stopped while the mail server was accepting the message; it is not sent again
    (at most once), and may or may not have arrived."""


class _Delivery(Event):
    delivery_id: UUID
    session_id: UUID
    recipient_id: UUID = Field(description="The client's or attendee's id (no address).")
    recipient_kind: RecipientKind


@notify_events.register
class InvitationSent(_Delivery):
    """An invitation, update, cancellation or new-link message was accepted by the mail server."""

    kind: MessageKind
    revision: int = Field(description="The session's calendar SEQUENCE the message carries.")
    message_id: str = Field(description="The Message-ID header of the mail.")


@notify_events.register
class ReminderSent(_Delivery):
    """A reminder was accepted by the mail server."""

    offset_minutes: int
    late: bool = Field(default=False, description="Sent after its time (notify was down).")
    message_id: str


@notify_events.register
class ReminderSkipped(_Delivery):
    """A reminder was not sent, and will not be."""

    offset_minutes: int
    because: SkippedBecause


@notify_events.register
class DeliveryFailed(_Delivery):
    """A message could not be delivered and will not be tried again."""

    kind: MessageKind
    because: FailedBecause
    detail: str = Field(description="What went wrong, for a person (no address, no link).")
