"""The seat cap across media nodes, checked by a state machine.

Two media nodes share the placement buckets and one clock that the test moves. Seats are
asked for and released through either node or the queue group (``rpc.media.seat``), media
connections claim them, reservations lapse as the clock passes, and a node stops cleanly and
a new one starts in its place (its rooms move, their seats with them). After every step, for
every room: the seats held or reserved and not lapsed are what a small model says and never
more than the cap, and exactly one node owns a room that holds any.

Hypothesis runs in a worker thread; its rules drive the nodes on the test's own event loop,
which keeps running (heartbeats, the watch of the nodes) between the steps.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from nats.aio.client import Client as NATS

from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    SeatAnswer,
    SeatRefusal,
    SeatRelease,
    SeatReleased,
    SeatRequest,
)
from contracts.signaling import CallRole
from runtime.embedded import NatsServer
from runtime.rpc import call
from tests.links.conftest import Clock
from tests.machines import machine_settings, on_loop, run_machine
from tests.media.conftest import FAST, Node, clinic, running, seeing_each_other

T = TypeVar("T")
RESERVATION = timedelta(seconds=30)
NODE_SETTINGS: dict[str, Any] = FAST | {
    "reservation_s": RESERVATION.total_seconds(),
    # The test moves the nodes' clock by more than a heartbeat at a time; a node is dead
    # here only when it stops (and removes its card), never for a stale heartbeat.
    "node_ttl_s": 3600.0,
}
QUEUE_GROUP = "queue group"
VIA = st.sampled_from([0, 1, QUEUE_GROUP])
"""Which way a request goes: through node 0, node 1, or the queue group (either)."""


# -- nodes that start and stop from any step ---------------------------------------------------


@dataclass
class RunningNode:
    """A media node kept in a task of its own, so a step can stop it and start another."""

    node: Node
    task: "asyncio.Task[None]"
    stopping: asyncio.Event

    async def stop(self) -> None:
        self.stopping.set()
        await self.task


async def start_node(dsn: str, nats_url: str, clock: Clock) -> RunningNode:
    started: asyncio.Future[Node] = asyncio.get_running_loop().create_future()
    stopping = asyncio.Event()

    async def serve() -> None:
        async with running(dsn, nats_url, clock, **NODE_SETTINGS) as node:
            started.set_result(node)
            await stopping.wait()

    task = asyncio.create_task(serve())
    either: list[asyncio.Future[Any]] = [started, task]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.result()  # raises why it did not start
    return RunningNode(started.result(), task, stopping)


@dataclass
class Cluster:
    """Two media nodes on one moved clock, reached from the machine's thread."""

    loop: asyncio.AbstractEventLoop
    dsn: str
    nats_url: str
    nc: NATS
    clock: Clock
    nodes: list[RunningNode]

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return on_loop(self.loop, work)

    async def restart(self, index: int) -> None:
        await self.nodes[index].stop()
        self.nodes[index] = await start_node(self.dsn, self.nats_url, self.clock)
        await seeing_each_other(*(n.node for n in self.nodes))


# -- the model ---------------------------------------------------------------------------------


@dataclass
class ModelRoom:
    room_id: uuid.UUID
    cap: int
    people: list[uuid.UUID]
    seats: dict[uuid.UUID, datetime | None] = field(default_factory=dict)
    """Who holds a seat: until when it is reserved, or None once a connection claimed it."""
    owner: str | None = None
    """The node that answered for the room, while it holds a seat."""

    def drop_lapsed(self, now: datetime) -> None:
        for person in [p for p, until in self.seats.items() if until is not None and until <= now]:
            del self.seats[person]
        if not self.seats:
            self.owner = None  # an empty room may be given up, and placed anywhere next


