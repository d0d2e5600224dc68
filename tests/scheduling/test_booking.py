"""Public booking: a clinic's booking page and its bookings, without an API key.

The shared app allows 3 quick bookings per address (burst), so each test here books at
most 3 times; the rate limit itself is tested on an app of its own.
"""

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from fastapi import FastAPI

from runtime.embedded import NatsServer
from tests.scheduling.conftest import OPERATOR, ClinicHandle, register_clinic, scheduling_app
from tests.support import assert_problem, serving

PLUS_TWO = timezone(timedelta(hours=2))


def page(clinic: ClinicHandle | str) -> str:
    slug = clinic if isinstance(clinic, str) else clinic.slug
    return f"/v1/public/clinics/{slug}"


def slot(days: int, minutes: int = 50, hour: int = 9) -> dict[str, str]:
    """A slot at ``hour`` (+02:00), ``days`` from now, as a booking page would send it."""
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    start = datetime(day.year, day.month, day.day, hour, tzinfo=PLUS_TWO)
    return {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=minutes)).isoformat(),
    }


def booking(practitioner: dict[str, Any], when: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "practitioner": practitioner["room_slug"],
        **when,
        "display_name": "Katherine Johnson",
        "email": "katherine@example.org",
        **extra,
    }


async def open_booking(clinic: ClinicHandle) -> None:
    view = await clinic.ok("PATCH", "/v1/clinic/settings", json={"public_booking": True})
    assert view["settings"]["public_booking"] is True


async def client_count(clinic: ClinicHandle) -> int:
    return len((await clinic.ok("GET", "/v1/clients", params={"limit": 200}))["items"])


