"""Consumers against real NATS and Postgres: exactly-once effects and dead letters."""

import asyncio
import base64
import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from contracts.deadletter import DeadLetter
from contracts.envelope import RawEnvelope
from runtime.consumer import Consumer, ConsumerLoop
from runtime.context import ServiceContext
from runtime.embedded import NatsServer
from runtime.eventstore import EventStore
from runtime.inbox import Retention, prune_inbox
from runtime.settings import RuntimeSettings
from runtime.streams import (
    DEADLETTER_STREAM,
    deadletter_stream,
    ensure_stream,
    service_stream,
    stream_name,
)
from tests.conftest import migrated_pool
from tests.support import (
    NoteStruck,
    NoteTaken,
    envelope_for,
    eventually,
    notes,
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
    loop = ConsumerLoop(consumer, service=service, context=context)
    await loop.start()
    try:
        yield
    finally:
        await loop.stop()


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


async def test_a_consumer_killed_after_a_batch_commit_has_each_effect_once(
    postgres_dsn: str, service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    envelopes = await published(nc, source, range(20))
    pool = await migrated_pool(postgres_dsn, service_name, size=4)
    arguments = ["-m", "tests.procs.consumer_proc", postgres_dsn, service_name, source]
    arguments += [nats_server.url, "batch=8"]

    async def consumer_process(*extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, *arguments, *extra, cwd=ROOT, stderr=asyncio.subprocess.DEVNULL
        )

    try:
        crashing = await consumer_process("crash-after-commit")
        assert await asyncio.wait_for(crashing.wait(), 60) == -9
        # A whole batch committed in one transaction; none of it was acknowledged.
        assert 1 <= len(await effects(pool)) <= 8
        survivor = await consumer_process()
        try:
            await eventually(
                lambda: _effect_count_is(pool, 20), what="all twenty handled after the crash"
            )
            await asyncio.sleep(3.0)  # past ack_wait: a missing ack would show as a second effect
        finally:
            survivor.terminate()
            await survivor.wait()
        assert await effects(pool) == {str(e.event_id): 1 for e in envelopes}
    finally:
        await pool.close()


async def published(nc: NATS, source: str, numbers: Iterable[int]) -> list[RawEnvelope]:
    """A NoteTaken for each number, published in order on ``source``'s stream."""
    js = nc.jetstream()
    envelopes = []
    for i, n in enumerate(numbers):
        envelopes.append(envelope_for(NoteTaken(n=n), service=source, position=i + 1))
        await publish_envelope(js, envelopes[-1])
    return envelopes


async def _effect_count_is(pool: "asyncpg.Pool[Any]", count: int) -> bool:
    return len(await effects(pool)) == count


async def test_batches_keep_stream_order_and_one_poison_message_holds_back_nothing(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    numbers = [*range(1, 40), -5, *range(40, 300)]
    await published(nc, source, numbers)
    consumer = notes_consumer(source, max_deliver=2, max_batch=32)
    async with consuming(consumer, service_name, pool, nc, nats_server.url):

        async def all_good_handled() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM effects") == len(numbers) - 1)

        await eventually(all_good_handled, what="every good event handled")
        letters: list[DeadLetter] = []

        async def dead_lettered() -> bool:
            if (await js.stream_info(DEADLETTER_STREAM)).state.messages:
                letters[:] = [
                    DeadLetter.model_validate_json(m.data)
                    for m in await stream_messages(js, DEADLETTER_STREAM)
                    if m.subject == f"antechamber.deadletter.{service_name}"
                ]
            return bool(letters)

        await eventually(dead_lettered, what="the poison message dead-lettered")
    handled = [r["n"] for r in await pool.fetch("SELECT n FROM effects ORDER BY id")]
    assert handled == [n for n in numbers if n >= 0]  # the order they were published in
    assert [letter.kind for letter in letters] == ["handler_failed"]
    assert letters[0].deliveries == 2


async def test_a_batch_handler_gets_each_run_of_its_events_in_order(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    runs: list[list[int]] = []

    async def record_run(_ctx: Any, conn: Any, events: Any) -> None:
        runs.append([event.n for event, _envelope in events])
        await conn.executemany(
            "INSERT INTO effects (event_id, n) VALUES ($1, $2)",
            [(envelope.event_id, event.n) for event, envelope in events],
        )

    consumer = Consumer(
        name="notes",
        source=source,
        registry=notes,
        handlers={"NoteStruck": strike},
        batch_handlers={"NoteTaken": record_run},
        max_batch=100,
    )
    js = nc.jetstream()
    events: list[Any] = [NoteTaken(n=1), NoteTaken(n=2), NoteStruck(reason="x"), NoteTaken(n=3)]
    for i, event in enumerate(events):
        await publish_envelope(js, envelope_for(event, service=source, position=i + 1))
    async with consuming(consumer, service_name, pool, nc, nats_server.url):

        async def handled() -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM effects") == 4)

        await eventually(handled, what="four effects")
    ordered = [r["n"] for r in await pool.fetch("SELECT n FROM effects ORDER BY id")]
    assert ordered == [1, 2, 0, 3]
    assert [n for run in runs for n in run] == [1, 2, 3]
    assert all(len(run) <= 2 for run in runs)  # a run never spans the NoteStruck between


async def strike(_ctx: Any, conn: Any, _event: NoteStruck, envelope: Any) -> None:
    await conn.execute("INSERT INTO effects (event_id, n) VALUES ($1, 0)", envelope.event_id)


async def test_the_inbox_stays_bounded_under_steady_traffic(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    consumer = notes_consumer(source, max_batch=16)
    retention = Retention(consumer.durable(service_name), stream_name(source), retention_s=0.2)
    sizes = []
    async with consuming(consumer, service_name, pool, nc, nats_server.url):
        for round_ in range(5):
            for i in range(50):
                n = round_ * 50 + i
                await publish_envelope(
                    js, envelope_for(NoteTaken(n=n), service=source, position=n + 1)
                )

            async def caught_up(expected: int = (round_ + 1) * 50) -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM effects") == expected)

            await eventually(caught_up, what="the round handled")
            await asyncio.sleep(0.5)  # older than the retention, and acknowledged
            await prune_inbox(pool, js, [retention])
            sizes.append(await pool.fetchval("SELECT count(*) FROM inbox"))
    assert max(sizes) < 50, sizes  # each round's rows went; 250 were handled


async def test_the_inbox_keeps_what_could_still_be_redelivered(
    pool: "asyncpg.Pool[Any]", service_name: str, source: str, nc: NATS
) -> None:
    js = nc.jetstream()
    consumer = notes_consumer(source)
    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, service_name), nc)
    loop = ConsumerLoop(consumer, service=service_name, context=context)
    await loop.declare()  # the durable consumer exists, but nothing was acknowledged
    await pool.execute(
        "INSERT INTO inbox (consumer, event_id, stream_seq, handled_at) "
        "VALUES ($1, gen_random_uuid(), 1, now() - interval '1 day'), "
        "($1, gen_random_uuid(), NULL, now() - interval '1 day'), "
        "($1, gen_random_uuid(), NULL, now())",
        consumer.durable(service_name),
    )
    await publish_envelope(js, envelope_for(NoteTaken(n=1), service=source))
    retention = Retention(consumer.durable(service_name), stream_name(source), retention_s=60)
    assert await prune_inbox(pool, js, [retention]) == 1  # only the old row without a sequence
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 2
    assert consumer.retention_s(RuntimeSettings()) > 120  # past the duplicate window
