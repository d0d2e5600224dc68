"""A room's waiting room and call as given events -> command -> events, with no server; and the
whole room, knocks to the end of the call, checked by a state machine against a small model."""

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    EndedBecause,
    GuestKnocked,
    GuestPutOnHold,
    KnocksMuted,
    KnocksUnmuted,
    KnockWithdrawn,
    LeftBecause,
    ParticipantAdmitted,
    ParticipantDenied,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantReconnected,
    ParticipantRemoved,
    RoomLocked,
    RoomUnlocked,
    SessionEnded,
    SessionStarted,
)
from runtime.refusals import Conflict, Forbidden, NotFound, Refused
from services.signaling import domain
from services.signaling.domain import Locked, Person, Room, RoomFull, Status

Step = Callable[[Room], list[Event]]

T0 = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
GRACE = timedelta(minutes=5)
CAP = 3
ROOM, SESSION, LINK = UUID(int=1), UUID(int=2), UUID(int=3)
HOST, OTHER_HOST, GUEST, OTHER_GUEST, THIRD_GUEST = (UUID(int=n) for n in range(10, 15))
NODE, URL = "media-1", "https://media-1.example"
IDS = {"room_id": ROOM, "session_id": SESSION}


def fold(events: Sequence[Event]) -> Room:
    room = Room(room_id=ROOM)
    for event in events:
        room = domain.evolve(room, event)
    return room


def given(*steps: Step) -> list[Event]:
    """The history that playing ``steps`` in order, each on the room so far, writes."""
    history: list[Event] = []
    for step in steps:
        history += step(fold(history))
    return history


def host_enters(pid: UUID = HOST) -> Step:
    return lambda r: domain.enter(r, pid, CallRole.host, "Dr A", None, SESSION, NODE, URL, CAP, T0)


def guest_enters(pid: UUID = GUEST) -> Step:
    return lambda r: domain.enter(r, pid, CallRole.guest, "Sam", LINK, SESSION, NODE, URL, CAP, T0)


def guest_knocks(pid: UUID = GUEST) -> Step:
    return lambda r: domain.knock(r, pid, "Sam", LINK, SESSION, T0)


def host_admits(pid: UUID = GUEST, by: UUID = HOST) -> Step:
    return lambda r: domain.admit(r, by, pid, NODE, URL, CAP)


def drops(pid: UUID, until: datetime = T0 + GRACE) -> Step:
    return lambda r: domain.disconnected(r, pid, until)


def by_host(command: Callable[[Room, UUID], list[Event]], by: UUID = HOST) -> Step:
    return lambda r: command(r, by)


def refusal(code: str, kind: type[Refused], action: Callable[[], object]) -> None:
    with pytest.raises(kind) as caught:
        action()
    assert caught.value.code == code
    assert caught.value.detail.endswith(".")  # a sentence for a person


def admitted(pid: UUID = GUEST, by: UUID | None = HOST) -> list[Event]:
    ids = {**IDS, "participant_id": pid}
    return [
        ParticipantAdmitted(**ids, by=by, media_node=NODE, media_url=URL),
        ParticipantJoined(
            **ids,
            role=CallRole.guest,
            display_name="Sam",
            link_id=LINK,
            media_node=NODE,
            media_url=URL,
        ),
    ]


def left(pid: UUID, reason: LeftBecause, link_id: UUID | None = LINK) -> ParticipantLeft:
    return ParticipantLeft(**IDS, participant_id=pid, link_id=link_id, reason=reason)


# -- knocking ----------------------------------------------------------------------------------


def test_a_knock_puts_the_guest_in_the_waiting_room() -> None:
    assert guest_knocks()(fold([])) == [
        GuestKnocked(
            **IDS,
            participant_id=GUEST,
            display_name="Sam",
            link_id=LINK,
            muted=False,
            knocked_at=T0,
        )
    ]
    guest = fold(given(guest_knocks())).people[GUEST]
    assert guest.status is Status.waiting
    assert guest.since == T0


def test_a_locked_room_refuses_knocks() -> None:
    room = fold(given(host_enters(), by_host(domain.lock)))
    refusal("room_locked", Locked, lambda: guest_knocks()(room))


def test_a_second_knock_of_the_same_guest_is_a_no_op_even_once_locked() -> None:
    history = given(guest_knocks())
    assert guest_knocks()(fold(history)) == []
    history = given(guest_knocks(), host_enters(), by_host(domain.lock))
    assert guest_knocks()(fold(history)) == []


