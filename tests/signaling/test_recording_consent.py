"""Recording consent through signaling (issue 24): under the clinic's policy ``all`` (the
default) a host's request asks everyone else in the room, and the media node records only
once everyone in the call has consented; a decline keeps it from starting, or stops it; a
request lapses; under ``notice`` it starts at once. Consents and declines are events, and
appear in the session's audit trail (scheduling's history)."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.signaling.conftest import (
    Browser,
    Calls,
    InCall,
    host_and_admitted_guest,
    knocking_guest,
    practitioner_room,
    room_events,
)
from tests.signaling.test_recording import recording_available
from tests.signaling.test_seats import direct_session
from tests.support import eventually


async def consent(browser: Browser, given: bool = True) -> dict[str, Any]:
    """Answer the request this browser is asked (the next ``consent_request``)."""
    asked = await browser.next("consent_request")
    await browser.send("recording_consent", request_id=asked["request_id"], given=given)
    return asked


async def types_of(dsn: str, room_id: str) -> list[str]:
    return [t for t, _ in await room_events(dsn, room_id)]


async def second_guest(calls: Calls, call: InCall, name: str = "Bob") -> Browser:
    guest, welcome = await knocking_guest(calls, call.room, name=name, replica=0)
    await call.host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    await call.host.latest("room", participants=lambda p: len(p) == 3)
    return guest


async def test_the_recording_starts_once_everyone_in_the_call_has_consented(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    bob = await second_guest(calls, call)
    room_id = call.welcome["room_id"]

    await call.host.send("start_recording")
    for guest in (call.guest, bob):
        asked = await guest.next("consent_request")
        assert asked["requested_by"] == "Dr Ada"
        assert asked["message"] == "Dr Ada wants to record this call. Do you consent?"
    assert not call.host.seen("consent_request")  # asking is consenting
    state = await call.host.latest("consent_state", status="asking")
    assert {p["display_name"] for p in state["pending"]} == {"Grace", "Bob"}
    assert state["policy"] == "all"

    await call.host.send("start_recording")  # a second request while this one waits
    assert (await call.host.next("error"))["code"] == "consent_pending"

    request_id = asked["request_id"]
    await call.guest.send("recording_consent", request_id=request_id, given=True)
    state = await call.host.latest("consent_state", consented=lambda c: len(c) == 1)
    assert [p["display_name"] for p in state["pending"]] == ["Bob"]
    assert state["message"] == "Waiting for Bob to consent to the recording."
    await call.guest.next("consent_closed", request_id=request_id)
    await asyncio.sleep(0.3)
    assert "RecordingStarted" not in await types_of(postgres_dsn, room_id)
    assert not call.host.seen("recording")

    await bob.send("recording_consent", request_id=request_id, given=True)
    for browser in (call.host, call.guest, bob):
        await browser.next("recording", on=True)
    state = await call.host.latest("consent_state", status="recording")
    assert state["pending"] == []
    assert len(state["consented"]) == 2

    events = await room_events(postgres_dsn, room_id)
    types = [t for t, _ in events]
    assert types.count("RecordingConsentGiven") == 2
    assert types.index("RecordingStarted") > max(
        i for i, t in enumerate(types) if t == "RecordingConsentGiven"
    )
    requested = next(d for t, d in events if t == "RecordingRequested")
    assert requested["policy"] == "all"
    assert set(requested["asked"]) == {call.guest_id, bob.seen("welcome")[0]["participant_id"]}
    started = next(d for t, d in events if t == "RecordingStarted")
    assert started["request_id"] == request_id

    await asyncio.sleep(1.0)
    await call.host.send("stop_recording")
    await bob.next("recording", on=False)
    await recording_available(postgres_dsn, started["recording_id"])  # the node recorded


async def test_a_decline_keeps_the_recording_from_starting_and_hosts_are_told_by_name(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    await call.guest.send("start_recording")
    assert (await call.guest.next("error"))["code"] == "only_hosts"

    await call.host.send("start_recording")
    asked = await consent(call.guest, given=False)
    state = await call.host.latest("consent_state", status="declined")
    assert state["message"] == "Grace declined to be recorded, so it will not be recorded."
    assert [p["display_name"] for p in state["declined"]] == ["Grace"]
    closed = await call.guest.next("consent_closed")
    assert closed["message"] == "You declined: this call is not being recorded."

    # The request is over: a late answer, and one to a made-up request, are refused.
    await call.guest.send("recording_consent", request_id=asked["request_id"], given=True)
    assert (await call.guest.next("error"))["code"] == "consent_not_asked"
    await asyncio.sleep(0.3)
    types = await types_of(postgres_dsn, call.welcome["room_id"])
    assert "RecordingConsentDeclined" in types
    assert "RecordingStarted" not in types
    assert not call.host.seen("recording")

    # The host may ask again, and withdraw a request that waits (stop_recording).
    await call.host.send("start_recording")
    await call.guest.next("consent_request")
    await call.host.send("stop_recording")
    await call.host.latest("consent_state", status="cancelled")
    await call.guest.next("consent_closed")
    assert "RecordingRequestCancelled" in await types_of(postgres_dsn, call.welcome["room_id"])


async def test_under_the_notice_policy_it_starts_at_once_and_everyone_is_told(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, call={"recording_consent": "notice"})
    await call.host.send("start_recording")
    told = await call.guest.next("recording", on=True)
    assert told["message"] == (
        "This call is being recorded. If you do not want to be recorded, you may leave the call."
    )
    await call.host.latest("consent_state", status="recording", policy="notice")
    assert not call.guest.seen("consent_request")
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    requested = next(d for t, d in events if t == "RecordingRequested")
    assert (requested["policy"], requested["asked"]) == ("notice", [])
    types = [t for t, _ in events]
    assert types.index("RecordingRequested") + 1 == types.index("RecordingStarted")


async def test_a_guest_who_knocks_during_a_recording_is_asked_while_waiting_and_a_decline_stops_it(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    await call.host.send("start_recording")
    await consent(call.guest)
    await call.host.next("recording", on=True)

    late, welcome = await knocking_guest(calls, call.room, name="Lin", replica=0)
    assert (await late.next("recording", on=True))["message"] == "This call is being recorded."
    asked = await late.next("consent_request")  # in the waiting room, before entering
    assert not late.seen("admitted")
    state = await call.host.latest("consent_state", pending=lambda p: len(p) == 1)
    assert state["pending"][0]["waiting"] is True
    assert state["status"] == "recording"

    await late.send("recording_consent", request_id=asked["request_id"], given=False)
    for browser in (call.host, call.guest, late):
        await browser.next("recording", on=False)
    state = await call.host.latest("consent_state", status="declined")
    assert state["message"] == "Lin declined to be recorded, so the recording stopped."
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    types = [t for t, _ in events]
    knocked = len(types) - 1 - types[::-1].index("GuestKnocked")  # Lin's
    assert types[knocked + 1] == "RecordingConsentAsked"  # in the same append
    assert types.index("RecordingConsentDeclined") + 1 == types.index("RecordingStopped")
    stopped = next(d for t, d in events if t == "RecordingStopped")
    assert stopped["because"] == "consent_declined"
    assert stopped["by"] == welcome["participant_id"]


async def test_someone_who_leaves_while_asked_no_longer_holds_the_start(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    bob = await second_guest(calls, call)
    await call.host.send("start_recording")
    await consent(call.guest)
    await bob.next("consent_request")
    await call.host.latest("consent_state", consented=lambda c: len(c) == 1)
    await asyncio.sleep(0.2)
    assert not call.host.seen("recording")

    await bob.send("leave")
    await bob.closed()
    await call.host.next("recording", on=True)
    await call.guest.next("recording", on=True)
    types = await types_of(postgres_dsn, call.welcome["room_id"])
    assert types.index("ParticipantLeft") < types.index("RecordingStarted")


async def test_a_request_nobody_answers_lapses_and_the_host_is_told(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    await call.host.send("start_recording")
    asked = await call.guest.next("consent_request")
    state = await call.host.latest("consent_state", status="asking")
    answer_by = datetime.fromisoformat(state["answer_by"])
    assert answer_by == calls.clock() + timedelta(seconds=60)

    calls.clock.advance(seconds=61)
    state = await call.host.latest("consent_state", status="lapsed")
    assert state["message"] == "The request to record lapsed: Grace did not answer in time."
    closed = await call.guest.next("consent_closed", request_id=asked["request_id"])
    assert "answered in time" in closed["message"]
    events = await room_events(postgres_dsn, call.welcome["room_id"])
    lapsed = next(d for t, d in events if t == "RecordingRequestLapsed")
    assert lapsed["unanswered"] == [call.guest_id]
    assert "RecordingStarted" not in [t for t, _ in events]


async def test_a_host_alone_records_at_once_and_a_guest_who_enters_directly_is_asked(
    calls: Calls, postgres_dsn: str
) -> None:
    host_url, guest_url, session_id = await direct_session(calls, cap=4)
    host = await calls.join(host_url, "Dr Ada", session_id=session_id)
    await host.next("admitted")
    await host.send("start_recording")
    await host.next("recording", on=True)  # nobody else to ask

    guest = await calls.join(guest_url, "Ines", replica=1)
    await guest.next("recording", on=True)
    asked = await guest.next("consent_request")
    await guest.next("admitted")  # the page asks before it connects media
    state = await host.latest("consent_state", pending=lambda p: len(p) == 1)
    assert state["pending"][0]["waiting"] is False
    await guest.send("recording_consent", request_id=asked["request_id"], given=True)
    await host.latest("consent_state", consented=lambda c: len(c) == 1, pending=[])
    types = await types_of(postgres_dsn, host.seen("welcome")[0]["room_id"])
    joined = len(types) - 1 - types[::-1].index("ParticipantJoined")  # the guest's
    assert types[joined + 1] == "RecordingConsentAsked"  # in the same append


async def test_consents_and_declines_are_in_the_sessions_audit_trail(calls: Calls) -> None:
    room = await practitioner_room(calls)
    clinic = room.clinic.clinic
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    session = await clinic.ok(
        "POST",
        "/v1/sessions",
        201,
        json={
            "practitioner_id": room.practitioner["practitioner_id"],
            "client_ids": [(await clinic.client())["client_id"]],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
            "link_sharing": True,
        },
    )
    session_id = session["session_id"]
    guest_link = await room.clinic.link("guest", session_id=session_id)
    host = await calls.join(room.host_url, "Dr Ada", session_id=session_id)
    await host.next("admitted")
    guests = []
    for name in ("Grace", "Bob"):
        guest = await calls.join(guest_link["url"], name, replica=1)
        welcome = await guest.next("welcome")
        await guest.next("waiting")
        await host.send("admit", participant_id=welcome["participant_id"])
        await guest.next("admitted")
        guests.append(guest)

    await host.send("start_recording")
    await consent(guests[0])
    await consent(guests[1])
    await host.next("recording", on=True)
    await guests[1].send(
        "recording_consent",
        request_id=guests[1].seen("consent_request")[0]["request_id"],
        given=False,
    )  # consent taken back: the recording stops
    await host.next("recording", on=False)

    wanted = [
        "SessionRecordingRequested",
        "SessionRecordingConsentGiven",
        "SessionRecordingConsentGiven",
        "SessionRecordingStarted",
        "SessionRecordingConsentDeclined",
        "SessionRecordingStopped",
    ]
    history: list[dict[str, Any]] = []

    async def recorded() -> bool:
        nonlocal history
        history = await clinic.ok("GET", f"/v1/sessions/{session_id}/history")
        return [e["type"] for e in history if e["type"].startswith("SessionRecording")] == wanted

    await eventually(recorded, what="the consents in the session's history")
    by_type = {e["type"]: e["data"] for e in history}
    bob = guests[1].seen("welcome")[0]["participant_id"]
    assert by_type["SessionRecordingConsentDeclined"]["participant_id"] == bob
    assert by_type["SessionRecordingStopped"]["because"] == "consent_declined"
    assert by_type["SessionRecordingRequested"]["policy"] == "all"


async def test_someone_who_comes_back_while_asked_is_asked_again(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls)
    await call.host.send("start_recording")
    asked = await call.guest.next("consent_request")
    await call.guest.drop()
    back = await calls.open(0)  # on the other replica
    await back.send("join", resume=call.welcome["resume_token"])
    await back.next("welcome")
    again = await back.next("consent_request")
    assert again["request_id"] == asked["request_id"]
    await back.send("recording_consent", request_id=again["request_id"], given=True)
    await call.host.next("recording", on=True)
    await back.next("recording", on=True)


async def test_media_of_someone_asked_during_a_recording_waits_for_their_answer(
    calls: Calls,
) -> None:
    """The page asks before it connects media, and signaling holds to it too: an offer from
    someone who entered during a recording and has not answered is refused, so a page that
    ignores the question sends nothing to be recorded."""
    host_url, guest_url, session_id = await direct_session(calls, cap=4)
    host = await calls.join(host_url, "Dr Ada", session_id=session_id)
    await host.next("admitted")
    await host.send("start_recording")
    await host.next("recording", on=True)

    guest = await calls.join(guest_url, "Ines", replica=1)
    asked = await guest.next("consent_request")
    await guest.next("admitted")
    offer = {"kind": "offer", "sdp": "v=0\r\n"}
    await guest.send("signal", **offer)
    refused = await guest.next("error", code="consent_needed")
    assert "answer whether you consent" in refused["message"]

    await guest.send("recording_consent", request_id=asked["request_id"], given=True)
    await host.latest("consent_state", pending=[])
    await guest.send("signal", **offer)  # now relayed: the node judges the offer itself
    answer = await guest.next("error")
    assert answer["code"] != "consent_needed"
