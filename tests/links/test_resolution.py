"""``decide`` on its own: window edges, refusals in order, admission per kind; and a link slot's
whole lifecycle (``domain``) checked against ``decide`` by a state machine."""

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from contracts.events import Event
from contracts.links import (
    REFUSAL_STATUS,
    Decision,
    LinkDeprecated,
    LinkIssued,
    LinkKind,
    LinkRevoked,
    Refusal,
    RevokedBecause,
    Role,
)
from contracts.scheduling import ClinicSettings, Plan
from contracts.signaling import CallRole
from runtime.refusals import Refused
from services.links import domain
from services.links.domain import NewLink, Slot, State
from services.links.resolution import NEWEST_LINK_HINT, Found, SessionWindow, decide

START = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)  # a Friday; Berlin is on CET (UTC+1)
END = START + timedelta(minutes=50)
OPENS = START - timedelta(minutes=10)  # default early join
CLOSES = END + timedelta(minutes=15)  # default buffer
GRACE = timedelta(minutes=5)  # default rejoin grace
SECOND = timedelta(seconds=1)
SETTINGS = ClinicSettings(plan=Plan.professional, time_zone="Europe/Berlin")
LINK = UUID(int=1)
SESSION = UUID(int=2)
PRACTITIONER = UUID(int=3)
ROOM = UUID(int=4)


def with_settings(**changes: object) -> ClinicSettings:
    return ClinicSettings.model_validate(SETTINGS.model_dump() | changes)


