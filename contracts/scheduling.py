"""What the scheduling service publishes: clinics, practitioners, clients, rooms, sessions.

Other services build on these: links issues a link per room and session, notify mails the
invitations and reminders, signaling reads the clinic's settings through links' decisions.

Personal values about a client (their profile and contacts, a client room's title) and about
an attendee arrive **sealed** for their person (``x-sealed``: ``pd1.<person id>.<…>``, see
``runtime.personal_data``); scheduling alone holds the keys. A service that must use one asks
scheduling to open it (:data:`UNSEAL_SUBJECT`); an integrator reads the person through the
clinic API. After ``ClientErased`` the client's sealed values open nowhere, ever again.
"""

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Annotated, Any
from uuid import UUID
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from contracts.events import Event, EventRegistry
from contracts.personal import personal_data
from contracts.signaling import CallFeatures, RecordingConsent, RecordingStoppedBecause

scheduling_events = EventRegistry("scheduling")

SLUG = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
"""Readable part of a room link (``/r/{clinic}/{room}``): lower-case letters, digits, dashes."""

MAX_PARTICIPANTS = 16
MAX_SESSION_HOURS = 12


class Plan(StrEnum):
    basic = "basic"
    professional = "professional"
    enterprise = "enterprise"


class VideoMode(StrEnum):
    """Where an appointment's call happens."""

    session_link = "session_link"
    """A new one-time link for this appointment."""
    practitioner_room = "practitioner_room"
    """The practitioner's persistent room."""
    client_room = "client_room"
    """One of the client's personalised rooms."""


PLAN_VIDEO_MODES: dict[Plan, frozenset[VideoMode]] = {
    Plan.basic: frozenset({VideoMode.practitioner_room, VideoMode.client_room}),
    Plan.professional: frozenset(VideoMode),
    Plan.enterprise: frozenset(VideoMode),
}
"""Which video modes each plan includes; session links start at professional."""


class GuestAdmission(StrEnum):
    waiting_room = "waiting_room"
    """Guests wait until a host admits them."""
    direct = "direct"
    """Guests take a seat at once."""


class RoomKind(StrEnum):
    practitioner = "practitioner"
    client = "client"


class SessionSource(StrEnum):
    api = "api"
    public_booking = "public_booking"
    ad_hoc = "ad_hoc"


class CompletedBecause(StrEnum):
    ended_for_all = "ended_for_all"
    """A host ended the meeting for everyone."""
    last_participant_left = "last_participant_left"
    """The last person left after the scheduled end."""
    marked_by_host = "marked_by_host"
    """The host marked a session that ended early as complete."""


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_time_zone(name: str) -> str:
    if name not in _time_zones():
        raise ValueError(f"{name!r} is not a known IANA time zone (e.g. Europe/Berlin)")
    return name


TimeZoneName = Annotated[
    str,
    AfterValidator(_known_time_zone),
    Field(description="IANA time zone name.", examples=["Europe/Berlin"]),
]


