"""Microphones and cameras in the room aggregate: given events -> command -> events."""

from collections.abc import Coroutine
from typing import Any
from uuid import UUID

import pytest

from contracts.events import Event
from contracts.media import MuteCommand, MuteReply, mute_subject
from contracts.signaling import ParticipantMediaChanged
from runtime.refusals import Conflict, Forbidden, NotFound
from services.signaling import domain
from services.signaling.config import SignalingSettings
from services.signaling.mute import Microphones
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    NODE,
    OTHER_GUEST,
    OTHER_HOST,
    ROOM,
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


# --- what signaling tells the media node (``mute.Microphones.after_append``) -----------------


class FakeRooms:
    def __init__(self, room: domain.Room) -> None:
        self.room = room

    async def state(self, room_id: object, clinic_id: str) -> domain.Room:
        return self.room


class FakeReplica:
    def __init__(self, room: domain.Room) -> None:
        self.settings = SignalingSettings()
        self.rooms = FakeRooms(room)
        self.spawned: list[Coroutine[Any, Any, None]] = []

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(work)


class FakeSeats:
    def __init__(self) -> None:
        self.asked: list[tuple[str, MuteCommand]] = []

    async def ask(self, subject: str, request: MuteCommand, answer: type[MuteReply]) -> MuteReply:
        self.asked.append((subject, request))
        return MuteReply(ok=True)


async def told(history: list[Event], events: list[Event]) -> list[tuple[str, UUID, bool]]:
    """What the node hears after ``events`` were appended to ``history``."""
    replica, seats = FakeReplica(fold(history + events)), FakeSeats()
    microphones = Microphones(replica, seats)  # type: ignore[arg-type]
    microphones.after_append(ROOM, "clinic", events)
    for work in replica.spawned:
        await work
    return [(subject, c.participant_id, c.muted) for subject, c in seats.asked]


async def test_the_node_hears_of_a_mute_its_end_and_after_a_move_only_of_mutes_that_hold() -> None:
    history = given(host_enters(), guest_enters(), guest_enters(OTHER_GUEST))
    muted = domain.mute(fold(history), HOST, GUEST)
    assert await told(history, muted) == [(mute_subject(NODE), GUEST, True)]
    history += muted
    # Their own camera going off: nothing for the node.
    off = domain.media_state(fold(history), GUEST, audio_on=False, video_on=False)
    assert await told(history, off) == []
    history += off
    # The call moves to another node: the mute that holds goes with it, nobody else's.
    moved = domain.move_media(fold(history), NODE, "media-2", None)
    assert await told(history, moved) == [(mute_subject("media-2"), GUEST, True)]
    history += moved
    # They turn the microphone on: the node lets their voice through again.
    on = domain.media_state(fold(history), GUEST, audio_on=True, video_on=False)
    assert await told(history, on) == [(mute_subject("media-2"), GUEST, False)]
