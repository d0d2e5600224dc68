"""Recording consent in headless Chromium (issue 24), three pages: when the host asks to
record, each guest's page asks in an alert dialog; a decline keeps the recording from
starting and the host sees who declined; when everyone consents it starts, and every page
shows the recording indicator.

``record_with_everyones_consent`` is the consent step of any test that needs a recording
under the clinic's default policy (all)."""

from typing import Any

import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, remote_videos_playing, screen
from tests.browser.test_call import link_of

pytestmark = pytest.mark.slow
QUESTION = "Dr Demo wants to record this call. Do you consent?"


async def answer_consent(page: Page, given: bool, question: str = QUESTION) -> None:
    """Answer the consent dialog on ``page`` (it must be asking ``question``)."""
    dialog = page.get_by_role("alertdialog", name="Recording")
    await expect(dialog).to_be_visible(timeout=15_000)
    await expect(dialog.locator("#consent-question")).to_have_text(question)
    await dialog.get_by_role("button", name="Consent" if given else "Decline").click()
    await expect(dialog).to_be_hidden()


async def record_with_everyones_consent(host: Page, guests: list[Page]) -> None:
    """The host asks to record, every guest consents, and every page shows the recording."""
    await host.click("#record")
    for guest in guests:
        await answer_consent(guest, True)
    for page in (host, *guests):
        await expect(page.locator("#recording")).to_be_visible(timeout=15_000)
    await expect(host.locator("#record")).to_have_text("Stop recording")


async def three_in_a_call(
    platform: Platform, people: People
) -> tuple[dict[str, Any], Page, Page, Page]:
    session = await new_session(platform.web, guest_admission="direct")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    ana = await people.open("ana", link_of(session, "session"))
    await join(ana, "Ana")
    ben = await people.open("ben", link_of(session, "guest"))
    await join(ben, "Ben")
    for page in (host, ana, ben):
        await screen(page, "call")
        await remote_videos_playing(page, 2)
    return session, host, ana, ben


async def test_a_decline_keeps_the_recording_from_starting_and_all_consenting_starts_it(
    platform: Platform, people: People
) -> None:
    session, host, ana, ben = await three_in_a_call(platform, people)

    await host.click("#record")
    for page in (ana, ben):
        dialog = page.get_by_role("alertdialog", name="Recording")
        await expect(dialog).to_be_visible(timeout=15_000)
        # Focus is in the dialog, on the answer that records nothing.
        assert await page.evaluate("document.activeElement.id") == "consent-decline"
    await expect(host.locator("#consent-status")).to_contain_text("Waiting for")
    await expect(host.locator("#consent-pending li")).to_have_count(2)
    await expect(host.locator("#record")).to_have_text("Withdraw the request to record")
    await people.shoot("asked")

    await answer_consent(ana, True)
    await expect(host.locator("#consent-consented li")).to_have_text(["Ana"])
    await answer_consent(ben, False)
    await expect(host.locator("#consent-status")).to_have_text(
        "Ben declined to be recorded, so it will not be recorded."
    )
    await expect(host.locator("#consent-declined li")).to_have_text(["Ben"])
    await expect(host.locator("#record")).to_have_text("Start recording")
    for page in (host, ana, ben):
        await expect(page.locator("#recording")).to_be_hidden()
    await people.shoot("declined")
    assert await platform.room_events(session["session_id"], "RecordingStarted") == []
    (declined,) = await platform.room_events(session["session_id"], "RecordingConsentDeclined")
    assert declined["participant_id"] == await ben.evaluate(
        "() => window.antechamber.participantId"
    )

    await record_with_everyones_consent(host, [ana, ben])
    await expect(host.locator("#consent-status")).to_have_text(
        "Everyone consented: this call is being recorded."
    )
    await people.shoot("recording")
    (started,) = await platform.room_events(session["session_id"], "RecordingStarted")
    assert started["request_id"] is not None
    given = await platform.room_events(session["session_id"], "RecordingConsentGiven")
    assert len(given) == 3  # Ana twice (two requests), Ben once

    await host.click("#record")
    for page in (host, ana, ben):
        await expect(page.locator("#recording")).to_be_hidden(timeout=15_000)


async def test_a_guest_who_knocks_during_a_recording_is_asked_in_the_waiting_room(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    await host.click("#record")  # nobody else to ask: it records at once
    await expect(host.locator("#recording")).to_be_visible(timeout=15_000)

    guest = await people.open("guest", link_of(session, "guest"))
    await join(guest, "Kim")
    await screen(guest, "waiting")
    await expect(guest.locator("#recording")).to_be_visible(timeout=15_000)
    await expect(host.locator("#consent-pending li")).to_have_text(["Kim (waiting room)"])
    await people.shoot("asked-while-waiting")
    await answer_consent(guest, True)
    await expect(host.locator("#consent-consented li")).to_have_text(["Kim (waiting room)"])

    item = host.locator("#waiting-list li", has_text="Kim")
    await item.get_by_role("button", name="Admit Kim").click()
    await screen(guest, "call")
    await remote_videos_playing(guest, 1)
    await remote_videos_playing(host, 1)
    await expect(host.locator("#consent-status")).to_have_text(
        "Everyone consented: this call is being recorded."
    )
    for page in (host, guest):
        await expect(page.locator("#recording")).to_be_visible()
