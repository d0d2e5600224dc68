"""What a knock costs in Postgres round trips, counted on each replica's own pool.

A knock on a room the guest's replica follows records the connection and appends: two
statements, no read of the room's events. The host's replica, told by the announcement,
sends nothing to Postgres at all. Sweeps are slowed down out of the way of the counts.
"""

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from runtime.embedded import NatsServer
from services.signaling.calls import Signaling
from tests.links.conftest import Clock
from tests.signaling.conftest import (
    Calls,
    calls_platform,
    host_in_call,
    knocking_guest,
    practitioner_room,
    query,
)
from tests.support import eventually

STATEMENTS = ("execute", "executemany", "fetch", "fetchmany", "fetchrow", "fetchval")


class CountingConnection:
    """A pooled connection whose statements are noted before they are sent."""

    def __init__(self, conn: Any, sent: list[str]) -> None:
        self._conn = conn
        self._sent = sent

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._conn, name)
        if name not in STATEMENTS:
            if name == "transaction":
                self._sent.append("BEGIN")
            return found

        def sending(sql: str, *args: Any, **kwargs: Any) -> Any:
            self._sent.append(sql)
            return found(sql, *args, **kwargs)

        return sending


class CountingPool(CountingConnection):
    """A replica's pool, counting what goes through it (directly or on a connection)."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[CountingConnection]:
        async with self._conn.acquire() as conn:
            yield CountingConnection(conn, self._sent)


@contextlib.contextmanager
def counted(signaling: Signaling) -> Iterator[list[str]]:
    """The SQL a replica sends meanwhile, each statement one round trip (asyncpg prepares a
    statement on a connection's first use of it: one more, once)."""
    sent: list[str] = []
    ctx = signaling.ctx
    pool = ctx.pool
    ctx.pool = ctx.store.pool = CountingPool(pool, sent)  # type: ignore[assignment]
    try:
        yield sent
    finally:
        ctx.pool = ctx.store.pool = pool


def kinds(sent: list[str]) -> list[str]:
    def kind(sql: str) -> str:
        if "append_events" in sql:
            return "append"
        if "INSERT INTO connections" in sql:
            return "connection"
        if "FROM events" in sql:
            return "read room"
        return sql

    return sorted(kind(sql) for sql in sent)


@pytest.fixture
async def calls(postgres_dsn: str, nats_server: NatsServer, clock: Clock) -> AsyncIterator[Calls]:
    async with calls_platform(postgres_dsn, nats_server.url, clock, sweep_s=3600) as platform:
        yield platform


async def test_a_knock_reads_the_room_once_then_only_records_and_appends(calls: Calls) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    on_a, on_b = calls.signalings

    # The first guest on replica B: B reads the room (while it records the connection).
    with counted(on_a) as at_a, counted(on_b) as at_b:
        _, welcome = await knocking_guest(calls, room, "Grace", replica=1)
        await host.next("knock", participant_id=welcome["participant_id"])
    assert kinds(at_b) == ["append", "connection", "read room"]
    assert kinds(at_a) == []

    # A second guest on B, which follows the room now: no read.
    with counted(on_a) as at_a, counted(on_b) as at_b:
        _, welcome = await knocking_guest(calls, room, "Ada", replica=1)
        await host.next("knock", participant_id=welcome["participant_id"])
    assert kinds(at_b) == ["append", "connection"]
    assert kinds(at_a) == []


async def test_a_replica_still_follows_a_room_its_last_guest_just_left(
    calls: Calls, postgres_dsn: str
) -> None:
    room = await practitioner_room(calls)
    host = await host_in_call(calls, room, replica=0)
    on_a, on_b = calls.signalings
    first, welcome = await knocking_guest(calls, room, "Grace", replica=1)
    await first.send("leave")
    await first.closed()

    async def forgotten() -> bool:
        rows = await query(
            postgres_dsn,
            "SELECT 1 FROM signaling.connections WHERE participant_id = $1",
            welcome["participant_id"],
        )
        return not rows and not on_b.replica.background

    await eventually(forgotten, what="the first guest's connection forgotten")
    await host.latest("room", waiting=[])

    with counted(on_a) as at_a, counted(on_b) as at_b:
        _, welcome = await knocking_guest(calls, room, "Ada", replica=1)
        await host.next("knock", participant_id=welcome["participant_id"])
    assert kinds(at_b) == ["append", "connection"]
    assert kinds(at_a) == []
