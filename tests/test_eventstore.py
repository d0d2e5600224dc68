"""The event store against a real Postgres: concurrency, commit order, projections."""

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from runtime.deferred import HeldWrites
from runtime.eventstore import Cause, ConcurrencyError, EventStore, RecordedEvent
from runtime.projections import rebuild
from tests.conftest import migrated_pool
from tests.support import NoteCounts, NoteStruck, NoteTaken

CLINIC = "c_test"


async def test_append_then_read_the_stream_back(store: EventStore) -> None:
    cause = Cause()
    recorded = await store.append(
        "note-1", 0, [NoteTaken(n=1), NoteStruck(reason="typo")], clinic_id=CLINIC, cause=cause
    )
    assert [e.version for e in recorded] == [1, 2]
    assert recorded[0].position < recorded[1].position

    events = await store.read_stream("note-1")
    assert [(e.type, e.version, e.data) for e in events] == [
        ("NoteTaken", 1, {"n": 1}),
        ("NoteStruck", 2, {"reason": "typo"}),
    ]
    assert {e.correlation_id for e in events} == {cause.correlation_id}
    assert [e.event_id for e in events] == [e.event_id for e in recorded]
    assert await store.read_stream("note-1", after_version=1) == events[1:]


@pytest.mark.parametrize("expected", [0, 2, 5])
async def test_an_append_at_the_wrong_version_is_refused(store: EventStore, expected: int) -> None:
    await store.append("note-1", 0, [NoteTaken(n=1)], clinic_id=CLINIC)
    with pytest.raises(ConcurrencyError) as refused:
        await store.append("note-1", expected, [NoteTaken(n=2)], clinic_id=CLINIC)
    assert refused.value.actual == 1
    assert len(await store.read_stream("note-1")) == 1


async def test_two_appends_at_the_same_version_exactly_one_wins(store: EventStore) -> None:
    for attempt in range(20):
        stream = f"note-{attempt}"
        results = await asyncio.gather(
            store.append(stream, 0, [NoteTaken(n=1)], clinic_id=CLINIC),
            store.append(stream, 0, [NoteTaken(n=2)], clinic_id=CLINIC),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, list)]
        losers = [r for r in results if isinstance(r, ConcurrencyError)]
        assert (len(winners), len(losers)) == (1, 1), results
        assert len(await store.read_stream(stream)) == 1


async def test_a_rolled_back_append_leaves_a_gap_that_readers_step_over(store: EventStore) -> None:
    await store.append("note-1", 0, [NoteTaken(n=1)], clinic_id=CLINIC)
    with pytest.raises(ValueError, match="666"):
        await store.append("note-1", 1, [NoteTaken(n=666)], clinic_id=CLINIC)
    await store.append("note-1", 1, [NoteTaken(n=3)], clinic_id=CLINIC)
    everything = await store.read_all(0)
    assert [e.data["n"] for e in everything] == [1, 3]
    assert [e.version for e in everything] == [1, 2]


async def test_projection_commits_with_the_append_or_not_at_all(
    store: EventStore, pool: "asyncpg.Pool[Any]"
) -> None:
    await store.append("note-1", 0, [NoteTaken(n=5)], clinic_id=CLINIC)
    with pytest.raises(ValueError, match="666"):
        await store.append("note-1", 1, [NoteTaken(n=666)], clinic_id=CLINIC)
    row = await pool.fetchrow("SELECT taken, total FROM note_counts WHERE stream_id = 'note-1'")
    assert dict(row) == {"taken": 1, "total": 5}
    assert len(await store.read_stream("note-1")) == 1


async def test_append_commits_with_the_callers_other_effects(
    store: EventStore, pool: "asyncpg.Pool[Any]"
) -> None:
    async def append_then_fail() -> None:
        async with store.transaction() as conn:
            await store.append("note-1", 0, [NoteTaken(n=1)], clinic_id=CLINIC, conn=conn)
            raise RuntimeError("the caller's other effect failed")

    with pytest.raises(RuntimeError):
        await append_then_fail()
    assert await store.read_stream("note-1") == []
    assert await pool.fetchval("SELECT count(*) FROM note_counts") == 0