def window(**changes: object) -> SessionWindow:
    base = SessionWindow(
        session_id=SESSION,
        practitioner_id=PRACTITIONER,
        room_id=None,
        starts_at=START,
        ends_at=END,
        time_zone="Europe/Berlin",
        status="scheduled",
        live=False,
        guest_admission="waiting_room",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def found(kind: LinkKind = LinkKind.session, **changes: object) -> Found:
    role = {LinkKind.session: Role.client, LinkKind.host: Role.host}.get(kind, Role.guest)
    if kind is LinkKind.client_room:
        role = Role.client
    base = Found(
        link_id=LINK,
        kind=kind,
        role=role,
        state=State.active,
        revoked_because=None,
        sunset_at=None,
        clinic_id="c_test",
        settings=SETTINGS,
        suspended=False,
        room_id=None,
        practitioner_id=PRACTITIONER,
        session=window(),
        left_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def assert_sentence(text: str | None) -> None:
    assert text, "a message is required"
    assert text[0].isupper(), text
    assert text.endswith("."), text
    assert not re.search(r"None|\{|\}|Refusal\.|State\.", text), text


def assert_refused(decision: Decision, reason: Refusal) -> None:
    assert not decision.allowed, decision
    assert decision.reason is reason, decision
    assert decision.status == REFUSAL_STATUS[reason]
    assert_sentence(decision.message)


def assert_allowed(decision: Decision) -> None:
    assert decision.allowed, decision
    assert decision.status == 200
    assert decision.reason is None
    assert_sentence(decision.message)


# -- the time window ---------------------------------------------------------------------------


def test_one_second_before_opening_is_not_yet_open_and_names_the_local_time() -> None:
    decision = decide(found(), OPENS - SECOND)
    assert_refused(decision, Refusal.not_yet_open)
    assert decision.status == 423
    # 08:50 UTC is 09:50 in Berlin (CET) on that Friday.
    assert (
        decision.message == "This session opens at 09:50 on Friday 14 March 2031 (Europe/Berlin)."
    )
    assert decision.opens_at == OPENS
    assert decision.closes_at == CLOSES
    assert decision.session_id == SESSION
    assert decision.link_id == LINK


def test_exactly_at_opening_is_allowed() -> None:
    decision = decide(found(), OPENS)
    assert_allowed(decision)
    assert (decision.opens_at, decision.closes_at) == (OPENS, CLOSES)
    assert decision.session_id == SESSION


def test_one_second_before_close_is_allowed() -> None:
    assert_allowed(decide(found(), CLOSES - SECOND))


def test_at_close_it_has_ended() -> None:
    decision = decide(found(), CLOSES)
    assert_refused(decision, Refusal.ended)
    assert decision.status == 410
    assert decision.message == "This session has ended."


@pytest.mark.parametrize("kind", [LinkKind.session, LinkKind.guest, LinkKind.drop_in])
def test_every_windowed_kind_keeps_the_window(kind: LinkKind) -> None:
    assert_refused(decide(found(kind), OPENS - SECOND), Refusal.not_yet_open)
    assert_allowed(decide(found(kind), OPENS))
    assert_refused(decide(found(kind), CLOSES), Refusal.ended)


def test_a_live_call_past_its_close_is_allowed() -> None:
    decision = decide(found(session=window(live=True)), CLOSES + timedelta(hours=3))
    assert_allowed(decision)
    assert decision.live


def test_a_live_call_before_the_opening_is_allowed() -> None:
    decision = decide(found(session=window(live=True)), OPENS - timedelta(hours=2))
    assert_allowed(decision)
    assert decision.live


def test_rejoin_inside_the_grace_after_close_is_allowed() -> None:
    left = CLOSES + timedelta(minutes=1)
    f = found(left_at=left)
    assert_allowed(decide(f, left + GRACE - SECOND))
    assert_refused(decide(f, left + GRACE), Refusal.ended)
    assert_refused(decide(f, left + GRACE + SECOND), Refusal.ended)


def test_a_completed_session_has_ended_even_inside_its_window() -> None:
    completed = found(session=window(status="completed"))
    assert_refused(decide(completed, START), Refusal.ended)
    assert_refused(decide(replace(completed, left_at=START), START + SECOND), Refusal.ended)


LAST = datetime.max.replace(tzinfo=UTC)
FIRST = datetime.min.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("starts_at", "ends_at"),
    [
        (datetime(9999, 12, 31, 23, tzinfo=UTC), LAST),  # the report's: + buffer overflowed
        (LAST - timedelta(minutes=50), LAST),
        (FIRST, FIRST + timedelta(minutes=50)),  # - early join overflowed
    ],
)
@pytest.mark.parametrize("time_zone", ["Pacific/Kiritimati", "Pacific/Niue", "UTC"])
@pytest.mark.parametrize("kind", [LinkKind.session, LinkKind.guest, LinkKind.host])
def test_a_window_at_the_ends_of_time_is_decided_not_crashed(
    starts_at: datetime, ends_at: datetime, time_zone: str, kind: LinkKind
) -> None:
    """Whatever date was stored, resolution answers (the window is clamped to what a
    datetime holds), never raises."""
    s = window(starts_at=starts_at, ends_at=ends_at, time_zone=time_zone)
    settings = with_settings(time_zone=time_zone, early_join_minutes=60, buffer_minutes=60)
    f = found(kind, session=s, settings=settings)
    for now in (START, starts_at, ends_at):
        decision = decide(f, now)
        assert_sentence(decision.message)
        decision.model_dump_json()
    deprecated = replace(f, state=State.deprecated, sunset_at=ends_at)
    assert_sentence(decide(deprecated, starts_at).message)
    if starts_at.year == 9999:
        refusal = decide(f, START)
        if kind is not LinkKind.host:
            assert_refused(refusal, Refusal.not_yet_open)


def test_readable_and_room_links_have_no_window() -> None:
    for kind in (LinkKind.practitioner_room, LinkKind.client_room, LinkKind.host):
        assert_allowed(decide(found(kind), CLOSES + timedelta(days=3)))
        assert_allowed(decide(found(kind), OPENS - timedelta(days=3)))


# -- refusals before the window ----------------------------------------------------------------


def test_a_replaced_link_is_refused_with_a_hint() -> None:
    decision = decide(found(LinkKind.guest, state=State.replaced), START)
    assert_refused(decision, Refusal.regenerated)
    assert decision.status == 410
    assert decision.replaced_by_hint == NEWEST_LINK_HINT
    assert_sentence(decision.replaced_by_hint)


@pytest.mark.parametrize(
    ("because", "reason", "message"),
    [
        (
            RevokedBecause.sharing_disabled,
            Refusal.sharing_disabled,
            "The host turned off guest links for this session.",
        ),
        (RevokedBecause.session_cancelled, Refusal.revoked, "This session was cancelled."),
        (RevokedBecause.room_deleted, Refusal.revoked, "This room no longer exists."),
        (
            RevokedBecause.attendee_removed,
            Refusal.revoked,
            "Your invitation to this session was withdrawn.",
        ),
    ],
)
def test_a_revoked_link_says_why(because: RevokedBecause, reason: Refusal, message: str) -> None:
    f = found(LinkKind.guest, state=State.revoked, revoked_because=because)
    decision = decide(f, START)
    assert_refused(decision, reason)
    assert decision.status == 410
    assert decision.message == message
    # Even a live call does not bring a revoked link back.
    assert_refused(decide(replace(f, session=window(live=True)), START), reason)


def test_a_deprecated_link_works_with_a_warning_until_its_sunset() -> None:
    sunset = START + timedelta(minutes=20)
    f = found(LinkKind.guest, state=State.deprecated, sunset_at=sunset)
    before = decide(f, sunset - SECOND)
    assert_allowed(before)
    assert before.warning is not None
    assert_sentence(before.warning)
    # 09:20 UTC, told in the clinic's zone.
    assert "10:20 on Friday 14 March 2031 (Europe/Berlin)" in before.warning
    for moment in (sunset, sunset + timedelta(days=1)):
        after = decide(f, moment)
        assert_refused(after, Refusal.retired)
        assert after.status == 410
        assert after.replaced_by_hint == NEWEST_LINK_HINT


@pytest.mark.parametrize(
    ("now", "changes", "reason"),
    [
        (OPENS - SECOND, {}, Refusal.not_yet_open),
        (CLOSES, {}, Refusal.ended),
        (START, {"settings": with_settings(plan=Plan.basic)}, Refusal.plan_not_included),
    ],
)
def test_a_deprecated_link_refused_before_its_sunset_still_warns(
    now: datetime, changes: dict[str, object], reason: Refusal
) -> None:
    """Refused for now (not open yet, say), a retired link tells its holder to use the newer
    one too: by the time the session opens, the old link may have stopped working."""
    sunset = CLOSES + timedelta(days=1)
    f = found(state=State.deprecated, sunset_at=sunset, **changes)  # type: ignore[arg-type]
    decision = decide(f, now)
    assert_refused(decision, reason)
    assert decision.warning is not None
    assert_sentence(decision.warning)
    assert "stops working at" in decision.warning
    assert decision.replaced_by_hint == NEWEST_LINK_HINT
    assert decide(found(**changes), now).warning is None  # type: ignore[arg-type]


def test_a_deprecated_link_past_its_sunset_is_refused_even_while_live() -> None:
    sunset = START + timedelta(minutes=20)
    f = found(LinkKind.guest, state=State.deprecated, sunset_at=sunset, session=window(live=True))
    assert_refused(decide(f, sunset), Refusal.retired)


def test_a_session_link_is_refused_on_the_basic_plan() -> None:
    basic = found(settings=with_settings(plan=Plan.basic))
    decision = decide(basic, START)
    assert_refused(decision, Refusal.plan_not_included)
    assert decision.status == 403
    # The plan concerns session links only.
    for kind in (LinkKind.guest, LinkKind.client_room, LinkKind.practitioner_room):
        assert_allowed(decide(replace(basic, kind=kind), START))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"state": State.replaced},
        {"state": State.revoked, "revoked_because": RevokedBecause.session_cancelled},
        {"state": State.deprecated, "sunset_at": START - timedelta(days=1)},
        {"settings": with_settings(plan=Plan.basic)},
        {"session": window(status="completed")},
    ],
)
def test_a_suspended_clinic_is_refused_before_anything_else(changes: dict[str, object]) -> None:
    decision = decide(found(suspended=True, **changes), OPENS - timedelta(days=1))  # type: ignore[arg-type]
    assert_refused(decision, Refusal.clinic_suspended)
    assert decision.status == 403


