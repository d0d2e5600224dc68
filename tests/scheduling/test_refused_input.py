"""What the API refuses at its edge, with a 422 that names the field: names that would break
a mail header, and times outside the calendar it keeps (issue 22, items 7 and 10)."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.scheduling.conftest import OPERATOR, ClinicHandle
from tests.support import assert_problem

CONTROL = ["Riverside\r\nBcc: all@example.org", "Tab\there", "Next\x85line", "Line\u2028break"]
"""CR and LF, another C0 control, a C1 control (NEL), a Unicode line separator."""
FAR = ["9999-12-31T22:00:00-14:00", "9999-12-31T23:00:00Z", "0001-01-01T00:00:00+14:00"]
"""Times Python parses but Postgres cannot hold once in UTC, and one it can hold."""


def invalid_field(response: httpx.Response, field: str) -> str:
    """The 422's detail, which names ``field`` first; its ``errors`` name it too."""
    assert_problem(response, 422)
    problem = response.json()
    assert problem["detail"].startswith(f"The request is not valid: '{field}': "), problem
    assert field in [e["field"] for e in problem["errors"]], problem
    detail: str = problem["detail"]
    return detail


def at(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def times(start: str) -> dict[str, str]:
    return {"starts_at": start, "ends_at": start}


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTROL)
async def test_a_clinic_name_with_a_control_character_is_refused(
    api: httpx.AsyncClient, name: str
) -> None:
    slug = f"c{uuid.uuid4().hex[:10]}"
    response = await api.post("/v1/clinics", headers=OPERATOR, json={"name": name, "slug": slug})
    detail = invalid_field(response, "name")
    assert "line breaks" in detail
    response = await api.post(  # nothing was registered under the slug
        "/v1/clinics", headers=OPERATOR, json={"name": "Riverside", "slug": slug}
    )
    assert response.status_code == 201, response.text


async def test_names_in_any_script_are_accepted(api: httpx.AsyncClient) -> None:
    name = "Zoë's Praxis, Nord · 東京クリニック"
    slug = f"c{uuid.uuid4().hex[:10]}"
    response = await api.post("/v1/clinics", headers=OPERATOR, json={"name": name, "slug": slug})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


async def test_people_and_room_names_with_control_characters_are_refused(
    clinic: ClinicHandle,
) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    session = await clinic.session(practitioner, [client])
    bad = "Dr Ada\r\nLovelace"
    contact = {"display_name": bad, "email": "dad@example.org"}
    calls: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v1/practitioners", {"display_name": bad, "room_slug": "ada"}, "display_name"),
        ("POST", "/v1/clients", {"display_name": bad}, "display_name"),
        (
            "POST",
            "/v1/clients",
            {"display_name": "Grace", "linked_accounts": [contact]},
            "linked_accounts.0.display_name",
        ),
        ("PATCH", f"/v1/clients/{client['client_id']}", {"display_name": bad}, "display_name"),
        (
            "PATCH",
            f"/v1/clients/{client['client_id']}",
            {"alternate_contacts": [contact]},
            "alternate_contacts.0.display_name",
        ),
        (
            "POST",
            f"/v1/clients/{client['client_id']}/rooms",
            {"practitioner_id": practitioner["practitioner_id"], "title": bad},
            "title",
        ),
        ("PATCH", f"/v1/rooms/{practitioner['room_id']}", {"title": bad}, "title"),
        (
            "POST",
            f"/v1/sessions/{session['session_id']}/attendees",
            {"email": "aunt@example.org", "display_name": bad},
            "display_name",
        ),
    ]
    # An edit holds to the same bounds as a creation.
    patch = f"/v1/clients/{client['client_id']}"
    calls += [
        ("PATCH", patch, {"display_name": "x" * 201}, "display_name"),
        ("PATCH", patch, {"display_name": ""}, "display_name"),
        ("PATCH", patch, {"phone": "1" * 41}, "phone"),
    ]
    for method, path, body, field in calls:
        invalid_field(await clinic.call(method, path, json=body), field)
    assert (await clinic.ok("GET", f"/v1/clients/{client['client_id']}"))["display_name"] == (
        client["display_name"]
    )


async def test_a_booking_name_with_a_control_character_is_refused(clinic: ClinicHandle) -> None:
    await clinic.ok("PATCH", "/v1/clinic/settings", json={"public_booking": True})
    practitioner = await clinic.practitioner()
    start = at(3)
    booking = {
        "practitioner": practitioner["room_slug"],
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=50)).isoformat(),
        "display_name": "Katherine\nJohnson",
        "email": "katherine@example.org",
    }
    response = await clinic.api.post(f"/v1/public/clinics/{clinic.slug}/bookings", json=booking)
    invalid_field(response, "display_name")


