"""Screen sharing in headless Chromium: a host's share is seen large by the others, and a host
stops a guest's share.

Chromium's fake devices give getDisplayMedia a fake screen of 1280x720 without a picker
(``--use-fake-ui-for-media-stream --use-fake-device-for-media-stream``, as every browser test
launches it); the fake camera is 640x480. The stage's video showing 1280x720 is the share
itself arriving through the media node, not a camera.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, remote_videos_playing, screen

pytestmark = pytest.mark.slow
SCREEN = (1280, 720)


def link_of(session: dict[str, Any], kind: str) -> str:
    url: str = next(link["url"] for link in session["links"] if link["kind"] == kind)
    return url


async def shown_share(page: Page, sharer: str | None, size: tuple[int, int] | None) -> None:
    """The page's stage shows ``sharer``'s share at ``size`` (None: no stage)."""
    expected = {"sharer": sharer, "shown": size is not None}
    if size is not None:
        expected |= {"width": size[0], "height": size[1]}
    script = f"""() => {{
        const s = window.antechamber.screenShare();
        const want = {json.dumps(expected)};
        return Object.entries(want).every(([k, v]) => s[k] === v);
    }}"""
    try:
        await page.wait_for_function(script, timeout=30_000)
    except Exception:
        seen = await page.evaluate("() => window.antechamber.screenShare()")
        told = await page.locator("#toast").text_content()
        pytest.fail(f"expected the stage {expected}, saw {seen}; the page said {told!r}")


async def participant_id(page: Page) -> str:
    pid: str = await page.evaluate("() => window.antechamber.participantId")
    return pid


@pytest.fixture
async def guests_may_share(platform: Platform) -> AsyncIterator[None]:
    async with httpx.AsyncClient(headers=platform.headers(), timeout=10) as api:
        url = f"{platform.scheduling}/v1/clinic/settings"
        response = await api.patch(url, json={"call": {"guest_screen_share": True}})
        assert response.status_code == 200, response.text
        try:
            yield
        finally:
            await api.patch(url, json={"call": {"guest_screen_share": False}})


async def call_of_three(platform: Platform, people: People) -> tuple[Page, Page, Page]:
    session = await new_session(platform.web, guest_admission="direct")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    client = await people.open("client", link_of(session, "session"))
    await join(client, "Casey Client")
    await screen(client, "call")
    guest = await people.open("guest", link_of(session, "guest"))
    await join(guest, "Gita Guest")
    await screen(guest, "call")
    for page in (host, client, guest):
        await remote_videos_playing(page, 2)
    return host, client, guest


async def test_a_hosts_share_is_seen_large_by_the_others_and_ends_with_it(
    platform: Platform, people: People
) -> None:
    host, client, guest = await call_of_three(platform, people)
    # Guests of a clinic that does not allow it have no button.
    await expect(client.locator("#share-toggle")).to_be_hidden()
    await expect(host.locator("#share-toggle")).to_have_text("Share screen")

    await host.click("#share-toggle")
    me = await participant_id(host)
    await shown_share(host, me, SCREEN)  # the sharer sees what they share
    for page in (client, guest):
        await shown_share(page, me, SCREEN)
        await expect(page.locator("#screen-label")).to_have_text("Dr Demo is sharing their screen")
        # A guest cannot stop a host's share.
        await expect(page.locator("#screen-stop")).to_be_hidden()
    await shown_share(host, me, SCREEN)  # the sharer sees what they share
    await expect(host.locator("#share-toggle")).to_have_text("Stop sharing")
    # The cameras still play in their tiles.
    for page in (client, guest):
        await remote_videos_playing(page, 2)
    await people.shoot("host-shares")

    await host.click("#share-toggle")
    for page in (host, client, guest):
        await shown_share(page, None, None)
    await people.shoot("share-over")

    # Shared again, then ended by the browser's own "Stop sharing" (the track ends).
    await host.click("#share-toggle")
    await shown_share(client, me, SCREEN)
    await host.evaluate(
        """() => document.getElementById("screen-video").srcObject.getVideoTracks()[0]
            .dispatchEvent(new Event("ended"))"""
    )
    for page in (host, client, guest):
        await shown_share(page, None, None)
    await expect(host.locator("#share-toggle")).to_have_text("Share screen")


async def test_a_host_stops_a_guests_share(
    platform: Platform, people: People, guests_may_share: None
) -> None:
    host, client, guest = await call_of_three(platform, people)
    await expect(guest.locator("#share-toggle")).to_be_visible()
    await guest.click("#share-toggle")
    sharer = await participant_id(guest)
    for page in (host, client):
        await shown_share(page, sharer, SCREEN)
    await expect(host.locator("#screen-stop")).to_be_visible()
    await expect(client.locator("#screen-stop")).to_be_hidden()
    await people.shoot("guest-shares")

    # A second share while one is on is refused, with the sharer's name.
    await host.click("#share-toggle")
    await expect(host.locator("#toast")).to_have_text(
        "Gita Guest is sharing their screen; ask them to stop first."
    )
    await expect(host.locator("#share-toggle")).to_have_text("Share screen")

    await host.click("#screen-stop")
    for page in (host, client, guest):
        await shown_share(page, None, None)
    assert (await guest.evaluate("() => window.antechamber.screenShare()"))["sharing"] is False
    await expect(guest.locator("#toast")).to_have_text("Your screen share was stopped by the host.")
    await expect(guest.locator("#share-toggle")).to_have_text("Share screen")
    await people.shoot("host-stopped-it")
