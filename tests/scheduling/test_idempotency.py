"""Idempotency-Key on POST: a retry gets the first answer, and the work happens once."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.scheduling.conftest import OPERATOR, ClinicHandle, register_clinic
from tests.support import assert_problem


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"retry-{uuid.uuid4()}"}


def session_body(practitioner: dict[str, Any], clients: list[dict[str, Any]]) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    return {
        "practitioner_id": practitioner["practitioner_id"],
        "client_ids": [c["client_id"] for c in clients],
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(minutes=50)).isoformat(),
    }


def assert_replay(first: httpx.Response, again: httpx.Response) -> None:
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]


async def sessions_of(clinic: ClinicHandle, practitioner: dict[str, Any]) -> list[dict[str, Any]]:
    params = {"practitioner_id": practitioner["practitioner_id"]}
    page = await clinic.ok("GET", "/v1/sessions", params=params)
    items: list[dict[str, Any]] = page["items"]
    return items


async def scheduled_events(clinic: ClinicHandle, session_id: str) -> list[dict[str, Any]]:
    history = await clinic.ok("GET", f"/v1/sessions/{session_id}/history")
    return [entry for entry in history if entry["type"] == "SessionScheduled"]


@pytest.fixture
async def practitioner(clinic: ClinicHandle) -> dict[str, Any]:
    return await clinic.practitioner()


async def test_a_retried_session_is_scheduled_once_and_answered_alike(
    clinic: ClinicHandle, practitioner: dict[str, Any]
) -> None:
    client = await clinic.client()
    body, headers = session_body(practitioner, [client]), key()
    first = await clinic.call("POST", "/v1/sessions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await clinic.call("POST", "/v1/sessions", json=body, headers=headers)
    assert_replay(first, again)
    assert again.headers["location"] == first.headers["location"]
    session_id = first.json()["session_id"]
    assert again.json()["session_id"] == session_id
    assert [s["session_id"] for s in await sessions_of(clinic, practitioner)] == [session_id]
    assert len(await scheduled_events(clinic, session_id)) == 1


async def test_a_retried_client_is_added_once(clinic: ClinicHandle) -> None:
    body, headers = {"display_name": "Grace Hopper", "email": "grace@example.org"}, key()
    first = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    assert_replay(first, again)
    clients = (await clinic.ok("GET", "/v1/clients"))["items"]
    assert [c["client_id"] for c in clients] == [first.json()["client_id"]]


async def test_the_same_key_with_another_body_is_refused(
    clinic: ClinicHandle, practitioner: dict[str, Any]
) -> None:
    client = await clinic.client()
    body, headers = session_body(practitioner, [client]), key()
    first = await clinic.call("POST", "/v1/sessions", json=body, headers=headers)
    assert first.status_code == 201, first.text
    changed = body | {"link_sharing": True}
    other = await clinic.call("POST", "/v1/sessions", json=changed, headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")
    elsewhere = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    assert_problem(elsewhere, 422, "idempotency_key_reused")  # another path is another request
    assert len(await sessions_of(clinic, practitioner)) == 1


async def test_the_same_key_from_another_clinic_is_another_request(
    api: httpx.AsyncClient, clinic: ClinicHandle
) -> None:
    other = await register_clinic(api)
    body, headers = {"display_name": "Grace Hopper"}, key()
    mine = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    theirs = await other.call("POST", "/v1/clients", json=body, headers=headers)
    assert (mine.status_code, theirs.status_code) == (201, 201), theirs.text
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["client_id"] != mine.json()["client_id"]
    for handle, created in ((clinic, mine), (other, theirs)):
        clients = (await handle.ok("GET", "/v1/clients"))["items"]
        assert [c["client_id"] for c in clients] == [created.json()["client_id"]]


async def test_a_refusal_is_stored_and_replayed(
    clinic: ClinicHandle, practitioner: dict[str, Any]
) -> None:
    session = await clinic.session(practitioner, [await clinic.client()])
    invite = f"/v1/sessions/{session['session_id']}/attendees"
    guest = {"email": "guest@example.org"}
    invited = await clinic.ok("POST", invite, 201, json=guest)
    headers = key()
    refused = await clinic.call("POST", invite, json=guest, headers=headers)
    assert_problem(refused, 409, "already_invited")
    # The reason goes away; the key still answers what happened when it was first used.
    attendee_id = invited["attendee_id"]
    await clinic.ok("DELETE", f"{invite}/{attendee_id}", 204)
    again = await clinic.call("POST", invite, json=guest, headers=headers)
    assert_replay(refused, again)
    assert_problem(again, 409, "already_invited")
    assert (await clinic.ok("GET", f"/v1/sessions/{session['session_id']}"))["attendees"] == []
    fresh = await clinic.call("POST", invite, json=guest, headers=key())
    assert fresh.status_code == 201, fresh.text


async def test_a_key_must_have_1_to_255_characters(clinic: ClinicHandle) -> None:
    body = {"display_name": "Grace Hopper"}
    for bad in ("x" * 256, ""):
        response = await clinic.call(
            "POST", "/v1/clients", json=body, headers={"Idempotency-Key": bad}
        )
        assert_problem(response, 400, "invalid_idempotency_key")
    assert (await clinic.ok("GET", "/v1/clients"))["items"] == []
    longest = {"Idempotency-Key": "k" * 255}
    first = await clinic.call("POST", "/v1/clients", json=body, headers=longest)
    assert first.status_code == 201, first.text
    assert_replay(first, await clinic.call("POST", "/v1/clients", json=body, headers=longest))


async def test_concurrent_retries_schedule_one_session(
    clinic: ClinicHandle, practitioner: dict[str, Any]
) -> None:
    client = await clinic.client()
    body, headers = session_body(practitioner, [client]), key()
    answers = await asyncio.gather(
        *(clinic.call("POST", "/v1/sessions", json=body, headers=headers) for _ in range(5))
    )
    originals = [
        a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers
    ]
    assert len(originals) == 1, [(a.status_code, dict(a.headers)) for a in answers]
    [original] = originals
    for answer in answers:
        if answer is original:
            continue
        if answer.status_code == 409:
            assert_problem(answer, 409, "idempotency_key_in_use")
            assert answer.headers["retry-after"] == "1"
        else:
            assert_replay(original, answer)
    session_id = original.json()["session_id"]
    assert [s["session_id"] for s in await sessions_of(clinic, practitioner)] == [session_id]
    assert len(await scheduled_events(clinic, session_id)) == 1
    # Once the first has finished, a retry gets its answer.
    assert_replay(original, await clinic.call("POST", "/v1/sessions", json=body, headers=headers))


async def test_a_revoked_key_cannot_fetch_stored_answers(clinic: ClinicHandle) -> None:
    body, headers = {"display_name": "Grace Hopper", "email": "grace@example.org"}, key()
    first = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    assert first.status_code == 201, first.text
    [issued] = (
        await clinic.api.get(f"/v1/clinics/{clinic.clinic_id}/api-keys", headers=OPERATOR)
    ).json()
    await clinic.api.delete(
        f"/v1/clinics/{clinic.clinic_id}/api-keys/{issued['key_id']}", headers=OPERATOR
    )
    again = await clinic.call("POST", "/v1/clients", json=body, headers=headers)
    assert_problem(again, 401, "unauthenticated")
    assert "idempotent-replayed" not in again.headers
