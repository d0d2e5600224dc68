"""Mute state over real WebSockets on two replicas: everyone's microphone and camera seen by
all, a host's mute (recorded with ``by``, told to the person, and enforced on the media node
with real aiortc peers in their own processes), a guest refused, and a request to unmute that
changes nothing."""

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from runtime.embedded import NatsServer
from tests.media.peers import PeerProcess, peer_process
from tests.media.rooms import frames_from
from tests.signaling.conftest import (
    Browser,
    Calls,
    host_and_admitted_guest,
    knocking_guest,
    room_events,
)
from tests.support import eventually

PEER = {"publish": ["audio", "video"], "source": "loop", "decode": False, "report_every_s": 0.3}


def state_of(frame: dict[str, Any], pid: str) -> tuple[bool, bool, bool]:
    (person,) = [p for p in frame["participants"] if p["participant_id"] == pid]
    return person["audio_on"], person["video_on"], person["muted_by_host"]


async def media_changes(dsn: str, room_id: str) -> list[dict[str, Any]]:
    events = await room_events(dsn, room_id)
    return [data for kind, data in events if kind == "ParticipantMediaChanged"]


async def test_own_state_reaches_everyone_on_every_replica_once_per_change(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)  # host on replica 0, guest on replica 1
    guest_id, room_id = call.guest_id, str(call.welcome["room_id"])
    other, other_welcome = await knocking_guest(calls, call.room, name="Alan", replica=0)
    await call.host.send("admit", participant_id=other_welcome["participant_id"])
    await other.next("admitted")

    await call.guest.send("media_state", audio=False, video=True)
    for browser, kind in (
        (call.host, "room"),
        (call.guest, "participants"),
        (other, "participants"),
    ):
        await browser.latest(
            kind,
            participants=lambda ps: any(
                p["participant_id"] == guest_id and not p["audio_on"] and p["video_on"] for p in ps
            ),
        )
    # The same state again is no change; a camera turned off is one.
    await call.guest.send("media_state", audio=False, video=True)
    await call.guest.send("media_state", audio=False, video=False)
    frame = await other.latest(
        "participants",
        participants=lambda ps: any(
            p["participant_id"] == guest_id and not p["video_on"] for p in ps
        ),
    )
    assert state_of(frame, guest_id) == (False, False, False)
    changes = await media_changes(postgres_dsn, room_id)
    assert [(c["audio_on"], c["video_on"], c["by"]) for c in changes] == [
        (False, True, None),
        (False, False, None),
    ]
    assert all(c["participant_id"] == guest_id for c in changes)
    # Everyone else is on until their page says otherwise.
    host_id = str(call.host.seen("welcome")[-1]["participant_id"])
    assert state_of(frame, host_id) == (True, True, False)


async def test_a_host_mutes_a_guest_on_another_replica(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls)
    guest_id, room_id = call.guest_id, str(call.welcome["room_id"])
    host_id = str(call.host.seen("welcome")[-1]["participant_id"])
    await call.host.send("mute", participant_id=guest_id)
    told = await call.guest.next("muted_by_host")
    assert told["by_name"] == "Dr Ada"
    room = await call.host.latest(
        "room",
        participants=lambda ps: any(
            p["participant_id"] == guest_id and p["muted_by_host"] for p in ps
        ),
    )
    assert state_of(room, guest_id) == (False, True, True)
    mine = await call.guest.latest(
        "participants",
        participants=lambda ps: any(
            p["participant_id"] == guest_id and p["muted_by_host"] for p in ps
        ),
    )
    assert state_of(mine, guest_id) == (False, True, True)
    (change,) = await media_changes(postgres_dsn, room_id)
    assert change["by"] == host_id
    assert change["audio_on"] is False
    # Muting again changes nothing: no event, no second frame.
    await call.host.send("mute", participant_id=guest_id)
    await call.host.send("ask_unmute", participant_id=guest_id)
    await call.guest.next("unmute_requested")  # the frames above are handled in order
    assert len(call.guest.seen("muted_by_host")) == 1
    assert len(await media_changes(postgres_dsn, room_id)) == 1
    # Muting yourself through the host's control is refused with a sentence.
    await call.host.send("mute", participant_id=host_id)
    error = await call.host.next("error", code="mute_self")
    assert "microphone" in error["message"]


async def test_a_guest_cannot_mute_or_ask_anyone(calls: Calls, postgres_dsn: str) -> None:
    call = await host_and_admitted_guest(calls)
    host_id = str(call.host.seen("welcome")[-1]["participant_id"])
    for frame in ("mute", "ask_unmute"):
        await call.guest.send(frame, participant_id=host_id)
        error = await call.guest.next("error")
        assert error["code"] == "only_hosts", error
        assert error["message"] == "Only a host can do that."
    await call.guest.send("ping")
    await call.guest.next("pong")
    assert not call.host.seen("muted_by_host")
    assert not call.host.seen("unmute_requested")
    assert await media_changes(postgres_dsn, str(call.welcome["room_id"])) == []


