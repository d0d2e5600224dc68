"""Event store and relay figures, each next to a baseline measured in the same run.

    python bench/eventstore.py [--quick] [--results PATH]

1. Append rate through ``EventStore.append`` (optimistic concurrency + commit-order lock +
   NOTIFY) against plain asyncpg INSERTs of the same rows into an identical table without
   the lock. Goal: ratio >= 0.7.
2. Relay lag, commit -> JetStream ack, p50/p99 with events appended at a steady 1,000/s.
   Baseline: the bare JetStream publish round trip (publish, await ack) at the same rate.
   Goal: p99 <= 20 ms.
3. Consumer drain rate: a stream prefilled with 10,000 events, drained by a durable consumer
   whose handler makes one insert (continuous pull, batched inbox transactions), against a
   bare nats-py continuous pull of the same stream that only acknowledges. Goals: >= 5,000
   events/s and ratio >= 0.5.
4. An event appended in one service -> the effect committed by a consumer in another service
   (relay, JetStream, continuous pull, inbox transaction; the consumer in a process of its
   own, as the other service is), at 1,000 events/s for 30 s, p50/p99, and the backlog: the
   events whose effect was not committed 1 s after the load stopped. Goals: p50 <= 20 ms,
   p99 <= 100 ms, backlog 0.

It starts its own nats-server and Postgres (pgserver) in a temporary folder. With
``--results``, the figures are also appended there as JSON lines (``bench/results.py``); 4. has
no baseline of its own, so there it is 2.'s bare publish round trip, the floor of its first hop.
"""

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.js.api import ConsumerConfig  # noqa: E402

from bench.results import Figure, add_results_option, write_results  # noqa: E402
from bench.support import authenticate  # noqa: E402
from contracts.envelope import RawEnvelope  # noqa: E402
from runtime.consumer import ConsumerLoop  # noqa: E402
from runtime.context import ServiceContext  # noqa: E402
from runtime.db import create_pool  # noqa: E402
from runtime.embedded import EmbeddedPostgres, NatsServer  # noqa: E402
from runtime.eventstore import EventStore, RecordedEvent  # noqa: E402
from runtime.migrations import migrate, runtime_migrations  # noqa: E402
from runtime.relay import Relay  # noqa: E402
from runtime.service import connect_nats  # noqa: E402
from runtime.settings import RuntimeSettings  # noqa: E402
from runtime.streams import ensure_stream, service_stream, stream_name  # noqa: E402
from tests.support import (  # noqa: E402
    NOTES_MIGRATION,
    NoteTaken,
    envelope_for,
    notes_consumer,
)

CLINIC = "c_bench"
BENCH = "eventstore"
RATIO_GOAL = 0.7
RELAY_P99_GOAL = 0.020
DRAIN_GOAL = 5000.0
DRAIN_RATIO_GOAL = 0.5
E2E_P50_GOAL = 0.020
E2E_P99_GOAL = 0.100


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


async def schema_pool(dsn: str, name: str) -> Any:
    pool = await create_pool(dsn, name, size=12)
    async with pool.acquire() as conn:
        await migrate(conn, name, [*runtime_migrations(), NOTES_MIGRATION])
    return pool


async def append_rate(dsn: str, writers: int, per_writer: int) -> dict[str, float]:
    pool = await schema_pool(dsn, "bench_append")
    store = EventStore(pool, "bench_append")
    await pool.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
    row = NoteTaken(n=1).model_dump(mode="json")

    async def through_store(w: int) -> None:
        for i in range(per_writer):
            await store.append(f"s{w}-{i}", 0, [NoteTaken(n=1)], clinic_id=CLINIC)

    async def raw_insert(w: int) -> None:
        async with pool.acquire() as conn:
            for i in range(per_writer):
                await conn.execute(
                    "INSERT INTO raw_events (stream_id, version, event_id, type, schema_version, "
                    "clinic_id, occurred_at, correlation_id, data) "
                    "VALUES ($1, 1, $2, 'NoteTaken', 1, $3, now(), $4, $5)",
                    f"s{w}-{i}",
                    uuid.uuid4(),
                    CLINIC,
                    uuid.uuid4(),
                    row,
                )

    results = {}
    for name, work in (("raw asyncpg INSERT", raw_insert), ("EventStore.append", through_store)):
        started = time.perf_counter()
        await asyncio.gather(*(work(w) for w in range(writers)))
        results[name] = writers * per_writer / (time.perf_counter() - started)
    await pool.close()
    ratio = results["EventStore.append"] / results["raw asyncpg INSERT"]
    print(f"\n1. append rate, {writers} concurrent writers x {per_writer} single-event appends")
    for name, rate in results.items():
        print(f"   {name:<22} {rate:9.0f} events/s")
    print(f"   ratio                  {ratio:9.2f}x   (goal >= {RATIO_GOAL}x)")
    return results