def test_a_knock_is_muted_when_knocks_are() -> None:
    [knocked] = guest_knocks()(fold(given(host_enters(), by_host(domain.mute_knocks))))
    assert isinstance(knocked, GuestKnocked)
    assert knocked.muted
    assert fold(given(host_enters(), guest_knocks())).people[GUEST].muted is False


# -- entering ----------------------------------------------------------------------------------


def test_the_first_host_starts_the_session_and_a_second_does_not() -> None:
    joined = ParticipantJoined(
        **IDS,
        participant_id=HOST,
        role=CallRole.host,
        display_name="Dr A",
        media_node=NODE,
        media_url=URL,
    )
    assert host_enters()(fold([])) == [SessionStarted(**IDS, started_at=T0), joined]
    room = fold(given(host_enters()))
    assert room.live
    assert room.session_id == SESSION
    assert host_enters(OTHER_HOST)(room) == [
        joined.model_copy(update={"participant_id": OTHER_HOST})
    ]
    assert host_enters()(room) == []  # already in


def test_a_guest_entering_directly_is_admitted_by_no_one() -> None:
    history = given(host_enters())
    assert guest_enters()(fold(history)) == admitted(by=None)
    room = fold([*history, *admitted(by=None)])
    assert room.people[GUEST].status is Status.in_call
    assert not room.knocks_muted  # only a host's admission mutes knocks
    assert not room.admitted_any


def test_entering_a_full_call_is_refused() -> None:
    room = fold(given(host_enters(), guest_enters(GUEST), guest_enters(OTHER_GUEST)))
    assert len(room.in_call()) == CAP
    refusal("room_full", RoomFull, lambda: guest_enters(THIRD_GUEST)(room))
    refusal("room_full", RoomFull, lambda: host_enters(OTHER_HOST)(room))


def test_a_locked_room_refuses_direct_guests_but_not_hosts() -> None:
    room = fold(given(host_enters(), by_host(domain.lock)))
    refusal("room_locked", Locked, lambda: guest_enters()(room))
    assert [type(e) for e in host_enters(OTHER_HOST)(room)] == [ParticipantJoined]


# -- admitting ---------------------------------------------------------------------------------


def test_only_a_host_in_the_call_admits() -> None:
    room = fold(given(host_enters(), guest_enters(OTHER_GUEST), guest_knocks()))
    for by in (OTHER_GUEST, GUEST, THIRD_GUEST):  # a guest in the call, one waiting, a stranger
        refusal("only_hosts", Forbidden, partial(host_admits(by=by), room))
        refusal("only_hosts", Forbidden, partial(domain.check_admit, room, by, GUEST, CAP))


def test_only_a_waiting_or_held_guest_is_admitted() -> None:
    room = fold(given(host_enters(), guest_enters(OTHER_GUEST)))
    refusal("participant_not_found", NotFound, lambda: host_admits(GUEST)(room))
    refusal("not_waiting", Conflict, lambda: host_admits(OTHER_GUEST)(room))
    refusal("not_waiting", Conflict, lambda: host_admits(HOST)(room))
    held = given(host_enters(), guest_knocks(), lambda r: domain.hold(r, HOST, GUEST, "1 min"))
    assert host_admits()(fold(held))[:2] == admitted()


def test_admitting_into_a_full_call_is_refused() -> None:
    room = fold(
        given(guest_knocks(), host_enters(), guest_enters(OTHER_GUEST), guest_enters(THIRD_GUEST))
    )
    refusal("room_full", RoomFull, lambda: host_admits()(room))
    refusal("room_full", RoomFull, lambda: domain.check_admit(room, HOST, GUEST, CAP))


def test_the_first_admission_by_a_host_mutes_knocks_once() -> None:
    history = given(host_enters(), guest_knocks(), guest_knocks(OTHER_GUEST))
    first = host_admits()(fold(history))
    assert first == [*admitted(), KnocksMuted(**IDS, by=None)]
    history += first
    assert fold(history).knocks_muted
    assert host_admits(OTHER_GUEST)(fold(history)) == admitted(OTHER_GUEST)


def test_unmuting_after_the_first_admission_stays_unmuted() -> None:
    history = given(
        host_enters(),
        guest_knocks(),
        guest_knocks(OTHER_GUEST),
        host_admits(),
        by_host(domain.unmute_knocks),
    )
    assert not fold(history).knocks_muted
    assert host_admits(OTHER_GUEST)(fold(history)) == admitted(OTHER_GUEST)


