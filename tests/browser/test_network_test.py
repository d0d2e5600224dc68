"""The join page's "Test my connection" in headless Chromium (fake camera and microphone):
Chromium's own WebRTC runs the test with the media node and the page shows the verdict."""

import re

import pytest
from playwright.async_api import expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, screen

pytestmark = pytest.mark.slow

VERDICTS = re.compile(r"good for a video call|may be choppy|Video will not work|could not connect")


async def test_the_join_page_tests_the_connection_and_says_how_it_is(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web)
    url = next(link["url"] for link in session["links"] if link["kind"] == "guest")
    page = await people.open("guest", url)
    await screen(page, "prejoin")
    result = page.locator("#network-result")
    await expect(result).to_have_attribute("aria-live", "polite")
    await page.click("#network-test")
    await expect(page.locator("#network-test")).to_be_disabled()
    await expect(page.locator("#network-progress")).to_be_visible()
    await people.shoot("testing")
    await expect(page.locator("#network-verdict")).to_have_text(VERDICTS, timeout=30_000)
    verdict = await page.evaluate("window.antechamber.networkVerdict")
    assert verdict in {"good", "may_be_choppy", "video_will_not_work"}, verdict
    await expect(page.locator("#network-figures")).to_contain_text("round trip")
    await expect(page.locator("#network-progress")).to_be_hidden()
    await expect(page.locator("#network-test")).to_have_text("Test again")
    await expect(page.locator("#network-test")).to_be_enabled()
    await people.shoot("verdict")
    # Nobody knocked: the test took no place in the waiting room.
    assert await page.evaluate("window.antechamber.participantId") is None
