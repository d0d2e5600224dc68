"""A link's life through the services: scheduling's API drives, links reacts, the test's clock
decides where in the window we are."""

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
from nats.aio.client import Client as NATS

from contracts.events import Event
from contracts.scheduling import GuestAdmission, SessionScheduled, SessionSource, VideoMode
from contracts.signaling import (
    CallRole,
    EndedBecause,
    ParticipantJoined,
    ParticipantLeft,
    SessionEnded,
    SessionStarted,
)
from tests.links.conftest import Clock, LinkedClinic, Platform, linked_clinic
from tests.scheduling.conftest import OPERATOR, report
from tests.support import eventually

# -- helpers -----------------------------------------------------------------------------------


def moment(session: dict[str, Any], field: str = "starts_at", **delta: float) -> datetime:
    return datetime.fromisoformat(session[field]) + timedelta(**delta)


def assert_sentence(text: object) -> None:
    assert isinstance(text, str), text
    assert text, "a sentence is required"
    assert text[0].isupper(), text
    assert text.endswith("."), text
    assert not re.search(r"None|\{|\}", text), text


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == status
    assert_sentence(problem["detail"])
    return problem


async def allowed(clinic: LinkedClinic, link: dict[str, Any], **params: Any) -> dict[str, Any]:
    response = await clinic.resolve(link["url"], **params)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    assert decision["allowed"] is True
    assert decision["link_id"] == link["link_id"]
    return decision


async def refused(
    clinic: LinkedClinic, link: dict[str, Any], status: int, code: str, **params: Any
) -> dict[str, Any]:
    response = await clinic.resolve(link["url"], **params)
    problem = assert_problem(response, status, code)
    assert problem["link_id"] == link["link_id"]
    assert response.headers["referrer-policy"] == "no-referrer"
    return problem


async def soon_refused(
    clinic: LinkedClinic, link: dict[str, Any], status: int, code: str, **params: Any
) -> dict[str, Any]:
    """Refused once links has seen what scheduling (or signaling) published."""

    async def refusing() -> bool:
        response = await clinic.resolve(link["url"], **params)
        return response.status_code == status and response.json().get("code") == code

    await eventually(refusing, what=f"{link['kind']} link refused as {code}")
    return await refused(clinic, link, status, code, **params)


async def soon_allowed(clinic: LinkedClinic, link: dict[str, Any], **params: Any) -> None:
    async def allowing() -> bool:
        return (await clinic.resolve(link["url"], **params)).status_code == 200

    await eventually(allowing, what=f"{link['kind']} link allowed")


async def signal(nc: NATS, clinic_id: str, event: Event, occurred_at: datetime) -> None:
    """Publish ``event`` as signaling's relay would, at ``occurred_at`` (the links clock's
    time, since links keeps when someone left from the envelope)."""
    await report(nc, "signaling", clinic_id, event, occurred_at)


async def shared_session(clinic: LinkedClinic, **extra: Any) -> dict[str, Any]:
    """A session with link sharing and one invited attendee: session, guest, drop-in links."""
    c = clinic.clinic
    practitioner = await c.practitioner()
    session = await c.session(practitioner, [await c.client()], link_sharing=True, **extra)
    sid = session["session_id"]
    await c.ok("POST", f"/v1/sessions/{sid}/attendees", 201, json={"email": "a@example.org"})
    await clinic.wait_links(3, session_id=sid)
    session["practitioner"] = practitioner
    return session


async def audit(clinic: LinkedClinic, link_id: str) -> dict[str, Any]:
    response = await clinic.links.get(f"/v1/links/{link_id}/audit", headers=clinic.clinic.headers)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def regenerate(clinic: LinkedClinic, link_id: str) -> httpx.Response:
    return await clinic.links.post(f"/v1/links/{link_id}/regenerate", headers=clinic.clinic.headers)


# -- regeneration ------------------------------------------------------------------------------


