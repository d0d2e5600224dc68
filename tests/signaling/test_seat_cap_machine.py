"""The seat cap across signaling and media, checked by a state machine.

Two signaling replicas and two media nodes, with scheduling and links, on the harness's NATS
and Postgres. Hosts open their host link and guests knock through the room link, on either
replica; hosts admit guests (one at a time, or two hosts at once from both replicas); people
leave, drop and come back with their resume token, or stay away past the rejoin grace; a host
ends the call for all. Every admission asks a media node for a seat.

After every step the room as signaling recorded it (its event stream, folded) must hold the
people a small model says, never more than the clinic's ``max_participants``, and the media
node that owns the room must hold exactly their seats; one node owns the room at a time.

Hypothesis runs in a worker thread; its rules drive the browsers on the test's own event
loop, which keeps running (replicas, nodes, sweeps) between the steps.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from nats.aio.client import Client as NATS

from contracts.media import RELEASE_SUBJECT, SeatRelease, SeatReleased
from contracts.signaling import signaling_events
from runtime.embedded import NatsServer
from runtime.rpc import call
from services.signaling import domain
from tests.links.conftest import Clock
from tests.machines import machine_settings, on_loop, run_machine
from tests.media.conftest import Node, running
from tests.signaling.conftest import (
    Browser,
    Calls,
    Room,
    practitioner_room,
    signaling_calls,
)
from tests.support import eventually

T = TypeVar("T")
GRACE_MINUTES = 1
SETTLE_S = 5.0
APPENDS_WAIT_S = 0.3
HOSTS, GUESTS = 2, 5
"""At most this many hosts and guests present at once in one example."""


@dataclass
class Services:
    """Scheduling, links, two signaling replicas and two media nodes, reached from the
    machine's thread."""

    loop: asyncio.AbstractEventLoop
    calls: Calls
    nodes: list[Node]
    nc: NATS
    db: "asyncpg.Pool[Any]"

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return on_loop(self.loop, work)


# -- the model ---------------------------------------------------------------------------------


@dataclass
class Person:
    host: bool
    browser: Browser
    participant_id: str
    resume_token: str
    state: str = "arriving"
    """arriving | waiting | in_call | dropped (in the call, connection gone) | gone"""


@dataclass
class Seen:
    """What the room looks like from outside: signaling's record and the media nodes."""

    in_call: set[str]
    waiting: set[str]
    owners: list[str]
    placed: str | None
    taken: dict[str, int] = field(default_factory=dict)


