"""Versioned migrations: once each, safe when several processes start together."""

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from runtime.db import create_pool
from runtime.migrations import Migration, migrate, pending, runtime_migrations

EXTRA = Migration("svc", 1, "rooms", "CREATE TABLE rooms (id text PRIMARY KEY)")
LATER = Migration("svc", 2, "room_titles", "ALTER TABLE rooms ADD COLUMN title text")


async def test_migrations_apply_once_in_order_and_concurrently(postgres_dsn: str) -> None:
    schema = f"m{uuid.uuid4().hex[:12]}"
    pool: asyncpg.Pool[Any] = await create_pool(postgres_dsn, schema, size=4)
    try:
        wanted = [*runtime_migrations(), EXTRA]
        async with pool.acquire() as conn:
            assert await pending(conn, schema, wanted) == wanted

        async def run() -> list[Migration]:
            async with pool.acquire() as conn:
                return await migrate(conn, schema, wanted)

        results = await asyncio.gather(run(), run(), run())
        assert sorted(len(r) for r in results) == [0, 0, len(wanted)]

        async with pool.acquire() as conn:
            assert await migrate(conn, schema, [*wanted, LATER]) == [LATER]
            assert await pending(conn, schema, [*wanted, LATER]) == []
            rows = await conn.fetch("SELECT source, version FROM schema_migrations ORDER BY 1, 2")
        runtime = [("runtime", m.version) for m in runtime_migrations()]
        assert [tuple(r) for r in rows] == [*runtime, ("svc", 1), ("svc", 2)]
        await pool.execute("INSERT INTO rooms (id, title) VALUES ('r', 't')")
    finally:
        await pool.close()


async def test_a_failing_migration_leaves_nothing_half_done(postgres_dsn: str) -> None:
    schema = f"m{uuid.uuid4().hex[:12]}"
    broken = Migration(
        "svc", 1, "broken", "CREATE TABLE ok_part (id int); SELECT nope FROM nowhere"
    )
    pool: asyncpg.Pool[Any] = await create_pool(postgres_dsn, schema, size=2)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.UndefinedTableError):
                await migrate(conn, schema, [broken])
            assert await pending(conn, schema, [broken]) == [broken]
            assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.ok_part") is None
    finally:
        await pool.close()
