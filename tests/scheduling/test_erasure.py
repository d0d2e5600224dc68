"""Personal data about clients rests and travels sealed, and an erasure request erases it."""

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from contracts.personal import personal_fields
from contracts.scheduling import (
    UNSEAL_SUBJECT,
    OpenedValues,
    Opening,
    SealedValues,
    scheduling_events,
)
from runtime.caller import Identity, signing_as
from runtime.embedded import NatsServer
from runtime.rpc import RpcError, call
from runtime.service import connect_nats
from services.scheduling.person_keys import PLAIN, SEALED
from tests.scheduling.conftest import ClinicHandle, register_clinic
from tests.support import assert_problem, harness_auth


@dataclass(frozen=True)
class Person:
    """A client with values found nowhere else, so a search for them means this client."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def name(self) -> str:
        return f"Ottoline Quarrington-{self.tag}"

    @property
    def email(self) -> str:
        return f"ottoline.{self.tag}@example.org"

    @property
    def contact(self) -> str:
        return f"ottoline.parent.{self.tag}@example.org"

    @property
    def phone(self) -> str:
        return f"+44 20 7946 {int(self.tag, 16) % 10_000:04d}"

    def values(self) -> tuple[str, ...]:
        return (self.name, self.email, self.contact, self.phone, self.tag)


def pool_of(app: FastAPI) -> "asyncpg.Pool[Any]":
    pool: asyncpg.Pool[Any] = app.state.runtime.context.pool
    return pool


async def client_with_everything(clinic: ClinicHandle, person: Person) -> dict[str, Any]:
    """A client with a phone, a linked account, a room named after them, and a session to
    which their linked account is invited. The client is added with an Idempotency-Key, so
    the answer is kept for replays."""
    practitioner = await clinic.practitioner()
    client = await clinic.ok(
        "POST",
        "/v1/clients",
        201,
        json={
            "display_name": person.name,
            "email": person.email,
            "phone": person.phone,
            "linked_accounts": [
                {"display_name": f"Parent of {person.name}", "email": person.contact}
            ],
        },
        headers={"Idempotency-Key": f"add-{person.tag}"},
    )
    room = await clinic.client_room(client, practitioner, title=f"{person.name}'s room")
    session = await clinic.session(practitioner, [client])
    contact_id = client["linked_accounts"][0]["contact_id"]
    invited = await clinic.ok(
        "POST",
        f"/v1/sessions/{session['session_id']}/attendees",
        201,
        json={"client_id": client["client_id"], "contact_id": contact_id},
    )
    session = await clinic.ok("GET", f"/v1/sessions/{session['session_id']}")
    assert session["attendees"] == [invited]
    return client | {"room": room, "session": session, "practitioner": practitioner}


async def stored_text(app: FastAPI, clinic_id: str) -> str:
    """Everything scheduling's tables hold about the clinic, as text."""
    pool = pool_of(app)
    parts = [
        await pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t WHERE clinic_id = $1",
            clinic_id,
        )
        for table in ("events", "clients", "attendees", "rooms")
    ]
    return " ".join(parts)


async def kept_answers(app: FastAPI) -> str:
    """The answers kept for Idempotency-Key replays, as text."""
    text: str = await pool_of(app).fetchval(
        "SELECT coalesce(string_agg(convert_from(body, 'UTF8'), ' '), '') "
        "FROM idempotency_keys WHERE body IS NOT NULL"
    )
    return text