async def paced(rate: float, count: int, action: Any) -> None:
    """Call ``action(i)`` ``count`` times at ``rate`` per second, without waiting on it."""
    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(i)))
    await asyncio.gather(*tasks)


async def relay_lag(
    dsn: str, nats_url: str, rate: float, seconds: float
) -> tuple[list[float], list[float]]:
    """Commit -> JetStream ack of each event, and the bare publish round trips (seconds)."""
    count = int(rate * seconds)
    pool = await schema_pool(dsn, "bench_relay")
    store = EventStore(pool, "bench_relay")
    nc = await connect_nats(nats_url, "bench")
    js = nc.jetstream()
    await ensure_stream(js, service_stream("bench_relay"))
    committed: dict[uuid.UUID, float] = {}
    acked: dict[uuid.UUID, float] = {}

    def on_acked(batch: Sequence[RecordedEvent]) -> None:
        now = time.perf_counter()
        for event in batch:
            acked[event.event_id] = now

    relay = Relay(dsn=dsn, service="bench_relay", nats=nc, on_acked=on_acked)
    task = asyncio.create_task(relay.run())
    await relay.leader.wait()

    async def append(i: int) -> None:
        recorded = await store.append(f"r-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC)
        committed[recorded[0].event_id] = time.perf_counter()

    await paced(rate, count, append)
    while len(acked) < count:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    lags = [acked[i] - committed[i] for i in committed]

    bare: list[float] = []

    async def publish(i: int) -> None:
        started = time.perf_counter()
        await js.publish(
            f"antechamber.{CLINIC}.bench_relay.Bare", b"{}", headers={"Nats-Msg-Id": f"bare-{i}"}
        )
        bare.append(time.perf_counter() - started)

    await paced(rate, count, publish)
    await nc.drain()
    await pool.close()
    print(f"\n2. relay lag at {rate:.0f} events/s for {seconds:.0f} s ({count} events)")
    print(f"   commit -> JetStream ack     p50 {ms(pct(lags, 50))}   p99 {ms(pct(lags, 99))}")
    print(f"   bare publish round trip     p50 {ms(pct(bare, 50))}   p99 {ms(pct(bare, 99))}")
    print(f"   goal: relay p99 <= {RELAY_P99_GOAL * 1000:.0f} ms")
    return lags, bare


async def bare_drain(nc: Any, stream: str, durable: str, count: int, window: int) -> float:
    """Seconds for a bare nats-py continuous pull to receive and acknowledge ``count``."""
    js = nc.jetstream()
    await js.add_consumer(stream, ConsumerConfig(durable_name=durable, ack_wait=30))
    inbox = nc.new_inbox()
    done = asyncio.Event()
    received = 0
    requested = 0
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"

    async def ask() -> None:
        nonlocal requested
        if requested <= window // 2:
            wanted = window - requested
            body = json.dumps({"batch": wanted, "expires": 30_000_000_000}).encode()
            await nc.publish(next_subject, body, reply=inbox)
            requested += wanted

    async def arrived(msg: Any) -> None:
        nonlocal received, requested
        if not msg.data:
            return  # a status message
        requested -= 1
        received += 1
        await msg.ack()
        if received == count:
            done.set()
        await ask()

    subscription = await nc.subscribe(inbox, cb=arrived)
    started = time.perf_counter()
    await ask()
    await done.wait()
    elapsed = time.perf_counter() - started
    await subscription.unsubscribe()
    return elapsed


async def drain_rate(dsn: str, nats_url: str, count: int) -> dict[str, float]:
    """Events/s drained from a prefilled stream: our consumer, and a bare pull that acks."""
    pool = await schema_pool(dsn, "bench_drain")
    nc = await connect_nats(nats_url, "bench-drain")
    js = nc.jetstream()
    source = "bench_prefilled"
    await ensure_stream(js, service_stream(source))
    acks = []
    for i in range(count):
        envelope = envelope_for(NoteTaken(n=i), service=source, clinic_id=CLINIC, position=i + 1)
        subject = f"antechamber.{CLINIC}.{source}.NoteTaken"
        acks.append(
            await js.publish_async(
                subject,
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": str(envelope.event_id)},
            )
        )
    await asyncio.gather(*acks)
    results = {}
    seconds = await bare_drain(nc, stream_name(source), "bare", count, 256)
    results["bare nats-py pull, ack only"] = count / seconds

    handled = 0
    done = asyncio.Event()

    async def after_commit(_envelope: RawEnvelope) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, "bench_drain"), nc)
    loop = ConsumerLoop(
        notes_consumer(source), service="bench_drain", context=context, after_commit=after_commit
    )
    started = time.perf_counter()
    await loop.start()
    await done.wait()
    results["ConsumerLoop, one insert per event"] = count / (time.perf_counter() - started)
    await loop.stop()
    await nc.drain()
    await pool.close()
    ratio = results["ConsumerLoop, one insert per event"] / results["bare nats-py pull, ack only"]
    print(f"\n3. drain a prefilled stream of {count} events")
    for name, rate in results.items():
        print(f"   {name:<36} {rate:9.0f} events/s")
    print(
        f"   ratio {ratio:.2f}x   "
        f"(goals >= {DRAIN_GOAL:.0f} events/s, ratio >= {DRAIN_RATIO_GOAL}x)"
    )
    return results


