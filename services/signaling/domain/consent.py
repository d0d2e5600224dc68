"""Recording consent: a host asks to record, everyone else answers, the recording starts
once everyone in the call consented (policy ``all``) or at once with a notice (``notice``)."""

from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    ConsentStatus,
    RecordingConsent,
    RecordingConsentAsked,
    RecordingConsentDeclined,
    RecordingConsentGiven,
    RecordingRequestCancelled,
    RecordingRequested,
    RecordingRequestLapsed,
    RecordingStarted,
    RecordingStopped,
    RecordingStoppedBecause,
)
from runtime.refusals import Conflict
from services.signaling.domain.recording import (
    ALREADY_RECORDING,
    CONSENT_PENDING,
    check_start_recording,
)
from services.signaling.domain.room import NOT_HERE, Person, Room, event_ids


@dataclass(frozen=True)
class ConsentRequest:
    """A host's request to record, and the answers so far."""

    request_id: UUID
    by: UUID
    policy: RecordingConsent
    answer_by: datetime
    asked: dict[UUID, str]
    """Who was asked (the asking host is not: asking is consenting), with their name then."""
    by_name: str = ""
    given: frozenset[UUID] = frozenset()
    declined: frozenset[UUID] = frozenset()
    status: ConsentStatus = ConsentStatus.asking
    started: bool = False
    """The recording it asked for started (a decline then stopped it)."""

    @property
    def open(self) -> bool:
        """Asking, or recording: whoever arrives is asked too."""
        return self.status in (ConsentStatus.asking, ConsentStatus.recording)

    def pending(self) -> list[UUID]:
        return [p for p in self.asked if p not in self.given and p not in self.declined]


NOT_ASKED = Conflict("consent_not_asked", "There is no request to record for you to answer.")


def asked_on_arrival(room: Room, participant_id: UUID, session_id: UUID | None) -> list[Event]:
    """Whoever arrives while a recording is asked for or on (policy ``all``) is asked too,
    in the same append as their arrival: nobody enters unasked."""
    asking = room.consent
    if asking is None or not asking.open or asking.policy is not RecordingConsent.all:
        return []
    if participant_id in asking.asked or participant_id == asking.by:
        return []
    return [
        RecordingConsentAsked(
            room_id=room.room_id,
            session_id=session_id or room.session_id,
            participant_id=participant_id,
            request_id=asking.request_id,
        )
    ]


def request_recording(room: Room, by: UUID, request_id: UUID, answer_by: datetime) -> list[Event]:
    """A host asks to record under the policy ``all``: everyone else in the room, in the call
    or waiting, is asked (those in the call must all consent before it starts)."""
    check_start_recording(room, by)
    asked = [pid for pid in room.people if pid != by]
    return [
        RecordingRequested(
            **event_ids(room),
            request_id=request_id,
            by=by,
            policy=RecordingConsent.all,
            asked=asked,
            answer_by=answer_by,
        )
    ]


def record_with_notice(
    room: Room, by: UUID, request_id: UUID, recording_id: UUID, media_node: str, now: datetime
) -> list[Event]:
    """A host records at once under the policy ``notice``: everyone is told, nobody asked."""
    check_start_recording(room, by)
    ids = event_ids(room)
    return [
        RecordingRequested(
            **ids,
            request_id=request_id,
            by=by,
            policy=RecordingConsent.notice,
            asked=[],
            answer_by=now,
        ),
        RecordingStarted(
            **ids, recording_id=recording_id, media_node=media_node, by=by, request_id=request_id
        ),
    ]


def unanswered(room: Room) -> list[Person]:
    """People in the call asked to consent who have not answered (those waiting do not hold
    a recording back: they are asked again by their page before their media connects)."""
    asking = room.consent
    if asking is None or not asking.open:
        return []
    pending = set(asking.pending())
    return [p for p in room.in_call() if p.participant_id in pending]


def awaiting_consent(room: Room, participant_id: UUID) -> bool:
    """A recording is on under the policy ``all`` and this person, asked, has not answered:
    their media may not connect yet (a page asks first; signaling refuses their offers)."""
    asking = room.consent
    return (
        room.recording is not None
        and asking is not None
        and asking.policy is RecordingConsent.all
        and asking.status is ConsentStatus.recording
        and participant_id in asking.pending()
    )