async def test_personal_values_rest_sealed_and_read_plain_through_the_api(
    app: FastAPI, clinic: ClinicHandle
) -> None:
    person = Person()
    client = await client_with_everything(clinic, person)
    stored = await stored_text(app, clinic.clinic_id)
    for plain in person.values():
        assert plain not in stored, f"{plain} is stored in clear"
    assert "pd1." in stored
    read = await clinic.ok("GET", f"/v1/clients/{client['client_id']}")
    assert (read["display_name"], read["email"], read["phone"]) == (
        person.name,
        person.email,
        person.phone,
    )
    assert read["linked_accounts"][0]["email"] == person.contact
    listed = await clinic.ok("GET", "/v1/clients")
    assert [c["email"] for c in listed["items"]] == [person.email]
    room = await clinic.ok("GET", f"/v1/rooms/{client['room']['room_id']}")
    assert room["title"] == f"{person.name}'s room"
    session = await clinic.ok("GET", f"/v1/sessions/{client['session']['session_id']}")
    assert [a["email"] for a in session["attendees"]] == [person.contact]
    history = await clinic.ok("GET", f"/v1/sessions/{client['session']['session_id']}/history")
    assert history[-1]["data"]["email"] == person.contact
    # A change decides on the plain values: the same name again changes nothing.
    await clinic.ok("PATCH", f"/v1/rooms/{client['room']['room_id']}", json={"title": "Weekly"})
    await clinic.ok(
        "PATCH", f"/v1/clients/{client['client_id']}", json={"display_name": person.name}
    )
    count = await pool_of(app).fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1", f"client-{client['client_id']}"
    )
    assert count == 1
    assert "Weekly" not in await stored_text(app, clinic.clinic_id)


async def test_an_erased_client_is_gone_for_good(app: FastAPI, clinic: ClinicHandle) -> None:
    person = Person()
    client = await client_with_everything(clinic, person)
    client_id = client["client_id"]
    attendee_id = client["session"]["attendees"][0]["attendee_id"]
    assert person.email in await kept_answers(app)
    erased = await clinic.ok("POST", f"/v1/clients/{client_id}/erasure")
    assert erased["client_id"] == client_id
    assert erased["already_erased"] is False
    assert erased["attendee_ids"] == [attendee_id]
    assert erased["room_ids"] == [client["room"]["room_id"]]
    assert erased["history_in_clear"] is False

    gone = await clinic.call("GET", f"/v1/clients/{client_id}")
    assert_problem(gone, 410, "client_erased")
    assert "erased" in gone.json()["detail"]
    assert client_id not in json.dumps(await clinic.ok("GET", "/v1/clients"))
    for method, path, body in [
        ("PATCH", f"/v1/clients/{client_id}", {"display_name": "Back again"}),
        ("GET", f"/v1/clients/{client_id}/sessions/upcoming", None),
        (
            "POST",
            "/v1/sessions",
            {
                "practitioner_id": client["practitioner"]["practitioner_id"],
                "client_ids": [client_id],
                "starts_at": client["session"]["starts_at"],
                "ends_at": client["session"]["ends_at"],
            },
        ),
        (
            "POST",
            f"/v1/clients/{client_id}/rooms",
            {"practitioner_id": client["practitioner"]["practitioner_id"], "title": "Again"},
        ),
    ]:
        assert_problem(await clinic.call(method, path, json=body), 410, "client_erased")
    assert (await clinic.call("GET", f"/v1/rooms/{client['room']['room_id']}")).status_code == 404
    session = await clinic.ok("GET", f"/v1/sessions/{client['session']['session_id']}")
    assert session["attendees"][0]["email"] is None

    pool = pool_of(app)
    assert not await pool.fetchval(
        "SELECT count(*) FROM person_keys WHERE clinic_id = $1 AND person_id = $2",
        clinic.clinic_id,
        client["client_id"],
    )
    stored = await stored_text(app, clinic.clinic_id) + await kept_answers(app)
    for plain in person.values():
        assert plain not in stored

    again = await clinic.ok("POST", f"/v1/clients/{client_id}/erasure")
    assert again["already_erased"] is True
    assert again["erased_at"] == erased["erased_at"]
    types = await pool.fetch(
        "SELECT type FROM events WHERE stream_id = $1 ORDER BY version", f"client-{client_id}"
    )
    assert [r["type"] for r in types] == ["ClientAdded", "ClientErased"]


