"""``rpc.media.live``: which nodes live, by media's own rule (a heartbeat card younger than
``node_ttl_s``), as signaling asks it to notice a node that died under a call."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS

from contracts.media import LIVE_NODES_SUBJECT, LiveNodes, NodesQuery
from runtime.embedded import NatsServer
from runtime.rpc import call
from services.media.placement import NODES_BUCKET, NodeCard
from tests.media.conftest import running, seeing_each_other


async def live(nc: NATS, *node_ids: str) -> list[str]:
    answer = await call(nc, LIVE_NODES_SUBJECT, NodesQuery(node_ids=list(node_ids)), LiveNodes)
    return answer.live


async def test_nodes_live_while_their_heartbeat_is_fresh_and_not_once_they_stop(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS
) -> None:
    crashed = f"m{uuid.uuid4().hex[:8]}"
    card = NodeCard(
        node_id=crashed,
        public_url="http://crashed.test",
        rooms=0,
        max_rooms=1,
        seen_at=datetime.now(UTC),
    )
    try:
        async with running(postgres_dsn, nats_server.url, node_ttl_s=1.0) as first:
            async with running(postgres_dsn, nats_server.url, node_ttl_s=1.0) as second:
                await seeing_each_other(first, second)
                nodes = await nc.jetstream().key_value(NODES_BUCKET)  # made by the nodes
                await nodes.put(crashed, card.model_dump_json().encode())  # then no more
                a, b = first.node_id, second.node_id
                assert sorted(await live(nc, a, b, crashed)) == sorted([a, b, crashed])
                assert await live(nc, "never-was") == []

                # A node that died without a word: its card stays, and goes stale.
                stale = card.seen_at + timedelta(seconds=1.0)
                await asyncio.sleep(max(0.0, (stale - datetime.now(UTC)).total_seconds()) + 0.2)
                assert sorted(await live(nc, a, b, crashed)) == sorted([a, b])
            # A node that stopped removed its card: dead at once, whoever answers.
            assert await live(nc, a, b) == [a]
    finally:
        await (await nc.jetstream().key_value(NODES_BUCKET)).delete(crashed)
