"""Network quality on a real media node with real aiortc peers: a publisher whose uplink
loses packets is graded down by what the node itself measures, and the people receiving that
publisher are not blamed for it."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.media import RoomQuality, quality_subject
from runtime.embedded import NatsServer
from tests.media.conftest import Node, running
from tests.media.rooms import Room, nats_url_of, receiving

pytestmark = pytest.mark.timeout(180)

PEER = {"source": "loop", "decode": False}


@pytest.fixture
async def node(postgres_dsn: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Node]:
    async with running(
        postgres_dsn, nats_server.url, recordings_dir=tmp_path, quality_interval_s=1.0
    ) as started:
        yield started


async def test_loss_on_a_publishers_way_up_grades_them_down_and_nobody_else(
    node: Node, nc: NATS
) -> None:
    room = Room(node, nats_url_of(node))
    reports: asyncio.Queue[RoomQuality] = asyncio.Queue()

    async def heard(msg: Msg) -> None:
        reports.put_nowait(RoomQuality.model_validate_json(msg.data))

    # As signaling follows it (the node's own user may only publish there).
    subscription = await nc.subscribe(quality_subject(room.room_id), cb=heard)
    try:
        async with (
            room.peer(drop_sent_video_every=5, **PEER) as lossy,
            room.peer(**PEER) as clean,
        ):
            lossy_id, clean_id = lossy.config["participant_id"], clean.config["participant_id"]
            await receiving(clean, [lossy_id], frames=15)

            async def loss_seen() -> RoomQuality:
                while True:
                    report = await reports.get()
                    by_id = {str(p.participant_id): p for p in report.participants}
                    sent = by_id.get(lossy_id)
                    if (
                        clean_id in by_id
                        and sent is not None
                        and (sent.sending.loss_pct or 0) > 0
                        and by_id[clean_id].receiving.loss_pct is not None
                    ):
                        return report

            report = await asyncio.wait_for(loss_seen(), 30)
            dropped = (await lossy.wait_for("stats"))["dropped_sent_on_purpose"]
    finally:
        await subscription.unsubscribe()
    by_id = {str(p.participant_id): p for p in report.participants}
    bad, good = by_id[lossy_id], by_id[clean_id]
    assert dropped > 0
    # A fifth of their video, a little over a tenth of everything they send, lost on the way.
    assert bad.sending.loss_pct is not None
    assert bad.sending.loss_pct >= 10, bad
    assert bad.grade is not None
    assert bad.grade <= 2, bad
    # The node repaired what it could before forwarding, and what it could not is the
    # publisher's: the one who receives them keeps a good grade.
    assert good.receiving.loss_pct is not None
    assert good.receiving.loss_pct < 2, good
    assert good.sending.loss_pct == 0, good
    assert good.grade is not None
    assert good.grade >= 4, good
    assert report.node_id == node.node_id
