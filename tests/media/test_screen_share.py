"""A screen share through the SFU with real aiortc peers, each in its own process.

Signaling grants the share on the node (``share_subject``, as it does for the sharer); the
node offers the sharer an m-line to send their screen on, forwards it to everyone labelled
``screen``, and takes a screen from nobody else. The sharer's screen is a flat magenta
picture of 640x360, their camera 320x240: what a subscriber decodes tells them apart.
"""

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from nats.aio.client import Client as NATS

from contracts.media import (
    RecordingAction,
    RecordingCommand,
    RecordingReply,
    ScreenShareAction,
    ScreenShareCommand,
    ScreenShareReply,
    record_subject,
    share_subject,
)
from runtime.embedded import NatsServer
from tests.media.conftest import Node, running
from tests.media.peers import PeerProcess
from tests.media.rooms import CLINIC, Room, nats_url_of, receiving
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)
SCREEN = {"share_screen": True, "screen_width": 640, "screen_height": 360}


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(postgres_dsn, nats_server.url, recordings_dir=tmp_path) as started:
        yield started


async def tell(
    nc: NATS, node: Node, room: Room, peer: PeerProcess, action: ScreenShareAction
) -> None:
    command = ScreenShareCommand(
        clinic_id=CLINIC,
        room_id=room.room_id,
        participant_id=uuid.UUID(peer.config["participant_id"]),
        action=action,
    )
    reply = await nc.request(share_subject(node.node_id), command.model_dump_json().encode())
    assert ScreenShareReply.model_validate_json(reply.data).ok


def screens(peer: PeerProcess) -> list[dict[str, Any]]:
    stats = peer.latest_stats() or {"tracks": {}}
    return [t for t in stats["tracks"].values() if t["source"] == "screen"]


def camera_frames(peer: PeerProcess, publisher: PeerProcess) -> int:
    stats = peer.latest_stats() or {"tracks": {}}
    return sum(
        t["frames"]
        for t in stats["tracks"].values()
        if t["participant_id"] == publisher.config["participant_id"] and t["source"] == "video"
    )


async def a_screen_from(peer: PeerProcess, sharer: PeerProcess, frames: int = 10) -> None:
    """``peer`` decodes ``frames`` pictures of ``sharer``'s screen, at the screen's size."""

    async def decoded() -> bool:
        return any(
            t["participant_id"] == sharer.config["participant_id"]
            and t["frames"] >= frames
            and t["size"] == [640, 360]
            for t in screens(peer)
        )

    await eventually(decoded, timeout=20, what="pictures of the shared screen")


async def test_a_granted_share_reaches_everyone_and_stops_when_it_ends(
    node: Node, nc: NATS
) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer(**SCREEN) as sharer, room.peer() as viewer:
        await receiving(viewer, [sharer.config["participant_id"]])
        await tell(nc, node, room, sharer, ScreenShareAction.grant)
        await sharer.wait_for("screen_offered", timeout=10)
        await a_screen_from(viewer, sharer)
        # The cameras keep coming while the screen does, the sharer's too.
        before = camera_frames(viewer, sharer)

        async def still_coming() -> bool:
            return camera_frames(viewer, sharer) >= before + 15

        await eventually(still_coming, timeout=10, what="the sharer's camera still coming")
        # Someone who comes in mid-share gets a picture at once (the node asks for a keyframe).
        async with room.peer(publish=[]) as late:
            await late.wait_for(
                lambda e: e["event"] == "first_frame" and e.get("mid") is not None,
                timeout=10,
            )
            await a_screen_from(late, sharer, frames=5)
            # The camera is still the camera: one video and one screen of the sharer's.
            stats = late.latest_stats() or {"tracks": {}}
            theirs = [
                t
                for t in stats["tracks"].values()
                if t["participant_id"] == sharer.config["participant_id"] and t["kind"] == "video"
            ]
            assert sorted(t["source"] for t in theirs) == ["screen", "video"]
            assert [t["size"] for t in theirs if t["source"] == "video"] == [[320, 240]]
            # The share ends: the node stops forwarding it at once and offers it away.
            await tell(nc, node, room, sharer, ScreenShareAction.revoke)

            async def stopped() -> bool:
                media_room = node.media.sfu.rooms[room.room_id]
                forwarded = [p for p in media_room.publications() if p.screen]
                frozen = all(
                    t["last_frame_s_ago"] is not None and t["last_frame_s_ago"] > 1.0
                    for t in screens(late)
                )
                return not forwarded and frozen

            await eventually(stopped, timeout=10, what="the screen no longer forwarded")
            late_report = await late.stop()
        viewer_report = await viewer.stop()
        sharer_report = await sharer.stop()
    for report in (late_report, viewer_report, sharer_report):
        assert report["decode_errors"] == 0
        assert report["failed_renegotiations"] == 0
    # The sharer's camera reached the viewer all along.
    assert viewer_report["tracks"]