def test_knocks_muted_by_hand_are_not_muted_again_by_the_first_admission() -> None:
    history = given(host_enters(), by_host(domain.mute_knocks), guest_knocks())
    assert host_admits()(fold(history)) == admitted()


# -- denying and holding -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [domain.deny, domain.hold])
def test_deny_and_hold_are_for_hosts_and_waiting_guests(
    command: Callable[[Room, UUID, UUID, str], list[Event]],
) -> None:
    room = fold(given(host_enters(), guest_enters(OTHER_GUEST), guest_knocks()))
    refusal("only_hosts", Forbidden, lambda: command(room, OTHER_GUEST, GUEST, "no"))
    refusal("only_hosts", Forbidden, lambda: command(room, GUEST, GUEST, "no"))
    refusal("participant_not_found", NotFound, lambda: command(room, HOST, THIRD_GUEST, "no"))
    refusal("not_waiting", Conflict, lambda: command(room, HOST, OTHER_GUEST, "no"))


def test_a_denied_guest_leaves_the_waiting_room_with_the_message() -> None:
    history = given(host_enters(), guest_knocks())
    denied = domain.deny(fold(history), HOST, GUEST, "Wrong room.")
    assert denied == [
        ParticipantDenied(**IDS, participant_id=GUEST, message="Wrong room.", by=HOST)
    ]
    assert GUEST not in fold([*history, *denied]).people


def test_a_held_guest_keeps_waiting_with_the_message_and_can_still_be_denied() -> None:
    history = given(host_enters(), guest_knocks())
    held = domain.hold(fold(history), HOST, GUEST, "Five more minutes.")
    assert held == [
        GuestPutOnHold(**IDS, participant_id=GUEST, message="Five more minutes.", by=HOST)
    ]
    room = fold([*history, *held])
    guest = room.people[GUEST]
    assert (guest.status, guest.hold_message) == (Status.on_hold, "Five more minutes.")
    assert room.waiting() == [guest]
    assert len(domain.deny(room, HOST, GUEST, "")) == 1


# -- removing ----------------------------------------------------------------------------------


def test_remove_is_for_hosts_and_people_in_the_call_other_than_yourself() -> None:
    room = fold(given(host_enters(), guest_enters(OTHER_GUEST), guest_knocks()))
    refusal("only_hosts", Forbidden, lambda: domain.remove(room, OTHER_GUEST, HOST, "", T0))
    refusal("remove_self", Conflict, lambda: domain.remove(room, HOST, HOST, "", T0))
    refusal(
        "participant_not_found", NotFound, lambda: domain.remove(room, HOST, UUID(int=99), "", T0)
    )
    refusal("not_in_call", Conflict, lambda: domain.remove(room, HOST, GUEST, "", T0))


def test_a_removed_participant_leaves_the_call() -> None:
    history = given(host_enters(), guest_enters())
    removed = domain.remove(fold(history), HOST, GUEST, "Bye.", T0)
    assert removed == [
        ParticipantRemoved(**IDS, participant_id=GUEST, message="Bye.", by=HOST),
        left(GUEST, LeftBecause.removed),
    ]
    room = fold([*history, *removed])
    assert GUEST not in room.people
    assert room.live


# -- the room's switches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "off", "flag", "switched_on", "switched_off"),
    [
        (domain.lock, domain.unlock, "locked", RoomLocked, RoomUnlocked),
        (domain.mute_knocks, domain.unmute_knocks, "knocks_muted", KnocksMuted, KnocksUnmuted),
    ],
)
def test_switches_are_for_hosts_and_idempotent(
    on: Callable[[Room, UUID], list[Event]],
    off: Callable[[Room, UUID], list[Event]],
    flag: str,
    switched_on: Callable[..., Event],
    switched_off: Callable[..., Event],
) -> None:
    history = given(host_enters(), guest_enters())
    for command in (on, off):
        refusal("only_hosts", Forbidden, partial(command, fold(history), GUEST))
    assert off(fold(history), HOST) == []
    history += on(fold(history), HOST)
    assert history[-1] == switched_on(**IDS, by=HOST)
    assert getattr(fold(history), flag) is True
    assert on(fold(history), HOST) == []
    history += off(fold(history), HOST)
    assert history[-1] == switched_off(**IDS, by=HOST)
    assert getattr(fold(history), flag) is False


# -- ending for all ----------------------------------------------------------------------------