async def test_erasure_answers_404_for_unknown_and_other_clinics_clients(
    clinic: ClinicHandle,
) -> None:
    person = Person()
    other = await register_clinic(clinic.api)
    theirs = await other.client(person.name, email=person.email)
    response = await clinic.call("POST", f"/v1/clients/{theirs['client_id']}/erasure")
    assert_problem(response, 404, "client_not_found")
    assert (await other.ok("GET", f"/v1/clients/{theirs['client_id']}"))["email"] == person.email
    unknown = await clinic.call("POST", f"/v1/clients/{uuid.uuid4()}/erasure")
    assert_problem(unknown, 404, "client_not_found")


@pytest.fixture
async def as_notify(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A connection whose requests carry notify's signed claim."""
    nc = signing_as(
        await connect_nats(nats_server.url, "tests-as-notify"),
        Identity.load(harness_auth().creds("notify")),
    )
    yield nc
    await nc.drain()


@pytest.fixture
async def as_links(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A connection whose requests carry links' signed claim (it shows rooms' titles)."""
    nc = signing_as(
        await connect_nats(nats_server.url, "tests-as-links"),
        Identity.load(harness_auth().creds("links")),
    )
    yield nc
    await nc.drain()


async def test_notify_opens_values_for_one_clinic_only(
    app: FastAPI, clinic: ClinicHandle, as_notify: NATS, as_links: NATS, nc: NATS
) -> None:
    person = Person()
    client = await client_with_everything(clinic, person)
    sealed = await pool_of(app).fetchrow(
        "SELECT display_name, email FROM clients WHERE client_id = $1", client["client_id"]
    )
    values = [sealed["display_name"], sealed["email"], "plain@example.org"]
    asked = SealedValues(clinic_id=clinic.clinic_id, values=values)
    answer = await call(as_notify, UNSEAL_SUBJECT, asked, OpenedValues)
    assert [(v.outcome, v.value) for v in answer.values] == [
        (Opening.opened, person.name),
        (Opening.opened, person.email),
        (Opening.refused, None),
    ]
    assert await call(as_links, UNSEAL_SUBJECT, asked, OpenedValues) == answer
    other = await register_clinic(clinic.api)
    elsewhere = await call(
        as_notify,
        UNSEAL_SUBJECT,
        SealedValues(clinic_id=other.clinic_id, values=values),
        OpenedValues,
    )
    assert {v.outcome for v in elsewhere.values} == {Opening.refused}
    assert {v.value for v in elsewhere.values} == {None}

    await clinic.ok("POST", f"/v1/clients/{client['client_id']}/erasure")
    after = await call(as_notify, UNSEAL_SUBJECT, asked, OpenedValues)
    assert [v.outcome for v in after.values] == [Opening.erased, Opening.erased, Opening.refused]
    assert {str(v.person_id) for v in after.values[:2]} == {client["client_id"]}
    too_many = SealedValues.model_construct(clinic_id=clinic.clinic_id, values=values * 200)
    with pytest.raises(RpcError, match="malformed request"):
        await call(as_notify, UNSEAL_SUBJECT, too_many, OpenedValues)
    # Any other service than notify and links (here: a request signed as signaling) is refused.
    with pytest.raises(RpcError, match="refused"):
        await call(nc, UNSEAL_SUBJECT, asked, OpenedValues)


def test_every_personal_field_scheduling_publishes_is_sealed_or_said_to_be_plain() -> None:
    """A new event with a personal field must say whose key seals it (or why it stays plain)."""
    sealed_types = {cls.event_type() for cls in SEALED}
    for cls in scheduling_events:
        nested = any("Contact" in str(f.annotation) for f in cls.model_fields.values())
        if personal_fields(cls) or nested:
            assert cls.event_type() in sealed_types | set(PLAIN), cls.event_type()
