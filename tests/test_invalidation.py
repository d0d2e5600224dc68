"""Read caches kept honest by Postgres change notices (runtime/invalidation.py)."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from runtime.invalidation import Invalidations, TaggedCache
from tests.support import eventually


@pytest.fixture
async def things(pool: "asyncpg.Pool[Any]") -> "asyncpg.Pool[Any]":
    await pool.execute(
        "CREATE TABLE things (thing_id text PRIMARY KEY, clinic_id text NOT NULL, name text);"
        "CREATE TRIGGER things_change_notice AFTER INSERT OR UPDATE OR DELETE ON things "
        "FOR EACH ROW EXECUTE FUNCTION notify_change('thing', 'thing_id', 'clinic', 'clinic_id')"
    )
    await pool.execute("INSERT INTO things VALUES ('a', 'c1', 'A'), ('b', 'c2', 'B')")
    return pool


@pytest.fixture
async def listening(
    postgres_dsn: str, service_name: str, things: "asyncpg.Pool[Any]"
) -> AsyncIterator[tuple[Invalidations, TaggedCache[str, str]]]:
    cache: TaggedCache[str, str] = TaggedCache(service_name, "things")
    invalidations = Invalidations(postgres_dsn, service_name, [cache])
    task = asyncio.create_task(invalidations.run())
    await asyncio.wait_for(invalidations.listening.wait(), 10)
    yield invalidations, cache
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def read(pool: "asyncpg.Pool[Any]", cache: TaggedCache[str, str], key: str) -> str:
    if (hit := cache.get(key)) is not None:
        return hit
    since = cache.generation
    row = await pool.fetchrow("SELECT name, clinic_id FROM things WHERE thing_id = $1", key)
    assert row is not None
    cache.put(key, row["name"], [f"thing:{key}", f"clinic:{row['clinic_id']}"], since)
    return str(row["name"])


async def test_a_change_committed_anywhere_drops_what_was_read_from_that_row(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    invalidations, cache = listening
    assert await read(things, cache, "a") == "A"
    assert await read(things, cache, "b") == "B"
    assert cache.get("a") == "A"
    await things.execute("UPDATE things SET name = 'A2' WHERE thing_id = 'a'")
    await invalidations.synced()
    assert cache.get("a") is None
    assert cache.get("b") == "B"  # untouched
    assert await read(things, cache, "a") == "A2"


async def test_a_rolled_back_change_drops_nothing(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    invalidations, cache = listening
    await read(things, cache, "a")
    async with things.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE things SET name = 'never' WHERE thing_id = 'a'")
        await tx.rollback()
    await invalidations.synced()
    assert cache.get("a") == "A"


async def test_every_tag_of_a_row_is_noticed_old_and_new(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    invalidations, cache = listening
    cache.put("clinic-wide", "x", ["clinic:c1"], cache.generation)
    cache.put("other-clinic", "y", ["clinic:c3"], cache.generation)
    # Moving b from c2 to c3 notices both clinics: the old row's and the new row's.
    await things.execute("UPDATE things SET clinic_id = 'c3' WHERE thing_id = 'b'")
    await invalidations.synced()
    assert cache.get("other-clinic") is None
    assert cache.get("clinic-wide") == "x"
    await things.execute("DELETE FROM things WHERE thing_id = 'a'")
    await invalidations.synced()
    assert cache.get("clinic-wide") is None


async def test_a_read_that_raced_a_change_is_not_kept(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    invalidations, cache = listening
    since = cache.generation
    stale = await things.fetchval("SELECT name FROM things WHERE thing_id = 'a'")
    await things.execute("UPDATE things SET name = 'A3' WHERE thing_id = 'a'")
    await invalidations.synced()
    cache.put("a", stale, ["thing:a"], since)  # the answer of a read from before the change
    assert cache.get("a") is None


async def test_a_lost_listener_empties_and_bypasses_the_cache_until_it_is_back(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    _, cache = listening
    await read(things, cache, "a")
    await things.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
    )

    async def blind() -> bool:
        return not cache.live

    async def back() -> bool:
        return cache.live

    await eventually(blind, timeout=10)
    assert cache.get("a") is None
    cache.put("a", "kept while blind", ["thing:a"], cache.generation)
    assert len(cache) == 0
    await eventually(back, timeout=10)
    assert await read(things, cache, "a") == "A"
    assert cache.get("a") == "A"


async def test_a_reader_waiting_for_a_row_is_woken_when_it_commits(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    invalidations, _ = listening
    with invalidations.noticing("thing:c") as other, invalidations.noticing("thing:d") as mine:
        async with things.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO things VALUES ('d', 'c1', 'D')")
            await asyncio.sleep(0.1)
            assert not mine.is_set()  # not before it commits
        await asyncio.wait_for(mine.wait(), 5)
        await invalidations.synced()
        assert not other.is_set()
    assert invalidations._noticing == {}  # nothing left behind by readers gone


async def test_a_lost_listener_wakes_every_waiting_reader(
    listening: tuple[Invalidations, TaggedCache[str, str]], things: "asyncpg.Pool[Any]"
) -> None:
    """A notice sent while the listener was away is lost: a waiting reader must read again."""
    invalidations, _ = listening
    with invalidations.noticing("thing:z") as waiting:
        await things.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
        )
        await asyncio.wait_for(waiting.wait(), 10)


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: TaggedCache[int, int] = TaggedCache("t", "lru", max_entries=2)
    cache.reset(live=True)
    cache.put(1, 1, ["n:1"], cache.generation)
    cache.put(2, 2, ["n:2"], cache.generation)
    assert cache.get(1) == 1
    cache.put(3, 3, ["n:3"], cache.generation)
    assert cache.get(2) is None
    assert cache.get(1) == 1
    assert cache.get(3) == 3
    cache.drop("n:3")
    assert len(cache) == 1
