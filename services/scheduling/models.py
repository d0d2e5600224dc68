"""Request and response bodies of the scheduling HTTP API (``/v1``)."""

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from contracts.personal import personal_data
from contracts.scheduling import (
    SLUG,
    CalendarTime,
    ClinicSettings,
    CompletedBecause,
    GuestAdmission,
    Plan,
    RoomKind,
    SessionSource,
    SingleLine,
    TimeZoneName,
    VideoMode,
)
from contracts.signaling import RecordingConsent


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


NAME: dict[str, Any] = {"min_length": 1, "max_length": 200}


# -- operator ----------------------------------------------------------------------------------


class ClinicCreate(Body):
    name: SingleLine = Field(min_length=1, max_length=200, examples=["Riverside Therapy"])
    slug: str = Field(pattern=SLUG, description="For room links: /r/{slug}/...", examples=["rsd"])
    settings: ClinicSettings = Field(default_factory=ClinicSettings)


class ClinicSuspend(Body):
    reason: str = Field(min_length=1, max_length=500, examples=["unpaid invoice"])


class ApiKeyCreate(Body):
    label: str = Field(min_length=1, max_length=100, examples=["EHR integration"])


class ClinicView(BaseModel):
    clinic_id: str
    name: str
    slug: str
    settings: ClinicSettings
    suspended: bool
    registered_at: datetime
    updated_at: datetime


class ApiKeyView(BaseModel):
    key_id: UUID
    prefix: str = Field(description="The key's first characters.")
    label: str
    issued_at: datetime
    revoked_at: datetime | None


class IssuedApiKey(ApiKeyView):
    key: str = Field(description="The key itself. Shown only now; store it in a secret store.")


# -- clinic ------------------------------------------------------------------------------------


class CallFeaturesPatch(Body):
    """Only the call features given change; see CallFeatures for each one's meaning."""

    waiting_messages: list[SingleLine] | None = None
    guest_replies: bool | None = None
    guest_screen_share: bool | None = None
    recording_consent: RecordingConsent | None = None
    chat_retention_days: int | None = None


class SettingsPatch(Body):
    """Only the settings given change; see ClinicSettings for each one's meaning and range."""

    plan: Plan | None = None
    time_zone: TimeZoneName | None = None
    early_join_minutes: int | None = None
    buffer_minutes: int | None = None
    rejoin_grace_minutes: int | None = None
    reminder_offsets_minutes: list[int] | None = None
    guest_admission: GuestAdmission | None = None
    max_participants: int | None = None
    public_booking: bool | None = None
    loudest_speakers: int | None = None
    call: CallFeaturesPatch | None = None


class PractitionerCreate(Body):
    display_name: SingleLine = personal_data(description="Shown to clients.", **NAME)
    room_slug: str = Field(pattern=SLUG, description="The room link: /r/{clinic}/{room_slug}.")


class PractitionerView(BaseModel):
    practitioner_id: UUID
    display_name: str
    room_id: UUID
    room_slug: str
    room_path: str = Field(description="The practitioner's room link, relative to the site.")
    added_at: datetime


class ContactIn(Body):
    contact_id: UUID | None = Field(default=None, description="Generated when absent.")
    display_name: SingleLine = personal_data(description="The contact's name.", **NAME)
    email: EmailStr = personal_data(description="Where invitations go.")


class ContactView(BaseModel):
    contact_id: UUID
    display_name: str
    email: str


class ClientCreate(Body):
    display_name: SingleLine = personal_data(description="The client's name.", **NAME)
    email: EmailStr | None = personal_data(description="The client's email.", default=None)
    phone: str | None = personal_data(
        description="The client's phone.", default=None, max_length=40
    )
    linked_accounts: list[ContactIn] = Field(default_factory=list, max_length=20)
    alternate_contacts: list[ContactIn] = Field(default_factory=list, max_length=20)


class ClientPatch(Body):
    """Fields given replace the stored ones; contact lists are replaced whole."""

    display_name: SingleLine | None = personal_data(
        description="The client's name.", default=None, **NAME
    )
    email: EmailStr | None = personal_data(description="The client's email.", default=None)
    phone: str | None = personal_data(
        description="The client's phone.", default=None, max_length=40
    )
    linked_accounts: list[ContactIn] | None = Field(default=None, max_length=20)
    alternate_contacts: list[ContactIn] | None = Field(default=None, max_length=20)


class ClientView(BaseModel):
    client_id: UUID
    display_name: str
    email: str | None
    phone: str | None
    linked_accounts: list[ContactView]
    alternate_contacts: list[ContactView]
    added_at: datetime
    updated_at: datetime


class ErasureView(BaseModel):
    """What erasing a client did. Asking again answers the same, with ``already_erased``."""

    client_id: UUID
    erased_at: datetime = Field(description="When the client was erased (the first time).")
    already_erased: bool = Field(description="True: an earlier request erased them.")
    attendee_ids: list[UUID] = Field(
        description="Invitations of the client's contacts, erased with them (this request)."
    )
    room_ids: list[UUID] = Field(
        description="The client's rooms, deleted with them; their links stop working."
    )
    history_in_clear: bool = Field(
        description="True when the client's events were recorded before Antechamber sealed "
        "personal data, and so still hold their details in clear: the operator must remove "
        "those (see docs/architecture.md, Personal data on the bus)."
    )


