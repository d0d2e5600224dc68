"""The operator API: clinics and their keys; suspension stops a clinic's keys."""

import httpx
from fastapi import FastAPI

from tests.scheduling.conftest import OPERATOR, ClinicHandle, register_clinic


async def test_clinic_calls_need_the_operator_key(api: httpx.AsyncClient) -> None:
    body = {"name": "Riverside", "slug": "riverside-x"}
    missing = await api.post("/v1/clinics", json=body)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"] == 'Bearer realm="antechamber"'
    assert "Authorization: Bearer" in missing.json()["detail"]
    wrong = await api.post("/v1/clinics", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthenticated"
    assert wrong.headers["www-authenticate"] == 'Bearer realm="antechamber", error="invalid_token"'


async def test_a_wrong_clinic_key_is_told_how_to_authenticate(api: httpx.AsyncClient) -> None:
    for key in ("nope", "ac_unknown"):
        wrong = await api.get("/v1/clinic", headers={"Authorization": f"Bearer {key}"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == (
            'Bearer realm="antechamber", error="invalid_token"'
        )


async def test_a_clinic_gets_default_settings_and_a_unique_slug(api: httpx.AsyncClient) -> None:
    clinic = await register_clinic(api)
    view = (await api.get(f"/v1/clinics/{clinic.clinic_id}", headers=OPERATOR)).json()
    assert view["slug"] == clinic.slug
    assert view["settings"] == {
        "plan": "professional",
        "time_zone": "UTC",
        "early_join_minutes": 10,
        "buffer_minutes": 15,
        "rejoin_grace_minutes": 5,
        "reminder_offsets_minutes": [1440, 60],
        "guest_admission": "waiting_room",
        "max_participants": 16,
        "public_booking": False,
        "loudest_speakers": 3,
        "call": {
            "waiting_messages": [
                "I'll be with you in about 5 minutes.",
                "I'm running late, please stay on this page.",
            ],
            "guest_replies": False,
            "guest_screen_share": False,
            "recording_consent": "all",
            "chat_retention_days": 0,
        },
    }
    again = await api.post(
        "/v1/clinics", headers=OPERATOR, json={"name": "Copy", "slug": clinic.slug}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "clinic_slug_taken"


async def test_clinics_are_listed_page_by_page(api: httpx.AsyncClient) -> None:
    created = {(await register_clinic(api)).clinic_id for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.get("/v1/clinics", headers=OPERATOR, params=params)).json()
        assert len(page["items"]) <= 2
        seen += [c["clinic_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert created <= set(seen)
    assert len(seen) == len(set(seen))
    bad = await api.get("/v1/clinics", headers=OPERATOR, params={"cursor": "garbage"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


async def test_a_key_is_shown_once_recognisable_and_revocable(clinic: ClinicHandle) -> None:
    assert clinic.key.startswith("ac_")
    assert len(clinic.key) >= 3 + 43  # 256 bits, base64
    listed = await clinic.api.get(f"/v1/clinics/{clinic.clinic_id}/api-keys", headers=OPERATOR)
    [key] = listed.json()
    assert "key" not in key
    assert clinic.key.startswith(key["prefix"])
    assert (await clinic.call("GET", "/v1/clinic")).status_code == 200
    revoked = await clinic.api.delete(
        f"/v1/clinics/{clinic.clinic_id}/api-keys/{key['key_id']}", headers=OPERATOR
    )
    assert revoked.status_code == 204
    refused = await clinic.call("GET", "/v1/clinic")
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


async def test_a_suspended_clinic_cannot_use_its_keys_until_reinstated(
    clinic: ClinicHandle,
) -> None:
    api = clinic.api
    suspended = await api.post(
        f"/v1/clinics/{clinic.clinic_id}/suspend", headers=OPERATOR, json={"reason": "unpaid"}
    )
    assert suspended.json()["suspended"] is True
    refused = await clinic.call("GET", "/v1/practitioners")
    assert refused.status_code == 403
    assert refused.json()["code"] == "clinic_suspended"
    await api.post(f"/v1/clinics/{clinic.clinic_id}/reinstate", headers=OPERATOR)
    assert (await clinic.call("GET", "/v1/practitioners")).status_code == 200


async def test_unknown_clinics_answer_404(api: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/v1/clinics/c_nothere", None),
        ("POST", "/v1/clinics/c_nothere/suspend", {"reason": "x"}),
        ("POST", "/v1/clinics/c_nothere/api-keys", {"label": "x"}),
    ]:
        response = await api.request(method, path, headers=OPERATOR, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["code"] == "clinic_not_found"


async def test_a_retried_key_issue_is_not_answered_with_the_key_again(
    app: FastAPI, clinic: ClinicHandle
) -> None:
    headers = OPERATOR | {"Idempotency-Key": "issue-once"}
    path = f"/v1/clinics/{clinic.clinic_id}/api-keys"
    first = await clinic.api.post(path, headers=headers, json={"label": "ehr"})
    assert first.status_code == 201
    assert first.headers["cache-control"] == "no-store"
    key = first.json()["key"]
    again = await clinic.api.post(path, headers=headers, json={"label": "ehr"})
    assert again.status_code == 409
    assert again.json()["code"] == "idempotent_secret_withheld"
    assert key not in again.text
    stored = await app.state.runtime.context.pool.fetch("SELECT body FROM idempotency_keys")
    assert not [r for r in stored if r["body"] and key.encode() in r["body"]]
    listed = await clinic.api.get(path, headers=OPERATOR)
    assert [k["label"] for k in listed.json()].count("ehr") == 1