def test_a_host_link_naming_a_session_not_its_own_is_unknown_but_not_miscopied() -> None:
    f = found(LinkKind.host, session=None, session_not_theirs=True)
    decision = decide(f, START)
    assert_refused(decision, Refusal.unknown)
    assert "copied" not in decision.message
    assert decision.link_id == LINK  # counted for the link, not against the address
    # The link's own state still comes first.
    assert_refused(decide(replace(f, state=State.replaced), START), Refusal.regenerated)


def test_no_link_is_unknown() -> None:
    decision = decide(None, START)
    assert_refused(decision, Refusal.unknown)
    assert decision.status == 404
    assert decision.link_id is None


# -- admission ---------------------------------------------------------------------------------


@pytest.mark.parametrize("guest_admission", ["waiting_room", "direct"])
def test_admission_follows_the_kind(guest_admission: str) -> None:
    s = window(guest_admission=guest_admission, room_id=ROOM)
    direct_clinic = with_settings(guest_admission="direct")
    practitioner_room = found(
        LinkKind.practitioner_room, role=Role.guest, session=s, settings=direct_clinic
    )
    assert decide(practitioner_room, START).admission == "waiting_room"
    assert decide(found(LinkKind.host, session=s), START).admission == "direct"
    for kind in (LinkKind.guest, LinkKind.drop_in, LinkKind.session):
        decision = decide(found(kind, session=s), START)
        assert decision.admission == guest_admission, kind
        assert decision.room_id == ROOM


