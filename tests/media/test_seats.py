"""The seat ledger on its own: the cap, reservations, claims, releases; and a property test
that no sequence of requests, releases and passing time ever seats more than the cap."""

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.signaling import CallRole
from services.media.seats import MAX_SEATS, Granted, RoomFull, SeatLedger

NOW = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
RESERVATION = timedelta(seconds=30)
ROOM = UUID(int=1)
OTHER_ROOM = UUID(int=2)


def person(n: int) -> UUID:
    return UUID(int=1000 + n)


@pytest.fixture
def ledger() -> SeatLedger:
    return SeatLedger(RESERVATION)


def test_seats_are_granted_up_to_the_cap_then_the_room_is_full(ledger: SeatLedger) -> None:
    for n in range(3):
        granted = ledger.request(ROOM, person(n), CallRole.guest, 3, NOW)
        assert granted == Granted(NOW + RESERVATION, n + 1, 3)
    assert ledger.request(ROOM, person(3), CallRole.host, 3, NOW) == RoomFull(3, 3)
    assert ledger.request(OTHER_ROOM, person(3), CallRole.host, 3, NOW) == Granted(
        NOW + RESERVATION, 1, 3
    )


def test_no_room_seats_more_than_sixteen_whatever_the_cap(ledger: SeatLedger) -> None:
    for n in range(MAX_SEATS):
        assert isinstance(ledger.request(ROOM, person(n), CallRole.guest, 40, NOW), Granted)
    assert ledger.request(ROOM, person(99), CallRole.guest, 40, NOW) == RoomFull(16, 16)


def test_asking_again_returns_the_same_seat_and_renews_it(ledger: SeatLedger) -> None:
    ledger.request(ROOM, person(1), CallRole.guest, 2, NOW)
    ledger.request(ROOM, person(2), CallRole.guest, 2, NOW)
    later = NOW + timedelta(seconds=20)
    again = ledger.request(ROOM, person(1), CallRole.guest, 2, later)
    assert again == Granted(later + RESERVATION, 2, 2)  # full, and still granted: it is theirs
    assert ledger.taken(ROOM, NOW + timedelta(seconds=40)) == 1  # person 2's lapsed


def test_a_reservation_nobody_claims_lapses_and_frees_the_seat(ledger: SeatLedger) -> None:
    ledger.request(ROOM, person(1), CallRole.guest, 1, NOW)
    assert ledger.request(ROOM, person(2), CallRole.guest, 1, NOW + RESERVATION / 2) == RoomFull(
        1, 1
    )
    lapsed = NOW + RESERVATION
    assert ledger.taken(ROOM, lapsed) == 0
    assert ledger.request(ROOM, person(2), CallRole.guest, 1, lapsed) == Granted(
        lapsed + RESERVATION, 1, 1
    )
    assert not ledger.claim(ROOM, person(1), lapsed)


def test_a_claimed_seat_is_held_until_released(ledger: SeatLedger) -> None:
    ledger.request(ROOM, person(1), CallRole.host, 1, NOW)
    assert ledger.claim(ROOM, person(1), NOW + timedelta(seconds=1))
    much_later = NOW + timedelta(hours=3)
    assert ledger.taken(ROOM, much_later) == 1
    assert ledger.request(ROOM, person(1), CallRole.host, 1, much_later) == Granted(None, 1, 1)
    assert ledger.request(ROOM, person(2), CallRole.guest, 1, much_later) == RoomFull(1, 1)
    assert ledger.release(ROOM, person(1)) == 1
    assert ledger.release(ROOM, person(1)) == 0
    assert isinstance(ledger.request(ROOM, person(2), CallRole.guest, 1, much_later), Granted)


def test_releasing_the_room_frees_every_seat(ledger: SeatLedger) -> None:
    for n in range(4):
        ledger.request(ROOM, person(n), CallRole.guest, 16, NOW)
    assert ledger.release(ROOM) == 4
    assert ledger.taken(ROOM, NOW) == 0
    assert ledger.release(ROOM) == 0
    assert ledger.release(OTHER_ROOM, person(1)) == 0


def test_a_cap_below_one_is_a_bug(ledger: SeatLedger) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ledger.request(ROOM, person(1), CallRole.guest, 0, NOW)


# -- the property ---------------------------------------------------------------------------

people = st.integers(min_value=0, max_value=24)
steps = st.one_of(
    st.tuples(st.just("request"), people),
    st.tuples(st.just("claim"), people),
    st.tuples(st.just("release"), st.one_of(st.none(), people)),
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=45)),
)


@given(cap=st.integers(min_value=1, max_value=20), script=st.lists(steps, max_size=80))
def test_no_sequence_seats_more_than_the_cap_and_asking_twice_changes_nothing(
    cap: int, script: list[tuple[str, int | None]]
) -> None:
    ledger = SeatLedger(RESERVATION)
    now = NOW
    limit = min(cap, MAX_SEATS)
    for action, arg in script:
        if action == "wait":
            assert arg is not None
            now += timedelta(seconds=arg)
        elif action == "release":
            ledger.release(ROOM, None if arg is None else person(arg))
        elif action == "claim":
            assert arg is not None
            ledger.claim(ROOM, person(arg), now)
        else:
            assert arg is not None
            first = ledger.request(ROOM, person(arg), CallRole.guest, cap, now)
            second = ledger.request(ROOM, person(arg), CallRole.guest, cap, now)
            assert second == first  # idempotent per participant
            if isinstance(first, RoomFull):
                assert first.taken == limit
        assert ledger.taken(ROOM, now) <= limit


def test_the_holders_are_who_holds_or_has_reserved_a_seat(ledger: SeatLedger) -> None:
    ledger.request(ROOM, person(1), CallRole.guest, 3, NOW)
    ledger.request(ROOM, person(2), CallRole.guest, 3, NOW)
    assert ledger.claim(ROOM, person(2), NOW)
    assert ledger.holders(ROOM, NOW) == [person(1), person(2)]
    assert ledger.holders(ROOM, NOW + RESERVATION) == [person(2)]  # 1's lapsed unclaimed
    assert ledger.holders(OTHER_ROOM, NOW) == []
