"""Reconnecting in headless Chromium: a page reloaded mid-call, and a network cut for 5 s.

Both come back to the same place in the call within the rejoin grace: no knock, nothing for
the host to do, and the videos play again on both sides (docs/web.md, "Reloads and lost
connections").

The network is cut with DevTools' network emulation (offline, then online). Chromium applies
it to the page's requests and to what the page is told (``navigator.onLine``, the ``offline``
and ``online`` events), but not to open WebSockets or to WebRTC's UDP (crbug.com/563644; its
WebRTC packet loss field has no effect here either), so what this test proves is the page's
answer to a network that went and came back: "Reconnecting…" while it is gone, and on its
return a new peer connection on the same seat that the others receive on the same tracks.
"""

import asyncio
from typing import Any

import pytest
from playwright.async_api import Page, Route, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, remote_videos_playing, screen
from tests.browser.test_call import link_of, waiting_guest

pytestmark = pytest.mark.slow

OFFLINE = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
ONLINE = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}

TRACKS_OF = """(pid) => {
    const video = document.querySelector(`#tile-${pid} video`);
    return video && video.srcObject ? video.srcObject.getTracks().map((t) => t.id) : [];
}"""


async def host_and_admitted_guest(platform: Platform, people: People) -> tuple[Any, Page, Page]:
    """A host in the call and a guest who knocked and was let in; both see the other."""
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    guest = await people.open("guest", link_of(session, "guest"))
    await join(guest, "Gita Guest")
    await screen(guest, "waiting")
    knock = await waiting_guest(host, "Gita Guest")
    await knock.get_by_role("button", name="Admit Gita Guest").click()
    await screen(guest, "call")
    for page in (host, guest):
        await remote_videos_playing(page, 1)
    return session, host, guest


async def test_a_guest_who_reloads_mid_call_is_back_without_knocking(
    platform: Platform, people: People
) -> None:
    session, host, guest = await host_and_admitted_guest(platform, people)
    guest_id = await guest.evaluate("window.antechamber.participantId")
    host_id = await host.evaluate("window.antechamber.participantId")
    knocks = await platform.room_events(session["session_id"], "GuestKnocked")
    assert len(knocks) == 1
    guest_on_host = await host.evaluate(TRACKS_OF, guest_id)
    await people.shoot("before-the-reload")

    # A slow reload (its script takes 3 s to come): meanwhile the host sees the guest's tile,
    # their last picture, say "reconnecting…".
    async def slowly(route: Route) -> None:
        await asyncio.sleep(3)
        await route.continue_()

    await guest.route("**/static/call.js", slowly)
    reloading = asyncio.create_task(guest.reload())
    away = host.locator(f"#tile-{guest_id} figcaption .state")
    await expect(away).to_have_text("reconnecting…")
    await people.shoot("while-the-guest-reloads")
    await reloading
    await guest.unroute("**/static/call.js", slowly)
    await screen(guest, "call")
    assert await guest.evaluate("window.antechamber.rejoinedAfterReload")
    assert await guest.evaluate("window.antechamber.participantId") == guest_id
    for page in (guest, host):
        await remote_videos_playing(page, 1)
    await people.shoot("back-after-the-reload")

    # No knock, nothing for the host to do: the same person, the same place.
    assert await platform.room_events(session["session_id"], "GuestKnocked") == knocks
    reconnected = await platform.room_events(session["session_id"], "ParticipantReconnected")
    assert [e["participant_id"] for e in reconnected] == [guest_id]
    await expect(host.locator("#waiting-list li")).to_have_count(0)
    await expect(host.locator("#participant-list li")).to_have_count(2)
    # The host kept receiving the guest on the same stream: no new tracks, no new tile.
    assert await host.evaluate(TRACKS_OF, guest_id) == guest_on_host
    await expect(host.locator(f"#tile-{guest_id} figcaption .state")).to_have_text("")
    await expect(guest.locator(f"#tile-{host_id} figcaption")).to_have_text("Dr Demo")
    await expect(guest.locator("#call-state")).to_be_hidden()

    # Leaving forgets the kept place: opening the link again is a new join.
    await guest.click("#leave")
    await screen(guest, "ended")
    await guest.reload()
    await screen(guest, "prejoin")
    assert not await guest.evaluate("window.antechamber.rejoinedAfterReload")