@pytest.mark.parametrize("kind", list(LinkKind))
def test_a_link_joins_as_the_role_the_call_gives_it(kind: LinkKind) -> None:
    """A client's links (session, client room) join as guests, as signaling will seat them;
    the kind still says whose link it is."""
    decision = decide(found(kind, session=window(room_id=ROOM)), START)
    assert_allowed(decision)
    assert decision.role == (CallRole.host if kind is LinkKind.host else CallRole.guest)
    assert decision.kind is kind


def test_admission_without_a_session_is_the_clinics_default() -> None:
    direct_clinic = with_settings(guest_admission="direct")
    room = found(LinkKind.client_room, session=None, settings=direct_clinic, room_id=ROOM)
    decision = decide(room, START)
    assert decision.admission == "direct"
    assert decision.room_id == ROOM
    assert decision.session_id is None


def test_every_refusal_has_its_status() -> None:
    assert set(REFUSAL_STATUS) == set(Refusal)


# -- a slot's lifecycle, checked through decide ------------------------------------------------

T0 = datetime(2031, 1, 1, tzinfo=UTC)
ALWAYS_OPEN = SessionWindow(
    session_id=SESSION,
    practitioner_id=PRACTITIONER,
    room_id=None,
    starts_at=T0 - timedelta(days=365),
    ends_at=T0 + timedelta(days=3650),
    time_zone="UTC",
    status="scheduled",
    live=False,
    guest_admission="waiting_room",
)


