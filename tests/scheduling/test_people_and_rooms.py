"""Clinic settings, practitioners, clients and rooms over HTTP."""

from runtime.pagination import encode_cursor
from tests.scheduling.conftest import ClinicHandle


async def test_settings_change_one_at_a_time_and_bad_ones_change_nothing(
    clinic: ClinicHandle,
) -> None:
    changed = await clinic.ok(
        "PATCH",
        "/v1/clinic/settings",
        json={"time_zone": "Europe/Berlin", "reminder_offsets_minutes": [60, 1440, 60]},
    )
    assert changed["settings"]["time_zone"] == "Europe/Berlin"
    assert changed["settings"]["reminder_offsets_minutes"] == [1440, 60]
    assert changed["settings"]["buffer_minutes"] == 15
    for body, field in [
        ({"time_zone": "Europe/Atlantis"}, "time_zone"),
        ({"max_participants": 17}, "max_participants"),
        ({"plan": "gold"}, "plan"),
        ({"early_join_minutes": -1}, "early_join_minutes"),
    ]:
        response = await clinic.call("PATCH", "/v1/clinic/settings", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.json()["detail"]
    assert (await clinic.ok("GET", "/v1/clinic"))["settings"] == changed["settings"]


async def test_a_practitioner_gets_a_readable_room_link(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    assert practitioner["room_path"] == f"/r/{clinic.slug}/{practitioner['room_slug']}"
    room = await clinic.ok("GET", f"/v1/rooms/{practitioner['room_id']}")
    assert room["kind"] == "practitioner"
    assert room["practitioner_id"] == practitioner["practitioner_id"]
    taken = await clinic.call(
        "POST",
        "/v1/practitioners",
        json={"display_name": "Dr Other", "room_slug": practitioner["room_slug"]},
    )
    assert taken.status_code == 409
    assert taken.json()["code"] == "room_slug_taken"
    listed = await clinic.ok("GET", "/v1/practitioners")
    assert [p["practitioner_id"] for p in listed["items"]] == [practitioner["practitioner_id"]]
    bad_slug = await clinic.call(
        "POST", "/v1/practitioners", json={"display_name": "X", "room_slug": "Has Spaces"}
    )
    assert bad_slug.status_code == 422
    deleting = await clinic.call("DELETE", f"/v1/rooms/{practitioner['room_id']}")
    assert deleting.status_code == 409
    assert deleting.json()["code"] == "practitioner_room"


async def test_clients_with_contacts_are_added_and_updated(clinic: ClinicHandle) -> None:
    client = await clinic.client(
        linked_accounts=[{"display_name": "Alan", "email": "alan@example.org"}],
        alternate_contacts=[{"display_name": "Joan", "email": "joan@example.org"}],
        phone="+44 20 7946 0000",
    )
    assert client["linked_accounts"][0]["contact_id"]
    assert client["alternate_contacts"][0]["email"] == "joan@example.org"
    updated = await clinic.ok(
        "PATCH", f"/v1/clients/{client['client_id']}", json={"phone": None, "display_name": "G"}
    )
    assert updated["phone"] is None
    assert updated["display_name"] == "G"
    assert updated["linked_accounts"] == client["linked_accounts"]
    unchanged = await clinic.ok("PATCH", f"/v1/clients/{client['client_id']}", json={})
    assert unchanged["updated_at"] == updated["updated_at"]
    bad = await clinic.call("POST", "/v1/clients", json={"display_name": "X", "email": "nope"})
    assert bad.status_code == 422
    assert "email" in bad.json()["detail"]


async def test_client_rooms_are_created_renamed_and_deleted(clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    first = await clinic.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Tuesday talks"},
    )
    second = await clinic.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Family"},
    )
    assert first["kind"] == "client"
    renamed = await clinic.ok("PATCH", f"/v1/rooms/{first['room_id']}", json={"title": "Thu"})
    assert renamed["title"] == "Thu"
    rooms = await clinic.ok("GET", "/v1/rooms", params={"client_id": client["client_id"]})
    assert {r["room_id"] for r in rooms["items"]} == {first["room_id"], second["room_id"]}
    await clinic.ok("DELETE", f"/v1/rooms/{first['room_id']}", 204)
    gone = await clinic.call("GET", f"/v1/rooms/{first['room_id']}")
    assert gone.status_code == 404
    again = await clinic.call("DELETE", f"/v1/rooms/{first['room_id']}")
    assert again.status_code == 404
    assert again.json()["code"] == "room_not_found"


async def test_a_room_needs_a_client_and_a_practitioner_of_the_clinic(
    clinic: ClinicHandle,
) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client()
    zero = "00000000-0000-0000-0000-000000000000"
    no_client = await clinic.call(
        "POST",
        f"/v1/clients/{zero}/rooms",
        json={"practitioner_id": practitioner["practitioner_id"], "title": "x"},
    )
    assert no_client.json()["code"] == "client_not_found"
    no_practitioner = await clinic.call(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        json={"practitioner_id": zero, "title": "x"},
    )
    assert no_practitioner.json()["code"] == "practitioner_not_found"
    not_a_uuid = await clinic.call("GET", "/v1/rooms/not-a-uuid")
    assert not_a_uuid.status_code == 422


async def test_a_forged_cursor_is_refused_not_a_crash(clinic: ClinicHandle) -> None:
    forged = encode_cursor("not a time", "not an id")
    response = await clinic.call("GET", "/v1/clients", params={"cursor": forged})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"
