"""Invitations, updates, cancellations, new links and reminders, as recipients receive them."""

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.notify.conftest import (
    Clinic,
    Platform,
    body_of,
    calendar_of,
    clinic_of,
    event_of,
    mails_to,
)
from tests.support import eventually

CLIENT = "grace@example.org"


async def schedule(clinic: Clinic, starts_in: timedelta, **extra: Any) -> dict[str, Any]:
    sched = clinic.scheduling
    practitioner = await sched.practitioner("Dr Ada Lovelace")
    client = await sched.client("Grace Hopper", email=CLIENT)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + starts_in
    session: dict[str, Any] = await sched.session(
        practitioner,
        [client],
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=50)).isoformat(),
        **extra,
    )
    session["client"] = client
    return session


async def test_an_invitation_carries_the_recipients_own_link_local_times_and_a_calendar(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform, time_zone="Europe/Berlin")
    session = await schedule(clinic, timedelta(days=3), link_sharing=True)
    link = await clinic.linked.link("session", session_id=session["session_id"])
    received = (await platform.sink.wait_for(1, timeout=20))[0]
    assert received.rcpt_tos == [CLIENT]
    message = received.message
    text, html = body_of(message), body_of(message, "html")
    assert link["url"] in text
    assert link["url"].replace("&", "&amp;") in html
    local = datetime.fromisoformat(session["starts_at"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert f"{local:%H:%M}" in text
    assert "Dr Ada Lovelace" in text
    assert "Grace" not in message["Subject"], "no patient names in subject lines"
    assert message["From"].startswith("Riverside Therapy")
    event = event_of(calendar_of(message))
    assert str(event["UID"]) == f"{session['session_id']}@antechamber"
    assert int(event["SEQUENCE"]) == 0
    assert calendar_of(message)["METHOD"] == "REQUEST"
    assert event.decoded("DTSTART") == datetime.fromisoformat(session["starts_at"])
    assert str(event["URL"]) == link["url"]
    # An attendee gets their own drop-in link, not the client's.
    invited = await clinic.scheduling.ok(
        "POST",
        f"/v1/sessions/{session['session_id']}/attendees",
        201,
        json={"email": "alan@example.org", "display_name": "Alan"},
    )
    await platform.sink.wait_for(2, timeout=20)
    attendee = invited
    assert attendee["email"] == "alan@example.org"
    drop_in = await clinic.linked.link("drop_in", session_id=session["session_id"])
    assert drop_in["attendee_id"] == attendee["attendee_id"]
    (mail,) = mails_to(platform.sink, "alan@example.org")
    assert drop_in["url"] in body_of(mail.message)
    assert link["url"] not in body_of(mail.message)
    # The log: sent, addresses masked, the message id recorded.
    log = await clinic.wait_deliveries(
        lambda found: len([d for d in found if d["status"] == "sent"]) == 2,
        "both recorded as sent",
        session_id=session["session_id"],
    )
    sent = [d for d in log if d["status"] == "sent"]
    assert {d["address"] for d in sent} == {"g***@example.org", "a***@example.org"}
    assert all(d["message_id"].endswith("@clinic.example>") for d in sent)


async def test_a_reschedule_moves_the_reminders_and_sends_an_update_with_the_same_uid(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=2))
    sid = session["session_id"]
    await platform.sink.wait_for(1, timeout=20)
    log = await clinic.wait_deliveries(
        lambda found: len([d for d in found if d["kind"] == "reminder"]) == 2,
        "two reminders planned",
        session_id=sid,
    )
    old = sorted(d["due_at"] for d in log if d["kind"] == "reminder")
    moved = datetime.fromisoformat(session["starts_at"]) + timedelta(days=1)
    await clinic.scheduling.ok(
        "POST",
        f"/v1/sessions/{sid}/reschedule",
        json={
            "starts_at": moved.isoformat(),
            "ends_at": (moved + timedelta(minutes=50)).isoformat(),
        },
    )
    update = (await platform.sink.wait_for(2, timeout=20))[1].message
    event = event_of(calendar_of(update))
    assert str(event["UID"]) == f"{sid}@antechamber"
    assert int(event["SEQUENCE"]) == 1
    assert event.decoded("DTSTART") == moved
    log = await clinic.wait_deliveries(
        lambda found: len([d for d in found if d["kind"] == "reminder"]) == 4,
        "the reminders moved",
        session_id=sid,
    )
    reminders = [d for d in log if d["kind"] == "reminder"]
    due = {
        status: sorted(
            datetime.fromisoformat(d["due_at"]) for d in reminders if d["status"] == status
        )
        for status in ("dropped", "pending")
    }
    assert due["dropped"] == [datetime.fromisoformat(d) for d in old]
    assert due["pending"] == [moved - timedelta(minutes=m) for m in (1440, 60)]


async def test_a_cancellation_cancels_the_calendar_entry_and_drops_the_reminders(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=2))
    sid = session["session_id"]
    await platform.sink.wait_for(1, timeout=20)
    await clinic.scheduling.ok("POST", f"/v1/sessions/{sid}/cancel", json={})
    cancel = (await platform.sink.wait_for(2, timeout=20))[1].message
    calendar = calendar_of(cancel)
    assert calendar["METHOD"] == "CANCEL"
    assert str(event_of(calendar)["STATUS"]) == "CANCELLED"
    assert int(event_of(calendar)["SEQUENCE"]) == 1
    assert "cancel" in cancel["Subject"].lower()
    log = await clinic.deliveries(session_id=sid)
    assert {d["status"] for d in log if d["kind"] == "reminder"} == {"dropped"}


