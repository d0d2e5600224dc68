"""Scheduling rules as given events -> command -> events, with no server."""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

import pytest

from contracts.events import Event
from contracts.scheduling import (
    ApiKeyIssued,
    ApiKeyRevoked,
    AttendeeInvited,
    AttendeeRemoved,
    ClientErased,
    ClinicRegistered,
    ClinicSettings,
    ClinicSettingsChanged,
    ClinicSuspended,
    CompletedBecause,
    GuestAdmission,
    LinkSharingDisabled,
    LinkSharingEnabled,
    Plan,
    RoomCreated,
    RoomDeleted,
    RoomKind,
    RoomRenamed,
    SessionCancelled,
    SessionCompleted,
    SessionEndedEarly,
    SessionRescheduled,
    SessionScheduled,
    SessionSource,
    SessionWentLive,
    VideoMode,
)
from contracts.signaling import EndedBecause
from runtime.refusals import Conflict, Gone, Invalid, NotFound, Refused
from services.scheduling import domain, sessions
from services.scheduling.domain import NotInPlan, Room
from services.scheduling.sessions import Appointment, Attendee, Status

S = TypeVar("S")
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
PRO = ClinicSettings(plan=Plan.professional)
BASIC = ClinicSettings(plan=Plan.basic)
PRACTITIONER, CLIENT, OTHER_CLIENT = uuid4(), uuid4(), uuid4()
PRACTITIONER_ROOM = Room(uuid4(), RoomKind.practitioner, PRACTITIONER, None, "Dr A's room")
CLIENT_ROOM = Room(uuid4(), RoomKind.client, PRACTITIONER, CLIENT, "Tuesdays")


def given(evolve: Callable[[S | None, Event], S | None], events: Sequence[Event]) -> S | None:
    state: S | None = None
    for event in events:
        state = evolve(state, event)
    return state


def appointment(**changes: Any) -> Appointment:
    fields: dict[str, Any] = {
        "session_id": uuid4(),
        "practitioner_id": PRACTITIONER,
        "client_ids": (CLIENT,),
        "starts_at": NOW + timedelta(days=1),
        "ends_at": NOW + timedelta(days=1, minutes=50),
        "time_zone": "Europe/Berlin",
        "video_mode": VideoMode.session_link,
        "room": None,
        "link_sharing": False,
        "guest_admission": GuestAdmission.waiting_room,
        "source": SessionSource.api,
    }
    return Appointment(**(fields | changes))


def scheduled(**changes: Any) -> SessionScheduled:
    [event] = sessions.schedule_session(None, appointment(**changes), PRO, NOW)
    assert isinstance(event, SessionScheduled)
    return event


def refusal(code: str, kind: type[Refused], action: Callable[[], object]) -> None:
    with pytest.raises(kind) as caught:
        action()
    assert caught.value.code == code
    assert caught.value.detail  # a sentence for a person


# -- clinics -----------------------------------------------------------------------------------


def test_a_clinic_is_registered_once_with_default_settings() -> None:
    [event] = domain.register_clinic(None, "Riverside", "riverside", ClinicSettings())
    assert event == ClinicRegistered(name="Riverside", slug="riverside", settings=ClinicSettings())
    assert event.settings.early_join_minutes == 10
    assert event.settings.buffer_minutes == 15
    assert event.settings.rejoin_grace_minutes == 5
    assert event.settings.reminder_offsets_minutes == (1440, 60)
    assert event.settings.max_participants == 16
    state = given(domain.evolve_clinic, [event])
    refusal("clinic_exists", Conflict, lambda: domain.register_clinic(state, "x", "x", PRO))


def test_settings_change_only_when_they_differ() -> None:
    state = given(domain.evolve_clinic, [ClinicRegistered(name="R", slug="r", settings=BASIC)])
    assert domain.change_settings(state, BASIC) == []
    assert domain.change_settings(state, PRO) == [ClinicSettingsChanged(settings=PRO)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_participants", 17),
        ("max_participants", 1),
        ("time_zone", "Mars/Olympus"),
        ("plan", "platinum"),
        ("reminder_offsets_minutes", (1,)),
        ("guest_admission", "whoever"),
    ],
)
def test_settings_outside_their_range_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ClinicSettings.model_validate({field: value})