def test_only_a_host_ends_the_meeting_for_all() -> None:
    room = fold(given(host_enters(), guest_enters()))
    refusal("only_hosts", Forbidden, lambda: domain.end_for_all(room, GUEST, "", T0))


def test_ending_for_all_empties_the_room_and_resets_it() -> None:
    history = given(
        host_enters(),
        guest_knocks(),
        host_admits(),
        guest_knocks(OTHER_GUEST),
        by_host(domain.lock),
    )
    ended = domain.end_for_all(fold(history), HOST, "Thanks all.", T0)
    assert ended == [
        left(HOST, LeftBecause.ended, link_id=None),
        left(GUEST, LeftBecause.ended),
        KnockWithdrawn(**IDS, participant_id=OTHER_GUEST, reason=LeftBecause.ended),
        SessionEnded(**IDS, because=EndedBecause.ended_for_all, ended_at=T0, message="Thanks all."),
    ]
    room = fold([*history, *ended])
    assert room == Room(room_id=ROOM)
    assert (room.people, room.live, room.locked, room.knocks_muted) == ({}, False, False, False)


# -- leaving -----------------------------------------------------------------------------------


def test_a_waiting_guest_who_leaves_withdraws_their_knock() -> None:
    room = fold(given(host_enters(), guest_knocks()))
    assert domain.leave(room, GUEST, LeftBecause.left, T0) == [
        KnockWithdrawn(**IDS, participant_id=GUEST, reason=LeftBecause.left)
    ]
    assert domain.leave(room, THIRD_GUEST, LeftBecause.left, T0) == []


def test_leaving_never_ends_the_call_while_someone_else_is_in() -> None:
    history = given(host_enters(), guest_enters())
    out = domain.leave(fold(history), HOST, LeftBecause.left, T0)
    assert out == [left(HOST, LeftBecause.left, link_id=None)]
    assert fold([*history, *out]).live


def test_the_last_one_out_ends_the_call_and_waiting_guests_keep_waiting() -> None:
    history = given(host_enters(), guest_enters(), guest_knocks(OTHER_GUEST), by_host(domain.lock))
    history += domain.leave(fold(history), HOST, LeftBecause.left, T0)
    last = domain.leave(fold(history), GUEST, LeftBecause.left, T0)
    assert last == [
        left(GUEST, LeftBecause.left),
        SessionEnded(**IDS, because=EndedBecause.last_left, ended_at=T0),
    ]
    room = fold([*history, *last])
    assert not room.live
    assert not room.locked
    assert list(room.people) == [OTHER_GUEST]
    assert room.people[OTHER_GUEST].status is Status.waiting
    # The next call is a new one: it starts, and its first admission mutes knocks again.
    history += [*last, *host_enters()(room)]
    assert isinstance(history[-2], SessionStarted)
    assert host_admits(OTHER_GUEST)(fold(history))[-1] == KnocksMuted(**IDS, by=None)


def test_a_direct_guest_waits_for_the_first_host_and_is_let_in_by_no_one() -> None:
    room = fold([])
    refusal("no_host_yet", domain.NoHostYet, lambda: guest_enters()(room))
    early = given(lambda r: domain.knock(r, GUEST, "Sam", LINK, SESSION, T0, direct=True))
    assert fold(early).let_in_on_arrival() == [fold(early).people[GUEST]]
    assert not fold(early).live
    refusal(
        "no_host_yet", domain.NoHostYet, lambda: domain.let_in(fold(early), GUEST, NODE, URL, 3)
    )
    history = [*early, *host_enters()(fold(early))]
    room = fold(history)
    assert domain.let_in(room, GUEST, NODE, URL, CAP) == admitted(by=None)
    # A guest who decided to wait while no host was in, after one came, enters instead.
    refusal(
        "host_arrived",
        domain.HostArrived,
        lambda: domain.knock(room, OTHER_GUEST, "Al", LINK, SESSION, T0, direct=True),
    )
    # Someone who knocked on a waiting-room link is never let in without an admit.
    knocked = fold([*history, *guest_knocks(OTHER_GUEST)(room)])
    assert [p.participant_id for p in knocked.let_in_on_arrival()] == [GUEST]
    refusal("not_waiting", Conflict, lambda: domain.let_in(knocked, OTHER_GUEST, NODE, URL, CAP))


