"""Seats and places agree: the host always gets into their own full call, a seat that lapsed
on the media node frees its place in the call, and a browser never hears the media node's
internal refusals (``no_seat``, ``not_owner``)."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from runtime.embedded import NatsServer
from tests.links.conftest import Clock
from tests.signaling.conftest import (
    Browser,
    Calls,
    calls_platform,
    host_in_call,
    knocking_guest,
    practitioner_room,
    room_events,
)

RESERVATION_S = 1.0


@pytest.fixture
async def hasty(postgres_dsn: str, nats_server: NatsServer, clock: Clock) -> AsyncIterator[Calls]:
    """A media node whose unclaimed reservations lapse after a second, and which gives up a
    room with no seat left a moment later."""
    media = {"reservation_s": RESERVATION_S, "heartbeat_s": 0.2}
    async with calls_platform(postgres_dsn, nats_server.url, clock, media) as platform:
        yield platform


async def direct_session(calls: Calls, cap: int) -> tuple[str, str, str]:
    """A session open now, guests entering directly, with link sharing on: its host URL
    (with the session), its guest link and its id."""
    room = await practitioner_room(calls, max_participants=cap, guest_admission="direct")
    clinic = room.clinic
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    session = await clinic.clinic.ok(
        "POST",
        "/v1/sessions",
        201,
        json={
            "practitioner_id": room.practitioner["practitioner_id"],
            "client_ids": [(await clinic.clinic.client())["client_id"]],
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=50)).isoformat(),
            "guest_admission": "direct",
            "link_sharing": True,
        },
    )
    guest = await clinic.link("guest", session_id=session["session_id"])
    return room.host_url, guest["url"], session["session_id"]


async def test_the_host_enters_their_full_session_and_early_guests_wait_for_them(
    calls: Calls, postgres_dsn: str
) -> None:
    host_url, guest_url, session_id = await direct_session(calls, cap=4)

    async def guest(n: int) -> Browser:
        browser = await calls.join(guest_url, f"Guest {n}", replica=n % 2)
        await browser.next("welcome")
        return browser

    guests = await asyncio.gather(*(guest(n) for n in range(6)))
    for browser in guests:  # nobody holds a call before the practitioner is in it
        assert (await browser.next("waiting"))["state"] == "waiting_for_host"
        assert not browser.seen("admitted")

    host = await calls.join(host_url, "Dr Ada", session_id=session_id)
    assert (await host.next("welcome"))["role"] == "host"
    await host.next("admitted")
    # The host's arrival lets the early guests in, in the order they came, while places last;
    # the cap of 4 keeps its last place for the host: three guests.
    view = await host.latest(
        "room", participants=lambda p: len(p) == 4, waiting=lambda w: len(w) == 3
    )
    assert sum(p["role"] == "host" for p in view["participants"]) == 1
    seated = {p["participant_id"] for p in view["participants"]}
    for browser in guests:
        if browser.seen("welcome")[0]["participant_id"] in seated:
            await browser.next("admitted")
        else:
            await browser.latest("waiting", state="room_full")
    types = [t for t, _ in await room_events(postgres_dsn, session_id)]
    assert types.count("SessionStarted") == 1
    assert types.index("SessionStarted") < types.index("ParticipantAdmitted")


async def test_the_last_place_stays_the_hosts_when_they_step_out(calls: Calls) -> None:
    host_url, guest_url, session_id = await direct_session(calls, cap=3)
    host = await calls.join(host_url, "Dr Ada", session_id=session_id)
    await host.next("admitted")
    first, second = [await calls.join(guest_url, f"G{n}") for n in range(2)]
    for browser in (first, second):
        await browser.next("admitted")
    await host.send("leave")
    await host.closed()
    await first.latest("participants", participants=lambda p: len(p) == 2)

    late = await calls.join(guest_url, "Late")  # no host in: waits, not the host's place
    assert (await late.next("waiting"))["state"] == "waiting_for_host"
    back = await calls.join(host_url, "Dr Ada", session_id=session_id)
    await back.next("admitted")
    await back.latest("room", participants=lambda p: len(p) == 3)
    assert (await late.latest("waiting", state="room_full"))["message"]


async def test_a_lapsed_seat_frees_its_place_for_whoever_comes_next(hasty: Calls) -> None:
    room = await practitioner_room(hasty, max_participants=3)
    host = await host_in_call(hasty, room)
    early = []
    for name in ("Ana", "Ben"):
        guest, welcome = await knocking_guest(hasty, room, name)
        await host.send("admit", participant_id=welcome["participant_id"])
        await guest.next("admitted")
        early.append(guest)
    await host.latest("room", participants=lambda p: len(p) == 3)
    await asyncio.sleep(RESERVATION_S + 0.5)  # nobody connected media: the guests' seats lapse

    late, welcome = await knocking_guest(hasty, room, "Cy")
    await host.send("admit", participant_id=welcome["participant_id"])
    await late.next("admitted")
    for guest in early:
        told = await guest.next("refused")
        assert told["reason"] == "seat_lapsed"
        assert "join" in told["message"]
        await guest.closed()
    view = await host.latest("room", participants=lambda p: len(p) == 2)
    assert {p["display_name"] for p in view["participants"]} == {"Dr Ada", "Cy"}

    again = await hasty.join(room.room_url, "Ana")  # and the way back works
    again_welcome = await again.next("welcome")
    await host.send("admit", participant_id=again_welcome["participant_id"])
    await again.next("admitted")


OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
"""Not a usable offer: the node says so (``sdp_invalid``) only once it holds the seat."""


async def test_an_offer_after_the_seat_lapsed_and_the_room_was_given_up_still_reaches_media(
    hasty: Calls,
) -> None:
    room = await practitioner_room(hasty)
    host = await host_in_call(hasty, room)
    guest, welcome = await knocking_guest(hasty, room)
    await host.send("admit", participant_id=welcome["participant_id"])
    await guest.next("admitted")
    # Every seat lapses unclaimed and the node gives the empty room up.
    await asyncio.sleep(RESERVATION_S + 1.0)

    await guest.send("signal", kind="offer", sdp=OFFER)
    error = await guest.next("error")
    assert error["code"] == "sdp_invalid", error  # the room placed again, the seat renewed
    assert not [f for f in guest.frames if f.get("code") in {"not_owner", "no_seat"}]
    view = await host.latest("room")
    assert welcome["participant_id"] in [p["participant_id"] for p in view["participants"]]
