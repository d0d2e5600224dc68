"""The `antechamber` command against the harness's servers."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from antechamber.catalog import SERVICES, definition
from runtime.embedded import NatsServer

ROOT = Path(__file__).resolve().parent.parent


def antechamber(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "antechamber", *args],
        cwd=ROOT,
        env=os.environ | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def fresh_database(dsn: str) -> str:
    """A database of its own on the harness's Postgres: other tests run every service (and
    migrate their schemas) in the shared one."""
    name = f"cli_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def test_migrate_rebuild_and_republish_a_service(
    postgres_dsn: str, nats_server: NatsServer
) -> None:
    env = {"DATABASE_URL": await fresh_database(postgres_dsn), "NATS_URL": nats_server.url}
    first = antechamber("migrate", "notify", env=env)
    assert first.returncode == 0, first.stderr
    notify_migrations = len(definition("notify").migrations())
    assert f"notify: {notify_migrations} migration(s) applied" in first.stdout
    again = antechamber("migrate", "--all", env=env)
    assert "notify: 0 migration(s) applied" in again.stdout
    assert re.search(r"^scheduling: \d+ migration\(s\) applied", again.stdout, re.MULTILINE)
    third = antechamber("migrate", "--all", env=env)
    for name in SERVICES:
        assert f"{name}: 0 migration(s) applied" in third.stdout

    rebuilt = antechamber("projections", "rebuild", "notify", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "notify: rebuilt no projections from 0 events" in rebuilt.stdout

    republished = antechamber("events", "republish", "notify", "--from", "1", env=env)
    assert republished.returncode == 0, republished.stderr
    assert "notify: published 0 events from position 1" in republished.stdout


def test_an_unknown_service_is_named_in_the_error() -> None:
    result = antechamber("serve", "billing")
    assert result.returncode == 2
    assert "invalid choice: 'billing'" in result.stderr
