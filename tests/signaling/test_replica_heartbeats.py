"""Replicas' heartbeats after Postgres was away: nobody is taken for dead because of it.

While Postgres cannot be written (restarting, failing over), no replica can write its
heartbeat; when it can again, every other replica's heartbeat is just as old. A replica that
judged the others at once would end the places of everyone connected to a replica whose
Postgres session came back a moment later. Here each replica's heartbeat is held up by a lock
on its ``replicas`` row, as a statement waits while Postgres is away, and the two come back
one second apart.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from tests.signaling.conftest import (
    Calls,
    host_and_admitted_guest,
    room_events,
)
from tests.signaling.test_resilience import connected

AWAY_S = 3.0
"""Longer than the test replicas' ``replica_timeout_s`` (2 s)."""


@contextlib.asynccontextmanager
async def heartbeat_held(dsn: str, replica: str) -> AsyncIterator[None]:
    """The replica's heartbeat waits until the block ends (its row is locked)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM signaling.replicas WHERE replica_id = $1 FOR UPDATE", replica
            )
            yield
    finally:
        await conn.close()


async def test_replicas_back_from_a_postgres_outage_do_not_end_each_others_places(
    calls: Calls, postgres_dsn: str
) -> None:
    call = await host_and_admitted_guest(calls, host_replica=0, guest_replica=1)
    first, second = (s.settings.replica_id for s in calls.signalings)
    async with heartbeat_held(postgres_dsn, second):
        async with heartbeat_held(postgres_dsn, first):
            await asyncio.sleep(AWAY_S)
        # The first replica writes again; the second one's heartbeat is 3 s old.
        await asyncio.sleep(1.0)
    await asyncio.sleep(AWAY_S)  # more than a timeout of both writing again

    view = await call.host.latest("room", participants=lambda p: len(p) == 2)
    assert connected(view["participants"], call.guest_id) is True
    kinds = [kind for kind, _ in await room_events(postgres_dsn, str(call.welcome["room_id"]))]
    assert "ParticipantDisconnected" not in kinds
    assert call.guest.close_code is None  # the guest's socket was never touched
