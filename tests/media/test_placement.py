"""Several media nodes sharing the placement buckets: one owner per room whoever is asked,
the cap held across nodes, and a dead owner's rooms taken over by a live node."""

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS

from contracts.media import SEAT_SUBJECT, SeatAnswer, SeatRelease, SeatReleased
from runtime.embedded import NatsServer
from runtime.rpc import call
from services.media.placement import NODES_BUCKET, ROOMS_BUCKET, NodeCard, room_key
from tests.media.conftest import clinic, events_of, running, seat_request, seeing_each_other


async def test_two_nodes_racing_to_place_a_room_agree_on_one_owner(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    async with (
        running(postgres_dsn, nats_server.url) as a,
        running(postgres_dsn, nats_server.url) as b,
    ):
        await seeing_each_other(a, b)
        pa, pb = await a.placement(), await b.placement()
        for _ in range(10):
            room = uuid.uuid4()
            placed = await asyncio.gather(pa.place(room), pb.place(room))
            assert all(p is not None for p in placed)
            owners = {p.owner for p in placed if p is not None}
            assert len(owners) == 1
            assert sum(p.won for p in placed if p is not None) == 1
            assert await pa.owner(room) == await pb.owner(room) == owners.pop()


async def test_requests_through_either_node_are_answered_by_the_owner(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS
) -> None:
    async with (
        running(postgres_dsn, nats_server.url) as a,
        running(postgres_dsn, nats_server.url) as b,
    ):
        await seeing_each_other(a, b)
        clinic_id, room = clinic(), uuid.uuid4()
        # Ten through each node at once, for one new room: both try to place it.
        answers = await asyncio.gather(
            *(n.seat(seat_request(clinic_id, room, cap=16)) for n in [a, b] * 10)
        )
        owner = answers[0].node_id
        assert owner in {a.node_id, b.node_id}
        assert {x.node_id for x in answers} == {owner}
        assert sum(x.granted for x in answers) == 16
        assert sorted(x.taken for x in answers if x.granted) == list(range(1, 17))

        types = sorted(e["type"] for e in await events_of(nc, clinic_id, 5))
        assert types == ["RoomPlaced"] + ["SeatRefused"] * 4

        other = b if owner == a.node_id else a
        release = SeatRelease(clinic_id=clinic_id, room_id=room)
        assert await other.release(release) == SeatReleased(released=16, taken=0)

        # And through the queue group, which may deliver to either.
        more = [await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room), SeatAnswer, 5)]
        more += [await call(nc, SEAT_SUBJECT, seat_request(clinic_id, room), SeatAnswer, 5)]
        assert [x.taken for x in more] == [1, 2]
        assert len({x.node_id for x in more}) == 1