def test_suspending_and_keys() -> None:
    key = uuid4()
    history: list[Event] = [ClinicRegistered(name="R", slug="r", settings=BASIC)]
    history += domain.issue_api_key(given(domain.evolve_clinic, history), key, "ac_abc", "EHR")
    assert history[-1] == ApiKeyIssued(key_id=key, prefix="ac_abc", label="EHR")
    assert domain.revoke_api_key(given(domain.evolve_clinic, history), key) == [
        ApiKeyRevoked(key_id=key)
    ]
    refusal(
        "api_key_not_found",
        NotFound,
        lambda: domain.revoke_api_key(given(domain.evolve_clinic, history), uuid4()),
    )
    history.append(ClinicSuspended(reason="unpaid"))
    state = given(domain.evolve_clinic, history)
    assert domain.suspend_clinic(state, "again") == []
    refusal("clinic_suspended", Conflict, lambda: domain.issue_api_key(state, uuid4(), "ac_x", "l"))
    assert len(domain.reinstate_clinic(state)) == 1


# -- rooms -------------------------------------------------------------------------------------


def test_a_practitioner_comes_with_their_room() -> None:
    practitioner_id, room_id = uuid4(), uuid4()
    added, room = domain.add_practitioner(practitioner_id, room_id, "Dr Ada", "ada")
    assert [(e.room_id, e.room_slug) for e in added] == [(room_id, "ada")]  # type: ignore[attr-defined]
    assert room == [
        RoomCreated(
            room_id=room_id,
            kind=RoomKind.practitioner,
            practitioner_id=practitioner_id,
            slug="ada",
            title="Dr Ada's room",
        )
    ]
    state = given(domain.evolve_room, room)
    refusal("practitioner_room", Conflict, lambda: domain.delete_room(state))


def test_client_rooms_are_renamed_and_deleted() -> None:
    room_id = uuid4()
    history = domain.create_client_room(None, room_id, PRACTITIONER, CLIENT, "Tuesdays")
    assert domain.rename_room(given(domain.evolve_room, history), "Tuesdays") == []
    history += domain.rename_room(given(domain.evolve_room, history), "Thursdays")
    assert history[-1] == RoomRenamed(room_id=room_id, client_id=CLIENT, title="Thursdays")
    history += domain.delete_room(given(domain.evolve_room, history))
    assert history[-1] == RoomDeleted(room_id=room_id)
    refusal(
        "room_not_found", NotFound, lambda: domain.delete_room(given(domain.evolve_room, history))
    )


def test_an_erased_client_is_erased_once_and_can_no_longer_change() -> None:
    client = domain.Client(CLIENT, "Grace Hopper", "grace@example.org", None)
    refusal("client_not_found", NotFound, lambda: domain.erase_client(None, []))
    history = domain.add_client(None, client)
    attendee = uuid4()
    history += domain.erase_client(given(domain.evolve_client, history), [attendee])
    assert history[-1] == ClientErased(client_id=CLIENT, attendee_ids=(attendee,))
    erased = given(domain.evolve_client, history)
    assert erased is not None
    assert erased.erased
    assert domain.erase_client(erased, [attendee]) == []
    renamed = domain.Client(CLIENT, "Grace B. Hopper", "grace@example.org", None)
    refusal("client_erased", Gone, lambda: domain.update_client(erased, renamed))


# -- scheduling --------------------------------------------------------------------------------


def test_a_session_is_scheduled_with_what_was_asked() -> None:
    event = scheduled(link_sharing=True, client_ids=(CLIENT, OTHER_CLIENT))
    assert event.client_ids == (CLIENT, OTHER_CLIENT)  # a couple
    assert event.video_mode is VideoMode.session_link
    assert event.link_sharing is True
    assert event.source is SessionSource.api


