"""Knocks are limited per client address, and a browser does not choose its address by sending
X-Forwarded-For with its WebSocket: only proxies in ANTECHAMBER_FORWARDED_ALLOW_IPS are
believed. The sockets come from 127.0.0.1, which uvicorn, left to itself, trusts."""

import pytest
from websockets.asyncio.client import connect

from runtime.embedded import NatsServer
from tests.links.conftest import PUBLIC_URL, Clock
from tests.signaling.conftest import Browser, Calls, Room, calls_platform, practitioner_room

BURST = 3
LIMITS = {"knocks_per_address_burst": BURST, "knocks_per_address_per_minute": 6}


async def knock(calls: Calls, room: Room, name: str, forwarded_for: str) -> Browser:
    """A guest opening the room link with ``X-Forwarded-For: forwarded_for``."""
    url = calls.replicas[0].replace("http://", "ws://") + "/v1/signaling"
    headers = {"X-Forwarded-For": forwarded_for}
    browser = Browser(await connect(url, max_size=None, additional_headers=headers))
    calls.browsers.append(browser)
    _, _, clinic, slug = room.room_url.removeprefix(PUBLIC_URL).split("/")
    await browser.send("join", name=name, clinic=clinic, room=slug)
    return browser


async def waits(guest: Browser) -> None:
    await guest.next("welcome")
    await guest.next("waiting")


async def refused(guest: Browser) -> None:
    frame = await guest.next("refused")
    assert (frame["reason"], frame["status"]) == ("rate_limited", 429)
    assert await guest.closed() == 1000


async def test_rotating_x_forwarded_for_does_not_escape_the_knock_limit(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", raising=False)  # the default: none
    async with calls_platform(postgres_dsn, nats_server.url, clock, **LIMITS) as calls:
        room = await practitioner_room(calls)
        for i in range(BURST):
            await waits(await knock(calls, room, f"Guest {i}", f"203.0.113.{i + 1}"))
        await refused(await knock(calls, room, "Another", "198.51.100.9"))


async def test_behind_a_trusted_proxy_each_forwarded_address_knocks_for_itself(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTECHAMBER_FORWARDED_ALLOW_IPS", "127.0.0.1")
    async with calls_platform(postgres_dsn, nats_server.url, clock, **LIMITS) as calls:
        room = await practitioner_room(calls)
        for i in range(BURST):
            # What the browser wrote to the left of the proxy's entry changes nothing.
            guest = await knock(calls, room, f"Guest {i}", f"192.0.2.{i + 1}, 203.0.113.7")
            await waits(guest)
        await refused(await knock(calls, room, "Fourth", "203.0.113.7"))
        await waits(await knock(calls, room, "Neighbour", "198.51.100.9"))
