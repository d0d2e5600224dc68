"""A room on one media node, and real peers in it: what the media tests share."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from contracts.media import SeatRequest
from contracts.signaling import CallRole
from tests.media.conftest import PARTICIPANT_KEY, Node
from tests.media.peers import PeerProcess, participant_config, participant_token, peer_process
from tests.support import eventually

CLINIC = "clinic-media"


class Room:
    """A room on one node, and how to seat people in it."""

    def __init__(self, node: Node, nats_url: str, cap: int = 16) -> None:
        self.node = node
        self.nats_url = nats_url
        self.room_id = uuid.uuid4()
        self.cap = cap

    async def seat(self, pid: uuid.UUID, role: CallRole = CallRole.guest) -> bool:
        request = SeatRequest(
            clinic_id=CLINIC, room_id=self.room_id, participant_id=pid, role=role, cap=self.cap
        )
        return (await self.node.seat(request)).granted

    def token(
        self,
        pid: uuid.UUID,
        room_id: uuid.UUID | None = None,
        ttl_s: float = 120,
        now: float | None = None,
    ) -> str:
        return participant_token(
            PARTICIPANT_KEY,
            clinic_id=CLINIC,
            room_id=room_id or self.room_id,
            node_id=self.node.node_id,
            participant_id=pid,
            ttl_s=ttl_s,
            now=now,
        )

    def config(self, pid: uuid.UUID, **extra: Any) -> dict[str, Any]:
        return participant_config(
            PARTICIPANT_KEY,
            nats_url=self.nats_url,
            clinic_id=CLINIC,
            room_id=self.room_id,
            node_id=self.node.node_id,
            participant_id=pid,
            **({"publish": ["audio", "video"], "report_every_s": 0.5} | extra),
        )

    @contextlib.asynccontextmanager
    async def peer(self, **extra: Any) -> AsyncIterator[PeerProcess]:
        pid = uuid.uuid4()
        assert await self.seat(pid)
        async with peer_process(self.config(pid, **extra)) as peer:
            await peer.wait_for("ready", timeout=20)
            yield peer


def frames_from(peer: PeerProcess, publisher: str, kind: str) -> int:
    stats = peer.latest_stats() or {"tracks": {}}
    return sum(
        t["frames"]
        for t in stats["tracks"].values()
        if t["participant_id"] == publisher and t["kind"] == kind
    )


async def receiving(peer: PeerProcess, publishers: list[str], frames: int = 15) -> None:
    async def enough() -> bool:
        return all(
            frames_from(peer, p, "video") >= frames and frames_from(peer, p, "audio") >= frames
            for p in publishers
        )

    await eventually(enough, timeout=20, what=f"{frames} frames of each track")


def nats_url_of(node: Node) -> str:
    return node.ctx.settings.nats_url


async def first_video_from_each(
    late: PeerProcess, publishers: list[PeerProcess], within_s: float
) -> None:
    """``late`` decodes a first picture of every publisher, each within ``within_s`` of its
    first offer."""
    for publisher in publishers:
        first = await late.wait_for(
            lambda e, p=publisher: (
                e["event"] == "first_frame"
                and e["kind"] == "video"
                and e["participant_id"] == p.config["participant_id"]
            ),
            timeout=10,
        )
        assert first["since_join_s"] <= within_s, first
