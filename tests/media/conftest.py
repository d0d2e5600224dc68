"""Media nodes on the harness's NATS and Postgres, with a fast heartbeat.

Every test run shares the ``media-nodes`` and ``media-rooms`` buckets (and the ``media``
schema), so tests use fresh room and clinic ids; nodes leave the cluster when they stop.
"""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client as NATS

from contracts.media import SeatAnswer, SeatRelease, SeatReleased, SeatRequest
from contracts.signaling import CallRole
from runtime.clock import Clock, system_clock
from runtime.context import ServiceContext
from runtime.service import build_app
from services.media import app as media_app
from services.media.config import MediaSettings
from services.media.node import Media
from services.media.placement import Placement
from tests.support import eventually, serving, settings

FAST = {"heartbeat_s": 0.2, "node_ttl_s": 1.0, "forward_wait_s": 0.5}
PARTICIPANT_KEY = "test-participant-key-of-at-least-32-characters"


@dataclass
class Node:
    app: FastAPI
    media: Media

    @property
    def node_id(self) -> str:
        return self.media.node_id

    @property
    def ctx(self) -> ServiceContext:
        context = self.app.state.runtime.context
        assert context is not None
        return context

    async def placement(self) -> Placement:
        return await self.media.placement(self.ctx)

    async def seat(self, request: SeatRequest) -> SeatAnswer:
        """Ask this node (as the queue group would deliver it here)."""
        return SeatAnswer.model_validate_json(await self.media.seat(self.ctx, request))

    async def release(self, request: SeatRelease) -> SeatReleased:
        return SeatReleased.model_validate_json(await self.media.release(self.ctx, request))


@contextlib.asynccontextmanager
async def running(
    dsn: str, nats_url: str, clock: Clock = system_clock, **config: Any
) -> AsyncIterator[Node]:
    """A media node on ``clock``, started, announced, and seeing itself in the cluster."""
    media = Media(
        settings=MediaSettings(**(FAST | config)), key_source=lambda: PARTICIPANT_KEY, clock=clock
    )
    app = build_app(media_app.build(media), settings(dsn, nats_url))
    async with serving(app):
        node = Node(app, media)
        placement = await node.placement()

        async def announced() -> bool:
            return node.node_id in placement.cards

        await eventually(announced, what="the node in its own view")
        yield node


async def seeing_each_other(*nodes: Node) -> None:
    ids = {n.node_id for n in nodes}

    async def all_seen() -> bool:
        views = [await n.placement() for n in nodes]
        return all(ids <= set(view.cards) for view in views)

    await eventually(all_seen, what="the nodes in each other's view")


def clinic() -> str:
    return f"c_{uuid.uuid4().hex[:12]}"


def seat_request(
    clinic_id: str,
    room_id: uuid.UUID,
    *,
    role: CallRole = CallRole.guest,
    cap: int = 16,
    **ids: Any,
) -> SeatRequest:
    participant_id = ids.get("participant_id") or uuid.uuid4()
    return SeatRequest(
        clinic_id=clinic_id, room_id=room_id, participant_id=participant_id, role=role, cap=cap
    )


async def events_of(nc: NATS, clinic_id: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` media events published for the clinic (waits for them)."""
    js = nc.jetstream()
    sub = await js.subscribe(f"antechamber.{clinic_id}.media.>", ordered_consumer=True)
    got: list[dict[str, Any]] = []
    try:
        while len(got) < count:
            msg = await sub.next_msg(timeout=30)
            got.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()
    return got