def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""Unicode's control characters (category Cc: C0, DEL, C1) and its line and paragraph
separators: each can end a mail header early, or start a forged one."""


def _single_line(text: str) -> str:
    if _LINE_BREAKING.search(text):
        raise PydanticCustomError(
            "control_character",
            "Names may not contain line breaks, tabs or other control characters",
        )
    return text


SingleLine = Annotated[str, AfterValidator(_single_line)]
"""A name or title that is shown on one line: in a mail's From or Subject, a calendar entry, a
join page. The API refuses control characters in it (422 naming the field). Events do not
check it, so that an event recorded before the check still reads."""

CALENDAR_STARTS = datetime(2000, 1, 1, tzinfo=UTC)
YEARS_AHEAD = 5


def calendar_ends(now: datetime) -> datetime:
    """The latest time the API takes: ``YEARS_AHEAD`` years after ``now``."""
    return now + timedelta(days=round(YEARS_AHEAD * 365.25))


def outside_calendar(value: datetime, now: datetime) -> str | None:
    """Why the API refuses ``value`` (an aware time), or None if it is in the calendar it keeps.

    The bound keeps every time far from the ends of what Postgres and Python hold once moved
    to UTC or to any time zone (year 1 and 9999), and catches a year typed wrong.
    """
    latest = calendar_ends(now)
    if CALENDAR_STARTS <= value <= latest:
        return None
    return (
        f"Give a time between {CALENDAR_STARTS:%Y-%m-%d} and {latest:%Y-%m-%d} "
        f"(at most {YEARS_AHEAD} years ahead)"
    )


def _in_calendar(value: datetime) -> datetime:
    reason = outside_calendar(value, datetime.now(UTC))
    if reason is not None:
        raise PydanticCustomError("date_out_of_range", reason)
    return value


CalendarTime = Annotated[
    AwareDatetime,
    AfterValidator(_in_calendar),
    Field(
        description="ISO 8601 with an offset, from 2000-01-01 to at most "
        f"{YEARS_AHEAD} years ahead.",
        examples=["2026-12-01T14:00:00+01:00"],
    ),
]
"""A time the API schedules at: with an offset, from ``CALENDAR_STARTS`` to ``YEARS_AHEAD``
years ahead of the moment of the request (422 ``date_out_of_range`` saying the range)."""


def _distinct_offsets(offsets: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(offsets), reverse=True))


class ClinicSettings(BaseModel):
    """How a clinic works; every field has the default a new clinic gets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plan: Plan = Field(default=Plan.basic, description="basic | professional | enterprise.")
    time_zone: TimeZoneName = "UTC"
    early_join_minutes: int = Field(
        default=10, ge=0, le=120, description="How early a session link opens before the start."
    )
    buffer_minutes: int = Field(
        default=15, ge=0, le=240, description="How long a session link stays open after the end."
    )
    rejoin_grace_minutes: int = Field(
        default=5, ge=0, le=120, description="How long someone who dropped may rejoin."
    )
    reminder_offsets_minutes: Annotated[
        tuple[Annotated[int, Field(ge=5, le=20_160)], ...], AfterValidator(_distinct_offsets)
    ] = Field(
        default=(1440, 60),
        max_length=5,
        description="Reminders, in minutes before the start (5 minutes to 14 days).",
    )
    guest_admission: GuestAdmission = Field(
        default=GuestAdmission.waiting_room, description="Default for new sessions."
    )
    max_participants: int = Field(
        default=MAX_PARTICIPANTS, ge=2, le=MAX_PARTICIPANTS, description="Seats in a call."
    )
    public_booking: bool = Field(default=False, description="Whether the booking page is open.")
    loudest_speakers: int = Field(
        default=3,
        ge=0,
        le=MAX_PARTICIPANTS,
        description="Voices a call forwards at once: the loudest this many speakers, and every "
        "host who speaks (0: everyone's, always).",
    )
    call: CallFeatures = Field(
        default_factory=CallFeatures,
        description="What people may do in the clinic's calls: waiting-room messages, chat "
        "retention, screen sharing, recording consent.",
    )


class Contact(BaseModel):
    """Someone connected to a client who may be invited: a linked account or alternate contact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_id: UUID
    # No length limits here: sealed values are longer than the names and addresses the API
    # accepts (at most 200 and 320 characters).
    display_name: str = personal_data(description="The contact's name.", sealed=True)
    email: str = personal_data(description="Where invitations go.", sealed=True)


# -- clinics and keys --------------------------------------------------------------------------


@scheduling_events.register
class ClinicRegistered(Event):
    """An operator registered a clinic (a tenant)."""

    name: str = personal_data(description="The clinic's name; a solo practice may bear a person's.")
    slug: str = Field(pattern=SLUG, description="First part of its room links.")
    settings: ClinicSettings


@scheduling_events.register
class ClinicSettingsChanged(Event):
    """The clinic's settings now read as given (the whole set, not a difference)."""

    settings: ClinicSettings


@scheduling_events.register
class ClinicSuspended(Event):
    """An operator suspended the clinic: its API keys and links stop working."""

    reason: str = Field(description="Why, for the operator's records.")


@scheduling_events.register
class ClinicReinstated(Event):
    """An operator lifted the clinic's suspension."""


@scheduling_events.register
class ApiKeyIssued(Event):
    """A clinic API key was created. Its secret is never published; only its prefix is."""

    key_id: UUID
    prefix: str = Field(description="The key's first characters, to recognise it.")
    label: str = Field(description="What the key is for.")


@scheduling_events.register
class ApiKeyRevoked(Event):
    """The key stopped working."""

    key_id: UUID


# -- integrators' NATS credentials ------------------------------------------------------------


def integrator_name(credential_id: UUID) -> str:
    """An integrator credential's NATS user name (``int_<credential id, hex>``): also its inbox
    prefix (``_INBOX_<name>``) and the name of the JetStream consumers made for it."""
    return f"int_{credential_id.hex}"


class ConsumerStart(StrEnum):
    """Where the JetStream consumers made for an integrator credential start."""

    ALL = "all"
    """The first event of the clinic each stream holds."""
    NEW = "new"
    """The events stored from the credential's issuance (to the second) on."""