def test_the_last_place_is_kept_for_a_host() -> None:
    history = given(host_enters(), guest_enters(GUEST))
    room = fold([*history, *guest_enters(THIRD_GUEST)(fold(history))])
    assert len(room.in_call()) == CAP  # a host and two guests
    room = fold([*history, *host_enters(OTHER_HOST)(fold(history))])
    refusal("room_full", RoomFull, lambda: guest_enters(THIRD_GUEST)(room))  # full anyway
    # Two guests of three places, and the host gone: the third place stays the host's.
    only_guests = given(host_enters(), guest_enters(GUEST), guest_enters(THIRD_GUEST))
    only_guests += domain.leave(fold(only_guests), HOST, LeftBecause.left, T0)
    room = fold(only_guests)
    assert [p.role for p in room.in_call()] == [CallRole.guest, CallRole.guest]
    history = [*only_guests, *guest_knocks(OTHER_GUEST)(room), *host_enters()(room)]
    room = fold(history)
    assert room.people[HOST].status is Status.in_call
    refusal("room_full", RoomFull, lambda: domain.check_admit(room, HOST, OTHER_GUEST, CAP))


def test_people_whose_seat_lapsed_leave_the_call() -> None:
    history = given(host_enters(), guest_enters(GUEST), guest_knocks(OTHER_GUEST))
    room = fold(history)
    assert domain.seat_lapsed(room, [GUEST, OTHER_GUEST, THIRD_GUEST], T0) == [
        left(GUEST, LeftBecause.seat_lapsed)  # not those waiting, nor strangers
    ]
    # The last one out ends the call, as any leaving does.
    ended = domain.seat_lapsed(room, [GUEST, HOST], T0)
    assert [type(e) for e in ended] == [ParticipantLeft, ParticipantLeft, SessionEnded]


# -- dropping, coming back, and the rejoin grace -----------------------------------------------


def test_a_drop_is_recorded_once() -> None:
    history = given(host_enters())
    assert drops(HOST)(fold(history)) == [
        ParticipantDisconnected(**IDS, participant_id=HOST, grace_until=T0 + GRACE)
    ]
    history += drops(HOST)(fold(history))
    assert drops(HOST, T0 + 2 * GRACE)(fold(history)) == []
    assert drops(GUEST)(fold(history)) == []


def test_coming_back_clears_the_drop() -> None:
    history = given(host_enters())
    refusal("participant_not_found", NotFound, lambda: domain.reconnected(fold(history), GUEST))
    assert domain.reconnected(fold(history), HOST) == []
    history += drops(HOST)(fold(history))
    back = domain.reconnected(fold(history), HOST)
    assert back == [ParticipantReconnected(**IDS, participant_id=HOST)]
    room = fold([*history, *back])
    assert room.people[HOST].disconnected_until is None
    assert domain.expire(room, HOST, T0 + 2 * GRACE) == []


def test_a_hosts_drop_ends_nothing_until_the_grace_is_over() -> None:
    history = given(host_enters(), drops(HOST))
    room = fold(history)
    assert room.live
    assert room.people[HOST].status is Status.in_call
    assert domain.expire(room, HOST, T0) == []
    assert domain.expire(room, HOST, T0 + GRACE - timedelta(seconds=1)) == []
    assert domain.expire(room, HOST, T0 + GRACE) == [
        left(HOST, LeftBecause.disconnected, link_id=None),
        SessionEnded(**IDS, because=EndedBecause.last_left, ended_at=T0 + GRACE),
    ]
    assert domain.expire(room, GUEST, T0 + GRACE) == []


def test_a_waiting_guest_who_does_not_come_back_withdraws() -> None:
    room = fold(given(guest_knocks(), drops(GUEST)))
    assert domain.expire(room, GUEST, T0 + GRACE) == [
        KnockWithdrawn(**IDS, participant_id=GUEST, reason=LeftBecause.disconnected)
    ]


def test_a_guest_admitted_while_dropped_still_expires() -> None:
    """Regression: joining the call used to forget the drop, so the guest never expired and
    kept a seat in the call for good."""
    history = given(host_enters(), guest_knocks(), drops(GUEST), host_admits())
    room = fold(history)
    assert room.people[GUEST].disconnected_until == T0 + GRACE
    assert domain.expire(room, GUEST, T0 + GRACE) == [left(GUEST, LeftBecause.disconnected)]


# -- the whole room, as a state machine --------------------------------------------------------


def is_waiting(p: Person) -> bool:
    return p.waiting


def is_in_call(p: Person) -> bool:
    return p.status is Status.in_call


def has_dropped(p: Person) -> bool:
    return p.disconnected_until is not None


