"""Network quality reaches the call: a host's WebSocket gets everyone's, a guest's only their
own, and a participant whose network loses packets is graded down (real aiortc peers in
their own processes, behind real signaling and a real media node)."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from runtime.embedded import NatsServer
from tests.links.conftest import Clock
from tests.media.peers import PeerProcess, peer_process
from tests.signaling.conftest import (
    Browser,
    Calls,
    calls_platform,
    host_in_call,
    knocking_guest,
    practitioner_room,
)

LOSSY_EVERY = 5
"""The lossy guest throws away every 5th video packet it receives (20%), as it comes off the
network (before SRTP): its receiver reports say so."""
PEER = {"publish": ["audio", "video"], "source": "loop", "decode": False, "report_every_s": 1.0}


@pytest.fixture
async def calls(postgres_dsn: str, nats_server: NatsServer, clock: Clock) -> AsyncIterator[Calls]:
    media = {"quality_interval_s": 1.0}
    async with calls_platform(postgres_dsn, nats_server.url, clock, media) as platform:
        yield platform


async def media_of(browser: Browser, nats_url: str, **extra: Any) -> dict[str, Any]:
    """A peer's configuration for the person behind ``browser``, from their own frames."""
    welcome = browser.seen("welcome")[-1]
    admitted = browser.seen("admitted")[-1]
    return (
        {
            "nats_url": nats_url,
            "node_id": admitted["media_node"],
            "room_id": welcome["room_id"],
            "participant_id": welcome["participant_id"],
            "participant_token": admitted["participant_token"],
        }
        | PEER
        | extra
    )


def of(frame: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["participant_id"]: p for p in frame["participants"]}


async def test_hosts_see_everyones_network_guests_their_own_and_loss_grades_down(
    calls: Calls, nats_server: NatsServer
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room)
    guests = []
    for name in ("Grace", "Lossy Lou"):
        guest, welcome = await knocking_guest(calls, room, name=name)
        await host.send("admit", participant_id=welcome["participant_id"])
        await guest.next("admitted")
        guests.append(guest)
    clean, lossy = guests
    ids = {b: b.seen("welcome")[-1]["participant_id"] for b in (host, clean, lossy)}
    async with AsyncExitStack() as stack:
        peers: list[PeerProcess] = []
        for browser, extra in ((host, {}), (clean, {}), (lossy, {"drop_video_every": LOSSY_EVERY})):
            config = await media_of(browser, nats_server.url, **extra)
            peers.append(await stack.enter_async_context(peer_process(config)))
        for peer in peers:
            await peer.wait_for("ready", timeout=60)
        # Loss shows once video flows to the lossy guest and their reports come back.
        everyone = await host.latest(
            "quality",
            timeout=60,
            participants=lambda ps: (
                {p["participant_id"] for p in ps} == set(ids.values())
                # a round trip needs a sender report to come back: a few report intervals
                and all(p["grade"] is not None and p["rtt_ms"] is not None for p in ps)
                and next(p for p in ps if p["participant_id"] == ids[lossy])["receiving"][
                    "loss_pct"
                ]
                not in (None, 0)
            ),
        )
        # The lossy peer really ran (its first stats may come after the quality frame).
        await peers[2].wait_for(lambda e: e.get("event") == "stats", timeout=30)
    quality = of(everyone)
    bad, good = quality[ids[lossy]], quality[ids[clean]]
    assert bad["receiving"]["loss_pct"] >= 5, bad
    assert bad["grade"] <= 2, bad
    # Loss the guest's own network caused is theirs alone: nobody else is blamed for it.
    assert good["receiving"]["loss_pct"] < 2, good
    assert good["grade"] > bad["grade"], quality
    for measured in quality.values():
        assert measured["rtt_ms"] is not None, measured
        assert measured["rtt_ms"] < 1000, measured
        assert measured["sending"]["loss_pct"] is not None, measured
    # A guest sees only themselves, however many others are in the call.
    for guest in (clean, lossy):
        frames = guest.seen("quality")
        assert frames, f"no quality frame for {ids[guest]}"
        assert all(set(of(f)) == {ids[guest]} for f in frames), frames
    assert all(len(of(f)) <= 3 for f in host.seen("quality"))
    # The node's metrics hold the distribution, by node and never by participant.
    metrics = (await calls.media.get("/metrics")).text
    assert 'antechamber_media_quality_participants{grade="1",node="mtest"}' in metrics or (
        'antechamber_media_quality_participants{grade="2",node="mtest"}' in metrics
    )
    assert 'antechamber_media_quality_rtt_seconds_count{node="mtest"}' in metrics
    assert 'direction="receiving",node="mtest"' in metrics
    assert all(pid not in metrics for pid in ids.values())
