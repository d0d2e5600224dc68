"""Consumers against real NATS and Postgres: exactly-once effects and dead letters."""

import asyncio
import base64
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS

from contracts.deadletter import DeadLetter
from runtime.consumer import Consumer, attach
from runtime.context import ServiceContext
from runtime.embedded import NatsServer
from runtime.eventstore import EventStore
from runtime.settings import RuntimeSettings
from runtime.streams import DEADLETTER_STREAM, deadletter_stream, ensure_stream, service_stream
from tests.conftest import migrated_pool
from tests.support import (
    NoteTaken,
    envelope_for,
    eventually,
    notes_consumer,
    publish_envelope,
    stream_messages,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def source(nc: NATS) -> str:
    name = f"s{uuid.uuid4().hex[:12]}"
    js = nc.jetstream()
    await ensure_stream(js, service_stream(name))
    await ensure_stream(js, deadletter_stream())
    return name


@contextlib.asynccontextmanager
async def consuming(
    consumer: Consumer, service: str, pool: "asyncpg.Pool[Any]", nc: NATS, url: str
) -> AsyncIterator[None]:
    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, service), nc)
    broker = NatsBroker(url)
    attach(broker, consumer, service=service, context=context)
    await broker.start()
    try:
        yield
    finally:
        await broker.stop()


async def effects(pool: "asyncpg.Pool[Any]") -> dict[str, int]:
    rows = await pool.fetch("SELECT event_id::text, count(*) AS n FROM effects GROUP BY event_id")
    return {r["event_id"]: r["n"] for r in rows}


async def test_each_event_has_its_effect_once_even_when_published_twice(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    envelopes = [envelope_for(NoteTaken(n=i), service=source, position=i + 1) for i in range(5)]
    for envelope in envelopes:
        await publish_envelope(js, envelope)
    # The same event again under another message id, as after a republish past the window.
    await publish_envelope(js, envelopes[0], msg_id=f"again-{envelopes[0].event_id}")

    async with consuming(notes_consumer(source), service_name, pool, nc, nats_server.url):

        async def all_handled() -> bool:
            inbox = await pool.fetchval("SELECT count(*) FROM inbox")
            return bool(inbox == 5 and len(await effects(pool)) == 5)

        await eventually(all_handled, what="5 events handled")
        await asyncio.sleep(0.5)
    assert await effects(pool) == {str(e.event_id): 1 for e in envelopes}


async def test_unreadable_and_failing_messages_are_dead_lettered_and_the_rest_handled(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    subject = f"antechamber.c_test.{source}.NoteTaken"
    await js.publish(subject, b"{not json", headers={"Nats-Msg-Id": "garbage-1"})
    failing = envelope_for(NoteTaken(n=-1), service=source, position=1)
    await publish_envelope(js, failing)
    good = envelope_for(NoteTaken(n=7), service=source, position=2)
    await publish_envelope(js, good)

    async def letters() -> list[DeadLetter]:
        found = []
        for message in await stream_messages(js, DEADLETTER_STREAM):
            if message.subject == f"antechamber.deadletter.{service_name}":
                found.append(DeadLetter.model_validate_json(message.data))
        return found

    async with consuming(
        notes_consumer(source, max_deliver=3), service_name, pool, nc, nats_server.url
    ):
        await eventually(lambda: _has_effect(pool, good.event_id), what="the good event handled")

        async def two_letters() -> bool:
            return len(await letters()) == 2

        await eventually(two_letters, what="two dead letters")
        late = envelope_for(NoteTaken(n=8), service=source, position=3)
        await publish_envelope(js, late)
        await eventually(lambda: _has_effect(pool, late.event_id), what="a later event handled")

    by_kind = {letter.kind: letter for letter in await letters()}
    unreadable = by_kind["unparseable"]
    assert unreadable.reason.startswith("not a valid event envelope: Invalid JSON")
    assert base64.b64decode(unreadable.payload_b64) == b"{not json"
    assert unreadable.deliveries == 1
    failed = by_kind["handler_failed"]
    assert failed.reason.startswith("handler failed 3 times: RuntimeError: negative notes")
    assert failed.event_id == str(failing.event_id)
    assert failed.deliveries == 3
    assert str(failing.event_id) not in await effects(pool)


async def _has_effect(pool: "asyncpg.Pool[Any]", event_id: uuid.UUID) -> bool:
    return str(event_id) in await effects(pool)


async def test_a_consumer_killed_after_commit_before_ack_has_each_effect_once(
    postgres_dsn: str, service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    pool = await migrated_pool(postgres_dsn, service_name, size=4)
    js = nc.jetstream()
    envelopes = [envelope_for(NoteTaken(n=i), service=source, position=i + 1) for i in range(3)]
    for envelope in envelopes:
        await publish_envelope(js, envelope)
    command = [
        sys.executable,
        "-m",
        "tests.procs.consumer_proc",
        postgres_dsn,
        service_name,
        source,
    ]
    try:
        crashing = subprocess.run(
            [*command, nats_server.url, "crash-after-commit"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert crashing.returncode == -9, crashing.stderr.decode()[-2000:]
        # Its effect committed, but NATS never heard an ack.
        assert len(await effects(pool)) == 1
        survivor = subprocess.Popen(
            [*command, nats_server.url], cwd=ROOT, stderr=subprocess.DEVNULL
        )
        try:

            async def all_handled() -> bool:
                return len(await effects(pool)) == 3

            await eventually(all_handled, what="all three handled")
            await asyncio.sleep(3.0)  # past ack_wait: a missing ack would show as a second effect
        finally:
            survivor.terminate()
            survivor.wait()
        assert await effects(pool) == {str(e.event_id): 1 for e in envelopes}
    finally:
        await pool.close()
