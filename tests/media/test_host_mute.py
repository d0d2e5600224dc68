"""A host's mute on the media node (``rpc.media.node.<id>.mute``), with real aiortc peers in
their own processes: the muted person's audio reaches no one, also after they reconnect,
while their video flows; unmuted, it comes back; a node that does not hold the room says so.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from contracts.media import MuteCommand, MuteReply, mute_subject
from runtime.embedded import NatsServer
from tests.media.conftest import Node, running
from tests.media.peers import peer_process
from tests.media.rooms import CLINIC, Room, frames_from, nats_url_of
from tests.support import eventually

pytestmark = pytest.mark.timeout(180)
LOOP = {"source": "loop", "decode": False, "report_every_s": 0.3}


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(postgres_dsn, nats_server.url, recordings_dir=tmp_path) as started:
        yield started


async def mute(nc: NATS, node: Node, room: Room, pid: str, muted: bool) -> MuteReply:
    command = MuteCommand(
        clinic_id=CLINIC, room_id=room.room_id, participant_id=uuid.UUID(pid), muted=muted
    )
    reply = await nc.request(mute_subject(node.node_id), command.model_dump_json().encode())
    return MuteReply.model_validate_json(reply.data)


async def stalled(count: Callable[[], int], quiet_s: float = 1.0) -> int:
    """Wait until ``count()`` has not grown for ``quiet_s`` (within 10 s); its value then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    last, since = count(), loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet_s:
            return now
    raise AssertionError(f"still growing after 10 s (at {last})")


async def test_a_muted_voice_reaches_no_one_also_after_a_reconnection_until_unmuted(
    node: Node, nc: NATS
) -> None:
    room = Room(node, nats_url_of(node))
    async with room.peer(**LOOP) as talker, room.peer(publish=[], **LOOP) as listener:
        pid = talker.config["participant_id"]

        def audio() -> int:
            return frames_from(listener, pid, "audio")

        def video() -> int:
            return frames_from(listener, pid, "video")

        async def heard(frames: int) -> bool:
            return audio() >= frames

        await eventually(lambda: heard(25), timeout=20, what="the talker's voice")
        assert (await mute(nc, node, room, pid, True)).ok
        silent_at = await stalled(audio)

        # The same person comes back on a new connection (a reload): still muted.
        first = node.media.sfu.member(uuid.UUID(pid))
        async with peer_process(room.config(uuid.UUID(pid), **LOOP)) as again:
            await again.wait_for("ready", timeout=20)
            assert node.media.sfu.member(uuid.UUID(pid)) is not first  # replaced
            pictures = video()

            async def new_pictures() -> bool:
                return video() > pictures + 20

            await eventually(new_pictures, timeout=20, what="video from the new connection")
            assert audio() == silent_at, "a muted voice came back with the reconnection"

            assert (await mute(nc, node, room, pid, False)).ok
            await eventually(lambda: heard(silent_at + 25), timeout=20, what="the voice again")
            report = await listener.stop()
    assert report["decode_errors"] == 0


async def test_a_node_that_does_not_hold_the_room_says_so(node: Node, nc: NATS) -> None:
    elsewhere = Room(node, nats_url_of(node))  # never placed: nobody took a seat in it
    reply = await mute(nc, node, elsewhere, str(uuid.uuid4()), True)
    assert not reply.ok
    assert reply.reason == "not_owner"
