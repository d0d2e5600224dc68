"""A call whose media node died moves to another node (given events -> command -> events)."""

from uuid import UUID

from contracts.signaling import (
    MediaMoved,
    RecordingStopped,
    RecordingStoppedBecause,
)
from services.signaling import domain
from services.signaling.domain import Status
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    NODE,
    OTHER_GUEST,
    THIRD_GUEST,
    drops,
    fold,
    given,
    guest_enters,
    guest_knocks,
    host_enters,
)

NEW_NODE, NEW_URL = "media-2", "https://media-2.example"
RECORDING = UUID(int=99)


def test_everyone_in_the_call_on_the_dead_node_moves_and_keeps_their_place() -> None:
    history = given(
        host_enters(),
        guest_enters(GUEST),
        guest_enters(OTHER_GUEST),
        drops(OTHER_GUEST),  # within their rejoin grace: they move too
        guest_knocks(THIRD_GUEST),  # waiting: no seat, nothing to move
    )
    room = fold(history)
    assert domain.on_dead_nodes(room, {NEW_NODE}) == {NODE}
    assert domain.on_dead_nodes(room, {NODE}) == set()

    events = domain.move_media(room, NODE, NEW_NODE, NEW_URL)

    assert events == [
        MediaMoved(
            **IDS,
            from_node=NODE,
            media_node=NEW_NODE,
            media_url=NEW_URL,
            participant_ids=[HOST, GUEST, OTHER_GUEST],
        )
    ]
    moved = fold([*history, *events])
    for pid in (HOST, GUEST, OTHER_GUEST):
        person = moved.people[pid]
        assert (person.status, person.media_node) == (Status.in_call, NEW_NODE)
        assert person.role == room.people[pid].role
    assert moved.people[OTHER_GUEST].disconnected_until is not None
    assert moved.people[THIRD_GUEST].status is Status.waiting
    assert moved.people[THIRD_GUEST].media_node is None
    assert moved.live
    assert moved.admitted_any == room.admitted_any


def test_a_move_is_recorded_once_whoever_tries_again() -> None:
    history = given(host_enters(), guest_enters(GUEST))
    first = domain.move_media(fold(history), NODE, NEW_NODE, NEW_URL)
    after = fold([*history, *first])
    # A second replica deciding on the moved room finds nobody left on the dead node.
    assert domain.move_media(after, NODE, NEW_NODE, NEW_URL) == []
    assert domain.move_media(after, NODE, "media-3", None) == []
    assert domain.on_dead_nodes(after, {NEW_NODE}) == set()


def test_a_node_that_answers_again_moves_nothing() -> None:
    room = fold(given(host_enters()))
    assert domain.move_media(room, NODE, NODE, None) == []


def test_a_recording_on_the_dead_node_stops_with_it() -> None:
    history = given(
        host_enters(),
        guest_enters(GUEST),
        lambda r: domain.start_recording(r, HOST, RECORDING, NODE),
    )
    events = domain.move_media(fold(history), NODE, NEW_NODE, NEW_URL)
    assert [type(e) for e in events] == [MediaMoved, RecordingStopped]
    stopped = events[1]
    assert isinstance(stopped, RecordingStopped)
    assert (stopped.recording_id, stopped.media_node, stopped.because) == (
        RECORDING,
        NODE,
        RecordingStoppedBecause.media_node_lost,
    )
    assert fold([*history, *events]).recording is None
