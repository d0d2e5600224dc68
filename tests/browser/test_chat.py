"""In-call chat in headless Chromium: three pages (a host and two guests) chat, every page
shows the same messages in the same order, a closed panel counts what arrived, a fast sender
is told to wait, and the page says whether the clinic keeps the chat."""

import re
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from bench.browser import new_session
from tests.browser.conftest import People, Platform, join, screen
from tests.support import eventually

pytestmark = pytest.mark.slow


def link_of(session: dict[str, Any], kind: str) -> str:
    url: str = next(link["url"] for link in session["links"] if link["kind"] == kind)
    return url


async def say(page: Page, text: str) -> None:
    """Type a message in the chat box and press Enter."""
    await page.fill("#chat-text", text)
    await page.press("#chat-text", "Enter")


async def chat_texts(page: Page) -> list[str]:
    texts: list[str] = await page.locator("#chat-messages .chat-text").all_inner_texts()
    return texts


BURST = """(count) => {
    const box = document.getElementById("chat-text");
    for (let n = 0; n < count; n++) {
        box.value = `quick ${n}`;
        box.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    }
}"""


async def received(page: Page, count: int) -> None:
    """Wait until the page has received ``count`` chat messages."""
    await page.wait_for_function(
        f"() => window.antechamber.chatMessages === {count}", timeout=10_000
    )


async def admit(host: Page, name: str) -> None:
    item = host.locator("#waiting-list li", has_text=name)
    await expect(item).to_be_visible(timeout=15_000)
    await item.get_by_role("button", name=f"Admit {name}").click()


async def test_three_pages_chat_in_one_order_and_a_fast_sender_is_told_to_wait(
    platform: Platform, people: People
) -> None:
    session = await new_session(platform.web, guest_admission="waiting_room")
    host = await people.open("host", session["host_url"])
    await join(host, "Dr Demo")
    await screen(host, "call")
    guests = {}
    for who, name, kind in (
        ("client", "Casey Client", "session"),
        ("guest", "Gita Guest", "guest"),
    ):
        page = await people.open(who, link_of(session, kind))
        await join(page, name)
        await screen(page, "waiting")
        await admit(host, name)
        await screen(page, "call")
        guests[name] = page
    client, guest = guests["Casey Client"], guests["Gita Guest"]
    pages = (host, client, guest)

    # The host and the client open the chat; the guest keeps it closed.
    for page in (host, client):
        await page.click("#chat-toggle")
        await expect(page.locator("#chat")).to_be_visible()
        await expect(page.locator("#chat-kept")).to_have_text("Chat is not saved.")
        await expect(page.locator("#chat-messages")).to_have_attribute("aria-live", "polite")
    await expect(guest.locator("#chat")).to_be_hidden()
    await people.shoot("chat-open")

    await say(client, "Hello, can everyone read this?")
    for page in pages:
        await received(page, 1)
    await expect(client.locator("#chat-messages li .chat-who")).to_have_text(["You"])
    await expect(host.locator("#chat-messages li .chat-who")).to_have_text(["Casey Client"])
    # A closed panel counts what arrived, and says so to screen readers.
    await expect(guest.locator("#chat-unread")).to_have_text("1")
    await expect(guest.locator("#chat-toggle")).to_have_attribute("aria-label", "Chat, 1 unread")
    await guest.click("#chat-toggle")
    await expect(guest.locator("#chat-unread")).to_be_hidden()
    await expect(guest.locator("#chat-text")).to_be_focused()

    await say(host, "Yes, loud and clear.")
    await say(guest, "Me too!\nSecond line.")
    for page in pages:
        await received(page, 3)
    orders = [await chat_texts(page) for page in pages]
    assert orders[0] == orders[1] == orders[2]
    assert orders[0][0] == "Hello, can everyone read this?"
    assert set(orders[0][1:]) == {"Yes, loud and clear.", "Me too!\nSecond line."}
    await expect(host.locator("#chat-messages li .badge.host")).to_have_count(1)
    await people.shoot("three-messages")

    # Too fast (eight at once, as a held-down Enter would): the box says when to try again,
    # and what was refused goes back in it.
    await guest.evaluate(BURST, 8)
    box = guest.locator("#chat-text")
    await expect(box).to_have_value(re.compile(r"quick 7$"))  # the last answer is in
    await expect(guest.locator("#chat-error")).to_have_text(
        "You are sending messages too quickly; try again in 1 second."
    )
    await expect(guest.locator("#toast")).not_to_contain_text("too quickly")
    delivered = await guest.evaluate("window.antechamber.chatMessages")
    through = delivered - 3
    assert 0 < through < 8, "some of the eight went through, and some were refused"
    assert await box.input_value() == "\n".join(f"quick {n}" for n in range(through, 8))
    await people.shoot("rate-limited")
    # Every page still agrees on what was sent, in one order.
    for page in pages:
        await received(page, delivered)
    assert await chat_texts(host) == await chat_texts(client) == await chat_texts(guest)
    # Waiting as it said, the next one goes through.
    await guest.wait_for_timeout(1100)
    await guest.fill("#chat-text", "")
    await say(guest, "after waiting")
    await expect(host.locator("#chat-messages .chat-text").last).to_have_text("after waiting")
    await expect(guest.locator("#chat-error")).to_have_text("")

    sent = await platform.room_events(session["session_id"], "ChatMessageSent")
    assert [e["count"] for e in sent] == list(range(1, delivered + 2))
    assert all("text" not in e for e in sent)


async def test_the_page_says_when_the_clinic_keeps_the_chat(
    platform: Platform, people: People
) -> None:
    async with platform.api(platform.scheduling) as scheduling:
        changed = await scheduling.patch(
            "/v1/clinic/settings", json={"call": {"chat_retention_days": 3}}
        )
        assert changed.status_code == 200, changed.text
        try:
            session = await new_session(platform.web, guest_admission="waiting_room")
            host_url = session["host_url"]
            await links_tell(platform, host_url, days=3)
            host = await people.open("host", host_url)
            await join(host, "Dr Demo")
            await screen(host, "call")
            await host.click("#chat-toggle")
            await expect(host.locator("#chat-kept")).to_have_text(
                "This chat is kept with the session for 3 days."
            )
            await people.shoot("chat-kept")
        finally:
            await scheduling.patch("/v1/clinic/settings", json={"call": {"chat_retention_days": 0}})


async def links_tell(platform: Platform, url: str, days: int) -> None:
    """Wait until the links service hands out the clinic's new chat retention with ``url``."""
    token = url.split("/h/", 1)[1].split("?", 1)[0]
    session_id = url.split("session=", 1)[1] if "session=" in url else None
    params = {"token": token} | ({"session_id": session_id} if session_id else {})

    async def told() -> bool:
        async with httpx.AsyncClient(base_url=platform.links, timeout=10) as links:
            decision = (await links.get("/v1/links/resolve", params=params)).json()
        return bool((decision.get("call") or {}).get("chat_retention_days") == days)

    await eventually(told, timeout=15, what="the new chat retention in the links decision")