@pytest.mark.parametrize(
    ("changes", "code", "kind"),
    [
        ({"ends_at": NOW + timedelta(days=1)}, "end_before_start", Invalid),
        ({"ends_at": NOW + timedelta(days=1, hours=12, minutes=1)}, "session_too_long", Invalid),
        (
            {"starts_at": NOW - timedelta(hours=1), "ends_at": NOW},
            "starts_in_the_past",
            Invalid,
        ),
        ({"client_ids": (CLIENT, CLIENT)}, "duplicate_client", Invalid),
        ({"client_ids": ()}, "no_client", Invalid),
        ({"client_ids": tuple(uuid4() for _ in range(16))}, "too_many_participants", Invalid),
        ({"room": CLIENT_ROOM}, "room_not_used", Invalid),
        ({"video_mode": VideoMode.client_room}, "room_not_found", NotFound),
        (
            {"video_mode": VideoMode.client_room, "room": PRACTITIONER_ROOM},
            "not_a_client_room",
            Invalid,
        ),
        (
            {"video_mode": VideoMode.practitioner_room, "room": CLIENT_ROOM},
            "not_a_practitioner_room",
            Invalid,
        ),
        (
            {
                "video_mode": VideoMode.client_room,
                "room": CLIENT_ROOM,
                "client_ids": (OTHER_CLIENT,),
            },
            "room_of_another_client",
            Invalid,
        ),
    ],
)
def test_bad_appointments_are_refused(changes: dict[str, Any], code: str, kind: type) -> None:
    refusal(code, kind, lambda: sessions.schedule_session(None, appointment(**changes), PRO, NOW))


def test_the_plan_decides_whether_a_session_link_is_possible() -> None:
    refusal(
        "plan_excludes_video_mode",
        NotInPlan,
        lambda: sessions.schedule_session(None, appointment(), BASIC, NOW),
    )
    for mode, room in (
        (VideoMode.practitioner_room, PRACTITIONER_ROOM),
        (VideoMode.client_room, CLIENT_ROOM),
    ):
        assert sessions.schedule_session(None, appointment(video_mode=mode, room=room), BASIC, NOW)


def test_the_clinic_cap_counts_practitioner_and_clients() -> None:
    small = ClinicSettings(plan=Plan.professional, max_participants=2)
    assert sessions.schedule_session(None, appointment(), small, NOW)
    refusal(
        "too_many_participants",
        Invalid,
        lambda: sessions.schedule_session(
            None, appointment(client_ids=(CLIENT, OTHER_CLIENT)), small, NOW
        ),
    )


def test_ad_hoc_sessions_start_now_and_need_no_client() -> None:
    events = sessions.schedule_session(
        None,
        appointment(
            source=SessionSource.ad_hoc,
            client_ids=(),
            starts_at=NOW - timedelta(minutes=5),
            ends_at=NOW + timedelta(hours=1),
        ),
        PRO,
        NOW,
    )
    assert events[0].source is SessionSource.ad_hoc  # type: ignore[attr-defined]


# -- changing sessions -------------------------------------------------------------------------


def session_after(*events: Event) -> sessions.Session | None:
    return given(sessions.evolve_session, list(events))


def test_rescheduling_moves_the_times_and_remembers_the_old_ones() -> None:
    event = scheduled()
    later = event.starts_at + timedelta(days=2)
    [moved] = sessions.reschedule_session(
        session_after(event), later, later + timedelta(hours=1), "Europe/Berlin", NOW
    )
    assert moved == SessionRescheduled(
        session_id=event.session_id,
        starts_at=later,
        ends_at=later + timedelta(hours=1),
        time_zone="Europe/Berlin",
        previous_starts_at=event.starts_at,
        previous_ends_at=event.ends_at,
    )
    same = sessions.reschedule_session(
        session_after(event), event.starts_at, event.ends_at, event.time_zone, NOW
    )
    assert same == []
    refusal(
        "starts_in_the_past",
        Invalid,
        lambda: sessions.reschedule_session(
            session_after(event), NOW - timedelta(hours=2), NOW - timedelta(hours=1), "UTC", NOW
        ),
    )


def test_a_cancelled_session_cannot_be_changed() -> None:
    event = scheduled()
    [cancelled] = sessions.cancel_session(session_after(event), "ill")
    assert cancelled == SessionCancelled(session_id=event.session_id, reason="ill")
    state = session_after(event, cancelled)
    for action in (
        lambda: sessions.cancel_session(state, None),
        lambda: sessions.reschedule_session(state, NOW, NOW, "UTC", NOW),
        lambda: sessions.set_link_sharing(state, True),
        lambda: sessions.invite_attendee(state, attendee(), PRO),
    ):
        refusal("session_cancelled", Conflict, action)


def attendee(email: str = "gran@example.org", **changes: Any) -> Attendee:
    fields: dict[str, Any] = {
        "attendee_id": uuid4(),
        "email": email,
        "display_name": None,
        "client_id": None,
        "contact_id": None,
    }
    return Attendee(**(fields | changes))


