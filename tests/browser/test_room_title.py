"""The room's title on the join page: the practitioner chose it, the client sees it.

A client room's title travels sealed for the client; the page shows it opened, before the
person joins and in the call, through the whole platform as `antechamber up` runs it.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import People, Platform, join, screen

pytestmark = pytest.mark.slow

TITLE = "Weekly check-in with Dr Demo"


async def link_of(platform: Platform, kind: str, **filters: str) -> str:
    async with platform.api(platform.links) as links:
        for _ in range(100):
            response = await links.get("/v1/links", params=filters)
            assert response.status_code == 200, response.text
            found = [x for x in response.json()["items"] if x["kind"] == kind]
            if found:
                url: str = found[-1]["url"]
                return url
            await asyncio.sleep(0.2)
    raise AssertionError(f"no {kind} link for {filters}")


async def test_the_join_page_shows_the_rooms_title_before_joining_and_in_the_call(
    platform: Platform, people: People
) -> None:
    demo = platform.demo
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    async with platform.api(platform.scheduling) as scheduling:
        response = await scheduling.post(
            f"/v1/clients/{demo['client_id']}/rooms",
            json={"practitioner_id": demo["practitioner_id"], "title": TITLE},
        )
        assert response.status_code == 201, response.text
        room: dict[str, Any] = response.json()
        response = await scheduling.post(
            "/v1/sessions",
            json={
                "practitioner_id": demo["practitioner_id"],
                "client_ids": [demo["client_id"]],
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=50)).isoformat(),
                "video_mode": "client_room",
                "room_id": room["room_id"],
                "guest_admission": "direct",
            },
        )
        assert response.status_code == 201, response.text
        session_id = response.json()["session_id"]
    room_link = await link_of(platform, "client_room", room_id=room["room_id"])
    host_link = await link_of(platform, "host", practitioner_id=demo["practitioner_id"])

    client = await people.open("client", room_link)
    await screen(client, "prejoin")
    await expect(client.locator("#room-title")).to_have_text(TITLE)
    await expect(client.locator("#room-title")).to_be_visible()
    assert TITLE not in await client.title()  # not in the browser's history
    await people.shoot("prejoin-with-title")

    host = await people.open("host", f"{host_link}?session={session_id}")
    await join(host, "Dr Demo")
    await screen(host, "call")
    await join(client, "Demo Client")
    await screen(client, "call")
    for page in (client, host):
        await expect(page.locator("#room-title")).to_have_text(TITLE)
        await expect(page.locator("#room-title")).to_be_visible()
    await people.shoot("in-the-call-with-title")
