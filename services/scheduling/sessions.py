"""The session aggregate: an appointment from scheduling to completion.

``status`` moves scheduled -> live -> ended | completed, or to cancelled. "Ended" means
everyone left before the scheduled end: not completed on its own; the host may complete it.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

from contracts.events import Event
from contracts.scheduling import (
    MAX_SESSION_HOURS,
    PLAN_VIDEO_MODES,
    AttendeeInvited,
    AttendeeRemoved,
    ClinicSettings,
    CompletedBecause,
    GuestAdmission,
    LinkSharingDisabled,
    LinkSharingEnabled,
    RoomKind,
    SessionCancelled,
    SessionCompleted,
    SessionEndedEarly,
    SessionRecordingConsentAsked,
    SessionRecordingConsentDeclined,
    SessionRecordingConsentGiven,
    SessionRecordingRequestCancelled,
    SessionRecordingRequested,
    SessionRecordingRequestLapsed,
    SessionRecordingStarted,
    SessionRecordingStopped,
    SessionRescheduled,
    SessionScheduled,
    SessionSource,
    SessionWentLive,
    VideoMode,
)
from contracts.signaling import (
    EndedBecause,
    RecordingConsentAsked,
    RecordingConsentDeclined,
    RecordingConsentGiven,
    RecordingRequestCancelled,
    RecordingRequested,
    RecordingRequestLapsed,
    RecordingStarted,
    RecordingStopped,
)
from runtime.refusals import Conflict, Invalid, not_found
from services.scheduling.domain import NotInPlan, Room

PAST_TOLERANCE = timedelta(minutes=1)
"""A start this little in the past is 'now' (clocks and typing differ)."""


class Status(StrEnum):
    scheduled = "scheduled"
    live = "live"
    ended = "ended"
    completed = "completed"
    cancelled = "cancelled"


@dataclass(frozen=True)
class Attendee:
    attendee_id: UUID
    email: str
    display_name: str | None
    client_id: UUID | None
    contact_id: UUID | None


@dataclass(frozen=True)
class Session:
    session_id: UUID
    practitioner_id: UUID
    client_ids: tuple[UUID, ...]
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    video_mode: VideoMode
    room_id: UUID | None
    link_sharing: bool
    guest_admission: GuestAdmission
    source: SessionSource
    status: Status = Status.scheduled
    attendees: dict[UUID, Attendee] = field(default_factory=dict)

    def participants(self) -> int:
        """Seats the invitations ask for: the practitioner, the clients, the attendees."""
        return 1 + len(self.client_ids) + len(self.attendees)


def evolve_session(state: Session | None, event: Event) -> Session | None:
    if isinstance(event, SessionScheduled):
        fields = set(Session.__dataclass_fields__) & set(SessionScheduled.model_fields)
        return Session(**{name: getattr(event, name) for name in fields})
    if state is None:
        return None
    match event:
        case SessionRescheduled():
            return replace(
                state, starts_at=event.starts_at, ends_at=event.ends_at, time_zone=event.time_zone
            )
        case SessionCancelled():
            return replace(state, status=Status.cancelled)
        case AttendeeInvited():
            attendee = Attendee(
                event.attendee_id,
                event.email,
                event.display_name,
                event.client_id,
                event.contact_id,
            )
            return replace(state, attendees={**state.attendees, event.attendee_id: attendee})
        case AttendeeRemoved():
            rest = {k: v for k, v in state.attendees.items() if k != event.attendee_id}
            return replace(state, attendees=rest)
        case LinkSharingEnabled():
            return replace(state, link_sharing=True)
        case LinkSharingDisabled():
            return replace(state, link_sharing=False)
        case SessionWentLive():
            return replace(state, status=Status.live)
        case SessionEndedEarly():
            return replace(state, status=Status.ended)
        case SessionCompleted():
            return replace(state, status=Status.completed)
    return state


@dataclass(frozen=True)
class Appointment:
    """What a caller asks for when scheduling."""

    session_id: UUID
    practitioner_id: UUID
    client_ids: tuple[UUID, ...]
    starts_at: datetime
    ends_at: datetime
    time_zone: str
    video_mode: VideoMode
    room: Room | None
    link_sharing: bool
    guest_admission: GuestAdmission
    source: SessionSource


def _check_times(starts_at: datetime, ends_at: datetime, now: datetime, *, ad_hoc: bool) -> None:
    if ends_at <= starts_at:
        raise Invalid("end_before_start", "The session must end after it starts.")
    if ends_at - starts_at > timedelta(hours=MAX_SESSION_HOURS):
        raise Invalid("session_too_long", f"A session may last at most {MAX_SESSION_HOURS} hours.")
    if not ad_hoc and starts_at < now - PAST_TOLERANCE:
        raise Invalid(
            "starts_in_the_past",
            "The start is in the past; to meet now, start an ad-hoc session instead.",
        )


def _check_cap(participants: int, settings: ClinicSettings) -> None:
    if participants > settings.max_participants:
        raise Invalid(
            "too_many_participants",
            f"This would invite {participants} people (practitioner included), but calls in "
            f"this clinic hold at most {settings.max_participants}.",
        )


def schedule_session(
    state: Session | None, appointment: Appointment, settings: ClinicSettings, now: datetime
) -> list[Event]:
    a = appointment
    if state is not None:
        raise Conflict("session_exists", "That session already exists.")
    ad_hoc = a.source is SessionSource.ad_hoc
    _check_times(a.starts_at, a.ends_at, now, ad_hoc=ad_hoc)
    if len(set(a.client_ids)) != len(a.client_ids):
        raise Invalid("duplicate_client", "A client is listed twice.")
    if not a.client_ids and not ad_hoc:
        raise Invalid("no_client", "An appointment needs at least one client.")
    _check_cap(1 + len(a.client_ids), settings)
    if a.video_mode not in PLAN_VIDEO_MODES[settings.plan]:
        raise NotInPlan(
            "plan_excludes_video_mode",
            f"The {settings.plan} plan does not include the video mode {a.video_mode}; "
            "use the practitioner's room or a client room, or upgrade the plan.",
        )
    _check_room(a)
    return [
        SessionScheduled(
            session_id=a.session_id,
            practitioner_id=a.practitioner_id,
            client_ids=a.client_ids,
            starts_at=a.starts_at,
            ends_at=a.ends_at,
            time_zone=a.time_zone,
            video_mode=a.video_mode,
            room_id=a.room.room_id if a.room else None,
            link_sharing=a.link_sharing,
            guest_admission=a.guest_admission,
            source=a.source,
        )
    ]


def _check_room(a: Appointment) -> None:
    if a.video_mode is VideoMode.session_link:
        if a.room is not None:
            raise Invalid("room_not_used", "A session link needs no room; leave room_id out.")
        return
    if a.room is None or a.room.deleted:
        raise not_found("room")
    if a.room.practitioner_id != a.practitioner_id and a.room.kind is RoomKind.practitioner:
        raise Invalid("room_of_another_practitioner", "That room belongs to another practitioner.")
    if a.video_mode is VideoMode.practitioner_room and a.room.kind is not RoomKind.practitioner:
        raise Invalid("not_a_practitioner_room", "That room is a client room.")
    if a.video_mode is VideoMode.client_room:
        if a.room.kind is not RoomKind.client:
            raise Invalid("not_a_client_room", "That room is a practitioner's room.")
        if a.room.client_id not in a.client_ids:
            raise Invalid(
                "room_of_another_client", "That client room belongs to a client not in the session."
            )


def pending(state: Session | None) -> Session:
    """The session, if it can still be changed (not cancelled, not over)."""
    if state is None:
        raise not_found("session")
    if state.status is Status.cancelled:
        raise Conflict("session_cancelled", "The session was cancelled.")
    if state.status is Status.completed:
        raise Conflict("session_completed", "The session is already completed.")
    return state


def reschedule_session(
    state: Session | None, starts_at: datetime, ends_at: datetime, time_zone: str, now: datetime
) -> list[Event]:
    session = pending(state)
    if session.status is not Status.scheduled:
        raise Conflict("session_started", "The session has already taken place or is live.")
    _check_times(starts_at, ends_at, now, ad_hoc=False)
    if (starts_at, ends_at, time_zone) == (session.starts_at, session.ends_at, session.time_zone):
        return []
    return [
        SessionRescheduled(
            session_id=session.session_id,
            starts_at=starts_at,
            ends_at=ends_at,
            time_zone=time_zone,
            previous_starts_at=session.starts_at,
            previous_ends_at=session.ends_at,
        )
    ]


def cancel_session(state: Session | None, reason: str | None) -> list[Event]:
    session = pending(state)
    if session.status is Status.live:
        raise Conflict("session_live", "The session is live; end it for all from the call.")
    return [SessionCancelled(session_id=session.session_id, reason=reason)]


def invite_attendee(
    state: Session | None, attendee: Attendee, settings: ClinicSettings
) -> list[Event]:
    session = pending(state)
    if attendee.client_id is not None and attendee.client_id not in session.client_ids:
        raise Invalid("client_not_in_session", "That contact's client is not in this session.")
    email = attendee.email.casefold()
    if any(a.email.casefold() == email for a in session.attendees.values()):
        raise Conflict("already_invited", "Someone with that email is already invited.")
    _check_cap(session.participants() + 1, settings)
    return [
        AttendeeInvited(
            session_id=session.session_id,
            attendee_id=attendee.attendee_id,
            email=attendee.email,
            display_name=attendee.display_name,
            client_id=attendee.client_id,
            contact_id=attendee.contact_id,
            while_live=session.status is Status.live,
        )
    ]


def remove_attendee(state: Session | None, attendee_id: UUID) -> list[Event]:
    session = pending(state)
    if attendee_id not in session.attendees:
        raise not_found("attendee")
    return [AttendeeRemoved(session_id=session.session_id, attendee_id=attendee_id)]


def set_link_sharing(state: Session | None, enabled: bool) -> list[Event]:
    session = pending(state)
    if session.link_sharing == enabled:
        return []
    event = LinkSharingEnabled if enabled else LinkSharingDisabled
    return [event(session_id=session.session_id)]


def mark_complete(state: Session | None) -> list[Event]:
    session = pending(state)
    if session.status is Status.live:
        raise Conflict("session_live", "The session is live; end it for all from the call.")
    if session.status is Status.scheduled:
        raise Conflict("session_not_held", "The session has not taken place yet.")
    return [
        SessionCompleted(session_id=session.session_id, because=CompletedBecause.marked_by_host)
    ]


# -- what signaling reports --------------------------------------------------------------------


def call_started(state: Session | None) -> list[Event]:
    if state is None or state.status not in (Status.scheduled, Status.ended):
        return []
    return [SessionWentLive(session_id=state.session_id)]


def call_ended(state: Session | None, because: EndedBecause, ended_at: datetime) -> list[Event]:
    if state is None or state.status is not Status.live:
        return []
    if because is EndedBecause.ended_for_all:
        return [
            SessionCompleted(session_id=state.session_id, because=CompletedBecause.ended_for_all)
        ]
    if ended_at >= state.ends_at:
        return [
            SessionCompleted(
                session_id=state.session_id, because=CompletedBecause.last_participant_left
            )
        ]
    return [SessionEndedEarly(session_id=state.session_id)]


_RECORDING_TRAIL: dict[type[Event], type[Event]] = {
    RecordingRequested: SessionRecordingRequested,
    RecordingConsentAsked: SessionRecordingConsentAsked,
    RecordingConsentGiven: SessionRecordingConsentGiven,
    RecordingConsentDeclined: SessionRecordingConsentDeclined,
    RecordingRequestLapsed: SessionRecordingRequestLapsed,
    RecordingRequestCancelled: SessionRecordingRequestCancelled,
    RecordingStarted: SessionRecordingStarted,
    RecordingStopped: SessionRecordingStopped,
}
"""Signaling's recording event -> the session's own, whose fields it copies by name."""


def recording_noted(state: Session | None, event: Event) -> list[Event]:
    """The session's audit trail of recording consent: each request to record its call, each
    answer and each recording, as signaling reported them."""
    noted = _RECORDING_TRAIL.get(type(event))
    if state is None or noted is None:
        return []
    copied = {name: getattr(event, name) for name in noted.model_fields if name != "session_id"}
    return [noted.model_validate({**copied, "session_id": state.session_id})]
    sid = state.session_id
    match event:
        case RecordingRequested():
            return [
                SessionRecordingRequested(
                    session_id=sid,
                    request_id=event.request_id,
                    by=event.by,
                    policy=event.policy,
                    asked=event.asked,
                )
            ]
        case RecordingConsentAsked():
            return [
                SessionRecordingConsentAsked(
                    session_id=sid, request_id=event.request_id, participant_id=event.participant_id
                )
            ]
        case RecordingConsentGiven():
            return [
                SessionRecordingConsentGiven(
                    session_id=sid, request_id=event.request_id, participant_id=event.participant_id
                )
            ]
        case RecordingConsentDeclined():
            return [
                SessionRecordingConsentDeclined(
                    session_id=sid, request_id=event.request_id, participant_id=event.participant_id
                )
            ]
        case RecordingRequestLapsed():
            return [
                SessionRecordingRequestLapsed(
                    session_id=sid, request_id=event.request_id, unanswered=event.unanswered
                )
            ]
        case RecordingRequestCancelled():
            return [
                SessionRecordingRequestCancelled(
                    session_id=sid, request_id=event.request_id, by=event.by
                )
            ]
        case RecordingStarted():
            return [
                SessionRecordingStarted(
                    session_id=sid,
                    recording_id=event.recording_id,
                    request_id=event.request_id,
                    by=event.by,
                )
            ]
        case RecordingStopped():
            return [
                SessionRecordingStopped(
                    session_id=sid,
                    recording_id=event.recording_id,
                    because=event.because,
                    by=event.by,
                )
            ]
    return []