def test_attendees_are_invited_once_and_within_the_cap() -> None:
    event = scheduled()
    first = attendee()
    [invited] = sessions.invite_attendee(session_after(event), first, PRO)
    assert isinstance(invited, AttendeeInvited)
    assert not invited.while_live
    state = session_after(event, invited)
    refusal(
        "already_invited",
        Conflict,
        lambda: sessions.invite_attendee(state, attendee("GRAN@example.org"), PRO),
    )
    three = ClinicSettings(plan=Plan.professional, max_participants=3)
    refusal(
        "too_many_participants",
        Invalid,
        lambda: sessions.invite_attendee(state, attendee("b@example.org"), three),
    )
    refusal(
        "client_not_in_session",
        Invalid,
        lambda: sessions.invite_attendee(state, attendee("c@x.org", client_id=OTHER_CLIENT), PRO),
    )
    [removed] = sessions.remove_attendee(state, first.attendee_id)
    assert removed == AttendeeRemoved(session_id=event.session_id, attendee_id=first.attendee_id)
    refusal(
        "attendee_not_found",
        NotFound,
        lambda: sessions.remove_attendee(session_after(event, invited, removed), first.attendee_id),
    )


def test_someone_invited_into_a_live_call_is_mailed_at_once() -> None:
    event = scheduled()
    live = session_after(event, SessionWentLive(session_id=event.session_id))
    [invited] = sessions.invite_attendee(live, attendee(), PRO)
    assert isinstance(invited, AttendeeInvited)
    assert invited.while_live


def test_link_sharing_toggles() -> None:
    event = scheduled()
    assert sessions.set_link_sharing(session_after(event), False) == []
    [on] = sessions.set_link_sharing(session_after(event), True)
    assert on == LinkSharingEnabled(session_id=event.session_id)
    [off] = sessions.set_link_sharing(session_after(event, on), False)
    assert off == LinkSharingDisabled(session_id=event.session_id)


# -- completion --------------------------------------------------------------------------------


def went_live(event: SessionScheduled) -> sessions.Session | None:
    [live] = sessions.call_started(session_after(event))
    return session_after(event, live)


def test_ending_for_all_completes_the_session() -> None:
    event = scheduled()
    [done] = sessions.call_ended(went_live(event), EndedBecause.ended_for_all, event.starts_at)
    assert done == SessionCompleted(
        session_id=event.session_id, because=CompletedBecause.ended_for_all
    )


def test_the_last_one_leaving_after_the_end_completes_the_session() -> None:
    event = scheduled()
    [done] = sessions.call_ended(went_live(event), EndedBecause.last_left, event.ends_at)
    assert done == SessionCompleted(
        session_id=event.session_id, because=CompletedBecause.last_participant_left
    )


def test_a_call_that_ends_early_is_ended_not_completed_until_the_host_says_so() -> None:
    event = scheduled()
    early = event.ends_at - timedelta(minutes=20)
    [ended] = sessions.call_ended(went_live(event), EndedBecause.last_left, early)
    assert ended == SessionEndedEarly(session_id=event.session_id)
    live = SessionWentLive(session_id=event.session_id)
    state = session_after(event, live, ended)
    assert state is not None
    assert state.status is Status.ended
    [done] = sessions.mark_complete(state)
    assert done == SessionCompleted(
        session_id=event.session_id, because=CompletedBecause.marked_by_host
    )
    # Rejoining after an early end makes it live again.
    assert sessions.call_started(state) == [live]


def test_only_a_session_that_took_place_and_ended_can_be_marked_complete() -> None:
    event = scheduled()
    refusal("session_not_held", Conflict, lambda: sessions.mark_complete(session_after(event)))
    refusal("session_live", Conflict, lambda: sessions.mark_complete(went_live(event)))
    done = SessionCompleted(session_id=event.session_id, because=CompletedBecause.ended_for_all)
    state = session_after(event, SessionWentLive(session_id=event.session_id), done)
    refusal("session_completed", Conflict, lambda: sessions.mark_complete(state))


def test_signaling_reports_are_ignored_when_they_do_not_apply() -> None:
    event = scheduled()
    assert sessions.call_ended(session_after(event), EndedBecause.ended_for_all, NOW) == []
    assert sessions.call_started(went_live(event)) == []
    cancelled = session_after(event, SessionCancelled(session_id=event.session_id))
    assert sessions.call_started(cancelled) == []
    assert sessions.call_started(None) == []
