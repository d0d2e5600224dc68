"""What a browser may send that it should not: each bad frame is answered with an error (code
and sentence) and the socket stays open, until ``strikes`` of them close it (1008). Floods,
silent clients, knock storms and bad links are refused the same way, and the replica keeps
serving everyone else."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import uuid4

import pytest
from websockets.exceptions import ConnectionClosed

from runtime.embedded import NatsServer
from tests.links.conftest import PUBLIC_URL, Clock
from tests.signaling.conftest import (
    Browser,
    Calls,
    calls_platform,
    host_in_call,
    knocking_guest,
    practitioner_room,
    room_events,
)

STRIKES = 5  # the default
MAX_FRAME_BYTES = 65_536  # the default


@pytest.fixture
async def impatient(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> AsyncIterator[Calls]:
    """Replicas that wait half a second for a join."""
    async with calls_platform(postgres_dsn, nats_server.url, clock, join_timeout_s=0.5) as calls:
        yield calls


def assert_sentence(text: str) -> None:
    assert text[:1].isupper(), text
    assert text.endswith("."), text
    assert len(text.split()) >= 3, text


async def error(browser: Browser) -> dict[str, Any]:
    frame = await browser.next("error")
    assert_sentence(frame["message"])
    return frame


async def still_open(browser: Browser) -> None:
    await browser.send("ping")
    await browser.next("pong")


async def serves_a_join(calls: Calls, replica: int) -> None:
    """The replica still lets a host into a fresh room (the process did not crash)."""
    room = await practitioner_room(calls)
    await host_in_call(calls, room, replica=replica)


async def joined_host(calls: Calls) -> Browser:
    return await host_in_call(calls, await practitioner_room(calls))


# --- bad frames -----------------------------------------------------------------------------

BEFORE_JOIN: list[tuple[str | bytes, str]] = [
    ("{not json", "malformed_json"),
    ('{"type": "dance"}', "invalid_message"),
    ('["join"]', "invalid_message"),
    ("x" * (MAX_FRAME_BYTES + 1), "frame_too_large"),
    ("€" * (MAX_FRAME_BYTES // 3 + 1), "frame_too_large"),  # few characters, many bytes
    (b"\x00\x01binary", "binary_frame"),
    ('{"type": "lock"}', "join_first"),
    ('{"type": "join", "name": "' + "n" * 200 + '"}', "invalid_message"),
    ("[" * 50_000 + "]" * 50_000, "frame_too_large"),
    ("[" * 30_000 + "]" * 30_000, "malformed_json"),  # too deep to decode
    ('{"type": "join", "token": ' + "9" * 5000 + "}", "invalid_message"),  # int too long
    ('{"type": "ping", "n": ' + "1" * 4400 + "}", "invalid_message"),
]


@pytest.mark.parametrize(("frame", "code"), BEFORE_JOIN, ids=[c for _, c in BEFORE_JOIN])
async def test_a_bad_frame_is_answered_and_the_socket_stays_open(
    calls: Calls, frame: str | bytes, code: str
) -> None:
    browser = await calls.open()
    await browser.ws.send(frame)
    assert (await error(browser))["code"] == code
    await still_open(browser)
    await browser.send("join", token="x" * 30)  # and it can still join after it
    assert (await browser.next("refused"))["reason"] == "unknown"


async def test_bad_frames_of_a_joined_host_are_answered(calls: Calls) -> None:
    host = await joined_host(calls)
    await host.send("join", token="again")
    assert (await error(host))["code"] == "already_joined"
    await host.send("admit")  # no participant_id
    missing = await error(host)
    assert missing["code"] == "invalid_message"
    assert "participant_id" in missing["message"]
    await host.send("admit", participant_id="not-a-uuid")
    assert (await error(host))["code"] == "invalid_message"
    await host.send("deny", participant_id=str(uuid4()), message="m" * 501)  # too long
    assert (await error(host))["code"] == "invalid_message"
    await still_open(host)
    await host.send("lock")
    await host.latest("room", locked=True)  # still a working host


async def test_strikes_close_the_socket_with_1008(calls: Calls) -> None:
    browser = await calls.open(replica=1)
    for _ in range(STRIKES - 1):
        await browser.ws.send("{not json")
        await error(browser)
    await still_open(browser)
    await browser.ws.send(b"\x00")
    assert (await error(browser))["code"] == "binary_frame"
    assert await browser.closed() == 1008
    await serves_a_join(calls, replica=1)


async def test_a_replica_still_starting_says_try_again_rather_than_forbidden(
    calls: Calls,
) -> None:
    """A client (or a load balancer) retries a 1013 close; a refused handshake reads as 403."""
    calls.signalings[1].ready.clear()
    try:
        browser = await calls.open(replica=1)
        assert await browser.closed() == 1013
    finally:
        calls.signalings[1].ready.set()
    await serves_a_join(calls, replica=1)


async def test_a_flood_of_pings_is_cut_off(calls: Calls) -> None:
    browser = await calls.open()
    for _ in range(300):
        await browser.send("ping")
    assert await browser.closed() == 1008
    errors = browser.seen("error")
    assert [e["code"] for e in errors] == ["too_many_messages"] * STRIKES
    assert 55 <= len(browser.seen("pong")) <= 70  # the burst (60), then nothing more
    await serves_a_join(calls, replica=0)


async def test_a_joined_host_who_floods_is_cut_off_and_keeps_their_place(calls: Calls) -> None:
    host = await joined_host(calls)
    welcome = host.seen("welcome")[0]
    for _ in range(300):
        await host.send("ping")
    assert await host.closed() == 1008
    back = await calls.open(replica=1)
    await back.send("join", resume=welcome["resume_token"])
    assert (await back.next("welcome"))["participant_id"] == welcome["participant_id"]


# --- clients that never join ----------------------------------------------------------------


async def test_a_client_that_never_joins_is_closed(impatient: Calls) -> None:
    silent = await impatient.open()
    assert await silent.closed(timeout=3) == 1008
    assert silent.seen("error")[-1]["code"] == "join_timeout"
    await serves_a_join(impatient, replica=0)


async def test_pings_do_not_stretch_the_time_to_join(impatient: Calls) -> None:
    chatty = await impatient.open()
    opened = time.monotonic()
    with contextlib.suppress(ConnectionClosed):
        while not chatty.seen("error") and time.monotonic() - opened < 3:
            await chatty.send("ping")  # every 0.2 s: never half a second without a frame
            await asyncio.sleep(0.2)
    assert await chatty.closed(timeout=1) == 1008
    assert time.monotonic() - opened < 1.5
    assert chatty.seen("error")[-1]["code"] == "join_timeout"


async def test_a_joined_client_may_stay_quiet(impatient: Calls) -> None:
    host = await joined_host(impatient)
    await asyncio.sleep(1.0)
    await still_open(host)


# --- knock storms ---------------------------------------------------------------------------


async def test_knocks_are_limited_per_address(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> None:
    async with calls_platform(
        postgres_dsn,
        nats_server.url,
        clock,
        knocks_per_address_burst=3,
        knocks_per_address_per_minute=6,
    ) as calls:
        room = await practitioner_room(calls)
        for i in range(3):
            await knocking_guest(calls, room, f"Guest {i}", replica=0)
        fourth = await calls.join(room.room_url, "Fourth", replica=0)
        refused = await fourth.next("refused")
        assert (refused["reason"], refused["status"]) == ("rate_limited", 429)
        assert 0 < refused["retry_after_s"] <= 10
        assert_sentence(refused["message"])
        assert await fourth.closed() == 1000
        # Per replica: the other one still lets this address in.
        await knocking_guest(calls, room, "Elsewhere", replica=1)


async def test_knocks_are_limited_per_link(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> None:
    async with calls_platform(
        postgres_dsn,
        nats_server.url,
        clock,
        knocks_per_link_burst=2,
        knocks_per_link_per_minute=6,
    ) as calls:
        room = await practitioner_room(calls)
        other = await practitioner_room(calls)
        for i in range(2):
            await knocking_guest(calls, room, f"Guest {i}", replica=0)
        third = await calls.join(room.room_url, "Third", replica=0)
        refused = await third.next("refused")
        assert (refused["reason"], refused["status"]) == ("rate_limited", 429)
        assert 0 < refused["retry_after_s"] <= 10
        await knocking_guest(calls, other, "Other link", replica=0)  # another link: fine
        await host_in_call(calls, room, replica=0)  # hosts do not knock


# --- links that do not let anyone in --------------------------------------------------------


async def test_an_unknown_link_is_refused_with_the_links_services_words(calls: Calls) -> None:
    browser = await calls.join("https://video.example.test/j/" + "z" * 32, "Nobody")
    refused = await browser.next("refused")
    over_http = await calls.platform.links.get("/v1/links/resolve", params={"token": "z" * 32})
    assert over_http.status_code == 404
    assert (refused["reason"], refused["status"]) == ("unknown", 404)
    assert refused["message"] == over_http.json()["detail"]
    assert await browser.closed() == 1000
    assert not browser.seen("welcome")


async def test_a_link_not_open_yet_is_refused_as_links_says(calls: Calls) -> None:
    room = await practitioner_room(calls)
    c = room.clinic.clinic
    session = await c.session(room.practitioner, [await c.client()])  # tomorrow
    link = await room.clinic.link("session", session_id=session["session_id"])
    early = await calls.join(link["url"], "Early", replica=1)
    refused = await early.next("refused")
    over_http = await room.clinic.resolve(link["url"])
    problem = over_http.json()
    assert (refused["reason"], refused["status"]) == (problem["code"], over_http.status_code)
    assert refused["message"] == problem["detail"]
    assert refused["opens_at"] is not None
    assert datetime.fromisoformat(refused["opens_at"]) == datetime.fromisoformat(
        problem["opens_at"]
    )
    await serves_a_join(calls, replica=1)


async def test_a_check_tells_a_page_what_a_link_would_do_without_knocking(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)
    c = room.clinic.clinic
    session = await c.session(room.practitioner, [await c.client()])  # tomorrow
    link = await room.clinic.link("session", session_id=session["session_id"])
    early = await calls.open(replica=1)
    await early.send("check", token=link["url"].rsplit("/", 1)[1])
    refused = await early.next("refused")
    assert (refused["reason"], refused["status"]) == ("not_yet_open", 423)
    assert refused["opens_at"] is not None
    assert await early.closed() == 1000

    _, _, clinic, slug = room.room_url.removeprefix(PUBLIC_URL).split("/")
    checks = [await calls.open(replica=r) for r in (0, 1)]
    for browser in checks:
        await browser.send("check", clinic=clinic, room=slug)
    for browser in checks:
        ready = await browser.next("link_ready")
        assert ready | {"closes_at": None, "warning": None} == {
            "type": "link_ready",
            "role": "guest",
            "admission": "waiting_room",
            "live": False,
            "closes_at": None,
            "warning": None,
            "room_title": "Dr Ada Lovelace's room",
        }
        assert await browser.closed() == 1000
        assert not browser.seen("welcome")
    host = await calls.open()
    await host.send("check", token=room.host_url.rsplit("/", 1)[1])
    assert (await host.next("link_ready"))["role"] == "host"
    _, welcome = await knocking_guest(calls, room, replica=0)
    events = await room_events(postgres_dsn, welcome["room_id"])
    assert [kind for kind, _ in events] == ["GuestKnocked"], "checks knock on no door"


async def test_a_client_rooms_title_comes_with_the_check_and_the_welcome(calls: Calls) -> None:
    """The title the practitioner chose, sealed for the client on the bus, reaches the join
    page opened: before the client joins (``link_ready``) and when they do (``welcome``)."""
    clinic = await calls.clinic()
    c = clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room = await c.client_room(client, practitioner, title="Weekly check-in with Dr Lovelace")
    link = await clinic.link("client_room", room_id=room["room_id"])
    token = link["url"].rsplit("/", 1)[1]
    check = await calls.open(replica=1)
    await check.send("check", token=token)
    ready = await check.next("link_ready")
    assert ready["room_title"] == "Weekly check-in with Dr Lovelace"
    guest = await calls.join(link["url"], "Grace", replica=0)
    welcome = await guest.next("welcome")
    assert welcome["room_title"] == "Weekly check-in with Dr Lovelace"


async def test_the_replica_serves_after_a_mix_of_abuse(calls: Calls) -> None:
    """Everything above at once on one replica, then an ordinary call on it."""
    frames: list[str | bytes] = ["{", b"\x00", "[" * 30_000, "x" * 70_000, "{}"]
    abusers = [await calls.open() for _ in frames]
    for browser, frame in zip(abusers, frames, strict=True):
        for _ in range(STRIKES):
            await browser.ws.send(frame)
    for browser in abusers:
        assert await browser.closed() == 1008
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    guest, welcome = await knocking_guest(calls, room, replica=0)
    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
