"""The room's screen share as given events -> command -> events, with no server: who may share,
one at a time, who may stop it, and every way it ends with its sharer or the call."""

from datetime import timedelta
from uuid import UUID

import pytest

from contracts.signaling import (
    LeftBecause,
    MediaMoved,
    ParticipantLeft,
    ParticipantRemoved,
    ParticipantSentToWaitingRoom,
    ScreenShareStarted,
    ScreenShareStopped,
    ScreenShareStoppedBecause,
    SessionEnded,
)
from runtime.refusals import Conflict, Forbidden
from services.signaling import domain
from tests.signaling.test_domain import (
    GUEST,
    HOST,
    IDS,
    NODE,
    OTHER_HOST,
    T0,
    drops,
    fold,
    given,
    guest_knocks,
    host_admits,
    host_enters,
    refusal,
)

Because = ScreenShareStoppedBecause


def shares(pid: UUID, guests_may_share: bool = False):  # type: ignore[no-untyped-def]
    return lambda r: domain.start_screen_share(r, pid, guests_may_share, NODE)


def in_call() -> list:  # type: ignore[type-arg]
    return given(host_enters(), guest_knocks(), host_admits())


def stopped(
    pid: UUID, because: ScreenShareStoppedBecause, by: UUID | None = None
) -> ScreenShareStopped:
    return ScreenShareStopped(**IDS, participant_id=pid, by=by, because=because, media_node=NODE)


def test_a_host_shares_and_everyone_knows_who() -> None:
    history = in_call()
    events = domain.start_screen_share(fold(history), HOST, False, NODE)
    assert events == [ScreenShareStarted(**IDS, participant_id=HOST, media_node=NODE)]
    room = fold(history + events)
    assert (room.screen_share, room.screen_share_node) == (HOST, NODE)
    # Asking again while sharing records nothing.
    assert domain.start_screen_share(room, HOST, False, NODE) == []


def test_a_guest_shares_only_when_the_clinic_allows_it() -> None:
    room = fold(in_call())
    refusal(
        "screen_share_not_allowed",
        Forbidden,
        lambda: domain.start_screen_share(room, GUEST, False, NODE),
    )
    assert domain.start_screen_share(room, GUEST, True, NODE)[0].participant_id == GUEST


def test_someone_waiting_cannot_share() -> None:
    room = fold(given(host_enters(), guest_knocks()))
    refusal("not_in_call", Conflict, lambda: domain.start_screen_share(room, GUEST, True, NODE))


def test_a_second_share_is_refused_with_the_sharers_name() -> None:
    history = given(host_enters(), guest_knocks(), host_admits(), host_enters(OTHER_HOST))
    room = fold(history + shares(GUEST, True)(fold(history)))
    for who, allowed in ((HOST, False), (OTHER_HOST, False)):
        with pytest.raises(Conflict) as busy:
            domain.start_screen_share(room, who, allowed, NODE)
        assert busy.value.code == "screen_share_busy"
        assert busy.value.detail == "Sam is sharing their screen; ask them to stop first."


def test_the_sharer_stops_their_own_and_a_host_stops_anyones() -> None:
    history = in_call()
    history += shares(GUEST, True)(fold(history))
    room = fold(history)
    assert domain.stop_screen_share(room, GUEST, None) == [stopped(GUEST, Because.stopped, GUEST)]
    assert domain.stop_screen_share(room, HOST, GUEST) == [
        stopped(GUEST, Because.host_stopped, HOST)
    ]
    refusal("not_sharing", Conflict, lambda: domain.stop_screen_share(room, HOST, None))
    after = fold(history + domain.stop_screen_share(room, HOST, GUEST))
    assert after.screen_share is None
    refusal("not_sharing", Conflict, lambda: domain.stop_screen_share(after, HOST, GUEST))


def test_a_guest_cannot_stop_a_hosts_share() -> None:
    history = in_call()
    room = fold(history + shares(HOST)(fold(history)))
    refusal("only_hosts", Forbidden, lambda: domain.stop_screen_share(room, GUEST, HOST))


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (lambda r: domain.leave(r, GUEST, LeftBecause.left, T0), ParticipantLeft),
        (lambda r: domain.remove(r, HOST, GUEST, "", T0), ParticipantRemoved),
        (
            lambda r: domain.send_to_waiting_room(r, HOST, GUEST, ""),
            ParticipantSentToWaitingRoom,
        ),
        (
            lambda r: domain.expire(
                domain.evolve(r, drops(GUEST)(r)[0]), GUEST, T0 + timedelta(hours=1)
            ),
            ParticipantLeft,
        ),
    ],
    ids=["leaves", "removed", "sent_back", "dropped_for_good"],
)
def test_the_share_ends_just_before_its_sharer_goes(end, expected) -> None:  # type: ignore[no-untyped-def]
    history = in_call()
    history += shares(GUEST, True)(fold(history))
    events = end(fold(history))
    assert events[0] == stopped(GUEST, Because.left)
    assert isinstance(events[1], expected)
    assert fold(history + events).screen_share is None


def test_the_share_ends_with_the_call_and_with_its_media_node() -> None:
    history = in_call()
    history += shares(HOST)(fold(history))
    ended = domain.end_for_all(fold(history), HOST, "", T0)
    assert ended[0] == stopped(HOST, Because.session_ended)
    assert isinstance(ended[-1], SessionEnded)
    moved = domain.move_media(fold(history), NODE, "media-2", None)
    assert isinstance(moved[0], MediaMoved)
    assert moved[1] == stopped(HOST, Because.media_node_lost)
    assert fold(history + moved).screen_share is None


def test_someone_elses_leaving_leaves_the_share_alone() -> None:
    history = in_call()
    history += shares(HOST)(fold(history))
    events = domain.leave(fold(history), GUEST, LeftBecause.left, T0)
    assert not any(isinstance(e, ScreenShareStopped) for e in events)
    assert fold(history + events).screen_share == HOST