async def sink(dsn: str, nats_url: str, count: int, out: Path) -> None:
    """The consuming service of part 4, in a process of its own: handles ``count`` events,
    then writes when each one's effect committed (``time.perf_counter``, the system-wide
    monotonic clock, so the two processes' readings compare)."""
    pool = await schema_pool(dsn, "bench_sink")
    nc = await connect_nats(nats_url, "bench-e2e-sink")
    effected: dict[str, float] = {}
    done = asyncio.Event()

    async def after_commit(envelope: Any) -> None:
        effected[str(envelope.event_id)] = time.perf_counter()
        if len(effected) >= count:
            done.set()

    context = ServiceContext(RuntimeSettings(), pool, EventStore(pool, "bench_sink"), nc)
    loop = ConsumerLoop(
        notes_consumer("bench_source"),
        service="bench_sink",
        context=context,
        after_commit=after_commit,
    )
    await loop.start()
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(count / 100 + 60):
            await done.wait()
    await loop.stop()
    await asyncio.to_thread(out.write_text, json.dumps(effected))
    await nc.drain()
    await pool.close()


async def end_to_end(
    dsn: str, nats_url: str, rate: float, seconds: float
) -> tuple[list[float], int, int]:
    """Latencies (s), the events delivered, and the backlog 1 s after the load stops."""
    count = int(rate * seconds)
    source_pool = await schema_pool(dsn, "bench_source")
    await (await schema_pool(dsn, "bench_sink")).close()  # migrated before the sink starts
    source = EventStore(source_pool, "bench_source")
    nc = await connect_nats(nats_url, "bench-e2e")
    await ensure_stream(nc.jetstream(), service_stream("bench_source"))
    relay = Relay(dsn=dsn, service="bench_source", nats=nc)
    relay_task = asyncio.create_task(relay.run())
    committed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="acb-sink-") as folder:
        out = Path(folder) / "effected.json"
        sink_process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--sink",
            dsn,
            nats_url,
            str(count),
            str(out),
            stdout=asyncio.subprocess.PIPE,
        )
        assert sink_process.stdout is not None
        await sink_process.stdout.readline()  # "ready"
        await relay.leader.wait()

        async def append(i: int) -> None:
            recorded = await source.append(f"e-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC)
            committed[str(recorded[0].event_id)] = time.perf_counter()

        await paced(rate, count, append)
        load_stopped = time.perf_counter()
        await sink_process.wait()
        effected: dict[str, float] = json.loads(await asyncio.to_thread(out.read_text))
    relay_task.cancel()
    await asyncio.gather(relay_task, return_exceptions=True)
    await nc.drain()
    await source_pool.close()
    backlog = sum(1 for at in effected.values() if at > load_stopped + 1.0)
    backlog += count - len(effected)
    latencies = [effected[i] - committed[i] for i in committed if i in effected]
    print(f"\n4. appended in one service -> effect committed in another, {rate:.0f} events/s")
    print(
        f"   {len(latencies)}/{count} delivered   p50 {ms(pct(latencies, 50))}"
        f"   p99 {ms(pct(latencies, 99))}   mean {ms(statistics.mean(latencies))}"
        f"   backlog 1 s after the load: {backlog}"
    )
    print(
        f"   goals: p50 <= {E2E_P50_GOAL * 1000:.0f} ms, p99 <= {E2E_P99_GOAL * 1000:.0f} ms, "
        "backlog 0"
    )
    return latencies, len(latencies), backlog


def figures(
    rates: dict[str, float],
    lags: list[float],
    bare: list[float],
    drained: dict[str, float],
    e2e: tuple[list[float], int, int],
    relay_rate: float,
    e2e_rate: float,
) -> list[Figure]:
    """The printed headline figures, each with its baseline, as records."""
    ratio = rates["EventStore.append"] / rates["raw asyncpg INSERT"]
    records = [
        Figure(
            BENCH,
            "EventStore.append rate",
            rates["EventStore.append"],
            "events/s",
            "raw asyncpg INSERT rate",
            rates["raw asyncpg INSERT"],
            goal=f"ratio >= {RATIO_GOAL}",
            met=ratio >= RATIO_GOAL,
        )
    ]
    for p in (50, 99):
        goal = p == 99
        records.append(
            Figure(
                BENCH,
                f"relay lag p{p}, commit -> JetStream ack",
                pct(lags, p) * 1000,
                "ms",
                f"bare publish round trip p{p}",
                pct(bare, p) * 1000,
                goal=f"<= {RELAY_P99_GOAL * 1000:.0f} ms" if goal else None,
                met=pct(lags, p) <= RELAY_P99_GOAL if goal else None,
            )
        )
    ours = drained["ConsumerLoop, one insert per event"]
    floor = drained["bare nats-py pull, ack only"]
    records += [
        Figure(
            BENCH,
            "consumer drain rate, prefilled stream, one insert per event",
            ours,
            "events/s",
            "bare nats-py continuous pull that only acks",
            floor,
            goal=f"ratio >= {DRAIN_RATIO_GOAL}",
            met=ours / floor >= DRAIN_RATIO_GOAL,
        ),
        Figure(
            BENCH,
            "consumer drain rate (absolute)",
            ours,
            "events/s",
            "bare nats-py continuous pull that only acks",
            floor,
            goal=f">= {DRAIN_GOAL:.0f} events/s",
            met=ours >= DRAIN_GOAL,
        ),
    ]
    latencies, _delivered, backlog = e2e
    for p, goal_s in ((50, E2E_P50_GOAL), (99, E2E_P99_GOAL)):
        records.append(
            Figure(
                BENCH,
                f"appended in one service -> effect committed in another, p{p}, "
                f"{e2e_rate:.0f} events/s",
                pct(latencies, p) * 1000,
                "ms",
                f"bare publish round trip p{p} (part 2, {relay_rate:.0f} events/s)",
                pct(bare, p) * 1000,
                goal=f"<= {goal_s * 1000:.0f} ms",
                met=pct(latencies, p) <= goal_s,
            )
        )
    records.append(
        Figure(
            BENCH,
            "backlog 1 s after the load stops",
            backlog,
            "events",
            None,
            None,
            goal="0",
            met=backlog == 0,
        )
    )
    return records


async def main(quick: bool, results: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="acb-") as folder:
        nats = NatsServer(Path(folder) / "nats", auth=authenticate(Path(folder))).start()
        postgres = EmbeddedPostgres(Path(folder) / "pg").start()
        try:
            print(f"Antechamber event-store benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
            if quick:
                rates = await append_rate(postgres.dsn, writers=4, per_writer=50)
                relay_rate = 200
                lags, bare = await relay_lag(postgres.dsn, nats.url, rate=relay_rate, seconds=1)
                drained = await drain_rate(postgres.dsn, nats.url, count=500)
                e2e_rate = 100
                e2e = await end_to_end(postgres.dsn, nats.url, rate=e2e_rate, seconds=1)
            else:
                rates = await append_rate(postgres.dsn, writers=8, per_writer=1000)
                relay_rate = 1000
                lags, bare = await relay_lag(postgres.dsn, nats.url, rate=relay_rate, seconds=10)
                drained = await drain_rate(postgres.dsn, nats.url, count=10_000)
                e2e_rate = 1000
                e2e = await end_to_end(postgres.dsn, nats.url, rate=e2e_rate, seconds=30)
            write_results(results, figures(rates, lags, bare, drained, e2e, relay_rate, e2e_rate))
        finally:
            nats.stop()
            postgres.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sink"]:
        sink_dsn, sink_nats, sink_count, sink_out = sys.argv[2:6]
        asyncio.run(sink(sink_dsn, sink_nats, int(sink_count), Path(sink_out)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    add_results_option(parser)
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.results))
