"""Every state change reaches JetStream once, on its subject; reactions happen once."""

import json
from datetime import UTC, datetime
from uuid import UUID

from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.envelope import event_subject
from contracts.signaling import SessionStarted
from runtime.projections import rebuild
from tests.scheduling.conftest import OPERATOR, ClinicHandle, report
from tests.scheduling.test_sessions import at, history
from tests.support import eventually, publish_envelope


async def clinic_messages(nc: NATS, clinic_id: str, expected: int) -> list[tuple[str, dict]]:
    """The clinic's messages on the scheduling stream, once ``expected`` have arrived."""
    js = nc.jetstream()
    subject = f"antechamber.{clinic_id}.scheduling.>"
    received: list[tuple[str, dict]] = []

    async def arrived() -> bool:
        received.clear()
        sub = await js.subscribe(
            subject,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except TimeoutError:
                    break
                received.append((msg.subject, json.loads(msg.data)))
        finally:
            await sub.unsubscribe()
        return len(received) >= expected

    await eventually(arrived, what=f"{expected} messages for the clinic")
    return received


async def test_every_change_is_published_once_on_its_subject(
    app: FastAPI, clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client(linked_accounts=[{"display_name": "D", "email": "d@x.org"}])
    await clinic.ok("PATCH", f"/v1/clients/{client['client_id']}", json={"phone": "+1 555"})
    room = await clinic.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Weekly"},
    )
    await clinic.ok("PATCH", f"/v1/rooms/{room['room_id']}", json={"title": "Monthly"})
    await clinic.ok("DELETE", f"/v1/rooms/{room['room_id']}", 204)
    session = await clinic.session(practitioner, [client])
    path = f"/v1/sessions/{session['session_id']}"
    await clinic.ok(
        "POST",
        f"{path}/reschedule",
        json={"starts_at": at(2).isoformat(), "ends_at": at(2, 30).isoformat()},
    )
    invited = await clinic.ok("POST", f"{path}/attendees", 201, json={"email": "a@x.org"})
    await clinic.ok("DELETE", f"{path}/attendees/{invited['attendee_id']}", 204)
    await clinic.ok("PUT", f"{path}/link-sharing", json={"enabled": True})
    await clinic.ok("PUT", f"{path}/link-sharing", json={"enabled": False})
    await clinic.ok("POST", f"{path}/cancel", json={})
    await clinic.ok("PATCH", "/v1/clinic/settings", json={"buffer_minutes": 20})
    await clinic.api.post(
        f"/v1/clinics/{clinic.clinic_id}/suspend", headers=OPERATOR, json={"reason": "test"}
    )

    pool = app.state.runtime.context.pool
    stored = await pool.fetch(
        "SELECT event_id, type FROM events WHERE clinic_id = $1 ORDER BY position",
        clinic.clinic_id,
    )
    assert [r["type"] for r in stored] == [
        "ClinicRegistered",
        "ApiKeyIssued",
        "PractitionerAdded",
        "RoomCreated",
        "ClientAdded",
        "ClientUpdated",
        "RoomCreated",
        "RoomRenamed",
        "RoomDeleted",
        "SessionScheduled",
        "SessionRescheduled",
        "AttendeeInvited",
        "AttendeeRemoved",
        "LinkSharingEnabled",
        "LinkSharingDisabled",
        "SessionCancelled",
        "ClinicSettingsChanged",
        "ClinicSuspended",
    ]
    published = await clinic_messages(nc, clinic.clinic_id, len(stored))
    assert len(published) == len(stored)
    assert [(s, m["event_id"]) for s, m in published] == [
        (event_subject(clinic.clinic_id, "scheduling", r["type"]), str(r["event_id"]))
        for r in stored
    ]
    for subject, _ in published:  # nothing personal in a subject
        assert "@" not in subject
        assert "Grace" not in subject
    key_issued = next(m for _, m in published if m["type"] == "ApiKeyIssued")
    assert clinic.key not in json.dumps(key_issued)
    assert clinic.key[len(key_issued["data"]["prefix"]) :] not in json.dumps(key_issued)


async def test_a_redelivered_report_changes_the_session_once(
    clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    session = await clinic.session(practitioner, [await clinic.client()])
    started = SessionStarted(
        room_id=UUID(practitioner["room_id"]),
        session_id=UUID(session["session_id"]),
        started_at=datetime.now(UTC),
    )
    envelope = await report(nc, "signaling", clinic.clinic_id, started)
    # The same event again, as a republish after the duplicate window would deliver it.
    await publish_envelope(nc.jetstream(), envelope, msg_id=f"{envelope.event_id}-again")

    async def live() -> bool:
        return "SessionWentLive" in await history(clinic, session["session_id"])

    await eventually(live, what="the session live")
    # A later report shows the duplicate was consumed (one at a time, in order) and ignored.
    marker = await clinic.session(practitioner, [await clinic.client()])
    await report(
        nc,
        "signaling",
        clinic.clinic_id,
        started.model_copy(update={"session_id": UUID(marker["session_id"])}),
    )

    async def marker_live() -> bool:
        return "SessionWentLive" in await history(clinic, marker["session_id"])

    await eventually(marker_live, what="the marker session live")
    assert await history(clinic, session["session_id"]) == ["SessionScheduled", "SessionWentLive"]


async def test_another_clinics_report_does_not_touch_the_session(
    clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    session = await clinic.session(practitioner, [await clinic.client()])
    forged = SessionStarted(
        room_id=UUID(practitioner["room_id"]),
        session_id=UUID(session["session_id"]),
        started_at=datetime.now(UTC),
    )
    await report(nc, "signaling", "c_someoneelse", forged)
    marker = await clinic.session(practitioner, [await clinic.client()])
    await report(
        nc,
        "signaling",
        clinic.clinic_id,
        forged.model_copy(update={"session_id": UUID(marker["session_id"])}),
    )

    async def marker_live() -> bool:
        return "SessionWentLive" in await history(clinic, marker["session_id"])

    await eventually(marker_live, what="the marker session live")
    assert await history(clinic, session["session_id"]) == ["SessionScheduled"]


async def test_rebuilt_read_models_equal_the_live_ones(app: FastAPI, clinic: ClinicHandle) -> None:
    practitioner = await clinic.practitioner()
    client = await clinic.client(alternate_contacts=[{"display_name": "J", "email": "j@x.org"}])
    session = await clinic.session(practitioner, [client])
    await clinic.ok(
        "POST", f"/v1/sessions/{session['session_id']}/attendees", 201, json={"email": "a@x.org"}
    )
    await clinic.ok("POST", f"/v1/sessions/{session['session_id']}/cancel", json={})
    paths = [
        "/v1/clinic",
        f"/v1/sessions/{session['session_id']}",
        f"/v1/clients/{client['client_id']}",
        "/v1/practitioners",
        "/v1/rooms",
    ]
    before = [await clinic.ok("GET", path) for path in paths]
    await rebuild(app.state.runtime.context.store)
    assert [await clinic.ok("GET", path) for path in paths] == before