class SeatsAcrossServices(RuleBasedStateMachine):
    """One practitioner's room in a fresh clinic whose calls hold ``cap`` people."""

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.s = services
        self.people: list[Person] = []
        self.cap = 2
        self.room: Room | None = None
        self.room_id: uuid.UUID | None = None

    @property
    def calls(self) -> Calls:
        return self.s.calls

    def present(self, *states: str, host: bool | None = None) -> list[Person]:
        return [x for x in self.people if x.state in states and (host is None or x.host == host)]

    def seated(self) -> list[Person]:
        return self.present("in_call", "dropped")

    @initialize(
        cap=st.sampled_from([3, 2, 4]),
        hosts=st.sampled_from([2, 1, 0]),
        guests=st.sampled_from([2, 0, 1, 3]),
    )
    def a_fresh_clinic(self, cap: int, hosts: int, guests: int) -> None:
        """A room holding ``cap`` people, with some hosts in the call and guests waiting."""
        self.cap = cap
        self.room = self.s.run(
            practitioner_room(self.calls, max_participants=cap, rejoin_grace_minutes=GRACE_MINUTES)
        )
        self.room_id = uuid.UUID(self.room.practitioner["room_id"])
        for n in range(hosts):
            self.a_host_opens_the_host_link(n % 2)
        for n in range(guests):
            self.a_guest_knocks(n % 2)

    def teardown(self) -> None:
        self.s.run(self._teardown())

    async def _teardown(self) -> None:
        for person in self.people:
            await person.browser.aclose()
        if self.room_id is not None and self.room is not None:
            release = SeatRelease(clinic_id=self.room.clinic.clinic.clinic_id, room_id=self.room_id)
            await call(self.s.nc, RELEASE_SUBJECT, release, SeatReleased, 5)

    # -- frames ------------------------------------------------------------------------------

    async def _first(
        self, browser: Browser, since: int, *wanted: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The first frame after ``since`` that one of ``wanted`` accepts."""
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            found[:] = [f for f in browser.frames[since:] if any(w(f) for w in wanted)]
            return bool(found)

        await eventually(arrived, timeout=10, what=f"a frame after {since}: {browser.frames}")
        return found[0]

    # -- arriving ----------------------------------------------------------------------------

    def arrive(self, url: str, host: bool, replica: int) -> Person:
        """Someone opens a link on a replica and is welcomed."""
        browser = self.s.run(self.calls.join(url, "Host" if host else "Guest", replica=replica))
        welcome = self.s.run(browser.next("welcome"))
        assert welcome["room_id"] == str(self.room_id), welcome
        person = Person(host, browser, welcome["participant_id"], welcome["resume_token"])
        self.people.append(person)
        return person

    @precondition(lambda self: len(self.present("in_call", "dropped", host=True)) < HOSTS)
    @rule(replica=st.integers(0, 1))
    def a_host_opens_the_host_link(self, replica: int) -> None:
        """A host enters at once, with a seat; unless the call is full."""
        assert self.room is not None
        full = len(self.seated()) >= self.cap
        host = self.arrive(self.room.host_url, True, replica)
        answer = self.s.run(
            self._first(
                host.browser,
                0,
                lambda f: f["type"] == "admitted",
                lambda f: f["type"] == "refused",
            )
        )
        if full:
            assert (answer["type"], answer.get("reason")) == ("refused", "room_full"), answer
            host.state = "gone"
        else:
            assert answer["type"] == "admitted", answer
            assert answer["media_node"] in self.node_ids(), answer
            host.state = "in_call"

    @precondition(lambda self: len(self.present("waiting")) < GUESTS)
    @rule(replica=st.integers(0, 1))
    def a_guest_knocks(self, replica: int) -> None:
        assert self.room is not None
        guest = self.arrive(self.room.room_url, False, replica)
        self.s.run(guest.browser.next("waiting"))
        guest.state = "waiting"

    # -- admitting ---------------------------------------------------------------------------

    def hosts_here(self) -> list[Person]:
        return self.present("in_call", host=True)

    @precondition(lambda self: self.hosts_here() and self.present("waiting"))
    @rule(data=st.data())
    def a_host_admits_a_guest(self, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(self.hosts_here()), label="host")
        guest = data.draw(st.sampled_from(self.present("waiting")), label="guest")
        self.admit([(host, guest)])

    def two_hosts_can_be_here(self) -> bool:
        """Two hosts in the call, or one and a seat for another."""
        hosts = len(self.hosts_here())
        return hosts == 2 or (hosts == 1 and len(self.seated()) < self.cap)

    def two_hosts(self, replica: int) -> tuple[Person, Person]:
        if len(self.hosts_here()) == 1:
            self.a_host_opens_the_host_link(replica)  # a second host joins the first
        one, two = self.hosts_here()
        return one, two

    @precondition(lambda self: self.two_hosts_can_be_here() and self.present("waiting"))
    @rule(data=st.data(), replica=st.integers(0, 1))
    def both_hosts_admit_the_same_guest_at_once(self, data: st.DataObject, replica: int) -> None:
        """From both hosts at once, while signaling's database holds appends back a moment
        (as under load): both ask media for the guest's seat before either admission is
        recorded; one admission wins, and the guest keeps the one seat."""
        guest = data.draw(st.sampled_from(self.present("waiting")), label="guest")
        one, two = self.two_hosts(replica)
        self.admit([(one, guest), (two, guest)], appends_wait=True)

    @precondition(lambda self: self.two_hosts_can_be_here() and len(self.present("waiting")) > 1)
    @rule(data=st.data(), replica=st.integers(0, 1))
    def both_hosts_admit_a_guest_each_at_once(self, data: st.DataObject, replica: int) -> None:
        """As above, a guest each: only as many as there are seats left get in."""
        first, second = data.draw(
            st.lists(
                st.sampled_from(self.present("waiting")), min_size=2, max_size=2, unique_by=id
            ),
            label="guests",
        )
        one, two = self.two_hosts(replica)
        self.admit([(one, first), (two, second)], appends_wait=True)

    def admit(self, pairs: list[tuple[Person, Person]], appends_wait: bool = False) -> None:
        guests = list({id(g): g for _, g in pairs}.values())
        since = {id(g): len(g.browser.frames) for g in guests}
        free = self.cap - len(self.seated())
        sends = [h.browser.send("admit", participant_id=g.participant_id) for h, g in pairs]
        self.s.run(self._while_appends_wait(*sends) if appends_wait else self._all(*sends))
        admitted = 0
        for guest in guests:
            outcome = self.s.run(
                self._first(
                    guest.browser,
                    since[id(guest)],
                    lambda f: f["type"] == "admitted",
                    lambda f: f["type"] == "waiting" and f["state"] == "room_full",
                )
            )
            if outcome["type"] == "admitted":
                assert outcome["media_node"] in self.node_ids(), outcome
                guest.state = "in_call"
                admitted += 1
        assert admitted == min(len(guests), free), (admitted, len(guests), free)

    async def _all(self, *work: Coroutine[Any, Any, Any]) -> None:
        await asyncio.gather(*work)

    async def _while_appends_wait(self, *work: Coroutine[Any, Any, Any]) -> None:
        async with self.s.db.acquire() as conn, conn.transaction():
            # Reads go on; every replica's append waits until this transaction ends.
            await conn.execute("LOCK TABLE signaling.events IN EXCLUSIVE MODE")
            await self._all(*work)
            await asyncio.sleep(APPENDS_WAIT_S)

    # -- leaving -----------------------------------------------------------------------------

    @precondition(lambda self: self.present("waiting", "in_call"))
    @rule(data=st.data())
    def someone_leaves(self, data: st.DataObject) -> None:
        person = data.draw(st.sampled_from(self.present("waiting", "in_call")), label="person")
        self.s.run(person.browser.send("leave"))
        self.s.run(person.browser.closed())
        person.state = "gone"

    @precondition(lambda self: self.present("in_call"))
    @rule(data=st.data())
    def someone_in_the_call_drops(self, data: st.DataObject) -> None:
        person = data.draw(st.sampled_from(self.present("in_call")), label="person")
        self.s.run(person.browser.drop())
        person.state = "dropped"

    @precondition(lambda self: self.present("dropped"))
    @rule(data=st.data(), replica=st.integers(0, 1))
    def a_dropped_person_comes_back(self, data: st.DataObject, replica: int) -> None:
        """With the resume token: the same seat, asked for again, even in a full call."""
        person = data.draw(st.sampled_from(self.present("dropped")), label="person")
        browser = self.s.run(self.calls.open(replica))
        self.s.run(browser.send("join", resume=person.resume_token))
        welcome = self.s.run(browser.next("welcome"))
        assert welcome["participant_id"] == person.participant_id
        admitted = self.s.run(browser.next("admitted"))
        assert admitted["media_node"] in self.node_ids(), admitted
        person.browser, person.state = browser, "in_call"

    @precondition(lambda self: self.present("dropped"))
    @rule()
    def the_rejoin_grace_passes(self) -> None:
        self.calls.clock.advance(minutes=GRACE_MINUTES, seconds=1)
        for person in self.present("dropped"):
            person.state = "gone"

    @precondition(lambda self: self.hosts_here())
    @rule(data=st.data())
    def a_host_ends_the_call_for_all(self, data: st.DataObject) -> None:
        host = data.draw(st.sampled_from(self.hosts_here()), label="host")
        connected = self.present("waiting", "in_call")
        since = {id(x): len(x.browser.frames) for x in connected}
        self.s.run(host.browser.send("end_for_all", message="Thank you, that is all for today."))
        for person in connected:
            if person.state == "in_call":
                self.s.run(
                    self._first(person.browser, since[id(person)], lambda f: f["type"] == "ended")
                )
        for person in self.present("waiting", "in_call", "dropped"):
            person.state = "gone"

    # -- what must always hold ---------------------------------------------------------------

    def node_ids(self) -> list[str]:
        return [n.node_id for n in self.s.nodes]

    @invariant()
    def the_call_and_its_seats_agree_and_never_exceed_the_cap(self) -> None:
        if self.room_id is None:
            return
        seated = {x.participant_id for x in self.seated()}
        waiting = {x.participant_id for x in self.present("waiting")}
        seen = self.s.run(self._settled(seated, waiting))
        context = (self.cap, seated, waiting, seen)
        assert len(seen.in_call) <= self.cap, context
        assert seen.in_call == seated, context
        assert seen.waiting == waiting, context
        assert len(seen.owners) <= 1, context
        assert sum(seen.taken.values()) == len(seated), context
        if seated:
            assert seen.owners == [seen.placed], context

    async def _settled(self, seated: set[str], waiting: set[str]) -> Seen:
        """The room once the replicas' spawned releases and sweeps are done (or as it is
        after a while); every view on the way is held to the cap too."""
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        while True:
            seen = await self._seen()
            assert len(seen.in_call) <= self.cap, seen
            assert all(t <= self.cap for t in seen.taken.values()), seen
            assert len(seen.owners) <= 1, seen
            agrees = (seen.in_call, seen.waiting) == (seated, waiting)
            if agrees and sum(seen.taken.values()) == len(seated):
                return seen
            if asyncio.get_running_loop().time() > deadline:
                return seen
            await asyncio.sleep(0.05)

    async def _seen(self) -> Seen:
        assert self.room_id is not None
        rows = await self.s.db.fetch(
            "SELECT type, schema_version, data FROM signaling.events "
            "WHERE stream_id = $1 ORDER BY version",
            f"room-{self.room_id}",
        )
        room = domain.Room(room_id=self.room_id)
        for row in rows:
            event = signaling_events.decode(
                row["type"], row["schema_version"], json.loads(row["data"])
            )
            room = domain.evolve(room, event)
        media = [n.media for n in self.s.nodes]
        placement = await self.s.nodes[0].placement()
        owner = await placement.owner(self.room_id)
        return Seen(
            in_call={str(x.participant_id) for x in room.in_call()},
            waiting={str(x.participant_id) for x in room.waiting()},
            owners=[m.node_id for m in media if self.room_id in m.owned],
            placed=owner.node_id if owner else None,
            taken={m.node_id: m.ledger.taken(self.room_id, m.clock()) for m in media},
        )


@pytest.fixture
async def services(postgres_dsn: str, nats_server: NatsServer, nc: NATS) -> AsyncIterator[Services]:
    clock = Clock()
    dsn, url = postgres_dsn, nats_server.url
    # Nobody connects media here, so reservations must outlast the run.
    async with (
        running(dsn, url, reservation_s=3600) as node_a,
        running(dsn, url, reservation_s=3600) as node_b,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node_a.app), base_url="http://test"
        ) as media_client,
        signaling_calls(
            dsn,
            url,
            clock,
            media_client,
            (f"sa{uuid.uuid4().hex[:6]}", f"sb{uuid.uuid4().hex[:6]}"),
        ) as calls,
    ):
        db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            yield Services(asyncio.get_running_loop(), calls, [node_a, node_b], nc, db)
        finally:
            await db.close()


async def test_no_call_seats_more_than_its_cap_across_replicas_and_nodes(
    services: Services,
) -> None:
    await run_machine(
        lambda: SeatsAcrossServices(services), machine_settings(HealthCheck.filter_too_much)
    )
