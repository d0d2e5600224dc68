"""Resolution served from each replica's cache: no query on a hit, right over time, and a change
committed anywhere refused at once on every replica (``services/links/cache.py``)."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import asyncpg
import pytest

from contracts.links import Decision, ResolveRequest
from runtime.context import ServiceContext
from runtime.db import Queryable, create_pool
from runtime.embedded import NatsServer
from services.links.handlers import Links
from services.links.resolver import resolve
from tests.links.conftest import Clock, LinkedClinic, links_service
from tests.links.test_lifecycle import allowed, moment, refused, regenerate, shared_session
from tests.scheduling.conftest import OPERATOR, register_clinic, scheduling_app
from tests.support import eventually, serving


@dataclass
class Replica:
    clinic: LinkedClinic
    links: Links
    ctx: ServiceContext


@dataclass
class Replicas:
    a: Replica
    b: Replica
    db: "asyncpg.Pool[Any]"
    """The links schema, read behind the services' backs."""

    async def committed(self, query: str, *args: object) -> None:
        """Wait until a consumer (on either replica) committed what ``query`` checks."""

        async def done() -> bool:
            return bool(await self.db.fetchval(query, *args))

        await eventually(done, what=query)


@pytest.fixture
async def replicas(
    postgres_dsn: str, nats_server: NatsServer, clock: Clock
) -> AsyncIterator[Replicas]:
    sched = scheduling_app(postgres_dsn, nats_server.url)
    # Every change is made on a (its consumers, its API); b only answers, so what b answers
    # after a change it learnt from Postgres's notices alone.
    apps = [
        links_service(postgres_dsn, nats_server.url, clock),
        links_service(postgres_dsn, nats_server.url, clock, consuming=False),
    ]
    db = await create_pool(postgres_dsn, "links", size=2)
    async with (
        serving(sched) as scheduling,
        serving(apps[0]) as links_a,
        serving(apps[1]) as links_b,
    ):
        both = [app.state.links for app in apps]
        for links in both:

            async def live(links: Links = links) -> bool:
                return links.cache.by_token.live

            await eventually(live, what="the replica listening for changes")
        clinic = await register_clinic(scheduling)
        ctxs = [app.state.runtime.context for app in apps]
        a = Replica(LinkedClinic(clinic, links_a), both[0], ctxs[0])
        b = Replica(LinkedClinic(clinic, links_b), both[1], ctxs[1])
        yield Replicas(a, b, db)
    await db.close()


async def test_a_regenerated_link_is_refused_at_once_on_the_other_replica(
    replicas: Replicas, clock: Clock
) -> None:
    a, b = replicas.a, replicas.b
    session = await shared_session(a.clinic)
    guest = await a.clinic.link("guest", session_id=session["session_id"])
    clock.set(moment(session))
    for replica in (a, b, b):  # the second time on b is a hit
        await allowed(replica.clinic, guest)
    assert len(b.links.cache.by_token) == 1

    response = await regenerate(a.clinic, guest["link_id"])
    assert response.status_code == 201, response.text
    # No waiting: the next resolve anywhere is refused.
    await refused(b.clinic, guest, 410, "regenerated")
    await refused(a.clinic, guest, 410, "regenerated")
    await allowed(b.clinic, response.json())


async def test_a_suspended_clinic_is_refused_at_once_on_every_replica(
    replicas: Replicas, clock: Clock
) -> None:
    a, b = replicas.a, replicas.b
    session = await shared_session(a.clinic)
    practitioner_id = session["practitioner"]["practitioner_id"]
    links = await a.clinic.links_of(session_id=session["session_id"])
    links += await a.clinic.links_of(practitioner_id=practitioner_id)
    clock.set(moment(session))
    for replica in (a, b):
        for link in links:
            await allowed(replica.clinic, link)

    clinic_id = a.clinic.clinic.clinic_id
    scheduling, path = a.clinic.clinic.api, f"/v1/clinics/{clinic_id}"
    response = await scheduling.post(
        f"{path}/suspend", headers=OPERATOR, json={"reason": "unpaid invoice"}
    )
    assert response.status_code == 200, response.text
    await replicas.committed("SELECT suspended FROM clinics WHERE clinic_id = $1", clinic_id)
    for replica in (b, a):
        for link in links:
            await refused(replica.clinic, link, 403, "clinic_suspended")

    assert (await scheduling.post(f"{path}/reinstate", headers=OPERATOR)).status_code == 200
    await replicas.committed("SELECT NOT suspended FROM clinics WHERE clinic_id = $1", clinic_id)
    for replica in (b, a):
        for link in links:
            await allowed(replica.clinic, link)


async def test_a_cancelled_session_is_refused_at_once_on_every_replica(
    replicas: Replicas, clock: Clock
) -> None:
    a, b = replicas.a, replicas.b
    session = await shared_session(a.clinic)
    sid = session["session_id"]
    links = await a.clinic.links_of(session_id=sid)
    host = await a.clinic.link("host", practitioner_id=session["practitioner"]["practitioner_id"])
    clock.set(moment(session))
    for replica in (a, b):
        for link in links:
            await allowed(replica.clinic, link)
        await allowed(replica.clinic, host, session_id=sid)

    await a.clinic.clinic.ok("POST", f"/v1/sessions/{sid}/cancel", json={"reason": "ill"})
    await replicas.committed("SELECT status = 'cancelled' FROM sessions WHERE session_id = $1", sid)
    for replica in (b, a):
        for link in links:
            await refused(replica.clinic, link, 410, "revoked")
        await refused(replica.clinic, host, 410, "revoked", session_id=sid)