@scheduling_events.register
class IntegratorCredentialIssued(Event):
    """A clinic gave an integrator a NATS credential: its clinic's events, read-only, until
    ``expires_at``, live and through a durable pull consumer per stream made for it. Only its
    public key is published; its seed is stored nowhere.

    v2: ``start``."""

    schema_version = 2
    credential_id: UUID
    nats_user: str = Field(
        description="Its NATS user name; also its inbox prefix (_INBOX_<name>) and the name "
        "of the JetStream consumers made for it, one per stream.",
        examples=["int_3f2b9c1d4e5a46b7a8c9d0e1f2a3b4c5"],
    )
    public_key: str = Field(description="The user's public nkey (U...), which NATS revokes.")
    label: str = Field(description="What the credential is for.")
    expires_at: AwareDatetime = Field(description="When NATS stops accepting it.")
    start: ConsumerStart = Field(
        description="Where its consumers start: `all`, the clinic's first event in each "
        "stream; `new`, the events stored from its issuance on."
    )


@scheduling_events.upcaster("IntegratorCredentialIssued", from_version=1)
def _consumers_started_at_the_first_event(data: dict[str, Any]) -> dict[str, Any]:
    """v1 credentials made their consumers themselves, from the first event by default."""
    return {**data, "start": ConsumerStart.ALL.value}


@scheduling_events.register
class IntegratorCredentialRevoked(Event):
    """The credential stopped working: NATS closed its connections and refuses it."""

    credential_id: UUID


# -- people and rooms --------------------------------------------------------------------------


@scheduling_events.register
class PractitionerAdded(Event):
    """A practitioner joined the clinic; their room was created with them (RoomCreated)."""

    practitioner_id: UUID
    display_name: str = personal_data(description="The practitioner's name.")
    room_id: UUID
    room_slug: str = Field(pattern=SLUG)


class _ClientProfile(Event):
    client_id: UUID
    display_name: str = personal_data(description="The client's name.", sealed=True)
    email: str | None = personal_data(description="The client's email.", default=None, sealed=True)
    phone: str | None = personal_data(
        description="The client's phone number.", default=None, sealed=True
    )
    linked_accounts: tuple[Contact, ...] = ()
    alternate_contacts: tuple[Contact, ...] = ()


@scheduling_events.register
class ClientAdded(_ClientProfile):
    """A client of the clinic."""


@scheduling_events.register
class ClientUpdated(_ClientProfile):
    """A client's details now read as given (the whole profile)."""


@scheduling_events.register
class ClientErased(Event):
    """The clinic had the client's personal data erased: their key is gone, so every value
    sealed for them (in their profile, their contacts' invitations and their rooms' titles)
    opens nowhere any more. Services that keep copies delete them. Ids only."""

    client_id: UUID
    attendee_ids: tuple[UUID, ...] = Field(
        default=(), description="Attendees invited as the client's contacts: erased with them."
    )


@scheduling_events.register
class RoomCreated(Event):
    """A practitioner's room (with the practitioner) or a client's personalised room."""

    room_id: UUID
    kind: RoomKind
    practitioner_id: UUID
    client_id: UUID | None = None
    slug: str | None = Field(default=None, description="Practitioner rooms: the readable part.")
    title: str = personal_data(
        description="Chosen by the practitioner; may name the client. Sealed for the client in "
        "a client's room.",
        sealed=True,
    )


@scheduling_events.register
class RoomRenamed(Event):
    room_id: UUID
    client_id: UUID | None = Field(
        default=None, description="A client's room: the client, for whom the title is sealed."
    )
    title: str = personal_data(description="The room's new title.", sealed=True)


@scheduling_events.register
class RoomDeleted(Event):
    """A client room was deleted; its link stops working."""

    room_id: UUID


# -- sessions ----------------------------------------------------------------------------------


@scheduling_events.register
class SessionScheduled(Event):
    """An appointment (or an ad-hoc call, source ``ad_hoc``) was put in the calendar."""

    session_id: UUID
    practitioner_id: UUID
    client_ids: tuple[UUID, ...]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    time_zone: TimeZoneName
    video_mode: VideoMode
    room_id: UUID | None = Field(
        default=None, description="The practitioner's or client's room, for those video modes."
    )
    link_sharing: bool = Field(description="Whether a guest link is issued.")
    guest_admission: GuestAdmission
    source: SessionSource


@scheduling_events.register
class SessionRescheduled(Event):
    session_id: UUID
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    time_zone: TimeZoneName
    previous_starts_at: datetime
    previous_ends_at: datetime


@scheduling_events.register
class SessionCancelled(Event):
    """The appointment will not happen; its links are revoked and reminders dropped."""

    session_id: UUID
    reason: str | None = personal_data(description="Free text; may mention people.", default=None)


