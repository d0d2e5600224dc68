"""Recording consent in the room aggregate, as given events -> command -> events: who is asked,
when a request may start, a decline, a lapse, a withdrawal, and arrivals asked in the same
append as their arrival."""

from datetime import timedelta
from uuid import UUID

from contracts.signaling import (
    ConsentStatus,
    LeftBecause,
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
from runtime.refusals import Conflict, Forbidden
from services.signaling import domain
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    NODE,
    OTHER_GUEST,
    T0,
    THIRD_GUEST,
    Step,
    fold,
    given,
    guest_knocks,
    host_admits,
    host_enters,
    refusal,
)

REQUEST, RECORDING = UUID(int=100), UUID(int=101)
ANSWER_BY = T0 + timedelta(seconds=60)


def asks(by: UUID = HOST) -> Step:
    return lambda r: domain.request_recording(r, by, REQUEST, ANSWER_BY)


def answers(pid: UUID, given: bool = True) -> Step:
    return lambda r: domain.answer_consent(r, pid, REQUEST, given)


def starts() -> Step:
    return lambda r: domain.start_consented_recording(r, REQUEST, RECORDING, NODE)


def in_call_with_two_guests() -> list[Step]:
    return [
        host_enters(),
        guest_knocks(GUEST),
        host_admits(GUEST),
        guest_knocks(OTHER_GUEST),
        host_admits(OTHER_GUEST),
    ]


def test_everyone_else_in_the_room_is_asked_and_the_start_waits_for_those_in_the_call() -> None:
    history = given(*in_call_with_two_guests(), guest_knocks(THIRD_GUEST))
    assert asks()(fold(history)) == [
        RecordingRequested(
            **IDS,
            request_id=REQUEST,
            by=HOST,
            policy=RecordingConsent.all,
            asked=[GUEST, OTHER_GUEST, THIRD_GUEST],
            answer_by=ANSWER_BY,
        )
    ]
    asked = given(*in_call_with_two_guests(), guest_knocks(THIRD_GUEST), asks())
    assert answers(GUEST)(fold(asked)) == [
        RecordingConsentGiven(**IDS, participant_id=GUEST, request_id=REQUEST)
    ]
    history = asked + answers(GUEST)(fold(asked))
    room = fold(history)
    assert not domain.ready_to_record(room)
    refusal("consent_pending", Conflict, lambda: starts()(room))
    refusal("consent_pending", Conflict, lambda: asks()(room))  # one request at a time

    room = fold(history + answers(OTHER_GUEST)(room))
    assert domain.ready_to_record(room)  # the waiting guest does not hold it back
    assert starts()(room) == [
        RecordingStarted(
            **IDS, recording_id=RECORDING, media_node=NODE, by=HOST, request_id=REQUEST
        )
    ]
    assert answers(GUEST)(room) == []  # consenting twice records nothing more


def test_someone_who_leaves_no_longer_holds_the_start() -> None:
    history = given(*in_call_with_two_guests(), asks(), answers(GUEST))
    room = fold(history)
    assert [p.participant_id for p in domain.unanswered(room)] == [OTHER_GUEST]
    left = domain.leave(room, OTHER_GUEST, LeftBecause.left, T0)
    assert domain.ready_to_record(fold(history + left))


def test_a_decline_ends_the_request_or_stops_the_recording() -> None:
    room = fold(given(*in_call_with_two_guests(), asks()))
    assert answers(GUEST, False)(room) == [
        RecordingConsentDeclined(**IDS, participant_id=GUEST, request_id=REQUEST)
    ]
    declined = fold(given(*in_call_with_two_guests(), asks(), answers(GUEST, False)))
    assert declined.consent is not None
    assert declined.consent.status is ConsentStatus.declined
    assert not domain.ready_to_record(declined)
    refusal("consent_not_asked", Conflict, lambda: answers(GUEST)(declined))

    recording = given(
        *in_call_with_two_guests(), asks(), answers(GUEST), answers(OTHER_GUEST), starts()
    )
    assert answers(GUEST, False)(fold(recording)) == [  # consent taken back
        RecordingConsentDeclined(**IDS, participant_id=GUEST, request_id=REQUEST),
        RecordingStopped(
            **IDS,
            recording_id=RECORDING,
            media_node=NODE,
            because=RecordingStoppedBecause.consent_declined,
            by=GUEST,
        ),
    ]


def test_whoever_arrives_meanwhile_is_asked_in_the_same_append() -> None:
    history = given(host_enters(), asks(), starts())
    assert guest_knocks(GUEST)(fold(history))[1:] == [
        RecordingConsentAsked(**IDS, participant_id=GUEST, request_id=REQUEST)
    ]
    room = fold(history + guest_knocks(GUEST)(fold(history)))
    assert room.consent is not None
    assert room.consent.pending() == [GUEST]
    # Under notice nobody is asked, on arrival either.
    notice = given(
        host_enters(),
        lambda r: domain.record_with_notice(r, HOST, REQUEST, RECORDING, NODE, T0),
    )
    assert guest_knocks(GUEST)(fold(notice))[1:] == []


def test_a_request_lapses_when_someone_in_the_call_has_not_answered_in_time() -> None:
    room = fold(given(*in_call_with_two_guests(), asks(), answers(GUEST)))
    assert domain.lapse_consent(room, ANSWER_BY - timedelta(seconds=1)) == []
    assert domain.lapse_consent(room, ANSWER_BY) == [
        RecordingRequestLapsed(**IDS, request_id=REQUEST, unanswered=[OTHER_GUEST])
    ]
    everyone = fold(given(*in_call_with_two_guests(), asks(), answers(GUEST), answers(OTHER_GUEST)))
    assert domain.lapse_consent(everyone, ANSWER_BY) == []  # it starts instead


def test_a_host_withdraws_a_waiting_request_and_only_hosts_ask() -> None:
    room = fold(given(*in_call_with_two_guests(), asks()))
    assert domain.stop_recording(room, HOST) == [
        RecordingRequestCancelled(**IDS, request_id=REQUEST, by=HOST)
    ]
    refusal("only_hosts", Forbidden, lambda: asks(GUEST)(room))
    refusal("consent_not_asked", Conflict, lambda: answers(HOST)(room))  # asking is consenting