async def test_a_cancelled_session_leaves_its_room_at_once_on_every_replica(
    replicas: Replicas, clock: Clock
) -> None:
    a, b = replicas.a, replicas.b
    c = a.clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room, link = await a.clinic.client_room(practitioner, client)
    session = await c.session(
        practitioner, [client], video_mode="client_room", room_id=room["room_id"]
    )
    sid = session["session_id"]
    await replicas.committed("SELECT count(*) FROM sessions WHERE session_id = $1", sid)
    clock.set(moment(session))
    for replica in (a, b):
        assert (await allowed(replica.clinic, link))["session_id"] == sid

    await c.ok("POST", f"/v1/sessions/{sid}/cancel", json={"reason": "ill"})
    await replicas.committed("SELECT status = 'cancelled' FROM sessions WHERE session_id = $1", sid)
    for replica in (b, a):
        assert (await allowed(replica.clinic, link))["session_id"] is None  # the room stays


# -- round trips -------------------------------------------------------------------------------


class Counted:
    """The pool, counting the queries that go through it."""

    def __init__(self, pool: "asyncpg.Pool[Any]") -> None:
        self.pool = pool
        self.queries = 0

    async def fetchrow(self, query: str, *args: object) -> Any:
        self.queries += 1
        return await self.pool.fetchrow(query, *args)

    async def fetch(self, query: str, *args: object) -> Any:
        self.queries += 1
        return await self.pool.fetch(query, *args)


async def queries_of(replica: Replica, db: Counted, **request: Any) -> tuple[int, Decision]:
    before = db.queries
    asked = ResolveRequest(**request)
    decision = await resolve(replica.links, replica.ctx, cast(Queryable, db), asked)
    return db.queries - before, decision


def token_of(link: dict[str, Any]) -> str:
    return str(link["url"]).rsplit("/", 1)[1]


async def test_a_resolution_served_from_the_cache_asks_postgres_nothing(
    replicas: Replicas, clock: Clock
) -> None:
    a = replicas.a
    links, db = a.links, Counted(replicas.db)
    session = await shared_session(a.clinic)
    sid = session["session_id"]
    practitioner = session["practitioner"]
    guest = await a.clinic.link("guest", session_id=sid)
    host = await a.clinic.link("host", practitioner_id=practitioner["practitioner_id"])
    clock.set(moment(session))
    await links.cache.synced()  # no notice of the setup's commits still to come

    # A token: one query, then none.
    assert (await queries_of(a, db, token=token_of(guest)))[0] == 1
    count, decision = await queries_of(a, db, token=token_of(guest))
    assert (count, decision.allowed) == (0, True)

    # A host naming one of their sessions: the link, then the session; then nothing.
    assert (await queries_of(a, db, token=token_of(host), session_id=sid))[0] == 2
    count, decision = await queries_of(a, db, token=token_of(host), session_id=sid)
    assert (count, decision.allowed, str(decision.session_id)) == (0, True, sid)

    # A readable room link: the link, the room's sessions, its title; then nothing.
    path = {"clinic_slug": a.clinic.clinic.slug, "room_slug": practitioner["room_slug"]}
    assert (await queries_of(a, db, **path))[0] == 3
    count, decision = await queries_of(a, db, **path)
    assert (count, decision.allowed) == (0, True)

    # An unknown token is asked every time and never kept.
    kept = len(links.cache.by_token)
    for _ in range(3):
        count, decision = await queries_of(a, db, token="x" * 43)
        assert (count, decision.allowed) == (1, False)
    assert len(links.cache.by_token) == kept


async def test_a_cached_room_ties_the_call_to_the_session_open_at_each_moment(
    replicas: Replicas, clock: Clock
) -> None:
    a = replicas.a
    db = Counted(replicas.db)
    c = a.clinic.clinic
    practitioner = await c.practitioner()
    client = await c.client()
    room, link = await a.clinic.client_room(practitioner, client)
    first = await c.session(
        practitioner, [client], video_mode="client_room", room_id=room["room_id"]
    )
    start = moment(first, hours=2)
    second = await c.session(
        practitioner,
        [client],
        video_mode="client_room",
        room_id=room["room_id"],
        starts_at=start.isoformat(),
        ends_at=(start + timedelta(minutes=50)).isoformat(),
    )
    for s in (first, second):
        await replicas.committed(
            "SELECT count(*) FROM sessions WHERE session_id = $1", s["session_id"]
        )
    # Committed is not yet noticed: a late notice of those commits would drop what the first
    # resolve reads (a query more on the next). Every notice sent before this has arrived.
    await a.links.cache.synced()
    token = token_of(link)

    clock.set(moment(first, minutes=-30))  # before the first opens (10 minutes early)
    count, decision = await queries_of(a, db, token=token)  # the link, sessions, title
    assert (count, decision.allowed, decision.session_id) == (3, True, None)
    # From then on the room's sessions come from the cache; which one is open is decided at
    # each moment.
    for at, expected in (
        (moment(first, minutes=-10), first),
        (moment(first, "ends_at", minutes=14), first),
        (moment(first, "ends_at", minutes=15), None),
        (moment(second, minutes=-10), second),
        (moment(second, "ends_at", minutes=20), None),
    ):
        clock.set(at)
        count, decision = await queries_of(a, db, token=token)
        session_id = str(decision.session_id) if decision.session_id else None
        assert (count, session_id) == (0, expected and expected["session_id"]), at
    # Earlier than the read: read again, not answered from what was read for later.
    clock.set(moment(first, minutes=-40))
    count, decision = await queries_of(a, db, token=token)
    assert (count, decision.session_id) == (1, None)
