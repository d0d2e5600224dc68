"""The relay against real Postgres and nats-server: order, leadership, crashes, outages."""

import asyncio
import contextlib
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.envelope import RawEnvelope
from runtime.embedded import NatsServer
from runtime.eventstore import EventStore
from runtime.relay import POSITION_HEADER, Relay, republish
from runtime.service import connect_nats
from runtime.streams import stream_name
from tests.support import NoteTaken, eventually, start_nats, stream_count, stream_messages

CLINIC = "c_relay"
ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(relay.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def relay_until_published(dsn: str, service: str, nc: NATS, count: int) -> None:
    """Run a relay until the stream holds ``count`` events, then stop it."""
    js = nc.jetstream()
    async with running(Relay(dsn=dsn, service=service, nats=nc)):
        await eventually(lambda: _has(js, service, count), what=f"{count} events in the stream")


async def append_many(store: EventStore, count: int, prefix: str = "s") -> list[uuid.UUID]:
    ids = []
    for i in range(count):
        recorded = await store.append(
            f"{prefix}-{i % 7}-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC
        )
        ids.extend(e.event_id for e in recorded)
    return ids


def assert_exactly(messages: list[Any], ids: list[uuid.UUID]) -> None:
    msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
    positions = [int(m.headers[POSITION_HEADER]) for m in messages]
    assert len(msg_ids) - len(set(msg_ids)) == 0, "duplicates in the stream"
    missing = {str(i) for i in ids} - set(msg_ids)
    assert len(missing) == 0, f"{len(missing)} events missing from the stream"
    assert len(messages) == len(ids)
    assert positions == sorted(positions), "published out of commit order"


async def test_relay_publishes_every_event_in_order_with_its_id(
    postgres_dsn: str, store: EventStore, service_name: str, nc: NATS, pool: "asyncpg.Pool[Any]"
) -> None:
    ids = await append_many(store, 40)
    js = nc.jetstream()
    async with running(Relay(dsn=postgres_dsn, service=service_name, nats=nc)):
        await eventually(lambda: _has(js, service_name, 40), what="40 events in the stream")
        ids += await append_many(store, 10, prefix="later")  # woken by NOTIFY
        await eventually(lambda: _has(js, service_name, 50), what="50 events in the stream")

    messages = await stream_messages(js, stream_name(service_name))
    assert_exactly(messages, ids)
    first = messages[0]
    assert first.subject == f"antechamber.{CLINIC}.{service_name}.NoteTaken"
    envelope = RawEnvelope.model_validate_json(first.data)
    assert (envelope.event_id, envelope.data, envelope.service) == (ids[0], {"n": 0}, service_name)
    assert first.headers["traceparent"].startswith("00-")
    checkpoint = await pool.fetchval("SELECT position FROM relay_checkpoints")
    assert checkpoint == await store.last_position()


async def _has(js: Any, service: str, count: int) -> bool:
    return await stream_count(js, service) >= count


async def test_a_second_relay_waits_and_takes_over_when_the_leader_stops(
    postgres_dsn: str, store: EventStore, service_name: str, nc: NATS
) -> None:
    relays = [Relay(dsn=postgres_dsn, service=service_name, nats=nc) for _ in range(2)]
    js = nc.jetstream()
    async with running(relays[0]) as first_task, running(relays[1]) as second_task:

        async def someone_leads() -> bool:
            return any(r.leader.is_set() for r in relays)

        await eventually(someone_leads, what="one relay leading")
        await asyncio.sleep(0.5)
        assert [r.leader.is_set() for r in relays].count(True) == 1
        leader = 0 if relays[0].leader.is_set() else 1
        ids = await append_many(store, 10)
        await eventually(lambda: _has(js, service_name, 10), what="10 events")

        (first_task, second_task)[leader].cancel()
        await eventually(_is_set(relays[1 - leader].leader), what="the other relay taking over")
        ids += await append_many(store, 10, prefix="after")
        await eventually(lambda: _has(js, service_name, 20), what="20 events")
    assert_exactly(await stream_messages(js, stream_name(service_name)), ids)


def _is_set(event: asyncio.Event) -> Any:
    async def check() -> bool:
        return event.is_set()

    return check


async def test_a_relay_without_checkpoint_resumes_after_the_streams_last_event(
    postgres_dsn: str, store: EventStore, service_name: str, nc: NATS, pool: "asyncpg.Pool[Any]"
) -> None:
    await append_many(store, 5)
    await relay_until_published(postgres_dsn, service_name, nc, 5)
    await pool.execute("DELETE FROM relay_checkpoints")
    relay = Relay(dsn=postgres_dsn, service=service_name, nats=nc)
    async with running(relay):
        await eventually(_is_set(relay.leader), what="leading")
        assert relay.position == await store.last_position()


async def test_republish_refills_a_lost_stream(
    postgres_dsn: str, store: EventStore, service_name: str, nc: NATS, pool: "asyncpg.Pool[Any]"
) -> None:
    ids = await append_many(store, 30)
    await relay_until_published(postgres_dsn, service_name, nc, 30)
    js = nc.jetstream()
    await js.delete_stream(stream_name(service_name))

    assert await republish(pool, js, service_name) == 30
    assert_exactly(await stream_messages(js, stream_name(service_name)), ids)
    # Within the duplicate window a second republish adds nothing.
    await republish(pool, js, service_name, from_position=10)
    assert await stream_count(js, service_name) == 30


@pytest.mark.slow
async def test_relay_killed_about_once_a_second_during_10k_appends(
    postgres_dsn: str,
    service_name: str,
    nats_server: NatsServer,
    nc: NATS,
    pool: "asyncpg.Pool[Any]",
) -> None:
    store = EventStore(pool, service_name)
    command = [
        sys.executable,
        "-m",
        "tests.procs.relay_proc",
        postgres_dsn,
        service_name,
        nats_server.url,
    ]

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    relay = spawn()
    kills = 0
    writing = True
    ids: list[uuid.UUID] = []

    async def chaos() -> None:
        nonlocal relay, kills
        while writing:
            await asyncio.sleep(random.uniform(0.7, 1.3))
            relay.kill()
            await asyncio.to_thread(relay.wait)
            kills += 1
            relay = spawn()

    async def writer(w: int) -> None:
        for i in range(1250):  # paced to about 1,000 appends a second over ~10 s
            recorded = await store.append(f"w{w}-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC)
            ids.extend(e.event_id for e in recorded)
            await asyncio.sleep(0.007)

    killer = asyncio.create_task(chaos())
    try:
        await asyncio.gather(*(writer(w) for w in range(8)))
        writing = False
        await killer
        js = nc.jetstream()
        await eventually(lambda: _has(js, service_name, 10_000), timeout=120, what="10,000 events")
        await asyncio.sleep(1.0)  # anything extra would show now
        messages = await stream_messages(js, stream_name(service_name))
    finally:
        writing = False
        relay.kill()
        relay.wait()
    assert kills >= 5, f"the relay was killed only {kills} times"
    assert len(ids) == 10_000
    assert_exactly(messages, ids)


@pytest.mark.slow
async def test_nats_stopped_for_5s_mid_traffic_then_the_relay_catches_up(
    postgres_dsn: str, service_name: str, short_tmp: Path, pool: "asyncpg.Pool[Any]"
) -> None:
    server = start_nats(short_tmp / f"nats-{service_name}")
    relay_nc = await connect_nats(server.url, "relay")
    store = EventStore(pool, service_name)
    ids: list[uuid.UUID] = []
    try:
        async with running(Relay(dsn=postgres_dsn, service=service_name, nats=relay_nc)):

            async def traffic() -> None:
                for i in range(1200):  # about 200 events a second for 6 s
                    recorded = await store.append(f"t-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC)
                    ids.extend(e.event_id for e in recorded)
                    await asyncio.sleep(0.005)

            async def outage() -> None:
                await asyncio.sleep(1.5)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(5.0)
                await asyncio.to_thread(server.start)

            await asyncio.gather(traffic(), outage())
            checker = await connect_nats(server.url, "checker")
            js = checker.jetstream()
            await eventually(lambda: _has(js, service_name, len(ids)), timeout=60, what="catch-up")
            await asyncio.sleep(0.5)
            messages = await stream_messages(js, stream_name(service_name))
            await checker.close()
    finally:
        await relay_nc.close()
        server.stop()
    assert_exactly(messages, ids)
