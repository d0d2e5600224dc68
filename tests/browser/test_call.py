"""A whole call in headless Chromium: a host and two guests through the reference client.

Chromium's own WebRTC stack, nobody's here, talks to the media node: the videos each page
shows must play (a picture, and frames that keep coming), not just exist.
"""

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import (
    People,
    Platform,
    join,
    remote_videos_playing,
    screen,
)

pytestmark = pytest.mark.slow


def link_of(session: dict[str, Any], kind: str) -> str:
    url: str = next(link["url"] for link in session["links"] if link["kind"] == kind)
    return url


async def waiting_guest(host: Page, name: str) -> Any:
    item = host.locator("#waiting-list li", has_text=name)
    await expect(item).to_be_visible(timeout=15_000)
    return item


async def test_a_host_admits_two_guests_everyone_sees_everyone_and_the_host_ends_it(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    await expect(host.locator("#manager")).to_be_visible()
    await people.shoot("host-in")

    client = await people.open("client", link_of(session, "session"))
    await join(client, "Casey Client")
    await screen(client, "waiting")
    await expect(client.locator("#waiting-title")).to_have_text("The host has been notified")
    knock = await waiting_guest(host, "Casey Client")
    await expect(knock.locator(".badge.muted-knock")).to_have_count(0)
    await expect(host.locator("#alerts")).to_contain_text("Casey Client is waiting")
    await people.shoot("client-knocks")

    await knock.get_by_role("button", name="Admit Casey Client").click()
    await screen(client, "call")
    await expect(host.locator("#knocks-toggle")).to_have_text("Unmute knocks")

    guest = await people.open("guest", link_of(session, "guest"))
    await join(guest, "Gita Guest")
    await screen(guest, "waiting")
    second = await waiting_guest(host, "Gita Guest")
    await expect(second.locator(".badge.muted-knock")).to_have_text("muted knock")
    await people.shoot("guest-knocks-muted")

    await second.get_by_role("button", name="Admit Gita Guest").click()
    await screen(guest, "call")
    for page in (host, client, guest):
        await remote_videos_playing(page, 2)
    await expect(host.locator("#participant-list li")).to_have_count(3)
    await expect(guest.locator("#grid figcaption")).to_have_text(
        ["You", "Dr Demo", "Casey Client"], timeout=10_000
    )
    await people.shoot("three-in-the-call")
    # Network quality: the host sees signal bars on every tile, a guest only on their own,
    # each read out as a grade and the figures behind it.
    quality = re.compile(r"^Connection (excellent|good|fair|poor|bad), [1-5] of 5")
    await expect(host.get_by_role("img", name=quality)).to_have_count(3, timeout=20_000)
    await expect(guest.locator("#tile-me").get_by_role("img", name=quality)).to_have_count(
        1, timeout=20_000
    )
    await expect(guest.locator(".tile.remote .signal:not([hidden])")).to_have_count(0)
    await people.shoot("network-quality")

    await guest.click("#leave")
    await screen(guest, "ended")
    await expect(guest.locator("#ended-title")).to_have_text("You left the call")
    for page in (host, client):
        await remote_videos_playing(page, 1)
    await expect(host.locator("#participant-list li")).to_have_count(2)
    await people.shoot("guest-left")

    await host.click("#end-all")
    dialog = host.locator("#dialog")
    await expect(dialog).to_be_visible()
    await host.fill("#dialog-message", "Thank you, see you next week.")
    await people.shoot("end-for-all-confirmation")
    await dialog.get_by_role("button", name="End for all").click()
    for page in (host, client):
        await screen(page, "ended")
        await expect(page.locator("#ended-title")).to_have_text("The session has ended")
    await expect(client.locator("#ended-message")).to_have_text("Thank you, see you next week.")
    await people.shoot("ended-for-all")


async def test_a_link_not_open_yet_shows_when_it_opens_in_local_time(
    platform: Platform, people: People
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
    async with platform.api(platform.scheduling) as scheduling:
        created = await scheduling.post(
            "/v1/sessions",
            json={
                "practitioner_id": platform.demo["practitioner_id"],
                "client_ids": [platform.demo["client_id"]],
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=50)).isoformat(),
            },
        )
        assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    async with platform.api(platform.links) as links:
        for _ in range(100):
            response = await links.get("/v1/links", params={"session_id": session_id})
            found = response.json()["items"]
            if found:
                break
            await asyncio.sleep(0.2)
    page = await people.open("client", found[0]["url"])
    await screen(page, "refusal")
    await expect(page.locator("#refusal-title")).to_have_text("This session is not open yet")
    await expect(page.locator("#refusal-message")).to_contain_text("opens")
    await expect(page.locator("#refusal-local")).to_contain_text("In your time zone:")
    await expect(page.locator("#prejoin")).to_be_hidden()
    await people.shoot("not-yet-open")


