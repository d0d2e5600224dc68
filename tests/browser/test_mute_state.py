"""Mute state in headless Chromium: three pages show everyone's microphone and camera; the
host mutes a guest, every page shows it, the guest's page turns the microphone off and says
why; the host asks them to unmute, and only the guest can."""

import re

import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, remote_videos_playing, screen
from tests.browser.test_call import link_of

pytestmark = pytest.mark.slow


def tile_of(page: Page, pid: str, own: bool) -> object:
    return page.locator("#tile-me" if own else f"#tile-{pid}")


async def test_mute_state_is_shown_on_every_page_and_a_host_mutes_a_guest(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="direct")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    ana = await people.open("ana", link_of(session, "session"))
    await join(ana, "Ana")
    ben = await people.open("ben", link_of(session, "guest"))
    await ben.locator("#prejoin").wait_for(state="visible", timeout=15_000)
    await ben.check("#join-camera-off")
    await join(ben, "Ben")
    pages = {"host": host, "ana": ana, "ben": ben}
    for page in pages.values():
        await screen(page, "call")
        await remote_videos_playing(page, 2)
    ids = {
        who: await page.evaluate("() => window.antechamber.participantId")
        for who, page in pages.items()
    }

    # Ben joined with his camera off: every page shows it on his tile, as an icon with text.
    for who, page in pages.items():
        tile = page.locator("#tile-me" if who == "ben" else f"#tile-{ids['ben']}")
        await expect(tile).to_have_attribute("data-video", "off", timeout=10_000)
        await expect(tile.get_by_role("img", name="Camera off")).to_be_visible()
        await expect(tile.get_by_role("img", name="Microphone on")).to_be_visible()
    await people.shoot("ben-camera-off-everywhere")

    # The host mutes Ana from the call manager.
    ana_item = host.locator("#participant-list li", has_text="Ana")
    await ana_item.get_by_role("button", name="Mute Ana's microphone").click()
    await expect(ana.locator("#mute-notice")).to_contain_text(
        "The host muted your microphone", timeout=10_000
    )
    await expect(ana.locator("#mute")).to_have_attribute("aria-pressed", "true")
    tracks_on = await ana.evaluate(
        "() => [...document.querySelector('#tile-me video').srcObject.getAudioTracks()]"
        ".some(t => t.enabled)"
    )
    assert tracks_on is False
    muted = "Microphone off (muted by the host)"
    for who, page in pages.items():
        tile = page.locator("#tile-me" if who == "ana" else f"#tile-{ids['ana']}")
        await expect(tile.get_by_role("img", name=muted)).to_be_visible(timeout=10_000)
        await expect(tile).to_have_attribute("data-muted-by-host", "true")
    await expect(ana_item.locator(".badge.muted-by-host")).to_be_visible()
    await people.shoot("host-muted-ana")
    (change,) = [
        e
        for e in await platform.room_events(session["session_id"], "ParticipantMediaChanged")
        if e["participant_id"] == ids["ana"]
    ]
    assert change["by"] == ids["host"]
    assert change["audio_on"] is False

    # The host can only ask; Ana's page asks her, and she unmutes herself.
    await ana_item.get_by_role("button", name="Ask Ana to unmute").click()
    prompt = ana.locator("#unmute-prompt")
    await expect(prompt).to_be_visible(timeout=10_000)
    await expect(prompt).to_contain_text("Dr Demo asks you to unmute your microphone")
    await people.shoot("ana-asked-to-unmute")
    await prompt.get_by_role("button", name="Unmute").click()
    await expect(prompt).to_be_hidden()
    await expect(ana.locator("#mute-notice")).to_be_hidden()
    await expect(ana.locator("#mute")).to_have_attribute("aria-pressed", "false")
    for who, page in pages.items():
        tile = page.locator("#tile-me" if who == "ana" else f"#tile-{ids['ana']}")
        await expect(tile.get_by_role("img", name="Microphone on")).to_be_visible(timeout=10_000)
    await expect(ana_item.get_by_role("button", name="Mute Ana's microphone")).to_be_visible()
    await people.shoot("ana-unmuted-herself")

    # A guest's own button: Ben mutes himself; the others see it, without "by the host".
    await ben.click("#mute")
    for who, page in pages.items():
        tile = page.locator("#tile-me" if who == "ben" else f"#tile-{ids['ben']}")
        await expect(tile.get_by_role("img", name=re.compile("^Microphone off$"))).to_be_visible(
            timeout=10_000
        )
    states = await host.evaluate("() => window.antechamber.mediaStates()")
    assert states[ids["ben"]] == {"audio_on": False, "video_on": False, "muted_by_host": False}
    await people.shoot("ben-muted-himself")
