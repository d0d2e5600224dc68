"""Postgres connections for one service: every connection works in the service's own schema."""

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

# A connection, from a pool or dedicated; what queries run on. (The proxy class is generic
# only in asyncpg's stubs, so the subscripted form exists for the type checker alone.)
if TYPE_CHECKING:
    Executor: TypeAlias = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy[Any]
    Queryable: TypeAlias = Executor | asyncpg.Pool[Any]
else:
    Executor = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
    Queryable = Executor | asyncpg.Pool
"""What reads run on: a connection (maybe in a transaction) or the pool."""

_SCHEMA = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def check_schema(schema: str) -> str:
    """Schema names go into SQL as identifiers, so only plain lowercase names are allowed."""
    if not _SCHEMA.match(schema):
        raise ValueError(f"not a valid schema name: {schema!r}")
    return schema


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory lock key for a name (e.g. a schema's append lock)."""
    digest = hashlib.sha256("/".join(("antechamber", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def connection_settings(schema: str, lock_timeout_ms: int = 10_000) -> dict[str, str]:
    return {
        "search_path": check_schema(schema),
        "lock_timeout": str(lock_timeout_ms),
        "application_name": f"antechamber-{schema}",
    }


async def _release(_conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset query, a round trip on every release (asyncpg still rolls
    back an open transaction itself).

    Pooled connections hold no session state: advisory locks are transaction-scoped, LISTEN
    and the relay's session lock use dedicated connections, and migrations unlock explicitly.
    """


async def create_pool(
    dsn: str, schema: str, *, size: int = 10, lock_timeout_ms: int = 10_000
) -> "asyncpg.Pool[Any]":
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=size,
        init=_init_connection,
        reset=_release,
        server_settings=connection_settings(schema, lock_timeout_ms),
    )
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str, **settings: str) -> asyncpg.Connection:
    """A dedicated connection (relay leadership, LISTEN), outside the pool."""
    conn = await asyncpg.connect(dsn, server_settings=connection_settings(schema) | settings)
    await _init_connection(conn)
    return conn
