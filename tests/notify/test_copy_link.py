"""Copy link: the text a clinic pastes into a message of its own, for each kind of link a
session can be joined with; and what mails say about rooms (always open, a title)."""

from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import httpx

from tests.notify.conftest import Clinic, Platform, body_of, clinic_of
from tests.notify.test_invitations import CLIENT, schedule
from tests.support import assert_problem, eventually


async def copy_link(clinic: Clinic, session_id: str, **params: str) -> httpx.Response:
    return await clinic.notify_call("GET", f"/v1/sessions/{session_id}/copy-link", params=params)


async def copied(clinic: Clinic, session_id: str, **params: str) -> dict[str, Any]:
    """The copy text once notify has the link (links issues it in reaction to the session)."""
    found: dict[str, Any] = {}

    async def ready() -> bool:
        nonlocal found
        response = await copy_link(clinic, session_id, **params)
        if response.status_code == 409 or (
            response.status_code == 404 and response.json()["code"] == "session_not_found"
        ):
            return False  # notify has not heard of the session, or of its link, yet
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        found = response.json()
        return True

    await eventually(ready, timeout=20, what=f"copy text for {params or 'the client'}")
    return found


async def mail_with(platform: Platform, url: str) -> EmailMessage:
    """The mail carrying ``url`` (a message left planned by an earlier test may come first)."""
    found: list[EmailMessage] = []

    async def arrived() -> bool:
        found[:] = [m.message for m in platform.sink.messages if url in body_of(m.message)]
        return bool(found)

    await eventually(arrived, timeout=20, what="the mail with the link")
    return found[0]


async def test_a_session_link_opens_at_a_time_and_is_personal(platform: Platform) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=1))
    link = await clinic.linked.link("session", session_id=session["session_id"])
    copy = await copied(clinic, session["session_id"])
    assert copy["join_url"] == link["url"]
    assert copy["kind"] == "session"
    assert "opens at" in copy["text"]
    assert "personal" in copy["text"]


async def test_the_guest_link_can_be_copied_before_and_after_it_is_regenerated(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=1), link_sharing=True)
    sid = session["session_id"]
    guest = await clinic.linked.link("guest", session_id=sid)
    copy = await copied(clinic, sid, link="guest")
    assert copy["join_url"] == guest["url"]
    assert copy["kind"] == "guest"
    assert guest["url"] in copy["text"]
    assert "personal" not in copy["text"]
    assert "Anyone with this link" in copy["text"]
    assert "opens at" in copy["text"]
    client_copy = await copied(clinic, sid)
    assert client_copy["join_url"] != guest["url"]

    response = await platform.links.post(
        f"/v1/links/{guest['link_id']}/regenerate", headers=clinic.headers
    )
    assert response.status_code == 201, response.text
    new = response.json()

    async def regenerated() -> bool:
        return bool((await copied(clinic, sid, link="guest"))["join_url"] == new["url"])

    await eventually(regenerated, timeout=20, what="the regenerated guest link copied")


async def test_a_session_without_link_sharing_has_no_guest_link_to_copy(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=1))
    await copied(clinic, session["session_id"])
    response = await copy_link(clinic, session["session_id"], link="guest")
    assert_problem(response, 409, "link_sharing_off")
    assert "link sharing" in response.json()["detail"]
    response = await copy_link(clinic, session["session_id"], link="bogus")
    assert_problem(response, 422)


async def test_an_unknown_recipient_is_404_not_the_clients_link(platform: Platform) -> None:
    clinic = await clinic_of(platform)
    session = await schedule(clinic, timedelta(days=1))
    await copied(clinic, session["session_id"])
    other = await schedule(clinic, timedelta(days=2))
    for stranger in ("0b6c3f1e-2f4a-4d8e-9a51-7c2d9e3b1f00", other["client"]["client_id"]):
        response = await copy_link(clinic, session["session_id"], recipient_id=stranger)
        assert_problem(response, 404, "recipient_not_found")
        assert "join_url" not in response.json()
    own = await copied(clinic, session["session_id"], recipient_id=session["client"]["client_id"])
    assert own["kind"] == "session"


async def test_a_practitioners_room_is_not_called_personal_and_is_always_open(
    platform: Platform,
) -> None:
    clinic = await clinic_of(platform)
    sched = clinic.scheduling
    practitioner = await sched.practitioner("Dr Ada Lovelace")
    client = await sched.client("Grace Hopper", email=CLIENT)
    session = await sched.session(
        practitioner,
        [client],
        video_mode="practitioner_room",
        room_id=practitioner["room_id"],
    )
    copy = await copied(clinic, session["session_id"])
    assert copy["kind"] == "practitioner_room"
    assert "personal" not in copy["text"]
    assert "opens at" not in copy["text"]
    assert "Dr Ada Lovelace" in copy["text"]
    mail = await mail_with(platform, copy["join_url"])
    for part in (body_of(mail), body_of(mail, "html")):
        assert copy["join_url"] in part
        assert "personal" not in part
        assert "opens at" not in part


async def test_a_client_room_is_always_open_and_shows_its_title(platform: Platform) -> None:
    clinic = await clinic_of(platform)
    sched = clinic.scheduling
    practitioner = await sched.practitioner("Dr Ada Lovelace")
    client = await sched.client("Grace Hopper", email=CLIENT)
    room = await sched.client_room(client, practitioner, title="Tuesday check-ins")
    session = await sched.session(
        practitioner, [client], video_mode="client_room", room_id=room["room_id"]
    )
    copy = await copied(clinic, session["session_id"])
    assert copy["kind"] == "client_room"
    assert "opens at" not in copy["text"]
    assert "Tuesday check-ins" in copy["text"]
    assert "personal" in copy["text"]
    mail = await mail_with(platform, copy["join_url"])
    assert "Tuesday check-ins" not in mail["Subject"], "titles may name the client"
    for part in (body_of(mail), body_of(mail, "html")):
        assert "Tuesday check-ins" in part
        assert "opens at" not in part
        assert "personal" in part
    await sched.ok("PATCH", f"/v1/rooms/{room['room_id']}", json={"title": "Weekly with Ada"})

    async def renamed() -> bool:
        return "Weekly with Ada" in (await copied(clinic, session["session_id"]))["text"]

    await eventually(renamed, timeout=20, what="the new title in the copy text")