async def test_a_regenerated_guest_link_says_it_was_replaced(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web)
    old = link_of(session, "guest")
    async with platform.api(platform.links) as links:
        response = await links.get("/v1/links", params={"session_id": session["session_id"]})
        listed = response.json()["items"]
        guest_link = next(x for x in listed if x["kind"] == "guest")
        regenerated = await links.post(f"/v1/links/{guest_link['link_id']}/regenerate")
        assert regenerated.status_code == 201, regenerated.text
    page = await people.open("guest", old)
    await screen(page, "refusal")
    await expect(page.locator("#refusal-title")).to_have_text("This link was replaced")
    await people.shoot("regenerated")

    phone = await people.open("phone", link_of(session, "session"), width=390, height=844)
    await screen(phone, "prejoin")
    await expect(phone.locator("#name")).to_be_visible()
    await expect(phone.locator("#preview")).to_be_visible()
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "nothing sticks out sideways on a phone-sized screen"
    await people.shoot("phone-prejoin")


async def test_the_demo_console_lists_sessions_their_links_and_the_mails_sent(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="direct")
    console = await people.open("console", f"{platform.web}/demo")
    row = console.locator(f'tr[data-session-id="{session["session_id"]}"]')
    await expect(row).to_be_visible(timeout=15_000)
    await expect(row).to_contain_text("guests enter directly")
    await expect(row.locator(".link code")).to_contain_text([session["host_url"]])
    await expect(row.get_by_role("button", name="Copy the guest link (to share)")).to_be_visible()
    await expect(console.locator("#mails tr").first).to_be_visible(timeout=30_000)
    await expect(console.locator("#mails")).to_contain_text("client@demo.example")
    await people.shoot("demo-console")


async def test_hold_recording_and_deny_reach_the_waiting_guest_by_keyboard_alone(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")

    guest = await people.open("guest", link_of(session, "guest"))
    await screen(guest, "prejoin")
    assert await guest.evaluate("document.activeElement.id") == "prejoin-title"
    await guest.keyboard.press("Tab")  # from the screen's heading, where focus moved
    assert await guest.evaluate("document.activeElement.id") == "name"
    await guest.keyboard.type("Kim Keyboard")
    await guest.keyboard.press("Enter")
    await screen(guest, "waiting")

    knock = await waiting_guest(host, "Kim Keyboard")
    await knock.get_by_role("button", name="Hold Kim Keyboard").click()
    await host.fill("#dialog-message", "Five more minutes, please.")
    await host.locator("#dialog").get_by_role("button", name="Put on hold").click()
    await expect(guest.locator("#waiting-title")).to_have_text("On hold")
    await expect(guest.locator("#waiting-message")).to_have_text("Five more minutes, please.")
    await expect(knock.locator(".badge.on-hold")).to_be_visible()

    await host.click("#record")
    await expect(host.locator("#record")).to_have_text("Stop recording")
    for page in (host, guest):
        await expect(page.locator("#recording")).to_be_visible()
    await host.click("#lock")
    await expect(host.locator("#lock")).to_have_text("Unlock the room")
    await people.shoot("on-hold-recording-locked")

    await knock.get_by_role("button", name="Deny Kim Keyboard").click()
    await host.fill("#dialog-message", "Please book another time.")
    await host.locator("#dialog").get_by_role("button", name="Deny entry").click()
    await screen(guest, "ended")
    await expect(guest.locator("#ended-title")).to_have_text("You were not let in")
    await expect(guest.locator("#ended-message")).to_have_text("Please book another time.")
    await expect(guest.locator("#recording")).to_be_hidden()
    await expect(host.locator("#waiting-list li")).to_have_count(0)
    await host.click("#record")
    await expect(host.locator("#recording")).to_be_hidden()
    await people.shoot("denied")


VOICES = "() => window.antechamber.voices()"


async def voices_heard(page: Page, seconds: float = 1.5) -> set[str]:
    """Whose voices (participant ids) arrive at ``page`` now: audio packets that keep coming."""
    before = await page.evaluate(VOICES)
    await asyncio.sleep(seconds)
    after = await page.evaluate(VOICES)
    return {who for who, packets in after.items() if packets > before.get(who, 0) + 5}


async def test_only_the_loudest_voice_and_the_hosts_reach_the_others(
    platform: Platform, people: People
) -> None:
    # The platform forwards one guest's voice at a time, and every host's; every fake
    # microphone plays the same steady voice. Ben joins muted: silent, so never forwarded.
    session = await new_session(platform.web, guest_admission="direct")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    ana = await people.open("ana", link_of(session, "session"))
    await join(ana, "Ana")
    ben = await people.open("ben", link_of(session, "guest"))
    await ben.locator("#prejoin").wait_for(state="visible", timeout=15_000)
    await ben.check("#join-muted")
    await join(ben, "Ben")
    for page in (host, ana, ben):
        await screen(page, "call")
        await remote_videos_playing(page, 2)
    ids = {
        who: await page.evaluate("() => window.antechamber.participantId")
        for who, page in {"host": host, "ana": ana, "ben": ben}.items()
    }
    assert await voices_heard(host) == {ids["ana"]}
    assert await voices_heard(ben) == {ids["host"], ids["ana"]}
    assert await voices_heard(ana) == {ids["host"]}
    await people.shoot("one-guest-voice-and-the-host")

    # Ben speaks up, Ana stops: Ben's voice takes the free place, with nothing missing.
    await ben.click("#mute")
    await ana.click("#mute")
    deadline = time.monotonic() + 15
    while (heard := await voices_heard(host)) != {ids["ben"]}:
        assert time.monotonic() < deadline, f"Ben's voice never took over: {heard}"
    assert await voices_heard(ana) == {ids["host"], ids["ben"]}