async def test_a_stopped_nodes_room_moves_to_the_survivor(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for _ in range(2):
            exit_stack = contextlib.AsyncExitStack()
            node = await exit_stack.enter_async_context(running(postgres_dsn, nats_server.url))
            stack.push_async_callback(exit_stack.aclose)
            nodes[node.node_id] = (node, exit_stack)
        await seeing_each_other(*(n for n, _ in nodes.values()))
        clinic_id, room = clinic(), uuid.uuid4()
        first_node = next(iter(nodes.values()))[0]
        first = await first_node.seat(seat_request(clinic_id, room))
        assert first.granted
        assert first.node_id is not None
        owner, owner_stack = nodes.pop(first.node_id)
        survivor = next(iter(nodes.values()))[0]

        await owner_stack.aclose()  # its heartbeat stops and it leaves the cluster

        answer = await survivor.seat(seat_request(clinic_id, room))
        assert answer.granted
        assert answer.node_id == survivor.node_id
        assert answer.taken == 1  # the seats held on the stopped node went with it
        assert await (await survivor.placement()).owner(room) is not None
        events = await events_of(nc, clinic_id, 2)
        assert [(e["type"], e["data"]["node_id"]) for e in events] == [
            ("RoomPlaced", owner.node_id),
            ("RoomPlaced", survivor.node_id),
        ]


async def test_a_silent_owner_is_waited_for_until_its_heartbeat_is_stale(
    postgres_dsn: str, nats_server: NatsServer, nc: NATS
) -> None:
    """A node that crashed leaves its card: its rooms move once ``node_ttl_s`` has passed."""
    js = nc.jetstream()
    nodes, rooms = await js.key_value(NODES_BUCKET), await js.key_value(ROOMS_BUCKET)
    crashed = f"m{uuid.uuid4().hex[:8]}"
    card = NodeCard(
        node_id=crashed,
        public_url="http://crashed.test",
        rooms=1,
        max_rooms=1,  # full, so nothing else is placed on it
        seen_at=datetime.now(UTC),
    )
    try:
        async with running(postgres_dsn, nats_server.url, node_ttl_s=1.0) as node:
            await nodes.put(crashed, card.model_dump_json().encode())
            clinic_id, room = clinic(), uuid.uuid4()
            await rooms.create(room_key(room), crashed.encode())

            reply = await node.media.seat(node.ctx, seat_request(clinic_id, room))
            assert "did not answer" in json.loads(reply)["error"]
            release = SeatRelease(clinic_id=clinic_id, room_id=room)
            assert (
                "did not answer" in json.loads(await node.media.release(node.ctx, release))["error"]
            )

            stale = card.seen_at + timedelta(seconds=1.0)
            await asyncio.sleep(max(0.0, (stale - datetime.now(UTC)).total_seconds()) + 0.1)
            assert await node.release(release) == SeatReleased(released=0, taken=0)
            answer = await node.seat(seat_request(clinic_id, room))
            assert answer.granted
            assert answer.node_id == node.node_id
            assert (await rooms.get(room_key(room))).value == node.node_id.encode()
            events = await events_of(nc, clinic_id, 1)
            assert events[0]["data"] == {"room_id": str(room), "node_id": node.node_id}
    finally:
        await nodes.delete(crashed)


async def test_a_node_that_lost_a_room_says_so_and_the_request_finds_the_new_owner(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    async with (
        running(postgres_dsn, nats_server.url) as a,
        running(postgres_dsn, nats_server.url) as b,
    ):
        await seeing_each_other(a, b)
        clinic_id, room = clinic(), uuid.uuid4()
        rooms = await a.ctx.nats.jetstream().key_value(ROOMS_BUCKET)
        await rooms.create(room_key(room), b.node_id.encode())
        answer = await a.seat(seat_request(clinic_id, room))
        assert answer.node_id == b.node_id
        # b is thought dead for a moment and a takes the room over behind its back.
        entry = await rooms.get(room_key(room))
        await rooms.update(room_key(room), a.node_id.encode(), last=entry.revision)
        b.media.owned.pop(room)  # b finds out when it next reads the placement
        again = await b.seat(seat_request(clinic_id, room))
        assert again.node_id == a.node_id
        assert again.taken == 1


async def test_a_node_whose_heartbeat_could_not_be_written_still_takes_a_new_room(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    """While a NATS server fails over, heartbeat puts fail: a node's own card goes stale in
    the bucket and in its view. The node answering is alive all the same, so a new room is
    placed on it, not refused with ``no_capacity``."""
    async with running(postgres_dsn, nats_server.url, heartbeat_s=60.0, node_ttl_s=0.5) as a:
        await asyncio.sleep(0.7)  # no heartbeat since: its card is older than the ttl
        pa = await a.placement()
        assert not pa.cards[a.node_id].live(datetime.now(UTC), pa.ttl)
        answer = await a.seat(seat_request(clinic(), uuid.uuid4()))
        assert answer.granted, answer.message
        assert answer.node_id == a.node_id


async def test_a_view_of_the_nodes_that_lags_the_bucket_is_read_again_before_refusing(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    """The watch of the node cards restarts after a NATS server fails over and can lag: a
    view in which no node can take a room is read again from the bucket before refusing."""
    slow: dict[str, Any] = {"heartbeat_s": 60.0, "node_ttl_s": 30.0}
    async with (
        running(postgres_dsn, nats_server.url, **slow) as a,
        running(postgres_dsn, nats_server.url, **slow) as b,
    ):
        await seeing_each_other(a, b)
        pa = await a.placement()
        del pa.cards[b.node_id]  # b's card not seen yet
        mine = pa.cards[a.node_id]
        pa.cards[a.node_id] = mine.model_copy(update={"rooms": mine.max_rooms})  # looks full
        answer = await a.seat(seat_request(clinic(), uuid.uuid4()))
        assert answer.granted, answer.message
        assert set(pa.cards) >= {a.node_id, b.node_id}


def test_a_card_is_live_only_within_the_ttl_of_this_nodes_clock_either_way() -> None:
    """A card stamped further ahead than the ttl (a clock that disagrees, or a test's moved
    clock) is not taken for a live node, or rooms would be placed on it long after it died."""
    now = datetime.now(UTC)
    ttl = timedelta(seconds=6)

    def card(seen_at: datetime) -> NodeCard:
        return NodeCard(node_id="m1", public_url="http://m1", rooms=0, max_rooms=1, seen_at=seen_at)

    assert card(now - timedelta(seconds=5)).live(now, ttl)
    assert card(now + timedelta(seconds=5)).live(now, ttl)
    assert not card(now - timedelta(seconds=7)).live(now, ttl)
    assert not card(now + timedelta(hours=1)).live(now, ttl)