async def test_the_node_takes_a_screen_only_from_the_one_granted(node: Node, nc: NATS) -> None:
    room = Room(node, nats_url_of(node))
    # An extra video in a first offer is no screen share: not forwarded at all.
    async with (
        room.peer(extra_video=True, **SCREEN) as claimant,
        room.peer(**SCREEN) as granted,
        room.peer() as viewer,
    ):
        await tell(nc, node, room, granted, ScreenShareAction.grant)
        await a_screen_from(viewer, granted)
        await receiving(viewer, [claimant.config["participant_id"]])
        stats = viewer.latest_stats() or {"tracks": {}}
        from_claimant = [
            t
            for t in stats["tracks"].values()
            if t["participant_id"] == claimant.config["participant_id"]
        ]
        assert sorted(t["source"] for t in from_claimant) == ["audio", "video"]
        assert [t["size"] for t in from_claimant if t["kind"] == "video"] == [[320, 240]]
        # Only the one granted was offered a place to send a screen.
        assert claimant.find("screen_offered") is None
        # A revoke for someone who is not sharing changes nothing.
        await tell(nc, node, room, claimant, ScreenShareAction.revoke)
        assert node.media.sfu.rooms[room.room_id].sharer == uuid.UUID(
            granted.config["participant_id"]
        )
        # A grant to another ends the first share.
        await tell(nc, node, room, claimant, ScreenShareAction.grant)
        await claimant.wait_for("screen_offered", timeout=10)

        async def moved() -> bool:
            live = [
                t
                for t in screens(viewer)
                if t["last_frame_s_ago"] is not None and t["last_frame_s_ago"] < 0.5
            ]
            return [t["participant_id"] for t in live] == [claimant.config["participant_id"]]

        await eventually(moved, timeout=20, what="the screen of the newly granted only")
        for peer in (claimant, granted, viewer):
            report = await peer.stop()
            assert report["decode_errors"] == 0


def is_magenta(rgb: "np.typing.NDArray[np.float64]") -> bool:
    red, green, blue = (int(v) for v in rgb)
    return red > 180 and blue > 180 and green < 80


async def test_a_share_while_recording_is_the_recordings_main_tile(node: Node, nc: NATS) -> None:
    """Through the node: the share is recorded as its own source and laid out large; the
    sharer's screen (ScreenPicture) is a flat magenta no camera picture comes near."""
    room = Room(node, nats_url_of(node))
    recording_id = uuid.uuid4()
    command = RecordingCommand(
        clinic_id=CLINIC,
        room_id=room.room_id,
        recording_id=recording_id,
        action=RecordingAction.start,
    )
    async with room.peer(**SCREEN) as sharer, room.peer() as viewer:
        await receiving(viewer, [sharer.config["participant_id"]], frames=5)
        reply = await nc.request(record_subject(node.node_id), command.model_dump_json().encode())
        assert RecordingReply.model_validate_json(reply.data).ok
        await asyncio.sleep(2)
        await tell(nc, node, room, sharer, ScreenShareAction.grant)
        await a_screen_from(viewer, sharer, frames=30)
        stop = command.model_copy(update={"action": RecordingAction.stop})
        await nc.request(record_subject(node.node_id), stop.model_dump_json().encode())
    path = node.media.recordings.path_of(CLINIC, recording_id)

    async def written() -> bool:
        row = await node.ctx.pool.fetchrow(
            "SELECT status FROM recordings WHERE recording_id = $1", recording_id
        )
        return row is not None and row["status"] == "available"

    await eventually(written, timeout=30, what="the recording's MP4")
    with av.open(io.BytesIO(path.read_bytes())) as container:
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    first, last = pictures[5], pictures[-3]
    main = last[40:536, 320:960].reshape(-1, 3)
    # The main tile is the screen: magenta (red and blue high, green low).
    assert is_magenta(np.median(main, axis=0))
    # Before the share, no magenta in the middle: the cameras' grid.
    assert not is_magenta(np.median(first[40:536, 320:960].reshape(-1, 3), axis=0))
    # The cameras are in the strip below the share.
    assert last[600:700].max() > 60