CONSENT_NEEDED = Conflict(
    "consent_needed",
    "This call is being recorded: answer whether you consent before your camera and "
    "microphone connect.",
)


def ready_to_record(room: Room) -> bool:
    """Everyone in the call has consented to the request that asks: it may start now."""
    asking = room.consent
    return (
        asking is not None
        and asking.status is ConsentStatus.asking
        and room.live
        and room.recording is None
        and room.host_in_call()
        and not unanswered(room)
    )


def start_consented_recording(
    room: Room, request_id: UUID, recording_id: UUID, media_node: str
) -> list[Event]:
    asking = room.consent
    if (
        asking is None
        or asking.request_id != request_id
        or asking.status is not ConsentStatus.asking
    ):
        raise NOT_ASKED
    if room.recording is not None:
        raise ALREADY_RECORDING
    if not ready_to_record(room):
        raise CONSENT_PENDING
    return [
        RecordingStarted(
            **event_ids(room),
            recording_id=recording_id,
            media_node=media_node,
            by=asking.by,
            request_id=request_id,
        )
    ]


def answer_consent(room: Room, participant_id: UUID, request_id: UUID, given: bool) -> list[Event]:
    """Someone asked answers. A decline ends the request, and stops the recording if it is on
    (someone who consented may still decline later)."""
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    asking = room.consent
    if (
        asking is None
        or asking.request_id != request_id
        or not asking.open
        or participant_id not in asking.asked
    ):
        raise NOT_ASKED
    ids = {**event_ids(room, person), "participant_id": participant_id, "request_id": request_id}
    if given:
        return [] if participant_id in asking.given else [RecordingConsentGiven(**ids)]
    events: list[Event] = [RecordingConsentDeclined(**ids)]
    if room.recording is not None:
        events.append(
            RecordingStopped(
                **event_ids(room),
                recording_id=room.recording,
                media_node=room.recording_node,
                because=RecordingStoppedBecause.consent_declined,
                by=participant_id,
            )
        )
    return events


def lapse_consent(room: Room, now: datetime) -> list[Event]:
    """The request's time is up and someone in the call has not answered: it lapses."""
    asking = room.consent
    if asking is None or asking.status is not ConsentStatus.asking or asking.answer_by > now:
        return []
    late = unanswered(room)
    if not late:
        return []  # everyone in the call consented: it starts instead
    return [
        RecordingRequestLapsed(
            **event_ids(room),
            request_id=asking.request_id,
            unanswered=[p.participant_id for p in late],
        )
    ]


def consent_folded(room: Room, event: Event) -> Room:
    asking = room.consent
    match event:
        case RecordingRequested():
            names = {pid: p.display_name for pid, p in room.people.items()}
            asked = {pid: names.get(pid, "") for pid in event.asked}
            request = ConsentRequest(
                event.request_id,
                event.by,
                event.policy,
                event.answer_by,
                asked,
                by_name=names.get(event.by, ""),
            )
            return replace(room, consent=request)
    # RecordingStopped names no request: it ends whichever recording is on.
    if asking is None or getattr(event, "request_id", asking.request_id) != asking.request_id:
        return room
    match event:
        case RecordingConsentAsked():
            person = room.people.get(event.participant_id)
            name = person.display_name if person else ""
            asking = replace(asking, asked={**asking.asked, event.participant_id: name})
        case RecordingConsentGiven():
            asking = replace(asking, given=asking.given | {event.participant_id})
        case RecordingConsentDeclined():
            asking = replace(
                asking,
                given=asking.given - {event.participant_id},
                declined=asking.declined | {event.participant_id},
                status=ConsentStatus.declined,
            )
        case RecordingRequestLapsed():
            asking = replace(asking, status=ConsentStatus.lapsed)
        case RecordingRequestCancelled():
            asking = replace(asking, status=ConsentStatus.cancelled)
        case RecordingStarted():
            asking = replace(asking, status=ConsentStatus.recording, started=True)
        case RecordingStopped() if asking.status is ConsentStatus.recording:
            asking = replace(asking, status=ConsentStatus.stopped)
    return replace(room, consent=asking)
