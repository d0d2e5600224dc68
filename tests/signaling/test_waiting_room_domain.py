"""Talking to the waiting room, admit all and sending back, as given events -> command ->
events, with no server."""

from datetime import timedelta

import pytest

from contracts.signaling import (
    ParticipantSentToWaitingRoom,
    WaitingGuestReplied,
    WaitingRoomMessaged,
)
from runtime.refusals import Refused
from services.signaling import domain
from services.signaling.domain import Status
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    OTHER_GUEST,
    OTHER_HOST,
    T0,
    THIRD_GUEST,
    fold,
    given,
    guest_knocks,
    host_admits,
    host_enters,
)


def refused(code: str, decide: object) -> None:
    with pytest.raises(Refused) as caught:
        decide()  # type: ignore[operator]
    assert caught.value.code == code


def test_a_host_writes_to_one_guest_or_everyone_waiting_in_the_order_they_came() -> None:
    room = fold(given(host_enters(), guest_knocks(OTHER_GUEST), guest_knocks(GUEST)))
    assert domain.message_waiting(room, HOST, GUEST, canned=False) == [
        WaitingRoomMessaged(**IDS, by=HOST, participant_ids=[GUEST], canned=False)
    ]
    [to_all] = domain.message_waiting(room, HOST, None, canned=True)
    assert isinstance(to_all, WaitingRoomMessaged)
    assert set(to_all.participant_ids) == {GUEST, OTHER_GUEST}
    after = domain.evolve(room, to_all)
    assert all(p.attended for p in after.waiting())
    assert not any(p.attended for p in room.waiting())


def test_what_a_message_to_the_waiting_room_refuses() -> None:
    room = fold(given(host_enters(), guest_knocks(), host_admits()))
    refused("nobody_waiting", lambda: domain.message_waiting(room, HOST, None, canned=False))
    refused("not_waiting", lambda: domain.message_waiting(room, HOST, GUEST, canned=False))
    refused("only_hosts", lambda: domain.message_waiting(room, GUEST, None, canned=False))
    refused("participant_not_found", lambda: domain.message_waiting(room, HOST, THIRD_GUEST, False))


def test_a_waiting_guest_replies_only_when_allowed_and_a_host_is_in() -> None:
    early = fold(given(guest_knocks()))
    refused("no_host_in_call", lambda: domain.reply_waiting(early, GUEST, allowed=True))
    room = fold(given(guest_knocks(), host_enters(), guest_knocks(OTHER_GUEST)))
    refused("replies_off", lambda: domain.reply_waiting(room, GUEST, allowed=False))
    assert domain.reply_waiting(room, GUEST, allowed=True) == [
        WaitingGuestReplied(**IDS, participant_id=GUEST)
    ]
    refused("not_waiting", lambda: domain.reply_waiting(room, HOST, allowed=True))


def test_admit_all_takes_everyone_waiting_in_order_but_not_those_whose_connection_is_down() -> None:
    history = given(
        host_enters(),
        guest_knocks(GUEST),
        guest_knocks(OTHER_GUEST),
        guest_knocks(THIRD_GUEST),
        lambda r: domain.hold(r, HOST, OTHER_GUEST, ""),
        lambda r: domain.disconnected(r, THIRD_GUEST, T0 + timedelta(minutes=1)),
    )
    room = fold(history)
    assert domain.to_admit_all(room, HOST) == [GUEST, OTHER_GUEST]
    refused("only_hosts", lambda: domain.to_admit_all(room, GUEST))


def test_a_guest_sent_back_waits_as_they_came_with_no_seat_and_can_be_admitted_again() -> None:
    history = given(host_enters(), guest_knocks(), host_admits())
    room = fold(history)
    came = room.people[GUEST].since
    events = domain.send_to_waiting_room(room, HOST, GUEST, "One moment")
    assert events == [
        ParticipantSentToWaitingRoom(**IDS, participant_id=GUEST, by=HOST, message="One moment")
    ]
    back = fold(history + events)
    guest = back.people[GUEST]
    assert (guest.status, guest.media_node, guest.since) == (Status.waiting, None, came)
    assert (guest.sent_back, guest.attended, guest.hold_message) == (True, True, "One moment")
    assert [p.participant_id for p in back.in_call()] == [HOST]

    again = fold(history + events + host_admits()(back))
    assert again.people[GUEST].status is Status.in_call
    assert not again.people[GUEST].sent_back


def test_what_sending_back_refuses() -> None:
    room = fold(given(host_enters(), host_enters(OTHER_HOST), guest_knocks()))
    refused(
        "cannot_send_back_host", lambda: domain.send_to_waiting_room(room, HOST, OTHER_HOST, "")
    )
    refused("send_back_self", lambda: domain.send_to_waiting_room(room, HOST, HOST, ""))
    refused("not_in_call", lambda: domain.send_to_waiting_room(room, HOST, GUEST, ""))
    refused("only_hosts", lambda: domain.send_to_waiting_room(room, GUEST, HOST, ""))
