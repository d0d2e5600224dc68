"""Media-node failover with real peers: a 4-person call on one of two media nodes (each its own
process, ``antechamber serve media``); the node under the call is killed with SIGKILL, and
everyone is back in the call, on the other node, with decoded video from each of the others,
without knocking again.

Each person is a signaling WebSocket (two replicas) plus an aiortc peer in a process of its
own (tests/media/peers.py) started from their ``admitted`` frame; the peer follows every later
``admitted`` as a browser does, in the same process: the old peer connection goes, a new one
is made to the node the frame names, with its new token (``follow_moves``).
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.support import Process, service_ready, start_service
from runtime.embedded import NatsServer, free_port
from tests.links.conftest import Clock
from tests.media.peers import PeerProcess, peer_process
from tests.signaling.conftest import (
    PARTICIPANT_KEY,
    Browser,
    Calls,
    host_in_call,
    knocking_guest,
    practitioner_room,
    room_events,
    signaling_calls,
)

HEARTBEAT_S = 1.0
NODE_TTL_S = 3.0
SWEEP_S = 0.2
"""The settings of this test (printed with the figure): media's heartbeat and node TTL, and
signaling's sweep, which asks which nodes live."""
BACK_WITHIN_S = 30.0


@dataclass
class MediaNode:
    node_id: str
    url: str
    process: Process


@contextlib.contextmanager
def media_processes(
    folder: Path, dsn: str, nats_url: str, ids: list[str]
) -> Iterator[list[MediaNode]]:
    nodes: list[MediaNode] = []
    try:
        for node_id in ids:
            port = free_port()
            process = start_service(
                "media",
                folder,
                dsn,
                nats_url,
                port,
                label=f"media-{node_id}",
                ANTECHAMBER_PARTICIPANT_KEY=PARTICIPANT_KEY,
                ANTECHAMBER_MEDIA_NODE_ID=node_id,
                ANTECHAMBER_MEDIA_HEARTBEAT_S=str(HEARTBEAT_S),
                ANTECHAMBER_MEDIA_NODE_TTL_S=str(NODE_TTL_S),
                # Peers start slowly on a busy machine: their seats wait for them.
                ANTECHAMBER_MEDIA_RESERVATION_S="90",
                ANTECHAMBER_MEDIA_RECORDINGS_DIR=str(folder / f"recordings-{node_id}"),
            )
            nodes.append(MediaNode(node_id, f"http://127.0.0.1:{port}", process))
        yield nodes
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.process.stop()


@dataclass
class Attendee:
    """One person: their WebSocket, and the peer that follows their ``admitted`` frames."""

    name: str
    browser: Browser
    welcome: dict[str, Any]
    nats_url: str
    stack: contextlib.AsyncExitStack
    peer: PeerProcess | None = None
    node: str | None = None
    admissions: int = 0
    since: int = 0
    """The index of the first of the peer's events on its current connection."""

    @property
    def participant_id(self) -> str:
        return str(self.welcome["participant_id"])

    async def follow(self, admitted: dict[str, Any]) -> None:
        """What the web client does with an ``admitted``: tear down the peer connection it
        has, and connect media to the node the frame names."""
        self.node = admitted["media_node"]
        self.admissions += 1
        if self.peer is not None:
            self.since = await self.peer.move(admitted["media_node"], admitted["participant_token"])
            return
        config = {
            "nats_url": self.nats_url,
            "node_id": admitted["media_node"],
            "room_id": self.welcome["room_id"],
            "participant_id": self.participant_id,
            "participant_token": admitted["participant_token"],
            "source": "loop",
            "width": 160,
            "height": 120,
            "fps": 15,
            "follow_moves": True,
        }
        self.peer = await self.stack.enter_async_context(peer_process(config))

    async def sees_everyone(self, others: list[str], timeout: float) -> float:
        """Wait for a decoded video frame from each of ``others``; the monotonic time then."""
        peer = self.peer
        assert peer is not None
        since = self.since

        def now_seen(event: dict[str, Any], other: str) -> bool:
            return (
                event["event"] == "first_frame"
                and event["kind"] == "video"
                and event["participant_id"] == other
                and any(event is e for e in peer.events[since:])
            )

        for other in others:
            await peer.wait_for(partial(now_seen, other=other), timeout)
        return time.monotonic()

    async def ready(self, timeout: float) -> None:
        peer, since = self.peer, self.since
        assert peer is not None
        await peer.wait_for(
            lambda e: e["event"] == "ready" and any(e is x for x in peer.events[since:]), timeout
        )