async def test_asking_to_unmute_reaches_the_person_and_changes_nothing(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls)
    guest_id, room_id = call.guest_id, str(call.welcome["room_id"])
    # Their microphone is on: nothing to ask.
    await call.host.send("ask_unmute", participant_id=guest_id)
    error = await call.host.next("error")
    assert error["code"] == "microphone_on", error
    await call.guest.send("media_state", audio=False, video=True)
    await call.host.latest(
        "room",
        participants=lambda ps: any(
            p["participant_id"] == guest_id and not p["audio_on"] for p in ps
        ),
    )
    await call.host.send("ask_unmute", participant_id=guest_id)
    asked = await call.guest.next("unmute_requested")
    assert asked["by_name"] == "Dr Ada"
    # The host cannot turn it on: the state stays off until the guest does.
    room = call.host.seen("room")[-1]
    assert state_of(room, guest_id) == (False, True, False)
    assert len(await media_changes(postgres_dsn, room_id)) == 1
    await call.guest.send("media_state", audio=True, video=True)
    await call.host.latest(
        "room",
        participants=lambda ps: any(p["participant_id"] == guest_id and p["audio_on"] for p in ps),
    )
    # Asking someone not in the call is refused.
    waiting, welcome = await knocking_guest(calls, call.room, name="Alan")
    await call.host.send("ask_unmute", participant_id=welcome["participant_id"])
    assert (await call.host.next("error"))["code"] == "not_in_call"
    assert not waiting.seen("unmute_requested")


async def test_a_page_that_changes_its_state_too_often_is_slowed_down(calls: Calls) -> None:
    call = await host_and_admitted_guest(calls)
    for i in range(30):
        await call.guest.send("media_state", audio=i % 2 == 0, video=True)
    error = await call.guest.next("error", code="media_state_rate_limited")
    assert "too often" in error["message"]
    await call.guest.send("ping")
    await call.guest.next("pong")  # still connected: a refusal, not a strike


async def media_of(browser: Browser, nats_url: str) -> dict[str, Any]:
    """A peer's configuration for the person behind ``browser``, from their own frames."""
    welcome = browser.seen("welcome")[-1]
    admitted = browser.seen("admitted")[-1]
    return {
        "nats_url": nats_url,
        "node_id": admitted["media_node"],
        "room_id": welcome["room_id"],
        "participant_id": welcome["participant_id"],
        "participant_token": admitted["participant_token"],
    } | PEER


async def test_the_media_node_forwards_none_of_a_muted_persons_audio_until_they_unmute(
    calls: Calls, nats_server: NatsServer
) -> None:
    """The muted guest's peer ignores the mute and keeps sending its voice: the host's peer
    stops hearing it while the mute holds, and hears it again, in one unbroken stream, once
    the guest turns the microphone on."""
    call = await host_and_admitted_guest(calls)
    guest_id = call.guest_id
    async with AsyncExitStack() as stack:
        peers: list[PeerProcess] = []
        for browser in (call.host, call.guest):
            config = await media_of(browser, nats_server.url)
            peers.append(await stack.enter_async_context(peer_process(config)))
        for peer in peers:
            await peer.wait_for("ready", timeout=60)
        listener, _talker = peers

        def heard() -> int:
            return frames_from(listener, guest_id, "audio")

        async def hearing() -> bool:
            return heard() >= 25

        await eventually(hearing, timeout=30, what="the guest's voice at the host")
        video_before = frames_from(listener, guest_id, "video")

        await call.host.send("mute", participant_id=guest_id)
        await call.guest.next("muted_by_host")
        stalled = await _stalls(heard)
        await asyncio.sleep(1.5)
        assert heard() == stalled, "audio of a muted guest still reached the host"
        assert frames_from(listener, guest_id, "video") > video_before  # video is not muted

        # The guest's page says the microphone is on again: their choice lifts the mute.
        await call.guest.send("media_state", audio=True, video=True)

        async def heard_again() -> bool:
            return heard() >= stalled + 25

        await eventually(heard_again, timeout=20, what="the guest's voice after unmuting")
        report = await listener.stop()
    (audio,) = [
        t
        for t in report["tracks"].values()
        if t["participant_id"] == guest_id and t["kind"] == "audio"
    ]
    assert audio["gaps"] == 0, audio  # the stream continues its numbering after the mute


async def _stalls(count: Any, quiet_s: float = 1.0, within_s: float = 10.0) -> int:
    """Wait until ``count()`` stops growing for ``quiet_s``; its value then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    last, since = count(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet_s:
            return int(now)
    raise AssertionError(f"still growing after {within_s}s (at {last})")