async def test_a_closed_unknown_or_suspended_clinic_answers_booking_closed_alike(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    practitioner = await clinic.practitioner()
    settings = (await clinic.ok("GET", "/v1/clinic"))["settings"]
    assert settings["public_booking"] is False  # closed unless the clinic opens it
    suspended = await register_clinic(api, public_booking=True)
    suspended_practitioner = await suspended.practitioner()
    assert (await api.get(page(suspended))).status_code == 200
    await api.post(
        f"/v1/clinics/{suspended.clinic_id}/suspend", headers=OPERATOR, json={"reason": "unpaid"}
    )
    answers = []
    for slug, who in [
        (clinic.slug, practitioner),
        ("no-such-clinic", practitioner),
        (suspended.slug, suspended_practitioner),
    ]:
        shown = await api.get(page(slug))
        booked = await api.post(f"{page(slug)}/bookings", json=booking(who, slot(2)))
        for response in (shown, booked):
            assert_problem(response, 404, "booking_closed")
            answers.append({k: v for k, v in response.json().items() if k != "instance"})
    assert all(answer == answers[0] for answer in answers)  # nothing tells them apart
    assert await client_count(clinic) == 0


async def test_an_open_clinic_lists_its_practitioners_and_takes_a_booking(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    ada = await clinic.practitioner("Dr Ada Lovelace")
    bob = await clinic.practitioner("Dr Bob Kahn")
    await open_booking(clinic)
    shown = await api.get(page(clinic))
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "name": "Riverside Therapy",
        "time_zone": "UTC",
        "practitioners": [
            {"name": "Dr Ada Lovelace", "slug": ada["room_slug"]},
            {"name": "Dr Bob Kahn", "slug": bob["room_slug"]},
        ],
    }
    when = slot(3)
    booked = await api.post(
        f"{page(clinic)}/bookings", json=booking(ada, when, phone="+44 20 7946 0000")
    )
    assert booked.status_code == 201, booked.text
    view = booked.json()
    assert view["status"] == "booked"
    # No Location: the session is the clinic's (its key reads it); the booker has this answer
    # and the invitation that follows.
    assert "location" not in booked.headers
    assert view["practitioner"] == {"name": "Dr Ada Lovelace", "slug": ada["room_slug"]}
    assert datetime.fromisoformat(view["starts_at"]) == datetime.fromisoformat(when["starts_at"])

    session = await clinic.ok("GET", f"/v1/sessions/{view['session_id']}")
    assert session["source"] == "public_booking"
    assert session["practitioner_id"] == ada["practitioner_id"]
    assert session["status"] == "scheduled"
    assert datetime.fromisoformat(session["ends_at"]) == datetime.fromisoformat(when["ends_at"])
    [client_id] = session["client_ids"]
    client = await clinic.ok("GET", f"/v1/clients/{client_id}")
    assert (client["display_name"], client["email"], client["phone"]) == (
        "Katherine Johnson",
        "katherine@example.org",
        "+44 20 7946 0000",
    )


async def test_an_overlapping_booking_answers_slot_taken(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    practitioner = await clinic.practitioner()
    other = await clinic.practitioner("Dr Bob Kahn")
    await open_booking(clinic)
    first = await api.post(f"{page(clinic)}/bookings", json=booking(practitioner, slot(4)))
    assert first.status_code == 201, first.text
    clients = await client_count(clinic)
    overlapping = slot(4, minutes=30, hour=9)  # 09:00-09:30 inside 09:00-09:50
    taken = await api.post(f"{page(clinic)}/bookings", json=booking(practitioner, overlapping))
    assert_problem(taken, 409, "slot_taken")
    assert await client_count(clinic) == clients
    # Another practitioner is free at that time.
    elsewhere = await api.post(f"{page(clinic)}/bookings", json=booking(other, overlapping))
    assert elsewhere.status_code == 201, elsewhere.text


async def test_concurrent_bookings_of_one_slot_give_it_to_one_person(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    practitioner = await clinic.practitioner()
    await open_booking(clinic)
    answers = await asyncio.gather(
        *(
            api.post(f"{page(clinic)}/bookings", json=booking(practitioner, slot(4)))
            for _ in range(3)
        )
    )
    assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert_problem(refused, 409, "slot_taken")
    assert len((await clinic.ok("GET", "/v1/sessions"))["items"]) == 1
    assert await client_count(clinic) == 1


async def test_a_booking_in_the_past_is_refused_and_leaves_no_client(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    practitioner = await clinic.practitioner()
    await open_booking(clinic)
    before = await client_count(clinic)
    past = await api.post(f"{page(clinic)}/bookings", json=booking(practitioner, slot(-1)))
    assert_problem(past, 422, "starts_in_the_past")
    assert await client_count(clinic) == before
    sessions = await clinic.ok("GET", "/v1/sessions")
    assert sessions["items"] == []


async def test_the_plan_decides_the_video_mode_of_a_booking(api: httpx.AsyncClient) -> None:
    for plan, mode in [("basic", "practitioner_room"), ("professional", "session_link")]:
        clinic = await register_clinic(api, plan=plan, public_booking=True)
        practitioner = await clinic.practitioner()
        booked = await api.post(f"{page(clinic)}/bookings", json=booking(practitioner, slot(5)))
        assert booked.status_code == 201, (plan, booked.text)
        session = await clinic.ok("GET", f"/v1/sessions/{booked.json()['session_id']}")
        assert session["video_mode"] == mode, plan
        expected_room = practitioner["room_id"] if mode == "practitioner_room" else None
        assert session["room_id"] == expected_room, plan


async def test_quick_bookings_from_one_address_are_rate_limited(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    app: FastAPI = scheduling_app(
        postgres_dsn, nats_server.url, booking_per_minute=1, booking_burst=2
    )
    async with serving(app) as api:
        clinic = await register_clinic(api, public_booking=True)
        practitioner = await clinic.practitioner()
        answers = [
            await api.post(f"{page(clinic)}/bookings", json=booking(practitioner, slot(day)))
            for day in (6, 7, 8)
        ]
        assert [a.status_code for a in answers] == [201, 201, 429], answers[-1].text
        limited = answers[-1]
        assert_problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert len((await clinic.ok("GET", "/v1/sessions"))["items"]) == 2
        # The limit is per address: someone else still books.
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as elsewhere:
            other = await elsewhere.post(
                f"{page(clinic)}/bookings", json=booking(practitioner, slot(8))
            )
        assert other.status_code == 201, other.text