@pytest.fixture
async def two_nodes_calls(
    postgres_dsn: str, nats_server: NatsServer, short_tmp: Path, clock: Clock
) -> AsyncIterator[tuple[Calls, list[MediaNode]]]:
    folder = short_tmp / f"failover-{free_port()}"
    folder.mkdir()
    ids = [f"fo{free_port()}", f"fo{free_port()}"]
    with media_processes(folder, postgres_dsn, nats_server.url, ids) as nodes:
        for node in nodes:  # one at a time: media's migrations run once
            await service_ready(node.process, node.url, within=90)
        async with (
            httpx.AsyncClient(base_url=nodes[0].url) as media_client,
            signaling_calls(
                postgres_dsn, nats_server.url, clock, media_client, sweep_s=SWEEP_S
            ) as calls,
        ):
            yield calls, nodes


@pytest.mark.timeout(240)
async def test_a_call_moves_off_a_killed_media_node_and_everyone_is_back(
    two_nodes_calls: tuple[Calls, list[MediaNode]], nats_server: NatsServer, postgres_dsn: str
) -> None:
    calls, nodes = two_nodes_calls
    room = await practitioner_room(calls)
    async with contextlib.AsyncExitStack() as stack:
        host = await host_in_call(calls, room)
        host_welcome = next(f for f in host.frames if f["type"] == "welcome")
        host_seat = next(f for f in host.frames if f["type"] == "admitted")
        people = [Attendee("host", host, host_welcome, nats_server.url, stack)]
        await people[0].follow(host_seat)
        await people[0].ready(60)
        for index, name in enumerate(("Grace", "Ida", "Lin")):
            guest, welcome = await knocking_guest(calls, room, name, replica=index % 2)
            await host.send("admit", participant_id=welcome["participant_id"])
            attendee = Attendee(name, guest, welcome, nats_server.url, stack)
            await attendee.follow(await guest.next("admitted"))
            await attendee.ready(60)  # one peer starting at a time
            people.append(attendee)
        await host.latest("room", participants=lambda p: len(p) == 4)
        ids = [p.participant_id for p in people]
        for person in people:
            await person.sees_everyone([i for i in ids if i != person.participant_id], 60)

        dead = host_seat["media_node"]
        assert {p.node for p in people} == {dead}
        victim = next(n for n in nodes if n.node_id == dead)
        victim.process.kill()
        killed_at = time.monotonic()

        steps: dict[str, list[float]] = {"admitted": [], "ready": []}

        async def back(person: Attendee) -> float:
            moved = await person.browser.next("admitted", timeout=BACK_WITHIN_S)
            steps["admitted"].append(time.monotonic() - killed_at)
            assert moved["media_node"] != dead
            await person.follow(moved)
            await person.ready(BACK_WITHIN_S)
            steps["ready"].append(time.monotonic() - killed_at)
            others = [i for i in ids if i != person.participant_id]
            return await person.sees_everyone(others, BACK_WITHIN_S)

        flowing = await asyncio.gather(*(back(p) for p in people))
        took = max(flowing) - killed_at
        survivor = next(n.node_id for n in nodes if n.node_id != dead)
        sys.stdout.write(
            f"\nmedia node killed -> every participant's media flowing on the new node: "
            f"{took:.2f} s (media heartbeat_s={HEARTBEAT_S}, node_ttl_s={NODE_TTL_S}; "
            f"signaling sweep_s={SWEEP_S}); after the kill, the last admitted at "
            f"{max(steps['admitted']):.2f} s, the last new peer connection up at "
            f"{max(steps['ready']):.2f} s\n"
        )

        assert {p.node for p in people} == {survivor}
        assert all(p.admissions == 2 for p in people)
        # Nobody waited again: still four in the call, no new knock, nobody left.
        await host.latest("room", participants=lambda p: len(p) == 4, waiting=[])
        history = await room_events(postgres_dsn, host_welcome["room_id"])
        kinds = [kind for kind, _ in history]
        assert kinds.count("GuestKnocked") == 3
        assert "ParticipantLeft" not in kinds
        assert "KnockWithdrawn" not in kinds
        moves = [data for kind, data in history if kind == "MediaMoved"]
        assert len(moves) == 1  # two replicas, each with people of the room: one move
        assert moves[0]["from_node"] == dead
        assert moves[0]["media_node"] == survivor
        assert sorted(moves[0]["participant_ids"]) == sorted(ids)
        for person in people:
            assert person.peer is not None
            report = await person.peer.stop()
            assert report["decode_errors"] == 0