# -- times -------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", FAR)
async def test_a_session_far_outside_the_calendar_is_refused_not_failed(
    clinic: ClinicHandle, start: str
) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    body = {
        "practitioner_id": practitioner["practitioner_id"],
        "client_ids": [client["client_id"]],
        **times(start),
    }
    detail = invalid_field(await clinic.call("POST", "/v1/sessions", json=body), "starts_at")
    assert "at most 5 years ahead" in detail


async def test_a_session_more_than_five_years_ahead_is_refused(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    body = {"practitioner_id": practitioner["practitioner_id"], "client_ids": [client["client_id"]]}
    start = at(5 * 366)
    late = body | {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=50)).isoformat(),
    }
    detail = invalid_field(await clinic.call("POST", "/v1/sessions", json=late), "starts_at")
    latest = (datetime.now(UTC) + timedelta(days=round(5 * 365.25))).date().isoformat()
    assert f"between 2000-01-01 and {latest}" in detail
    start = at(4 * 365)
    in_four_years = body | {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=50)).isoformat(),
    }
    await clinic.ok("POST", "/v1/sessions", 201, json=in_four_years)


@pytest.mark.parametrize("start", FAR)
async def test_a_reschedule_far_outside_the_calendar_is_refused(
    clinic: ClinicHandle, start: str
) -> None:
    session = await clinic.session(await clinic.practitioner(), [await clinic.client()])
    path = f"/v1/sessions/{session['session_id']}/reschedule"
    end = at(2).isoformat()
    response = await clinic.call("POST", path, json={"starts_at": start, "ends_at": end})
    invalid_field(response, "starts_at")
    response = await clinic.call(
        "POST", path, json={"starts_at": at(1).isoformat(), "ends_at": start}
    )
    invalid_field(response, "ends_at")


async def test_a_public_booking_far_outside_the_calendar_is_refused(
    clinic: ClinicHandle,
) -> None:
    await clinic.ok("PATCH", "/v1/clinic/settings", json={"public_booking": True})
    practitioner = await clinic.practitioner()
    for start in FAR[:2]:  # the burst of the booking limit is 3
        booking = {
            "practitioner": practitioner["room_slug"],
            **times(start),
            "display_name": "Katherine Johnson",
            "email": "katherine@example.org",
        }
        response = await clinic.api.post(f"/v1/public/clinics/{clinic.slug}/bookings", json=booking)
        invalid_field(response, "starts_at")


@pytest.mark.parametrize("when", FAR)
async def test_calendar_filters_far_outside_the_calendar_are_refused(
    clinic: ClinicHandle, when: str
) -> None:
    for name in ("from", "to"):
        response = await clinic.call("GET", "/v1/sessions", params={name: when})
        assert_problem(response, 422, "date_out_of_range")
        assert f"'{name}'" in response.json()["detail"]
        assert "at most 5 years ahead" in response.json()["detail"]


def cursor(*values: str) -> str:
    raw = json.dumps(list(values)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "when", ["9999-12-31T22:00:00-14:00", "0001-01-01T00:00:00+14:00", "2026-12-01T00:00", "no"]
)
async def test_a_cursor_with_an_impossible_time_is_refused(
    api: httpx.AsyncClient, clinic: ClinicHandle, when: str
) -> None:
    pages = [
        (clinic.headers, "/v1/sessions", cursor(when, "00000000-0000-0000-0000-000000000000")),
        (clinic.headers, "/v1/clients", cursor(when, "00000000-0000-0000-0000-000000000000")),
        (OPERATOR, "/v1/clinics", cursor(when, "c0")),
    ]
    for headers, path, after in pages:
        response = await api.get(path, headers=headers, params={"cursor": after})
        assert_problem(response, 400, "invalid_cursor")


async def test_a_session_stored_at_the_end_of_time_still_reads(
    app: FastAPI, clinic: ClinicHandle
) -> None:
    """A session accepted before the calendar was bounded, at 9999-12-31T23:00Z in a zone ahead
    of UTC, has no local time Python can hold: it reads with its local times in UTC."""
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    session = await clinic.session(practitioner, [client], time_zone="Asia/Tokyo")
    pool: asyncpg.Pool[Any] = app.state.runtime.context.pool
    await pool.execute(
        "UPDATE sessions SET starts_at = '9999-12-31T23:00:00Z', ends_at = '9999-12-31T23:30:00Z'"
        " WHERE session_id = $1",
        UUID(session["session_id"]),
    )
    read = await clinic.ok("GET", f"/v1/sessions/{session['session_id']}")
    assert read["local_starts_at"] == read["starts_at"] == "9999-12-31T23:00:00Z"
    assert read["time_zone"] == "Asia/Tokyo"
    listed = await clinic.ok(
        "GET", "/v1/sessions", params={"practitioner_id": session["practitioner_id"]}
    )
    assert [s["session_id"] for s in listed["items"]] == [session["session_id"]]
    upcoming = await clinic.ok("GET", f"/v1/clients/{client['client_id']}/sessions/upcoming")
    assert upcoming[0]["local_starts_at"] == "9999-12-31T23:00:00Z"
