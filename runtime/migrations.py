"""Versioned SQL migrations: the runtime's own tables first, then the service's.

Files are named ``NNNN_what.sql``; each runs once, in its own transaction, in the service's
schema, recorded in ``schema_migrations``. Concurrent starts serialise on an advisory lock.
"""

import re
from dataclasses import dataclass
from importlib import resources

import structlog

from runtime.db import Executor, check_schema, lock_key

log = structlog.get_logger(__name__)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, order=True)
class Migration:
    source: str  # "runtime" or the package that holds the service's migrations
    version: int
    name: str
    sql: str


def discover(package: str, source: str | None = None) -> list[Migration]:
    """The migrations shipped in ``package`` (a folder of ``NNNN_name.sql`` files)."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            version, name = int(match[1]), match[2]
            found.append(Migration(source or package, version, name, entry.read_text()))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"two migrations in {package} share a version number")
    return sorted(found)


def runtime_migrations() -> list[Migration]:
    return discover("runtime.sql", source="runtime")


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    source      text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, version)
)"""


async def pending(conn: Executor, schema: str, wanted: list[Migration]) -> list[Migration]:
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{check_schema(schema)}.schema_migrations"
    )
    if not exists:
        return list(wanted)
    rows = await conn.fetch(f"SELECT source, version FROM {schema}.schema_migrations")
    done = {(r["source"], r["version"]) for r in rows}
    return [m for m in wanted if (m.source, m.version) not in done]


async def migrate(conn: Executor, schema: str, wanted: list[Migration]) -> list[Migration]:
    """Apply what is missing; returns the migrations applied now."""
    check_schema(schema)
    key = lock_key(schema, "migrations")
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            _CREATE_LEDGER.replace("schema_migrations", f"{schema}.schema_migrations")
        )
        todo = await pending(conn, schema, wanted)
        for migration in todo:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {schema}")
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (source, version, name) VALUES ($1, $2, $3)",
                    migration.source,
                    migration.version,
                    migration.name,
                )
            log.info(
                "migration applied",
                schema=schema,
                source=migration.source,
                version=migration.version,
            )
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