async def test_a_regenerated_link_is_mailed_to_the_people_who_hold_the_old_one(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    sched = clinic.scheduling
    practitioner = await sched.practitioner()
    client = await sched.client("Grace Hopper", email=CLIENT)
    room = await sched.ok(
        "POST",
        f"/v1/clients/{client['client_id']}/rooms",
        201,
        json={"practitioner_id": practitioner["practitioner_id"], "title": "Weekly"},
    )
    session = await sched.session(
        practitioner, [client], video_mode="client_room", room_id=room["room_id"]
    )
    old = await clinic.linked.link("client_room", room_id=room["room_id"])
    first = (await platform.sink.wait_for(1, timeout=20))[0].message
    assert old["url"] in body_of(first)
    response = await platform.links.post(
        f"/v1/links/{old['link_id']}/regenerate", headers=clinic.headers
    )
    assert response.status_code == 201, response.text
    mail = (await platform.sink.wait_for(2, timeout=20))[1].message
    new = next(
        link
        for link in await clinic.linked.links_of(room_id=room["room_id"])
        if link["kind"] == "client_room" and link["state"] == "active"
    )
    assert new["url"] in body_of(mail)
    assert old["url"] not in body_of(mail)
    await clinic.wait_deliveries(
        lambda found: (
            [d["kind"] for d in found if d["status"] == "sent"] == ["invitation", "new_link"]
        ),
        "the new link recorded as sent",
        session_id=session["session_id"],
    )


async def test_a_retired_links_successor_is_mailed_to_the_people_who_hold_the_old_one(
    platform: Platform,
) -> None:
    """Retiring keeps the old link working until the sunset: the message says until when, and
    from then on every message (a re-sent invitation too) carries the successor."""
    clinic = await clinic_of(platform, time_zone="Europe/Berlin")
    session = await schedule(clinic, timedelta(days=2))
    sid = session["session_id"]
    old = await clinic.linked.link("session", session_id=sid)
    first = (await platform.sink.wait_for(1, timeout=20))[0].message
    assert old["url"] in body_of(first)
    sunset = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    response = await platform.links.post(
        "/v1/links/retire",
        headers=clinic.headers,
        json={"sunset_at": sunset.isoformat(), "kind": "session"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"retired": 1}
    mail = (await platform.sink.wait_for(2, timeout=20))[1].message
    successor = next(
        link
        for link in await clinic.linked.links_of(session_id=sid)
        if link["kind"] == "session" and link["state"] == "active"
    )
    text = body_of(mail)
    assert successor["url"] in text
    assert old["url"] not in text
    local = sunset.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"works until {local:%H:%M}" in text, text
    assert "no longer works" not in text
    await clinic.wait_deliveries(
        lambda found: (
            [d["kind"] for d in found if d["status"] == "sent"] == ["invitation", "new_link"]
        ),
        "the new link recorded as sent",
        session_id=sid,
    )
    response = await clinic.notify_call("POST", f"/v1/sessions/{sid}/resend", json={})
    assert response.status_code == 202, response.text
    resent = (await platform.sink.wait_for(3, timeout=20))[2].message
    assert successor["url"] in body_of(resent)
    assert old["url"] not in body_of(resent)


async def test_reminders_fall_due_and_one_due_during_downtime_is_sent_late_or_skipped(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform, reminder_offsets_minutes=[60])
    soon = await schedule(clinic, timedelta(hours=2))
    await platform.sink.wait_for(1, timeout=20)
    platform.clock.advance(hours=1, minutes=1)  # the 1-hour reminder is due
    reminder = (await platform.sink.wait_for(2, timeout=20))[1].message
    assert "in 1 hour" in body_of(reminder)
    later = await schedule(clinic, timedelta(hours=4))
    started = await schedule(clinic, timedelta(hours=3))
    await platform.sink.wait_for(4, timeout=20)
    # Both reminders fall due at once, and one session has even started: what notify finds
    # when it comes back after a downtime (restarts themselves: tests/notify/test_crash.py).
    platform.clock.advance(hours=2, minutes=30)
    log = await clinic.wait_deliveries(
        lambda found: {d["status"] for d in found if d["kind"] == "reminder"} == {"sent"},
        "the late reminder sent",
        session_id=later["session_id"],
    )
    assert len([d for d in log if d["kind"] == "reminder"]) == 1
    log = await clinic.wait_deliveries(
        lambda found: {d["status"] for d in found if d["kind"] == "reminder"} == {"skipped"},
        "the reminder of the started session skipped",
        session_id=started["session_id"],
    )
    assert "started" in log[-1]["detail"]
    assert len(mails_to(platform.sink, CLIENT)) == 5
    del soon


async def test_copy_link_text_and_resend(platform: Platform) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=1))
    sid = session["session_id"]
    link = await clinic.linked.link("session", session_id=sid)
    await platform.sink.wait_for(1, timeout=20)
    response = await clinic.notify_call("GET", f"/v1/sessions/{sid}/copy-link")
    assert response.status_code == 200, response.text
    assert link["url"] in response.json()["text"]
    assert "Dr Ada Lovelace" in response.json()["text"]
    response = await clinic.notify_call("POST", f"/v1/sessions/{sid}/resend", json={})
    assert response.status_code == 202, response.text
    await platform.sink.wait_for(2, timeout=20)
    assert len(mails_to(platform.sink, CLIENT)) == 2
    # Another clinic sees none of it.
    other = await clinic_of(platform)
    for method, path in [
        ("GET", f"/v1/sessions/{sid}/copy-link"),
        ("POST", f"/v1/sessions/{sid}/resend"),
    ]:
        response = await other.notify_call(method, path, json={})
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert await other.deliveries(session_id=sid) == []

    async def nothing_more() -> bool:
        return len(platform.sink.messages) == 2

    await eventually(nothing_more, what="no third message")