async def test_media_comes_back_after_the_network_is_cut_for_five_seconds(
    platform: Platform, people: People
) -> None:
    session, host, guest = await host_and_admitted_guest(platform, people)
    guest_id = await guest.evaluate("window.antechamber.participantId")
    guest_on_host = await host.evaluate(TRACKS_OF, guest_id)
    connections = await guest.evaluate("window.antechamber.mediaConnections()")
    cdp = await guest.context.new_cdp_session(guest)
    await cdp.send("Network.enable")

    await cdp.send("Network.emulateNetworkConditions", OFFLINE)
    await expect(guest.locator("#call-state")).to_have_text(
        "Reconnecting… your place in the call is kept."
    )
    await people.shoot("offline")
    await asyncio.sleep(5)
    await cdp.send("Network.emulateNetworkConditions", ONLINE)

    for page in (guest, host):
        await remote_videos_playing(page, 1, timeout_s=45)
    await expect(guest.locator("#call-state")).to_be_hidden(timeout=20_000)
    # Media came back on a new peer connection, which the host receives on the same tracks.
    assert await guest.evaluate("window.antechamber.mediaConnections()") > connections
    assert await host.evaluate(TRACKS_OF, guest_id) == guest_on_host
    await expect(host.locator(f"#tile-{guest_id} figcaption .state")).to_have_text("")
    assert len(await platform.room_events(session["session_id"], "GuestKnocked")) == 1
    await people.shoot("back-online")


async def test_a_waiting_guest_who_reloads_keeps_their_place_in_the_waiting_room(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    guest = await people.open("guest", link_of(session, "guest"))
    await join(guest, "Gita Guest")
    await screen(guest, "waiting")
    await waiting_guest(host, "Gita Guest")

    await guest.reload()
    await screen(guest, "waiting")
    assert await guest.evaluate("window.antechamber.rejoinedAfterReload")
    await expect(guest.locator("#waiting-title")).to_have_text("The host has been notified")
    await expect(guest.locator("#waiting-state")).to_be_hidden()
    item = host.locator("#waiting-list li", has_text="Gita Guest")
    await expect(item).to_have_count(1)
    await expect(item.locator(".badge.disconnected")).to_have_count(0)
    assert len(await platform.room_events(session["session_id"], "GuestKnocked")) == 1
    await people.shoot("still-waiting-after-the-reload")

    await item.get_by_role("button", name="Admit Gita Guest").click()
    await screen(guest, "call")
    for page in (host, guest):
        await remote_videos_playing(page, 1)


async def test_the_call_opened_in_a_duplicated_tab_moves_there_without_a_tug_of_war(
    platform: Platform, people: People
) -> None:
    session, host, guest = await host_and_admitted_guest(platform, people)
    guest_id = await guest.evaluate("window.antechamber.participantId")
    # A duplicated tab starts with a copy of the tab's sessionStorage: the same kept place.
    kept = await guest.evaluate("JSON.stringify(Object.entries(sessionStorage))")
    copy = await guest.context.new_page()
    await copy.add_init_script(
        f"for (const [k, v] of {kept}) if (!sessionStorage.getItem(k)) "
        "sessionStorage.setItem(k, v);"
    )
    await copy.goto(guest.url)
    await screen(copy, "call")
    assert await copy.evaluate("window.antechamber.participantId") == guest_id

    await screen(guest, "ended")
    await expect(guest.locator("#ended-title")).to_have_text("You are in this call in another tab")
    await asyncio.sleep(3)  # neither takes the place back from the other
    await expect(guest.locator("#ended")).to_be_visible()
    for page in (copy, host):
        await remote_videos_playing(page, 1)
    assert len(await platform.room_events(session["session_id"], "GuestKnocked")) == 1
    await expect(host.locator("#participant-list li")).to_have_count(2)