@scheduling_events.register
class AttendeeInvited(Event):
    """Someone besides the clients was invited; they get their own drop-in link."""

    session_id: UUID
    attendee_id: UUID
    email: str = personal_data(
        description="Where the invitation goes. Sealed for the client (a client's contact) or "
        "else for the attendee.",
        sealed=True,
    )
    display_name: str | None = personal_data(
        description="The attendee's name.", default=None, sealed=True
    )
    client_id: UUID | None = Field(default=None, description="Set for a client's contact.")
    contact_id: UUID | None = None
    while_live: bool = Field(
        default=False, description="Invited from inside a live call: mail at once."
    )


@scheduling_events.register
class AttendeeRemoved(Event):
    """The attendee is no longer invited; their drop-in link stops working."""

    session_id: UUID
    attendee_id: UUID


@scheduling_events.register
class LinkSharingEnabled(Event):
    """Guests may join with the session's guest link; drop-in links are issued anew."""

    session_id: UUID


@scheduling_events.register
class LinkSharingDisabled(Event):
    """Every guest and drop-in link of the session stops working."""

    session_id: UUID


@scheduling_events.register
class SessionWentLive(Event):
    """The first host entered the call (from signaling's SessionStarted)."""

    session_id: UUID


@scheduling_events.register
class SessionEndedEarly(Event):
    """Everyone left before the scheduled end: ended, not completed (the host may complete it)."""

    session_id: UUID


@scheduling_events.register
class SessionCompleted(Event):
    session_id: UUID
    because: CompletedBecause


# The session's audit trail of recording consent, from signaling's events of its call
# (participant ids are signaling's: one person's presence in the call).


@scheduling_events.register
class SessionRecordingRequested(Event):
    """A host asked to record the session's call (signaling's ``RecordingRequested``)."""

    session_id: UUID
    request_id: UUID
    by: UUID = Field(description="The host who asked (their consent is implied).")
    policy: RecordingConsent
    asked: list[UUID] = Field(description="Everyone else in the room, asked to consent.")


@scheduling_events.register
class SessionRecordingConsentAsked(Event):
    """Someone who arrived while the recording was asked for or on was asked too."""

    session_id: UUID
    request_id: UUID
    participant_id: UUID


@scheduling_events.register
class SessionRecordingConsentGiven(Event):
    session_id: UUID
    request_id: UUID
    participant_id: UUID


@scheduling_events.register
class SessionRecordingConsentDeclined(Event):
    session_id: UUID
    request_id: UUID
    participant_id: UUID


@scheduling_events.register
class SessionRecordingRequestLapsed(Event):
    """Not everyone in the call answered in time: the recording did not start."""

    session_id: UUID
    request_id: UUID
    unanswered: list[UUID]


@scheduling_events.register
class SessionRecordingRequestCancelled(Event):
    session_id: UUID
    request_id: UUID
    by: UUID


@scheduling_events.register
class SessionRecordingStarted(Event):
    session_id: UUID
    recording_id: UUID
    request_id: UUID | None = Field(
        default=None, description="The request it follows (none for a recording before consent)."
    )
    by: UUID


@scheduling_events.register
class SessionRecordingStopped(Event):
    session_id: UUID
    recording_id: UUID
    because: RecordingStoppedBecause
    by: UUID | None = None


# -- request/reply -----------------------------------------------------------------------------

AUTHENTICATE_SUBJECT = "rpc.scheduling.authenticate"
"""NATS request/reply: which clinic a clinic API key belongs to. Other services' clinic APIs
accept the same keys by asking here (:class:`KeyCheck` in, :class:`KeyOwner` out)."""


class KeyCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the key, hex.")


class KeyOwner(BaseModel):
    known: bool = Field(description="False for an unknown or revoked key.")
    clinic_id: str | None = None
    suspended: bool = False


UNSEAL_SUBJECT = "rpc.scheduling.unseal"
"""NATS request/reply: the plain values of personal values scheduling sealed, for a service that
must use them (notify writes invitations). One clinic per request: a value sealed for another
clinic does not open. :class:`SealedValues` in, :class:`OpenedValues` out."""

MAX_SEALED_VALUES = 500
"""Values per request; a caller with more sends several."""


class SealedValues(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clinic_id: str
    values: list[str] = Field(
        max_length=MAX_SEALED_VALUES, description="Sealed values (pd1.<person id>.<...>)."
    )


class Opening(StrEnum):
    opened = "opened"
    erased = "erased"
    """The person was erased: the value is gone for good. Record it; do not ask again."""
    refused = "refused"
    """Not a value scheduling sealed for this clinic (another clinic's, altered, or plain)."""


class OpenedValue(BaseModel):
    outcome: Opening
    person_id: UUID | None = Field(default=None, description="Whose value it is.")
    value: str | None = personal_data(default=None, description="The plain value, if opened.")


class OpenedValues(BaseModel):
    values: list[OpenedValue] = Field(description="One per value asked, in the same order.")
