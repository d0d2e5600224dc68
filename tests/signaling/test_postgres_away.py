"""A replica whose Postgres does not answer (restarting, failing over) says so, in words a
client acts on: a join is refused with 503 ``unavailable`` and a ``retry_after_s``, a command
gets the error ``unavailable``; neither is an ``internal`` error, and the socket of someone
already in stays open."""

from uuid import uuid4

from runtime.embedded import NatsServer
from tests.signaling.conftest import Calls, host_in_call, practitioner_room
from tests.signaling.test_resilience import extra_replica


async def test_a_replica_without_postgres_asks_to_try_again(
    calls: Calls, postgres_dsn: str, nats_server: NatsServer
) -> None:
    room = await practitioner_room(calls)
    async with extra_replica(calls, postgres_dsn, nats_server.url, f"sx{uuid4().hex[:8]}") as app:
        host = await host_in_call(calls, room, replica=2)
        # Its sessions with Postgres are gone, as when the server shuts down.
        app.state.runtime.context.pool.terminate()

        await host.send("lock")
        error = await host.next("error")
        assert error["code"] == "unavailable", error
        assert error["message"].endswith(".")

        guest = await calls.join(room.room_url, "Grace", replica=2)
        refused = await guest.next("refused")
        assert (refused["reason"], refused["status"]) == ("unavailable", 503), refused
        assert refused["retry_after_s"] > 0
        assert await guest.closed() is not None
        assert host.close_code is None  # the host's socket stays: only that frame failed
