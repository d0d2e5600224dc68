"""Sessions over HTTP: scheduling, changes, invitations, completion, and the queries."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from nats.aio.client import Client as NATS

from contracts.links import LinkIssued, LinkKind, LinkRegenerated, Role
from contracts.signaling import EndedBecause, SessionEnded, SessionStarted
from tests.scheduling.conftest import SEALER, ClinicHandle, register_clinic, report
from tests.support import assert_problem, eventually


def at(days: float = 1, minutes: int = 0) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days, minutes=minutes)


async def history(clinic: ClinicHandle, session_id: str) -> list[str]:
    entries = await clinic.ok("GET", f"/v1/sessions/{session_id}/history")
    return [e["type"] for e in entries]


async def test_a_session_is_scheduled_for_a_couple_with_local_times(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    couple = [await clinic.client("Ann"), await clinic.client("Bob")]
    session = await clinic.session(
        practitioner,
        couple,
        starts_at="2030-06-12T09:00:00+02:00",
        ends_at="2030-06-12T09:50:00+02:00",
        time_zone="Europe/Berlin",
    )
    assert session["client_ids"] == [c["client_id"] for c in couple]
    assert session["video_mode"] == "session_link"  # professional plan
    assert session["status"] == "scheduled"
    assert session["source"] == "api"
    assert session["guest_admission"] == "waiting_room"
    assert session["starts_at"] == "2030-06-12T07:00:00Z"
    assert session["local_starts_at"] == "2030-06-12T09:00:00+02:00"
    assert await history(clinic, session["session_id"]) == ["SessionScheduled"]


async def test_video_modes_use_the_right_rooms(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    own = await clinic.session(practitioner, [client], video_mode="practitioner_room")
    assert own["room_id"] == practitioner["room_id"]
    room = await clinic.client_room(client, practitioner)
    in_room = await clinic.session(
        practitioner, [client], video_mode="client_room", room_id=room["room_id"]
    )
    assert in_room["room_id"] == room["room_id"]


async def test_a_new_session_is_answered_as_it_reads_back(clinic: ClinicHandle) -> None:
    """The answer is built from the appended event, not read back: byte for byte the same."""
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    room = await clinic.client_room(client, practitioner)
    appointment = {
        "practitioner_id": practitioner["practitioner_id"],
        "client_ids": [client["client_id"]],
        "starts_at": "2030-06-12T09:00:00.123456+02:00",
        "ends_at": "2030-06-12T09:50:00-05:30",
    }
    bodies = [
        ("/v1/sessions", appointment | {"time_zone": "Asia/Kolkata", "link_sharing": True}),
        ("/v1/sessions", appointment | {"video_mode": "practitioner_room"}),
        (
            "/v1/sessions",
            appointment
            | {
                "video_mode": "client_room",
                "room_id": room["room_id"],
                "guest_admission": "direct",
            },
        ),
        ("/v1/sessions/ad-hoc", {"practitioner_id": practitioner["practitioner_id"]}),
    ]
    for path, body in bodies:
        created = await clinic.call("POST", path, json=body)
        assert created.status_code == 201, created.text
        read = await clinic.call("GET", created.headers["location"])
        assert created.content == read.content


async def test_bad_sessions_are_refused_and_change_nothing(api: httpx.AsyncClient) -> None:
    clinic = await register_clinic(api, plan="basic", max_participants=3)
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    others = [await clinic.client(f"C{i}") for i in range(3)]
    foreign = await register_clinic(api)
    foreign_client = await foreign.client()
    base = {
        "practitioner_id": practitioner["practitioner_id"],
        "client_ids": [client["client_id"]],
        "starts_at": at().isoformat(),
        "ends_at": at(minutes=50).isoformat(),
        "video_mode": "practitioner_room",
    }
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"ends_at": at(minutes=-5).isoformat()}, 422, "end_before_start"),
        ({"ends_at": at(minutes=12 * 60 + 1).isoformat()}, 422, "session_too_long"),
        (
            {"starts_at": at(-1).isoformat(), "ends_at": at(-1, 50).isoformat()},
            422,
            "starts_in_the_past",
        ),
        ({"client_ids": [c["client_id"] for c in [client, *others]]}, 422, "too_many_participants"),
        ({"time_zone": "Nowhere/Special"}, 422, ""),
        ({"starts_at": "2030-01-01T10:00:00"}, 422, ""),  # no offset
        ({"client_ids": [str(uuid4())]}, 404, "client_not_found"),
        ({"client_ids": [foreign_client["client_id"]]}, 404, "client_not_found"),
        ({"practitioner_id": str(uuid4())}, 404, "practitioner_not_found"),
        ({"video_mode": "session_link"}, 403, "plan_excludes_video_mode"),
        ({"video_mode": "client_room", "room_id": str(uuid4())}, 404, "room_not_found"),
        (
            {"video_mode": "client_room", "room_id": practitioner["room_id"]},
            422,
            "not_a_client_room",
        ),
    ]
    for change, status, code in cases:
        response = await clinic.call("POST", "/v1/sessions", json=base | change)
        assert response.status_code == status, (change, response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["detail"].endswith("."), problem
        if code:
            assert problem["code"] == code, (change, problem)
    listed = await clinic.ok("GET", "/v1/sessions")
    assert listed["items"] == []


async def test_reschedule_cancel_and_what_a_cancelled_session_refuses(
    clinic: ClinicHandle,
) -> None:
    practitioner = await clinic.practitioner()
    session = await clinic.session(practitioner, [await clinic.client()])
    path = f"/v1/sessions/{session['session_id']}"
    starts = at(2)  # once: two calls a second boundary apart would disagree
    moved = await clinic.ok(
        "POST",
        f"{path}/reschedule",
        json={
            "starts_at": starts.isoformat(),
            "ends_at": (starts + timedelta(hours=1)).isoformat(),
        },
    )
    assert moved["starts_at"] == starts.isoformat().replace("+00:00", "Z")
    cancelled = await clinic.ok("POST", f"{path}/cancel", json={"reason": "sick"})
    assert cancelled["status"] == "cancelled"
    for method, suffix, body in [
        ("POST", "/cancel", {}),
        ("POST", "/reschedule", {"starts_at": at(3).isoformat(), "ends_at": at(3, 5).isoformat()}),
        ("POST", "/attendees", {"email": "x@example.org"}),
        ("PUT", "/link-sharing", {"enabled": True}),
    ]:
        response = await clinic.call(method, path + suffix, json=body)
        assert response.status_code == 409, suffix
        assert response.json()["code"] == "session_cancelled"
    assert await history(clinic, session["session_id"]) == [
        "SessionScheduled",
        "SessionRescheduled",
        "SessionCancelled",
    ]


async def test_attendees_and_link_sharing(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client(
        linked_accounts=[{"display_name": "Dad", "email": "dad@example.org"}]
    )
    other = await clinic.client("Other")
    session = await clinic.session(practitioner, [client], link_sharing=True)
    path = f"/v1/sessions/{session['session_id']}"
    contact = client["linked_accounts"][0]
    invited = await clinic.call(
        "POST",
        f"{path}/attendees",
        json={"client_id": client["client_id"], "contact_id": contact["contact_id"]},
    )
    assert invited.status_code == 201, invited.text
    with_contact = invited.json()  # the attendee, not the whole session
    assert (with_contact["email"], with_contact["display_name"]) == ("dad@example.org", "Dad")
    assert (with_contact["client_id"], with_contact["contact_id"]) == (
        client["client_id"],
        contact["contact_id"],
    )
    assert invited.headers["location"] == f"{path}/attendees/{with_contact['attendee_id']}"
    assert await clinic.ok("GET", invited.headers["location"]) == with_contact
    anyone = await clinic.ok(
        "POST", f"{path}/attendees", 201, json={"email": "aunt@example.org", "display_name": "A"}
    )
    assert (anyone["email"], anyone["client_id"]) == ("aunt@example.org", None)
    assert (await clinic.ok("GET", path))["attendees"] == [with_contact, anyone]
    twice = await clinic.call("POST", f"{path}/attendees", json={"email": "AUNT@example.org"})
    assert twice.json()["code"] == "already_invited"
    not_theirs = await clinic.call(
        "POST",
        f"{path}/attendees",
        json={"client_id": other["client_id"], "contact_id": contact["contact_id"]},
    )
    assert not_theirs.json()["code"] == "contact_not_found"
    neither = await clinic.call("POST", f"{path}/attendees", json={"display_name": "?"})
    assert neither.status_code == 422
    aunt = f"{path}/attendees/{anyone['attendee_id']}"
    await clinic.ok("DELETE", aunt, 204)
    assert_problem(await clinic.call("GET", aunt), 404, "attendee_not_found")
    off = await clinic.ok("PUT", f"{path}/link-sharing", json={"enabled": False})
    assert off["link_sharing"] is False
    assert await history(clinic, session["session_id"]) == [
        "SessionScheduled",
        "AttendeeInvited",
        "AttendeeInvited",
        "AttendeeRemoved",
        "LinkSharingDisabled",
    ]


async def test_an_ad_hoc_session_starts_now_and_invites_from_the_call(
    clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    session = await clinic.ok(
        "POST",
        "/v1/sessions/ad-hoc",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "duration_minutes": 30},
    )
    assert session["source"] == "ad_hoc"
    assert session["video_mode"] == "practitioner_room"
    assert session["link_sharing"] is True
    assert session["client_ids"] == []
    await report(
        nc,
        "signaling",
        clinic.clinic_id,
        SessionStarted(
            room_id=UUID(practitioner["room_id"]),
            session_id=UUID(session["session_id"]),
            started_at=datetime.now(UTC),
        ),
    )
    path = f"/v1/sessions/{session['session_id']}"

    async def live() -> bool:
        return bool((await clinic.ok("GET", path))["status"] == "live")

    await eventually(live, what="the session live")
    await clinic.ok("POST", f"{path}/attendees", 201, json={"email": "late@example.org"})
    entries = await clinic.ok("GET", f"{path}/history")
    assert entries[-1]["type"] == "AttendeeInvited"
    assert entries[-1]["data"]["while_live"] is True


async def call(
    nc: NATS, clinic: ClinicHandle, session: dict[str, Any], because: EndedBecause, ended: datetime
) -> None:
    """Signaling reports a call in the session that starts and then ends."""
    ids = {"room_id": uuid4(), "session_id": UUID(session["session_id"])}
    await report(nc, "signaling", clinic.clinic_id, SessionStarted(**ids, started_at=ended))
    await report(
        nc, "signaling", clinic.clinic_id, SessionEnded(**ids, because=because, ended_at=ended)
    )


async def status_becomes(clinic: ClinicHandle, session_id: str, status: str) -> dict[str, Any]:
    async def reached() -> bool:
        return bool((await clinic.ok("GET", f"/v1/sessions/{session_id}"))["status"] == status)

    await eventually(reached, what=f"session {status}")
    view: dict[str, Any] = await clinic.ok("GET", f"/v1/sessions/{session_id}")
    return view


async def test_completion_follows_what_signaling_reports(clinic: ClinicHandle, nc: NATS) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    ended_for_all = await clinic.session(practitioner, [client])
    early = await clinic.session(practitioner, [client])
    on_time = await clinic.session(practitioner, [client])
    end = datetime.fromisoformat(on_time["ends_at"])
    await call(nc, clinic, ended_for_all, EndedBecause.ended_for_all, at())
    await call(nc, clinic, early, EndedBecause.last_left, at(1, 10))
    await call(nc, clinic, on_time, EndedBecause.last_left, end + timedelta(minutes=3))

    done = await status_becomes(clinic, ended_for_all["session_id"], "completed")
    assert done["completed_because"] == "ended_for_all"
    done = await status_becomes(clinic, on_time["session_id"], "completed")
    assert done["completed_because"] == "last_participant_left"
    ended = await status_becomes(clinic, early["session_id"], "ended")
    assert ended["completed_because"] is None
    marked = await clinic.ok("POST", f"/v1/sessions/{early['session_id']}/complete")
    assert marked["status"] == "completed"
    assert marked["completed_because"] == "marked_by_host"
    assert await history(clinic, early["session_id"]) == [
        "SessionScheduled",
        "SessionWentLive",
        "SessionEndedEarly",
        "SessionCompleted",
    ]
    not_held = await clinic.session(practitioner, [client])
    refused = await clinic.call("POST", f"/v1/sessions/{not_held['session_id']}/complete")
    assert refused.json()["code"] == "session_not_held"


async def test_a_practitioners_day_is_listed_in_order_page_by_page(clinic: ClinicHandle) -> None:
    ada, bob = await clinic.practitioner("Ada"), await clinic.practitioner("Bob")
    client = await clinic.client()
    day = at(5).replace(hour=0, minute=0, second=0)
    mine = []
    for hour in (15, 9, 11, 13):
        start = day + timedelta(hours=hour)
        mine.append(
            await clinic.session(
                ada,
                [client],
                starts_at=start.isoformat(),
                ends_at=(start + timedelta(minutes=50)).isoformat(),
            )
        )
    await clinic.session(
        bob,
        [client],
        starts_at=(day + timedelta(hours=10)).isoformat(),
        ends_at=(day + timedelta(hours=11)).isoformat(),
    )
    await clinic.session(
        ada,
        [client],
        starts_at=(day + timedelta(days=1, hours=9)).isoformat(),
        ends_at=(day + timedelta(days=1, hours=10)).isoformat(),
    )
    params = {
        "practitioner_id": ada["practitioner_id"],
        "from": day.isoformat(),
        "to": (day + timedelta(days=1)).isoformat(),
        "limit": 3,
    }
    first = await clinic.ok("GET", "/v1/sessions", params=params)
    second = await clinic.ok(
        "GET", "/v1/sessions", params=params | {"cursor": first["next_cursor"]}
    )
    assert second["next_cursor"] is None
    starts = [s["starts_at"] for s in first["items"] + second["items"]]
    assert starts == sorted(s["starts_at"] for s in mine)
    naive = await clinic.call("GET", "/v1/sessions", params={"from": "2030-01-01T00:00:00"})
    assert naive.json()["code"] == "offset_required"


async def test_a_client_portal_shows_upcoming_sessions_with_their_links(
    clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    by_link = await clinic.session(practitioner, [client])
    in_room = await clinic.session(
        practitioner,
        [client],
        video_mode="practitioner_room",
        starts_at=at(2).isoformat(),
        ends_at=at(2, 50).isoformat(),
    )
    cancelled = await clinic.session(
        practitioner, [client], starts_at=at(3).isoformat(), ends_at=at(3, 50).isoformat()
    )
    await clinic.ok("POST", f"/v1/sessions/{cancelled['session_id']}/cancel", json={})
    room_url = f"https://example.test/r/{clinic.slug}/{practitioner['room_slug']}"
    session_link = LinkIssued(
        link_id=uuid4(),
        kind=LinkKind.session,
        role=Role.client,
        url_sealed=SEALER.seal("https://example.test/j/first"),
        session_id=UUID(by_link["session_id"]),
        client_id=UUID(client["client_id"]),
    )
    room_link = LinkIssued(
        link_id=uuid4(),
        kind=LinkKind.practitioner_room,
        role=Role.guest,
        url_sealed=SEALER.seal(room_url),
        room_id=UUID(practitioner["room_id"]),
        practitioner_id=UUID(practitioner["practitioner_id"]),
    )
    await report(nc, "links", clinic.clinic_id, session_link)
    await report(nc, "links", clinic.clinic_id, room_link)
    path = f"/v1/clients/{client['client_id']}/sessions/upcoming"

    async def linked() -> bool:
        upcoming = await clinic.ok("GET", path)
        return all(s["join_url"] for s in upcoming)

    await eventually(linked, what="both links projected")
    answer = await clinic.call("GET", path)
    assert answer.headers["cache-control"] == "no-store"  # it holds join links
    upcoming = answer.json()
    assert [(s["session_id"], s["join_url"]) for s in upcoming] == [
        (by_link["session_id"], "https://example.test/j/first"),
        (in_room["session_id"], room_url),
    ]
    regenerated = LinkRegenerated(
        link_id=uuid4(),
        kind=LinkKind.session,
        role=Role.client,
        url_sealed=SEALER.seal("https://example.test/j/second"),
        session_id=UUID(by_link["session_id"]),
        replaces_link_id=session_link.link_id,
    )
    await report(nc, "links", clinic.clinic_id, regenerated)

    async def replaced() -> bool:
        return bool(
            (await clinic.ok("GET", path))[0]["join_url"] == "https://example.test/j/second"
        )

    await eventually(replaced, what="the regenerated link shown")
