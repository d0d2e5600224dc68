"""The waiting room in headless Chromium: knock alerts that reach the host (a chime and a
desktop notification, again and again while someone waits unattended, silenced by muted
knocks), a host's message read out on a waiting guest's page, admit all, and a guest sent
back to the waiting room and admitted again with their video playing once more."""

import asyncio
import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, remote_videos_playing, screen

pytestmark = pytest.mark.slow


def link_of(session: dict[str, Any], kind: str) -> str:
    url: str = next(link["url"] for link in session["links"] if link["kind"] == kind)
    return url


async def observed(page: Page, name: str) -> Any:
    return await page.evaluate(f"() => window.antechamber.{name}")


async def until(page: Page, condition: str, timeout_s: float = 20) -> None:
    """Wait until ``condition`` on ``window.antechamber`` holds (polled: the page's CSP
    allows no eval)."""
    deadline = time.monotonic() + timeout_s
    while not await page.evaluate(f"() => {condition}"):
        if time.monotonic() > deadline:
            pytest.fail(f"{condition} was still false after {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_knock_alerts_repeat_until_knocks_are_muted_and_a_message_is_read_out(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await people.contexts[-1].grant_permissions(["notifications"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    settings = host.locator("#alert-settings")
    await settings.locator("summary").click()
    await expect(host.locator("#alert-sound")).to_be_checked()
    await expect(host.locator("#alert-desktop")).to_be_checked()
    await host.select_option("#alert-repeat", "15")  # kept for this host's next calls
    assert '"repeat_s":15' in await host.evaluate(
        "() => localStorage.getItem('antechamber.knock-alerts')"
    )
    assert await observed(host, "knockAlerts") == 0

    guest = await people.open("guest", link_of(session, "session"))
    await join(guest, "Casey Client")
    await screen(guest, "waiting")
    await until(host, "window.antechamber.knockAlerts >= 1")  # at once, on the knock
    assert await observed(host, "knockNotifications") >= 1
    assert await observed(host, "knockChimes") >= 1
    started = time.monotonic()
    await until(host, "window.antechamber.knockAlerts >= 2", timeout_s=25)  # and again
    assert time.monotonic() - started > 5  # every 15 s, not at every frame
    assert await observed(host, "knockNotifications") >= 2
    await people.shoot("alerted")

    await host.click("#knocks-toggle")  # mute knocks: nothing more
    await expect(host.locator("#knocks-toggle")).to_have_text("Unmute knocks")
    muted_at = await observed(host, "knockAlerts")
    await asyncio.sleep(17)
    assert await observed(host, "knockAlerts") == muted_at
    await host.click("#knocks-toggle")
    await expect(host.locator("#knocks-toggle")).to_have_text("Mute knocks")

    # A ready-made message to the guest, from their row: it is read out on their page.
    row = host.locator("#waiting-list li", has_text="Casey Client")
    await row.get_by_role("button", name="Message Casey Client").click()
    canned = "I'll be with you in about 5 minutes."
    await host.select_option("#wr-canned", canned)
    await expect(host.locator("#wr-text")).to_have_value(canned)
    await host.locator("#wr-form").get_by_role("button", name="Send").click()
    messages = guest.locator("#waiting-messages")
    await expect(messages.locator("li")).to_have_count(1, timeout=10_000)
    await expect(messages).to_have_attribute("aria-live", "polite")
    await expect(messages.locator("li .text")).to_have_text(canned)
    await expect(guest.get_by_role("heading", name="Messages from the host")).to_be_visible()
    await expect(guest.locator("#waiting-reply")).to_be_hidden()  # replies are off by default
    await expect(host.locator("#wr-log li")).to_have_count(1)
    await expect(host.locator("#wr-log li .meta")).to_contain_text("Dr Demo to Casey Client")
    await people.shoot("message-read-out")

    # Written to: attended, so the repeats stop although knocks alert again.
    attended_at = await observed(host, "knockAlerts")
    await asyncio.sleep(16)
    assert await observed(host, "knockAlerts") == attended_at
    events = await platform.room_events(session["session_id"], "WaitingRoomMessaged")
    assert [e["canned"] for e in events] == [True]
    assert canned not in str(events)


async def test_admit_all_then_send_back_and_admit_again(platform: Platform, people: People) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    guest_url = link_of(session, "guest")
    guests = {}
    for name in ("Ana", "Ben", "Cy"):
        page = await people.open(name, guest_url, width=800, height=600)
        await join(page, name)
        await screen(page, "waiting")
        guests[name] = page
    await expect(host.locator("#waiting-list li")).to_have_count(3, timeout=15_000)
    await people.shoot("three-waiting")

    await host.get_by_role("button", name="Admit all").click()
    for page in guests.values():
        await screen(page, "call")
    await expect(host.locator("#waiting-list li")).to_have_count(0)
    await expect(host.locator("#participant-list li")).to_have_count(4)
    await remote_videos_playing(host, 3, timeout_s=60)
    await people.shoot("admitted-all")

    ana = guests["Ana"]
    row = host.locator("#participant-list li", has_text="Ana")
    await row.get_by_role("button", name="Send Ana back to the waiting room").click()
    await host.fill("#dialog-message", "Please wait while I speak with Ben.")
    await host.locator("#dialog").get_by_role("button", name="Send back").click()
    await screen(ana, "waiting")
    await expect(ana.locator("#waiting-message")).to_have_text(
        "Please wait while I speak with Ben."
    )
    await expect(ana.locator("#grid .tile")).to_have_count(0)
    await remote_videos_playing(host, 2, timeout_s=30)  # Ana's tile went
    await expect(host.locator("#waiting-list li", has_text="Ana")).to_be_visible()
    await people.shoot("sent-back")

    waiting = host.locator("#waiting-list li", has_text="Ana")
    await waiting.get_by_role("button", name="Admit Ana").click()
    await screen(ana, "call")
    await remote_videos_playing(host, 3, timeout_s=60)  # her video plays again
    await remote_videos_playing(ana, 3, timeout_s=60)
    await people.shoot("admitted-again")
    sent = await platform.room_events(session["session_id"], "ParticipantSentToWaitingRoom")
    assert len(sent) == 1