class SlotLifecycle(RuleBasedStateMachine):
    """One slot: issue, regenerate, revoke, retire, and time passing, folded with ``evolve``.

    The window never refuses here, so each link's decision depends on its state alone:
    working links are allowed, dead ones are refused with the reason their state implies.
    """

    def __init__(self) -> None:
        super().__init__()
        self.slot = Slot()
        self.kind = LinkKind.guest
        self.now = T0
        self.count = 10
        self.ids: list[UUID] = []
        self.because: dict[UUID, RevokedBecause] = {}
        self.sunsets: dict[UUID, datetime] = {}

    def new_link(self) -> NewLink:
        self.count += 1
        role = Role.guest if self.kind is LinkKind.guest else Role.client
        return NewLink(UUID(int=self.count), self.kind, role, "sealed", session_id=SESSION)

    def apply(self, events: list[Event]) -> None:
        for event in events:
            self.slot = domain.evolve(self.slot, event)
            if isinstance(event, LinkRevoked):
                self.because[event.link_id] = event.because
            elif isinstance(event, LinkDeprecated):
                self.sunsets[event.link_id] = event.sunset_at
            elif hasattr(event, "url_sealed"):
                self.ids.append(event.link_id)  # type: ignore[attr-defined]

    def found(self, link_id: UUID) -> Found:
        link = self.slot.links[link_id]
        return Found(
            link_id=link_id,
            kind=link.kind,
            role=Role.guest,
            state=link.state,
            revoked_because=self.because.get(link_id),
            sunset_at=self.sunsets.get(link_id),
            clinic_id="c_test",
            settings=SETTINGS,
            suspended=False,
            room_id=None,
            practitioner_id=PRACTITIONER,
            session=ALWAYS_OPEN,
            left_at=None,
        )

    @initialize(kind=st.sampled_from([LinkKind.guest, LinkKind.client_room, LinkKind.session]))
    def first_link(self, kind: LinkKind) -> None:
        self.kind = kind
        self.apply(domain.issue(self.slot, self.new_link()))
        assert len(self.ids) == 1

    @rule()
    def issue(self) -> None:
        before = self.slot.current
        events = domain.issue(self.slot, self.new_link())
        current = self.slot.links.get(before) if before else None
        # A repeated reaction issues nothing while the current link works.
        assert (events == []) == (current is not None and current.state is State.active)
        self.apply(events)

    @rule()
    def regenerate(self) -> None:
        before = self.slot.current
        active = before is not None and self.slot.links[before].state is State.active
        if not active or self.kind not in domain.REGENERABLE:
            code = "not_regenerable" if active else "link_not_active"
            with pytest.raises(Refused) as refused:
                domain.regenerate(self.slot, self.new_link())
            assert refused.value.code == code
            return
        events = domain.regenerate(self.slot, self.new_link())
        assert self.kind in domain.REGENERABLE
        self.apply(events)
        assert before is not None
        assert self.slot.links[before].state is State.replaced

    @rule(because=st.sampled_from(list(RevokedBecause)))
    def revoke(self, because: RevokedBecause) -> None:
        working = {link.link_id for link in self.slot.working()}
        self.apply(domain.revoke(self.slot, because))
        assert self.slot.working() == []
        assert self.slot.current is None
        for link_id in working:
            assert self.slot.links[link_id].state is State.revoked

    @rule(data=st.data(), minutes=st.integers(min_value=-30, max_value=600))
    def retire(self, data: st.DataObject, minutes: int) -> None:
        link_id = data.draw(st.sampled_from(self.ids))
        was = self.slot.links[link_id].state
        sunset = self.now + timedelta(minutes=minutes)
        events = domain.retire(self.slot, link_id, sunset, self.new_link())
        assert bool(events) == (was is State.active)
        self.apply(events)
        if events:
            assert self.slot.links[link_id].state is State.deprecated
            assert self.sunsets[link_id] == sunset
            # The successor says whom it replaces and until when the old one works, so that
            # notify can mail it to those who hold the old one in words that are true.
            for successor in events[1:]:
                assert isinstance(successor, LinkIssued)
                assert successor.replaces_link_id == link_id
                assert successor.replaces_link_sunset_at == sunset

    @rule(minutes=st.integers(min_value=1, max_value=24 * 60))
    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @invariant()
    def at_most_one_link_is_current(self) -> None:
        active = [x.link_id for x in self.slot.links.values() if x.state is State.active]
        assert len(active) <= 1
        if self.slot.current is None:
            assert active == []
        else:
            assert active == [self.slot.current]

    @invariant()
    def every_link_ever_issued_decides_by_its_state(self) -> None:
        assert sorted(self.slot.links) == sorted(self.ids)
        for link_id in self.ids:
            decision = decide(self.found(link_id), self.now)
            assert decision.status == (200 if decision.allowed else REFUSAL_STATUS[decision.reason])  # type: ignore[index]
            assert_sentence(decision.message)
            state = self.slot.links[link_id].state
            sunset = self.sunsets.get(link_id)
            if state is State.replaced:
                assert decision.reason is Refusal.regenerated
            elif state is State.revoked:
                expected = (
                    Refusal.sharing_disabled
                    if self.because[link_id] is RevokedBecause.sharing_disabled
                    else Refusal.revoked
                )
                assert decision.reason is expected
            elif state is State.deprecated:
                assert sunset is not None
                if self.now >= sunset:
                    assert decision.reason is Refusal.retired
                else:
                    assert decision.allowed
                    assert decision.warning
            else:
                assert decision.allowed
                assert decision.warning is None
            if not decision.allowed:
                assert state is not State.active


SlotLifecycle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_slot_lifecycle = SlotLifecycle.TestCase