class SeatCap(RuleBasedStateMachine):
    """Two rooms of a fresh clinic, each with its cap and a few people who want a seat."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.c = cluster
        self.clinic_id = clinic()
        self.rooms: list[ModelRoom] = []

    @property
    def now(self) -> datetime:
        return self.c.clock.now

    def node_ids(self) -> list[str]:
        return [n.node.node_id for n in self.c.nodes]

    @initialize(caps=st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 16])))
    def two_rooms(self, caps: tuple[int, int]) -> None:
        for cap in caps:
            people = [uuid.uuid4() for _ in range(4)]
            self.rooms.append(ModelRoom(uuid.uuid4(), cap, people))

    def teardown(self) -> None:
        """Free every seat, so the rooms are given up and do not count against the nodes."""
        for room in self.rooms:
            release = SeatRelease(clinic_id=self.clinic_id, room_id=room.room_id)
            self.c.run(call(self.c.nc, RELEASE_SUBJECT, release, SeatReleased, 5))

    # -- asking ------------------------------------------------------------------------------

    async def _seat(self, request: SeatRequest, via: int | str) -> SeatAnswer:
        if via == QUEUE_GROUP:
            return await call(self.c.nc, SEAT_SUBJECT, request, SeatAnswer, 5)
        assert isinstance(via, int)
        return await self.c.nodes[via].node.seat(request)

    async def _release(self, request: SeatRelease, via: int | str) -> SeatReleased:
        if via == QUEUE_GROUP:
            return await call(self.c.nc, RELEASE_SUBJECT, request, SeatReleased, 5)
        assert isinstance(via, int)
        return await self.c.nodes[via].node.release(request)

    def request(self, room: ModelRoom, person: uuid.UUID) -> SeatRequest:
        return SeatRequest(
            clinic_id=self.clinic_id,
            room_id=room.room_id,
            participant_id=person,
            role=CallRole.guest,
            cap=room.cap,
        )

    def expect(self, room: ModelRoom, person: uuid.UUID, answer: SeatAnswer) -> None:
        """Check one answer against the model (as of now) and take it into the model."""
        room.drop_lapsed(self.now)
        context = (room, person, answer)
        assert answer.cap == room.cap, context
        assert answer.node_id in self.node_ids(), context
        if room.owner is not None:
            assert answer.node_id == room.owner, context
        if person not in room.seats and len(room.seats) >= room.cap:
            assert not answer.granted, context
            assert answer.reason is SeatRefusal.room_full, context
            assert answer.taken == room.cap, context
            return
        assert answer.granted, context
        if not (person in room.seats and room.seats[person] is None):  # a claimed seat stays
            room.seats[person] = self.now + RESERVATION  # reserved, or renewed
        assert answer.reserved_until == room.seats[person], context
        assert answer.taken == len(room.seats), context
        room.owner = answer.node_id

    @rule(room=st.integers(0, 1), person=st.integers(0, 3), via=VIA)
    def ask_for_a_seat(self, room: int, person: int, via: int | str) -> None:
        r = self.rooms[room]
        answer = self.c.run(self._seat(self.request(r, r.people[person]), via))
        self.expect(r, r.people[person], answer)

    @rule(room=st.integers(0, 1), person=st.integers(0, 3))
    def ask_twice_at_once_through_both_nodes(self, room: int, person: int) -> None:
        """The same person, asking through each node at once: one seat, the same answer."""
        r = self.rooms[room]
        request = self.request(r, r.people[person])
        first, second = self.c.run(self._both(self._seat(request, 0), self._seat(request, 1)))
        assert first == second, (first, second)
        self.expect(r, r.people[person], first)

    @rule(room=st.integers(0, 1), newcomers=st.integers(2, 6))
    def many_newcomers_at_once(self, room: int, newcomers: int) -> None:
        """People never seen before, all at once through alternate ways: the cap holds."""
        r = self.rooms[room]
        r.drop_lapsed(self.now)
        people = [uuid.uuid4() for _ in range(newcomers)]
        ways: list[int | str] = [0, 1, QUEUE_GROUP]
        answers = self.c.run(
            self._all(*(self._seat(self.request(r, p), ways[n % 3]) for n, p in enumerate(people)))
        )
        free = max(0, r.cap - len(r.seats))
        granted = [(p, a) for p, a in zip(people, answers, strict=True) if a.granted]
        assert len(granted) == min(newcomers, free), answers
        assert len({a.node_id for a in answers}) == 1, answers
        assert sorted(a.taken for _, a in granted) == list(
            range(len(r.seats) + 1, len(r.seats) + len(granted) + 1)
        ), answers
        for answer in answers:
            if not answer.granted:
                assert answer.reason is SeatRefusal.room_full, answer
                assert answer.taken == r.cap, answer
        if r.owner is not None:
            assert answers[0].node_id == r.owner, answers
        for person, answer in granted:
            assert answer.reserved_until == self.now + RESERVATION, answer
            r.seats[person] = answer.reserved_until
            r.owner = answer.node_id
            r.people.append(person)  # may be released or claimed later

    async def _both(
        self, a: Coroutine[Any, Any, SeatAnswer], b: Coroutine[Any, Any, SeatAnswer]
    ) -> tuple[SeatAnswer, SeatAnswer]:
        return await asyncio.gather(a, b)

    async def _all(self, *asked: Coroutine[Any, Any, SeatAnswer]) -> list[SeatAnswer]:
        return list(await asyncio.gather(*asked))

    # -- leaving -----------------------------------------------------------------------------

    @rule(room=st.integers(0, 1), data=st.data(), via=VIA)
    def release_a_seat(self, room: int, data: st.DataObject, via: int | str) -> None:
        r = self.rooms[room]
        person = data.draw(st.sampled_from(r.people), label="person")
        release = SeatRelease(clinic_id=self.clinic_id, room_id=r.room_id, participant_id=person)
        answer = self.c.run(self._release(release, via))
        r.drop_lapsed(self.now)
        held = person in r.seats
        r.seats.pop(person, None)
        assert answer == SeatReleased(released=int(held), taken=len(r.seats)), (r, answer)
        r.drop_lapsed(self.now)

    @rule(room=st.integers(0, 1), via=VIA)
    def release_the_room(self, room: int, via: int | str) -> None:
        r = self.rooms[room]
        release = SeatRelease(clinic_id=self.clinic_id, room_id=r.room_id)
        answer = self.c.run(self._release(release, via))
        r.drop_lapsed(self.now)
        assert answer == SeatReleased(released=len(r.seats), taken=0), (r, answer)
        r.seats.clear()
        r.drop_lapsed(self.now)

    @rule(room=st.integers(0, 1), data=st.data())
    def a_connection_claims_a_seat(self, room: int, data: st.DataObject) -> None:
        """The media connection's offer claims the reservation (on the node that owns the
        room, as the offer does once its participant token is checked)."""
        r = self.rooms[room]
        r.drop_lapsed(self.now)
        if r.owner is None:
            return  # nobody holds a seat there
        person = data.draw(st.sampled_from(r.people), label="person")
        owner = next(n.node for n in self.c.nodes if n.node.node_id == r.owner)
        claimed = self.c.run(self._claim(owner, r.room_id, person))
        assert claimed == (person in r.seats), (r, person)
        if claimed:
            r.seats[person] = None

    async def _claim(self, node: Node, room_id: uuid.UUID, person: uuid.UUID) -> bool:
        return node.media.ledger.claim(room_id, person, node.media.clock())

    # -- time and nodes ----------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1, 15, 29, 30, 31]))
    def time_passes(self, seconds: int) -> None:
        self.c.clock.advance(seconds=seconds)
        for r in self.rooms:
            r.drop_lapsed(self.now)

    @rule(index=st.integers(0, 1))
    def a_node_stops_and_another_starts(self, index: int) -> None:
        """A clean stop: the node leaves the cluster, its rooms' seats go with it."""
        gone = self.c.nodes[index].node.node_id
        self.c.run(self.c.restart(index))
        for r in self.rooms:
            if r.owner == gone:
                r.seats.clear()
                r.owner = None

    # -- what must always hold ---------------------------------------------------------------

    @invariant()
    def seats_agree_with_the_model_and_one_node_owns_each_room(self) -> None:
        views = self.c.run(self._views())
        for r, (owners, placed, taken) in zip(self.rooms, views, strict=True):
            r.drop_lapsed(self.now)
            context = (r, owners, placed, taken)
            assert len(r.seats) <= min(r.cap, 16), context
            assert len(owners) <= 1, context  # never two nodes at once
            if r.seats:
                assert owners == [r.owner], context
                assert placed == r.owner, context
            assert sum(taken.values()) == len(r.seats), context

    async def _views(self) -> list[tuple[list[str], str | None, dict[str, int]]]:
        """Per room: the nodes that think they own it, the placement, and each node's count."""
        placement = await self.c.nodes[0].node.placement()
        views = []
        for r in self.rooms:
            owner = await placement.owner(r.room_id)
            media = [n.node.media for n in self.c.nodes]
            owners = [m.node_id for m in media if r.room_id in m.owned]
            taken = {m.node_id: m.ledger.taken(r.room_id, m.clock()) for m in media}
            views.append((owners, owner.node_id if owner else None, taken))
        return views


@pytest.fixture
async def cluster(postgres_dsn: str, nats_server: NatsServer, nc: NATS) -> AsyncIterator[Cluster]:
    clock = Clock()
    nodes: list[RunningNode] = []
    try:
        for _ in range(2):
            nodes.append(await start_node(postgres_dsn, nats_server.url, clock))
        await seeing_each_other(*(n.node for n in nodes))
        loop = asyncio.get_running_loop()
        yield Cluster(loop, postgres_dsn, nats_server.url, nc, clock, nodes)
    finally:
        for running in nodes:
            with contextlib.suppress(Exception):
                await running.stop()


async def test_no_room_seats_more_than_its_cap_whichever_node_is_asked(cluster: Cluster) -> None:
    await run_machine(lambda: SeatCap(cluster), machine_settings())