class WaitingRoom(RuleBasedStateMachine):
    """Guests knock, hosts come and go, seats run out, connections drop and the clock moves.

    Every rule runs a command on the folded room and checks its outcome against what the
    room looked like just before; a small model (who dropped until when, whether knocks
    should be muted) is kept beside the room and compared with it after every step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.room = Room(room_id=ROOM)
        self.history: list[Event] = []
        self.now = T0
        self.known: list[UUID] = []
        self.count = 100
        self.muted = False
        self.admitted_by_host = False
        self.dropped_until: dict[UUID, datetime] = {}

    # -- running commands ------------------------------------------------------------------

    def newcomer(self) -> UUID:
        self.count += 1
        self.known.append(UUID(int=self.count))
        return self.known[-1]

    def pick(self, data: st.DataObject, likely: Callable[[Person], bool] = lambda p: True) -> UUID:
        """Anyone ever seen (or gone, or refused), most often someone here who is ``likely``."""
        here = [pid for pid, person in self.room.people.items() if likely(person)]
        if here and data.draw(st.integers(0, 3)) > 0:
            return data.draw(st.sampled_from(here))
        return data.draw(st.sampled_from(self.known))

    def pick_host(self, data: st.DataObject) -> UUID:
        return self.pick(data, lambda p: p.role is CallRole.host and p.status is Status.in_call)

    def run(self, command: Step) -> list[Event] | Refused:
        """Run ``command``; a refusal writes nothing, and no command changes the room it reads."""
        untouched = replace(self.room, people=dict(self.room.people))  # people are frozen
        outcome: list[Event] | Refused
        try:
            outcome = command(self.room)
        except Refused as refused:
            outcome = refused
        assert self.room == untouched
        if isinstance(outcome, Refused):
            assert outcome.detail
            return outcome
        events = outcome
        for event in events:
            self.room = domain.evolve(self.room, event)
            self.history.append(event)
            match event:
                case ParticipantDisconnected():
                    self.dropped_until[event.participant_id] = event.grace_until
                case (
                    ParticipantReconnected()
                    | ParticipantLeft()
                    | KnockWithdrawn()
                    | ParticipantDenied()
                ):
                    self.dropped_until.pop(event.participant_id, None)
                case SessionEnded():
                    self.muted = self.admitted_by_host = False
        return events

    def is_host(self, pid: UUID) -> bool:
        person = self.room.people.get(pid)
        return (
            person is not None and person.role is CallRole.host and person.status is Status.in_call
        )

    def expect(self, result: list[Event] | Refused, code: str | None) -> list[Event]:
        if code is None:
            assert isinstance(result, list), f"refused {result}"
            return result
        assert isinstance(result, Refused), f"expected {code}, got {result}"
        assert result.code == code
        return []

    def full(self, role: CallRole) -> bool:
        """The cap, with its last place kept for a host."""
        guests = sum(p.role is CallRole.guest for p in self.room.in_call())
        return len(self.room.in_call()) >= CAP or (role is CallRole.guest and guests >= CAP - 1)

    def waiting_code(self, pid: UUID) -> str | None:
        person = self.room.people.get(pid)
        if person is None:
            return "participant_not_found"
        return None if person.waiting else "not_waiting"

    # -- arriving --------------------------------------------------------------------------

    @rule(guests=st.integers(min_value=1, max_value=3))
    def knock(self, guests: int) -> None:
        """A few new guests knock, one after the other."""
        for _ in range(guests):
            self.knock_once()

    def knock_once(self) -> None:
        pid, before = self.newcomer(), self.room
        result = self.run(lambda r: domain.knock(r, pid, "Guest", None, None, self.now))
        events = self.expect(result, "room_locked" if before.locked else None)
        if not before.locked:
            [knocked] = events
            assert isinstance(knocked, GuestKnocked)
            assert knocked.muted == before.knocks_muted
            assert self.room.people[pid].status is Status.waiting

    @initialize()
    def the_first_host_opens_the_room(self) -> None:
        self.enter(CallRole.host)

    @rule()
    def host_enters(self) -> None:
        self.enter(CallRole.host)

    # Only while a host is in: guests entering an empty call would fill it for good, and then
    # every host command would meet a full room without a host.
    @precondition(lambda self: any(p.role is CallRole.host for p in self.room.in_call()))
    @rule()
    def guest_enters(self) -> None:
        """A guest of a room that admits directly."""
        self.enter(CallRole.guest)

    def enter(self, role: CallRole) -> None:
        pid, before = self.newcomer(), self.room
        code = (
            "room_locked"
            if role is CallRole.guest and before.locked
            else "room_full"
            if self.full(role)
            else None
        )
        result = self.run(
            lambda r: domain.enter(
                r, pid, role, "Someone", None, SESSION, NODE, None, CAP, self.now
            )
        )
        events = self.expect(result, code)
        if events:
            starts = role is CallRole.host and not before.live
            assert [type(e) for e in events] == [
                *([SessionStarted] if starts else []),
                *([ParticipantAdmitted] if role is CallRole.guest else []),
                ParticipantJoined,
            ]
            assert self.room.people[pid].status is Status.in_call

    # -- hosts' commands -------------------------------------------------------------------

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def admit(self, data: st.DataObject) -> None:
        by, pid, before = self.pick_host(data), self.pick(data, is_waiting), self.room
        code = (
            "only_hosts"
            if not self.is_host(by)
            else self.waiting_code(pid) or ("room_full" if self.full(CallRole.guest) else None)
        )
        try:
            domain.check_admit(before, by, pid, CAP)
            checked = None
        except Refused as refused:
            checked = refused.code
        assert checked == code  # the check before asking for a seat refuses alike
        events = self.expect(self.run(lambda r: domain.admit(r, by, pid, NODE, None, CAP)), code)
        if code is None:
            # Only someone who was waiting (or on hold) just before gets in by ``admit``.
            assert before.people[pid].waiting
            assert self.room.people[pid].status is Status.in_call
            mutes = not self.admitted_by_host and not self.muted
            assert [e for e in events if isinstance(e, KnocksMuted)] == (
                [KnocksMuted(room_id=ROOM, session_id=before.session_id, by=None)] if mutes else []
            )
            self.muted = self.muted or mutes
            self.admitted_by_host = True

    @precondition(lambda self: self.known)
    @rule(data=st.data(), deny=st.booleans(), message=st.sampled_from(["", "Wait, please."]))
    def deny_or_hold(self, data: st.DataObject, deny: bool, message: str) -> None:
        by, pid = self.pick_host(data), self.pick(data, is_waiting)
        code = "only_hosts" if not self.is_host(by) else self.waiting_code(pid)
        command = domain.deny if deny else domain.hold
        events = self.expect(self.run(lambda r: command(r, by, pid, message)), code)
        if code is None:
            [event] = events
            assert isinstance(event, ParticipantDenied | GuestPutOnHold)
            assert event.message == message
            if deny:
                assert pid not in self.room.people
            else:
                assert self.room.people[pid].status is Status.on_hold

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        by, pid = self.pick_host(data), self.pick(data, is_in_call)
        person = self.room.people.get(pid)
        code = (
            "only_hosts"
            if not self.is_host(by)
            else "remove_self"
            if by == pid
            else "participant_not_found"
            if person is None
            else "not_in_call"
            if person.waiting
            else None
        )
        events = self.expect(self.run(lambda r: domain.remove(r, by, pid, "", self.now)), code)
        if code is None:
            expected: list[type[Event]] = [ParticipantRemoved, ParticipantLeft]
            assert [type(e) for e in events] == expected
            assert pid not in self.room.people
            assert self.room.live  # the host who removed is still in

    @precondition(lambda self: self.known)
    @rule(data=st.data(), switch=st.sampled_from(["lock", "unlock", "mute", "unmute"]))
    def flip(self, data: st.DataObject, switch: str) -> None:
        by, before = self.pick_host(data), self.room
        command, flag, value = {
            "lock": (domain.lock, "locked", True),
            "unlock": (domain.unlock, "locked", False),
            "mute": (domain.mute_knocks, "knocks_muted", True),
            "unmute": (domain.unmute_knocks, "knocks_muted", False),
        }[switch]
        code = None if self.is_host(by) else "only_hosts"
        events = self.expect(self.run(lambda r: command(r, by)), code)
        if code is None:
            assert len(events) == (getattr(before, flag) != value)  # idempotent
            assert getattr(self.room, flag) is value
            if flag == "knocks_muted":
                self.muted = value

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def end_for_all(self, data: st.DataObject) -> None:
        by, before = self.pick_host(data), self.room
        code = None if self.is_host(by) else "only_hosts"
        events = self.expect(self.run(lambda r: domain.end_for_all(r, by, "Bye.", self.now)), code)
        if code is None:
            *gone, ended = events
            assert ended == SessionEnded(
                room_id=ROOM,
                session_id=before.session_id,
                because=EndedBecause.ended_for_all,
                ended_at=self.now,
                message="Bye.",
            )
            left_ids = {e.participant_id for e in gone if isinstance(e, ParticipantLeft)}
            withdrawn = {e.participant_id for e in gone if isinstance(e, KnockWithdrawn)}
            assert left_ids == {p.participant_id for p in before.in_call()}
            assert withdrawn == {p.participant_id for p in before.waiting()}
            assert all(e.reason is LeftBecause.ended for e in gone)  # type: ignore[attr-defined]
            assert self.room == Room(room_id=ROOM)

    # -- leaving, dropping and time --------------------------------------------------------

    def check_left(self, pid: UUID, before: Room, events: list[Event]) -> None:
        person = before.people.get(pid)
        if person is None:
            assert events == []
            return
        assert pid not in self.room.people
        if person.waiting:
            assert [type(e) for e in events] == [KnockWithdrawn]
            return
        others = [p for p in before.in_call() if p.participant_id != pid]
        ends = before.live and not others
        expected: list[type[Event]] = [ParticipantLeft, *([SessionEnded] if ends else [])]
        assert [type(e) for e in events] == expected
        if ends:
            # Whoever was still waiting keeps waiting for the next call.
            assert set(self.room.people) == {p.participant_id for p in before.waiting()}

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        pid, before = self.pick(data), self.room
        events = self.expect(
            self.run(lambda r: domain.leave(r, pid, LeftBecause.left, self.now)), None
        )
        self.check_left(pid, before, events)

    @precondition(lambda self: self.known)
    @rule(
        data=st.data(),
        who=st.sampled_from([is_waiting, is_in_call]),
        minutes=st.integers(min_value=1, max_value=10),
    )
    def drop(self, data: st.DataObject, who: Callable[[Person], bool], minutes: int) -> None:
        pid, before = self.pick(data, who), self.room
        until = self.now + timedelta(minutes=minutes)
        events = self.expect(self.run(lambda r: domain.disconnected(r, pid, until)), None)
        person = before.people.get(pid)
        assert bool(events) == (person is not None and person.disconnected_until is None)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def come_back(self, data: st.DataObject) -> None:
        pid, before = self.pick(data, has_dropped), self.room
        person = before.people.get(pid)
        code = None if person else "participant_not_found"
        events = self.expect(self.run(lambda r: domain.reconnected(r, pid)), code)
        if person is not None:
            assert bool(events) == (person.disconnected_until is not None)
            assert self.room.people[pid].disconnected_until is None

    @rule(minutes=st.integers(min_value=0, max_value=8))
    def time_passes(self, minutes: int) -> None:
        """The clock moves and, as the sweep does, everyone here is asked to expire."""
        self.now += timedelta(minutes=minutes)
        for pid in list(self.room.people):
            self.expire_one(pid)

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        self.expire_one(self.pick(data, has_dropped))

    def expire_one(self, pid: UUID) -> None:
        before, until = self.room, self.dropped_until.get(pid)
        events = self.expect(self.run(lambda r: domain.expire(r, pid, self.now)), None)
        if until is None or until > self.now:
            assert events == []
        else:
            assert events[0].reason is LeftBecause.disconnected  # type: ignore[attr-defined]
            self.check_left(pid, before, events)

    # -- what always holds -----------------------------------------------------------------

    @invariant()
    def the_call_never_exceeds_the_cap(self) -> None:
        assert len(self.room.in_call()) <= CAP

    @invariant()
    def live_iff_started_and_not_ended_since(self) -> None:
        marks = [e for e in self.history if isinstance(e, SessionStarted | SessionEnded)]
        assert self.room.live == (bool(marks) and isinstance(marks[-1], SessionStarted))

    @invariant()
    def a_live_room_has_someone_in_the_call(self) -> None:
        assert not self.room.live or self.room.in_call()

    @invariant()
    def knocks_are_muted_as_the_model_says(self) -> None:
        assert self.room.knocks_muted == self.muted

    @invariant()
    def a_drop_lasts_until_they_come_back_or_go(self) -> None:
        for pid, person in self.room.people.items():
            assert person.disconnected_until == self.dropped_until.get(pid)

    @invariant()
    def replaying_the_history_gives_the_same_room(self) -> None:
        replayed: Room | None = None
        for event in self.history:
            replayed = domain.evolve(replayed, event)
        assert (replayed or Room(room_id=ROOM)) == self.room


WaitingRoom.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_waiting_room = WaitingRoom.TestCase