class RoomCreate(Body):
    practitioner_id: UUID
    title: SingleLine = personal_data(description="Chosen by the practitioner.", **NAME)


class RoomPatch(Body):
    title: SingleLine = personal_data(description="The room's new title.", **NAME)


class RoomView(BaseModel):
    room_id: UUID
    kind: RoomKind
    practitioner_id: UUID
    client_id: UUID | None
    slug: str | None
    title: str
    created_at: datetime


# -- sessions ----------------------------------------------------------------------------------


class SessionCreate(Body):
    practitioner_id: UUID
    client_ids: list[UUID] = Field(min_length=1, max_length=15)
    starts_at: CalendarTime = Field(examples=["2026-12-01T14:00:00+01:00"])
    ends_at: CalendarTime = Field(examples=["2026-12-01T14:50:00+01:00"])
    time_zone: TimeZoneName | None = Field(default=None, description="Default: the clinic's.")
    video_mode: VideoMode | None = Field(
        default=None,
        description="Default: a new session link where the plan includes it, else the "
        "practitioner's room.",
    )
    room_id: UUID | None = Field(default=None, description="The client room, for client_room.")
    link_sharing: bool = Field(default=False, description="Issue a guest link to share.")
    guest_admission: GuestAdmission | None = Field(default=None, description="Default: clinic's.")


class AdHocCreate(Body):
    practitioner_id: UUID
    client_ids: list[UUID] = Field(default_factory=list, max_length=15)
    duration_minutes: int = Field(default=60, ge=5, le=720)
    time_zone: TimeZoneName | None = None
    video_mode: VideoMode = VideoMode.practitioner_room
    room_id: UUID | None = None
    link_sharing: bool = True
    guest_admission: GuestAdmission | None = None


class Reschedule(Body):
    starts_at: CalendarTime
    ends_at: CalendarTime
    time_zone: TimeZoneName | None = Field(default=None, description="Default: unchanged.")


class Cancel(Body):
    reason: str | None = personal_data(
        description="For the clinic's records.", default=None, max_length=500
    )


class AttendeeCreate(Body):
    """Either an email address (anyone), or a client's linked account or alternate contact."""

    email: EmailStr | None = personal_data(description="Anyone's email.", default=None)
    display_name: SingleLine | None = personal_data(
        description="Their name, if known.", default=None, max_length=200
    )
    client_id: UUID | None = None
    contact_id: UUID | None = None

    @model_validator(mode="after")
    def _one_way(self) -> "AttendeeCreate":
        by_email = self.email is not None
        by_contact = self.client_id is not None and self.contact_id is not None
        if by_email == by_contact or (not by_contact and (self.client_id or self.contact_id)):
            raise ValueError("give either email, or both client_id and contact_id")
        return self


class LinkSharing(Body):
    enabled: bool


class AttendeeView(BaseModel):
    attendee_id: UUID
    email: str | None = Field(description="None once erased (with the client whose contact).")
    display_name: str | None
    client_id: UUID | None
    contact_id: UUID | None
    invited_at: datetime


class SessionView(BaseModel):
    session_id: UUID
    practitioner_id: UUID
    client_ids: list[UUID]
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    local_starts_at: datetime = Field(description="The start in the session's time zone.")
    local_ends_at: datetime
    video_mode: VideoMode
    room_id: UUID | None
    link_sharing: bool
    guest_admission: GuestAdmission
    source: SessionSource
    status: str = Field(description="scheduled | live | ended | completed | cancelled")
    completed_because: CompletedBecause | None
    attendees: list[AttendeeView]
    scheduled_at: datetime
    updated_at: datetime


class UpcomingSession(BaseModel):
    session_id: UUID
    practitioner_id: UUID
    starts_at: datetime
    ends_at: datetime
    local_starts_at: datetime
    time_zone: str
    video_mode: VideoMode
    status: str
    join_url: str | None = Field(
        description="The link this client uses for this appointment; null until the links "
        "service has issued it."
    )


class HistoryEntry(BaseModel):
    event_id: UUID
    type: str
    version: int
    occurred_at: datetime
    correlation_id: UUID
    data: dict[str, Any]


# -- public booking ----------------------------------------------------------------------------


class BookingCreate(Body):
    practitioner: str = Field(pattern=SLUG, description="The practitioner's room slug.")
    starts_at: CalendarTime
    ends_at: CalendarTime
    display_name: SingleLine = personal_data(description="Who books.", **NAME)
    email: EmailStr = personal_data(description="Where the invitation goes.")
    phone: str | None = personal_data(description="Optional.", default=None, max_length=40)


class BookingView(BaseModel):
    """A booking's confirmation: everything the booker is told (the join link follows by
    email)."""

    session_id: UUID = Field(description="The booking's reference, to quote to the clinic.")
    practitioner: dict[str, str] = Field(
        description="Whom the session is with: `name` and `slug`, as on the booking page."
    )
    starts_at: datetime
    ends_at: datetime
    local_starts_at: datetime
    time_zone: str
    status: str = Field(description="The invitation with the join link follows by email.")


class PublicClinicView(BaseModel):
    name: str
    time_zone: str
    practitioners: list[dict[str, str]]
