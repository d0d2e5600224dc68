"""Microphones and cameras in the room aggregate: given events -> command -> events."""

import pytest

from contracts.signaling import ParticipantMediaChanged
from runtime.refusals import Conflict, Forbidden, NotFound
from services.signaling import domain
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    OTHER_GUEST,
    OTHER_HOST,
    fold,
    given,
    guest_enters,
    guest_knocks,
    host_enters,
)


def changed(audio: bool, video: bool, by: object = None, pid: object = GUEST) -> object:
    return ParticipantMediaChanged(**IDS, participant_id=pid, audio_on=audio, video_on=video, by=by)


def test_everyone_starts_on_and_a_change_is_recorded_once() -> None:
    room = fold(given(host_enters(), guest_enters()))
    assert (room.people[GUEST].audio_on, room.people[GUEST].video_on) == (True, True)
    events = domain.media_state(room, GUEST, audio_on=False, video_on=True)
    assert events == [changed(False, True)]
    room = fold(given(host_enters(), guest_enters()) + events)
    assert domain.media_state(room, GUEST, audio_on=False, video_on=True) == []
    assert domain.media_state(room, GUEST, audio_on=False, video_on=False) == [
        changed(False, False)
    ]


def test_a_waiting_guest_has_no_state_to_show_yet() -> None:
    room = fold(given(host_enters(), guest_knocks()))
    with pytest.raises(Conflict) as refused:
        domain.media_state(room, GUEST, audio_on=False, video_on=False)
    assert refused.value.code == "not_in_call"
    with pytest.raises(NotFound):
        domain.media_state(room, OTHER_GUEST, audio_on=False, video_on=False)


def test_a_hosts_mute_holds_until_they_turn_the_microphone_on_themselves() -> None:
    history = given(host_enters(), guest_enters())
    muted = domain.mute(fold(history), HOST, GUEST)
    assert muted == [changed(False, True, by=HOST)]
    history += muted
    room = fold(history)
    assert room.people[GUEST].muted_by == HOST
    assert domain.mute(room, HOST, GUEST) == []  # holds already: nothing new
    # Their camera going off keeps the mute.
    history += domain.media_state(room, GUEST, audio_on=False, video_on=False)
    assert fold(history).people[GUEST].muted_by == HOST
    # The microphone on again, by them: the mute is lifted.
    history += domain.media_state(fold(history), GUEST, audio_on=True, video_on=False)
    assert history[-1] == changed(True, False)
    assert fold(history).people[GUEST].muted_by is None


def test_a_host_may_mute_someone_whose_page_says_the_microphone_is_off() -> None:
    history = given(host_enters(), guest_enters())
    history += domain.media_state(fold(history), GUEST, audio_on=False, video_on=True)
    assert domain.mute(fold(history), HOST, GUEST) == [changed(False, True, by=HOST)]


def test_who_may_mute_whom() -> None:
    room = fold(given(host_enters(), host_enters(OTHER_HOST), guest_enters()))
    with pytest.raises(Forbidden):
        domain.mute(room, GUEST, HOST)  # a guest
    with pytest.raises(Conflict) as refused:
        domain.mute(room, HOST, HOST)
    assert refused.value.code == "mute_self"
    # Another host may be muted (their open microphone may echo).
    assert domain.mute(room, HOST, OTHER_HOST) == [changed(False, True, HOST, OTHER_HOST)]
    waiting = fold(given(host_enters(), guest_knocks()))
    with pytest.raises(Conflict) as refused:
        domain.mute(waiting, HOST, GUEST)
    assert refused.value.code == "not_in_call"


def test_asking_to_unmute_changes_nothing_and_needs_a_microphone_that_is_off() -> None:
    history = given(host_enters(), guest_enters())
    with pytest.raises(Conflict) as refused:
        domain.check_ask_unmute(fold(history), HOST, GUEST)
    assert refused.value.code == "microphone_on"
    history += domain.mute(fold(history), HOST, GUEST)
    domain.check_ask_unmute(fold(history), HOST, GUEST)  # allowed; no event exists for it
    with pytest.raises(Forbidden):
        domain.check_ask_unmute(fold(history), GUEST, HOST)
    with pytest.raises(Conflict):
        domain.check_ask_unmute(fold(history), HOST, HOST)