async def test_projections_rebuilt_from_events_equal_the_live_ones(
    store: EventStore, pool: "asyncpg.Pool[Any]"
) -> None:
    async def append_some(writer: int) -> None:
        for i in range(30):
            stream = f"note-{(writer * 7 + i) % 9}"
            while True:
                version = len(await store.read_stream(stream))
                event = NoteStruck(reason="x") if i % 4 == 0 else NoteTaken(n=writer * 100 + i)
                try:
                    await store.append(stream, version, [event], clinic_id=CLINIC)
                    break
                except ConcurrencyError:
                    continue

    await asyncio.gather(*(append_some(w) for w in range(5)))
    query = "SELECT stream_id, taken, struck, total FROM note_counts ORDER BY stream_id"
    live = [dict(r) for r in await pool.fetch(query)]
    await pool.execute("UPDATE note_counts SET total = -1")  # damage it, so a no-op fails

    assert await rebuild(store) == 150
    assert [dict(r) for r in await pool.fetch(query)] == live
    assert sum(r["taken"] + r["struck"] for r in live) == 150


async def test_a_tailing_reader_skips_no_event_committed_late(store: EventStore) -> None:
    """10 writers x 100 appends while one transaction holds an append open and commits late."""
    committed: set[uuid.UUID] = set()
    seen: list[int] = []
    seen_ids: set[uuid.UUID] = set()
    done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(100):
            recorded = await store.append(f"w{w}-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC)
            committed.update(e.event_id for e in recorded)

    async def long_transaction() -> None:
        await asyncio.sleep(0.2)  # while the writers are busy
        async with store.transaction() as conn:
            recorded = await store.append("long", 0, [NoteTaken(n=-1)], clinic_id=CLINIC, conn=conn)
            await asyncio.sleep(1.0)  # holds its position open; the others wait behind it
        committed.update(e.event_id for e in recorded)

    async def tail() -> None:
        after = 0
        while True:
            finished = done.is_set()
            for event in await store.read_all(after, 500):
                seen.append(event.position)
                seen_ids.add(event.event_id)
                after = event.position
            if finished:
                return
            await asyncio.sleep(0.001)

    reader = asyncio.create_task(tail())
    await asyncio.gather(long_transaction(), *(writer(w) for w in range(10)))
    done.set()
    await reader

    assert len(committed) == 1001
    skipped = committed - seen_ids
    assert len(skipped) == 0, f"the tail skipped {len(skipped)} events"
    assert seen == sorted(seen)


async def test_without_the_lock_a_tailing_reader_does_skip(pool: "asyncpg.Pool[Any]") -> None:
    """The trap the lock avoids is real on this server: an identity column alone skips."""
    await pool.execute("CREATE TABLE plain (position bigint GENERATED ALWAYS AS IDENTITY, n int)")
    async with pool.acquire() as late, pool.acquire() as early:
        transaction = late.transaction()
        await transaction.start()
        await late.execute("INSERT INTO plain (n) VALUES (1)")  # takes position 1
        await early.execute("INSERT INTO plain (n) VALUES (2)")  # position 2, commits first
        cursor = await pool.fetchval("SELECT max(position) FROM plain WHERE position > 0")
        await transaction.commit()
    missed = await pool.fetchval("SELECT count(*) FROM plain WHERE position < $1", cursor)
    assert (cursor, missed) == (2, 1)


async def test_two_stores_in_one_database_do_not_share_positions(
    postgres_dsn: str, store: EventStore
) -> None:
    schema = f"t{uuid.uuid4().hex[:12]}"
    other_pool = await migrated_pool(postgres_dsn, schema)
    try:
        other = EventStore(other_pool, schema, [NoteCounts()])
        await store.append("a", 0, [NoteTaken(n=1)], clinic_id=CLINIC)
        await other.append("a", 0, [NoteTaken(n=2)], clinic_id=CLINIC)
        assert [e.data["n"] for e in await other.read_all(0)] == [2]
        assert [e.data["n"] for e in await store.read_all(0)] == [1]
    finally:
        await other_pool.close()


async def test_appends_that_share_a_commit_fail_alone(
    store: EventStore, pool: "asyncpg.Pool[Any]"
) -> None:
    """Concurrent appends are committed together; a conflict or a refusal stays with its own."""
    await store.append("taken", 0, [NoteTaken(n=1)], clinic_id=CLINIC)
    results = await asyncio.gather(
        *(store.append(f"ok-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC) for i in range(20)),
        store.append("taken", 0, [NoteTaken(n=2)], clinic_id=CLINIC),
        store.append("refused", 0, [NoteTaken(n=666)], clinic_id=CLINIC),
        return_exceptions=True,
    )
    assert all(isinstance(r, list) for r in results[:20])
    assert isinstance(results[20], ConcurrencyError)
    assert isinstance(results[21], ValueError)
    assert len(await store.read_all(0)) == 21
    assert await pool.fetchval("SELECT sum(taken) FROM note_counts") == 21


async def test_a_cancelled_caller_does_not_strand_the_others(store: EventStore) -> None:
    tasks = [
        asyncio.create_task(store.append(f"s-{i}", 0, [NoteTaken(n=i)], clinic_id=CLINIC))
        for i in range(30)
    ]
    await asyncio.sleep(0)
    tasks[0].cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks[1:]), timeout=10)
    assert len(done) == 29


class RunningTotals:
    """A projection that reads what it wrote a moment ago (its writes are held back)."""

    name = "running_totals"
    tables = ("effects",)

    async def apply(self, conn: Any, event: RecordedEvent) -> None:
        if event.type != "NoteTaken":
            return
        await conn.execute(
            "INSERT INTO effects (event_id, n) VALUES ($1, $2)", event.event_id, event.data["n"]
        )
        seen = await conn.fetchval("SELECT count(*) FROM effects")
        await conn.execute(
            "UPDATE note_counts SET total = $2 WHERE stream_id = $1", event.stream_id, seen
        )


async def test_a_projection_reads_its_own_held_back_writes(
    pool: "asyncpg.Pool[Any]", service_name: str
) -> None:
    store = EventStore(pool, service_name, [NoteCounts(), RunningTotals()])
    await asyncio.gather(
        *(store.append(f"n-{i}", 0, [NoteTaken(n=i)], clinic_id="c") for i in range(30))
    )
    totals = sorted(r["total"] for r in await pool.fetch("SELECT total FROM note_counts"))
    assert totals == list(range(1, 31))  # each saw every earlier event's effect row


async def test_held_writes_go_as_one_executemany_per_run_and_a_read_sees_them(
    pool: "asyncpg.Pool[Any]",
) -> None:
    sent: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        conn.add_query_logger(lambda q: sent.append(q.query.split()[0]))
        writes = HeldWrites(conn)
        held = writes.executor()
        insert = "INSERT INTO effects (event_id, n) VALUES ($1, $2)"
        for n in range(50):
            assert await held.execute(insert, uuid.uuid4(), n) == ""
        await held.execute("UPDATE effects SET n = n + 1000 WHERE n < 10")
        await held.execute(insert, uuid.uuid4(), 99)
        assert await held.fetchval("SELECT count(*) FROM effects WHERE n >= 1000") == 10
        assert await held.fetchval("SELECT count(*) FROM effects") == 51
        await writes.flush()
        with pytest.raises(AttributeError, match="holds its writes back"):
            held.transaction()
    await asyncio.sleep(0)
    # 50 inserts in one executemany, the update, the last insert, the two reads; COMMIT.
    assert sent == ["INSERT", "UPDATE", "INSERT", "SELECT", "SELECT", "COMMIT;"]