async def test_a_regenerated_guest_link_refuses_the_old_token(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    old = await clinic.link("guest", session_id=sid)
    clock.set(moment(session))
    await allowed(clinic, old)

    response = await regenerate(clinic, old["link_id"])
    assert response.status_code == 201, response.text
    new = response.json()
    assert response.headers["location"] == f"/v1/links/{new['link_id']}/audit"
    assert (new["kind"], new["state"], new["session_id"]) == ("guest", "active", sid)
    assert new["link_id"] != old["link_id"]
    assert new["url"] != old["url"]

    problem = await refused(clinic, old, 410, "regenerated")
    assert_sentence(problem["replaced_by_hint"])
    assert (await allowed(clinic, new))["role"] == "guest"
    clock.advance(minutes=5)
    await refused(clinic, old, 410, "regenerated")  # from then on
    await allowed(clinic, new)

    listed = await clinic.links_of(session_id=sid, kind="guest", include_inactive=True)
    states = {x["link_id"]: (x["state"], x["replaced_by"]) for x in listed}
    assert states == {
        old["link_id"]: ("replaced", new["link_id"]),
        new["link_id"]: ("active", None),
    }
    assert [x["link_id"] for x in await clinic.links_of(session_id=sid, kind="guest")] == [
        new["link_id"]
    ]

    lifecycle = [e["type"] for e in (await audit(clinic, old["link_id"]))["lifecycle"]]
    assert lifecycle == ["LinkIssued", "LinkRegenerated"]
    entry = (await audit(clinic, new["link_id"]))["lifecycle"]
    assert [e["type"] for e in entry] == ["LinkRegenerated"]
    assert entry[0]["data"]["replaces_link_id"] == old["link_id"]
    assert "url_sealed" not in entry[0]["data"]

    # The old link is no longer the slot's current one: nothing to regenerate.
    assert_problem(await regenerate(clinic, old["link_id"]), 404, "link_not_active")


async def test_regeneration_racing_resolutions_leaves_the_old_token_dead(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    old = await clinic.link("guest", session_id=session["session_id"])
    clock.set(moment(session, minutes=1))

    results = await asyncio.gather(
        *(clinic.resolve(old["url"]) for _ in range(15)),
        regenerate(clinic, old["link_id"]),
        *(clinic.resolve(old["url"]) for _ in range(15)),
    )
    regenerated = results[15]
    assert regenerated.status_code == 201, regenerated.text
    for response in results[:15] + results[16:]:
        # Before the regeneration: allowed; after: refused as regenerated. Nothing else.
        if response.status_code != 200:
            assert_problem(response, 410, "regenerated")
    for _ in range(10):
        await refused(clinic, old, 410, "regenerated")
    await allowed(clinic, regenerated.json())


async def test_concurrent_regenerations_replace_the_link_once(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    old = await clinic.link("guest", session_id=session["session_id"])
    clock.set(moment(session))
    first, second = await asyncio.gather(
        regenerate(clinic, old["link_id"]), regenerate(clinic, old["link_id"])
    )
    codes = sorted([first.status_code, second.status_code])
    assert codes in ([201, 404], [201, 409]), (first.text, second.text)
    loser = first if first.status_code != 201 else second
    code = "link_not_active" if loser.status_code == 404 else "changed_concurrently"
    assert_problem(loser, loser.status_code, code)
    lifecycle = [e["type"] for e in (await audit(clinic, old["link_id"]))["lifecycle"]]
    assert lifecycle.count("LinkRegenerated") == 1
    active = await clinic.links_of(session_id=session["session_id"], kind="guest")
    assert len(active) == 1
    await allowed(clinic, active[0])


async def test_only_guest_and_client_room_links_can_be_regenerated(clinic: LinkedClinic) -> None:
    session = await shared_session(clinic)
    practitioner_id = session["practitioner"]["practitioner_id"]
    for kind, filters in (
        ("session", {"session_id": session["session_id"]}),
        ("drop_in", {"session_id": session["session_id"]}),
        ("host", {"practitioner_id": practitioner_id}),
        ("practitioner_room", {"practitioner_id": practitioner_id}),
    ):
        link = await clinic.link(kind, **filters)
        assert_problem(await regenerate(clinic, link["link_id"]), 409, "not_regenerable")
        lifecycle = [e["type"] for e in (await audit(clinic, link["link_id"]))["lifecycle"]]
        assert lifecycle == ["LinkIssued"], kind
    assert_problem(await regenerate(clinic, str(uuid4())), 404, "link_not_found")


async def test_a_client_room_link_is_stable_across_sessions_until_regenerated(
    clinic: LinkedClinic, clock: Clock
) -> None:
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room, link = await clinic.client_room(practitioner, client)
    room_id = room["room_id"]
    first = await c.session(practitioner, [client], video_mode="client_room", room_id=room_id)
    start = moment(first, days=1)
    second = await c.session(
        practitioner,
        [client],
        video_mode="client_room",
        room_id=room_id,
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=50)).isoformat(),
    )

    async def portal_urls() -> set[str | None]:
        upcoming = await c.ok("GET", f"/v1/clients/{client['client_id']}/sessions/upcoming")
        items = upcoming["items"] if isinstance(upcoming, dict) else upcoming
        return {x["join_url"] for x in items}

    async def portal_shows(url: str) -> bool:
        return await portal_urls() == {url}

    await eventually(lambda: portal_shows(link["url"]), what="the room link in the portal")
    for s in (first, second):
        assert await clinic.links_of(session_id=s["session_id"]) == []  # no link of its own
    assert [x["link_id"] for x in await clinic.links_of(room_id=room_id)] == [link["link_id"]]

    clock.set(moment(first))
    decision = await allowed(clinic, link)
    assert (decision["kind"], decision["role"]) == ("client_room", "guest")
    assert decision["session_id"] == first["session_id"]
    assert decision["room_id"] == room_id
    clock.set(moment(second))
    assert (await allowed(clinic, link))["session_id"] == second["session_id"]
    assert [x["link_id"] for x in await clinic.links_of(room_id=room_id)] == [link["link_id"]]

    response = await regenerate(clinic, link["link_id"])
    assert response.status_code == 201, response.text
    new = response.json()
    await refused(clinic, link, 410, "regenerated")
    assert (await allowed(clinic, new))["session_id"] == second["session_id"]
    await eventually(lambda: portal_shows(new["url"]), what="the new room link in the portal")


# -- what scheduling changes -------------------------------------------------------------------


async def test_disabling_sharing_revokes_guest_and_drop_in_links_for_good(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    by_kind = {x["kind"]: x for x in await clinic.links_of(session_id=sid)}
    clock.set(moment(session))
    for link in by_kind.values():
        await allowed(clinic, link)

    await clinic.clinic.ok("PUT", f"/v1/sessions/{sid}/link-sharing", json={"enabled": False})
    for kind in ("guest", "drop_in"):
        problem = await soon_refused(clinic, by_kind[kind], 410, "sharing_disabled")
        assert problem["detail"] == "The host turned off guest links for this session."
    await allowed(clinic, by_kind["session"])  # the client's own link is not shared

    await clinic.clinic.ok("PUT", f"/v1/sessions/{sid}/link-sharing", json={"enabled": True})
    fresh = await clinic.wait_links(3, session_id=sid)
    again = {x["kind"]: x for x in fresh}
    assert set(again) == {"session", "guest", "drop_in"}
    for kind in ("guest", "drop_in"):
        assert again[kind]["link_id"] != by_kind[kind]["link_id"]
        await allowed(clinic, again[kind])
        await refused(clinic, by_kind[kind], 410, "sharing_disabled")
    assert again["session"]["link_id"] == by_kind["session"]["link_id"]


async def test_cancelling_a_session_revokes_its_links(clinic: LinkedClinic, clock: Clock) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    links = await clinic.links_of(session_id=sid)
    clock.set(moment(session))
    await clinic.clinic.ok("POST", f"/v1/sessions/{sid}/cancel", json={"reason": "ill"})
    for link in links:
        problem = await soon_refused(clinic, link, 410, "revoked")
        assert problem["detail"] == "This session was cancelled."
    assert await clinic.links_of(session_id=sid) == []
    revoked = await clinic.links_of(session_id=sid, include_inactive=True)
    assert {(x["state"], x["revoked_because"]) for x in revoked} == {
        ("revoked", "session_cancelled")
    }


async def test_deleting_a_client_room_revokes_its_link(clinic: LinkedClinic) -> None:
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room = await c.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Family"},
    )
    link = await clinic.link("client_room", room_id=room["room_id"])
    await allowed(clinic, link)
    await c.ok("DELETE", f"/v1/rooms/{room['room_id']}", 204)
    problem = await soon_refused(clinic, link, 410, "revoked")
    assert problem["detail"] == "This room no longer exists."
    assert_problem(await regenerate(clinic, link["link_id"]), 404, "link_not_active")


async def test_rescheduling_moves_the_window(clinic: LinkedClinic, clock: Clock) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    link = await clinic.link("session", session_id=sid)
    clock.set(moment(session, minutes=5))  # inside the old window
    await allowed(clinic, link)

    later = moment(session, days=2)
    await clinic.clinic.ok(
        "POST",
        f"/v1/sessions/{sid}/reschedule",
        json={"starts_at": later.isoformat(), "ends_at": (later + timedelta(hours=1)).isoformat()},
    )
    problem = await soon_refused(clinic, link, 423, "not_yet_open")
    opens = later - timedelta(minutes=10)
    assert problem["opens_at"] == opens.isoformat().replace("+00:00", "Z")
    assert problem["detail"] == (
        f"This session opens at {opens:%H:%M} on {opens:%A %-d %B %Y} (UTC)."
    )
    clock.set(opens - timedelta(seconds=1))
    await refused(clinic, link, 423, "not_yet_open")
    clock.set(opens)
    await allowed(clinic, link)
    clock.set(later + timedelta(hours=1, minutes=15))  # the new end + buffer
    await refused(clinic, link, 410, "ended")


async def test_a_session_at_the_end_of_the_calendar_resolves_without_an_error(
    clinic: LinkedClinic, nc: NATS
) -> None:
    """Whatever date scheduling announced, resolving its links answers in words (the report's
    9999-12-31T23:00Z session answered 500: its close overflowed)."""
    practitioner = await clinic.clinic.practitioner()
    host = await clinic.link("host", practitioner_id=practitioner["practitioner_id"])
    sid = uuid4()
    starts = datetime(9999, 12, 31, 23, tzinfo=UTC)
    event = SessionScheduled(
        session_id=sid,
        practitioner_id=practitioner["practitioner_id"],
        client_ids=(),
        starts_at=starts,
        ends_at=starts + timedelta(minutes=50),
        time_zone="Pacific/Kiritimati",
        video_mode=VideoMode.session_link,
        link_sharing=True,
        guest_admission=GuestAdmission.waiting_room,
        source=SessionSource.ad_hoc,
    )
    await report(nc, "scheduling", clinic.clinic.clinic_id, event)
    await clinic.wait_links(2, session_id=str(sid))
    for kind in ("session", "guest"):
        problem = await refused(
            clinic, await clinic.link(kind, session_id=str(sid)), 423, "not_yet_open"
        )
        assert "9999" in problem["detail"]
    assert (await allowed(clinic, host, session_id=str(sid)))["session_id"] == str(sid)


async def test_retired_links_work_with_a_warning_until_the_sunset(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    old = await clinic.link("guest", session_id=sid)
    clock.set(moment(session))
    sunset = moment(session, minutes=20)
    response = await clinic.links.post(
        "/v1/links/retire",
        headers=clinic.clinic.headers,
        json={"sunset_at": sunset.isoformat(), "kind": "guest"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"retired": 1}

    listed = await clinic.links_of(session_id=sid, kind="guest")
    by_id = {x["link_id"]: x for x in listed}
    assert by_id[old["link_id"]]["state"] == "deprecated"
    assert datetime.fromisoformat(by_id[old["link_id"]]["sunset_at"]) == sunset
    successor_id = by_id[old["link_id"]]["replaced_by"]
    successor = by_id[successor_id]
    assert (successor["state"], successor["kind"]) == ("active", "guest")
    assert successor["url"] != old["url"]

    warned = await allowed(clinic, old)
    assert_sentence(warned["warning"])
    assert f"{sunset:%H:%M}" in warned["warning"]
    assert (await allowed(clinic, successor))["warning"] is None
    clock.set(moment(session, minutes=-11))  # not open yet: refused, and warned all the same
    early = await refused(clinic, old, 423, "not_yet_open")
    assert early["warning"] == warned["warning"]
    assert_sentence(early["replaced_by_hint"])
    assert (await refused(clinic, successor, 423, "not_yet_open")).get("warning") is None

    clock.set(sunset - timedelta(seconds=1))
    await allowed(clinic, old)
    clock.set(sunset)
    problem = await refused(clinic, old, 410, "retired")
    assert_sentence(problem["replaced_by_hint"])
    clock.advance(minutes=10)
    await refused(clinic, old, 410, "retired")
    await allowed(clinic, successor)
    lifecycle = (await audit(clinic, old["link_id"]))["lifecycle"]
    assert [e["type"] for e in lifecycle] == ["LinkIssued", "LinkDeprecated", "LinkIssued"]
    # The successor's event is what the people holding the old link are sent it for.
    issued = lifecycle[-1]["data"]
    assert (issued["link_id"], issued["replaces_link_id"]) == (successor_id, old["link_id"])
    assert datetime.fromisoformat(issued["replaces_link_sunset_at"]) == sunset


async def retire(clinic: LinkedClinic, **body: Any) -> httpx.Response:
    return await clinic.links.post("/v1/links/retire", headers=clinic.clinic.headers, json=body)


async def test_a_sunset_that_is_not_in_the_future_retires_nothing(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    before = await clinic.links_of(session_id=sid)
    clock.set(moment(session))
    for sunset in ("1970-01-01T00:00:00Z", clock.now.isoformat()):
        problem = assert_problem(await retire(clinic, sunset_at=sunset), 422, "sunset_not_ahead")
        assert "future" in problem["detail"]
    assert await clinic.links_of(session_id=sid) == before
    for link in before:
        await allowed(clinic, link)


async def test_retiring_every_kind_leaves_the_host_links_alone(
    clinic: LinkedClinic, clock: Clock
) -> None:
    """A host link is the practitioner's own way in, mailed to nobody: retiring "everything"
    must not replace it behind their back. Naming the kind retires it on purpose."""
    session = await shared_session(clinic)
    practitioner_id = session["practitioner"]["practitioner_id"]
    host = await clinic.link("host", practitioner_id=practitioner_id)
    clock.set(moment(session))
    sunset = moment(session, minutes=20).isoformat()
    response = await retire(clinic, sunset_at=sunset)
    assert response.status_code == 200, response.text
    assert response.json() == {"retired": 3}  # session, guest and drop-in links
    hosts = await clinic.links_of(practitioner_id=practitioner_id, kind="host")
    assert [(x["link_id"], x["state"]) for x in hosts] == [(host["link_id"], "active")]
    assert (await allowed(clinic, host, session_id=session["session_id"]))["warning"] is None

    response = await retire(clinic, sunset_at=sunset, kind="host")
    assert response.status_code == 200, response.text
    assert response.json() == {"retired": 1}
    states = {
        x["link_id"]: x["state"]
        for x in await clinic.links_of(practitioner_id=practitioner_id, kind="host")
    }
    assert states[host["link_id"]] == "deprecated"
    assert len(states) == 2


# -- calls -------------------------------------------------------------------------------------


async def test_a_live_call_keeps_its_links_open_past_the_close(
    clinic: LinkedClinic, clock: Clock, nc: NATS
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    link = await clinic.link("session", session_id=sid)
    room_id = session["practitioner"]["room_id"]
    clock.set(moment(session, "ends_at", minutes=15))  # the close
    await refused(clinic, link, 410, "ended")

    started = SessionStarted(room_id=room_id, session_id=sid, started_at=moment(session))
    await signal(nc, clinic.clinic.clinic_id, started, moment(session))
    await soon_allowed(clinic, link)
    clock.advance(hours=2)
    decision = await allowed(clinic, link)
    assert decision["live"] is True
    guest = await clinic.link("guest", session_id=sid)
    await allowed(clinic, guest)


async def test_someone_who_dropped_may_rejoin_within_the_grace_with_their_link_only(
    platform: Platform, clock: Clock, nc: NATS
) -> None:
    # No buffer, so the window closes at the end and the grace outlasts it.
    clinic = await linked_clinic(
        platform, buffer_minutes=0, rejoin_grace_minutes=5, loudest_speakers=2
    )
    session = await shared_session(clinic)
    sid, clinic_id = session["session_id"], clinic.clinic.clinic_id
    room_id = session["practitioner"]["room_id"]
    mine = await clinic.link("session", session_id=sid)
    guest = await clinic.link("guest", session_id=sid)
    end = moment(session, "ends_at")
    started = SessionStarted(room_id=room_id, session_id=sid, started_at=moment(session))
    await signal(nc, clinic_id, started, moment(session))
    clock.set(end + timedelta(minutes=30))
    await soon_allowed(clinic, mine)

    left_at = end - timedelta(minutes=1)
    participant = uuid4()
    common = {"room_id": room_id, "session_id": sid, "participant_id": participant}
    joined = ParticipantJoined(**common, role=CallRole.guest, link_id=mine["link_id"])
    await signal(nc, clinic_id, joined, moment(session))
    await signal(
        nc,
        clinic_id,
        ParticipantLeft(**common, link_id=mine["link_id"], reason="disconnected"),
        left_at,
    )
    ended = SessionEnded(
        room_id=room_id, session_id=sid, because=EndedBecause.last_left, ended_at=left_at
    )
    await signal(nc, clinic_id, ended, left_at)

    clock.set(end + timedelta(minutes=2))  # past the close, inside the grace
    await soon_refused(clinic, guest, 410, "ended")  # the call is over
    await soon_allowed(clinic, mine)  # once links has seen them leave
    decision = await allowed(clinic, mine)
    assert decision["live"] is False
    assert decision["rejoin_grace_minutes"] == 5
    assert decision["loudest_speakers"] == 2
    clock.set(left_at + timedelta(minutes=5) - timedelta(seconds=1))
    await allowed(clinic, mine)
    clock.set(left_at + timedelta(minutes=5))
    await refused(clinic, mine, 410, "ended")
    clock.advance(seconds=1)
    await refused(clinic, mine, 410, "ended")


async def test_a_call_that_ends_after_its_end_completes_the_session_for_good(
    clinic: LinkedClinic, clock: Clock, nc: NATS
) -> None:
    """Scheduling completes a session whose call ends after its end; a completed session
    is over even for someone who dropped a moment ago (completed is final)."""
    session = await shared_session(clinic)
    sid, clinic_id = session["session_id"], clinic.clinic.clinic_id
    room_id = session["practitioner"]["room_id"]
    mine = await clinic.link("session", session_id=sid)
    close = moment(session, "ends_at", minutes=15)
    started = SessionStarted(room_id=room_id, session_id=sid, started_at=moment(session))
    await signal(nc, clinic_id, started, moment(session))
    clock.set(close + timedelta(minutes=10))
    await soon_allowed(clinic, mine)
    left_at = close + timedelta(minutes=9)
    common = {"room_id": room_id, "session_id": sid, "participant_id": uuid4()}
    await signal(
        nc, clinic_id, ParticipantLeft(**common, link_id=mine["link_id"], reason="left"), left_at
    )
    ended = SessionEnded(
        room_id=room_id, session_id=sid, because=EndedBecause.ended_for_all, ended_at=left_at
    )
    await signal(nc, clinic_id, ended, left_at)

    async def completed() -> bool:
        found = await clinic.clinic.ok("GET", f"/v1/sessions/{sid}")
        return bool(found["status"] == "completed")

    await eventually(completed, what="the session completed")
    await soon_refused(clinic, mine, 410, "ended")


# -- the clinic --------------------------------------------------------------------------------


async def test_a_plan_without_session_links_refuses_them(
    clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    link = await clinic.link("session", session_id=sid)
    guest = await clinic.link("guest", session_id=sid)
    clock.set(moment(session))
    await allowed(clinic, link)
    await clinic.clinic.ok("PATCH", "/v1/clinic/settings", json={"plan": "basic"})
    problem = await soon_refused(clinic, link, 403, "plan_not_included")
    assert "plan" in problem["detail"]
    await allowed(clinic, guest)  # the plan concerns session links only
    await clinic.clinic.ok("PATCH", "/v1/clinic/settings", json={"plan": "professional"})
    await soon_allowed(clinic, link)


async def test_a_suspended_clinics_links_are_refused(
    platform: Platform, clinic: LinkedClinic, clock: Clock
) -> None:
    session = await shared_session(clinic)
    sid = session["session_id"]
    practitioner_id = session["practitioner"]["practitioner_id"]
    links = await clinic.links_of(session_id=sid)
    links += await clinic.links_of(practitioner_id=practitioner_id)
    assert {x["kind"] for x in links} == {
        "session",
        "guest",
        "drop_in",
        "host",
        "practitioner_room",
    }
    clock.set(moment(session))
    for link in links:
        await allowed(clinic, link)

    clinic_path = f"/v1/clinics/{clinic.clinic.clinic_id}"
    response = await platform.scheduling.post(
        f"{clinic_path}/suspend", headers=OPERATOR, json={"reason": "unpaid invoice"}
    )
    assert response.status_code == 200, response.text
    for link in links:
        await soon_refused(clinic, link, 403, "clinic_suspended")
    # A link refused for another reason is still told the clinic is suspended first.
    clock.set(moment(session, days=-1))
    await refused(clinic, links[0], 403, "clinic_suspended")
    # Its key no longer reaches its links either.
    response = await clinic.links.get(
        "/v1/links", params={"session_id": sid}, headers=clinic.clinic.headers
    )
    assert_problem(response, 403, "clinic_suspended")

    response = await platform.scheduling.post(f"{clinic_path}/reinstate", headers=OPERATOR)
    assert response.status_code == 200, response.text
    clock.set(moment(session))
    for link in links:
        await soon_allowed(clinic, link)


# -- audit -------------------------------------------------------------------------------------


async def test_the_audit_counts_resolutions_by_outcome(clinic: LinkedClinic, clock: Clock) -> None:
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    other = await clinic.link("session", session_id=session["session_id"])
    clock.set(moment(session, minutes=-11))
    for _ in range(2):
        await refused(clinic, link, 423, "not_yet_open")
    clock.set(moment(session))
    for _ in range(3):
        await allowed(clinic, link)
    await allowed(clinic, other)
    clock.set(moment(session, "ends_at", minutes=15))
    await refused(clinic, link, 410, "ended")

    found = await audit(clinic, link["link_id"])
    assert found["resolutions"] == {"allowed": 3, "not_yet_open": 2, "ended": 1}
    assert found["link"]["link_id"] == link["link_id"]
    assert found["link"]["url"] == link["url"]
    assert [e["type"] for e in found["lifecycle"]] == ["LinkIssued"]
    assert (await audit(clinic, other["link_id"]))["resolutions"] == {"allowed": 1}

    await refused(clinic, link, 410, "ended")
    await asyncio.sleep(0.5)  # the background flush saves it too; nothing is counted twice
    found = await audit(clinic, link["link_id"])
    assert found["resolutions"] == {"allowed": 3, "not_yet_open": 2, "ended": 2}


async def test_the_audit_includes_counts_that_a_flush_is_still_saving(
    clinic: LinkedClinic, clock: Clock, postgres_dsn: str
) -> None:
    """The audit saves what was counted before answering; if the background flush has just
    taken the counts and is still writing them, the audit must wait for it, not answer 0."""
    session = await shared_session(clinic)
    link = await clinic.link("guest", session_id=session["session_id"])
    clock.set(moment(session))
    blocker = await asyncpg.connect(postgres_dsn)
    try:
        async with blocker.transaction():
            # Reads go on; the flush's INSERT waits until this transaction ends.
            await blocker.execute("LOCK TABLE links.link_resolutions IN EXCLUSIVE MODE")
            await allowed(clinic, link)
            await asyncio.sleep(0.6)  # the flush (every 0.2 s) took the count and waits
            pending = asyncio.create_task(audit(clinic, link["link_id"]))
            await asyncio.sleep(0.3)
        found = await asyncio.wait_for(pending, timeout=10)
    finally:
        await blocker.close()
    assert found["resolutions"] == {"allowed": 1}
