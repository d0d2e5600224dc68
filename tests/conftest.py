"""The harness: a real nats-server (JetStream) and a real Postgres, started once per run.

Every test works in its own schema and streams (a fresh service name), so tests never see
each other's events. If a server cannot start, the test fails and says how to get it.
"""

import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runtime.caller import Identity, signing_as
from runtime.db import create_pool
from runtime.embedded import NatsServer
from runtime.eventstore import EventStore
from runtime.migrations import migrate, runtime_migrations
from runtime.service import connect_nats
from tests.support import (
    NOTES_MIGRATION,
    NoteCounts,
    harness_auth,
    service_connections,
    start_nats,
    start_postgres,
)

SPANS = InMemorySpanExporter()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="skip the slow suites (chaos, platform, benchmark smoke); CI runs them",
    )


def pytest_configure(config: pytest.Config) -> None:
    harness_auth()  # exports the NATS credentials before any setting is read
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(provider)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    kept = [item for item in items if "slow" not in item.keywords]
    deselected = [item for item in items if "slow" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(autouse=True)
def no_service_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A service a test started has closed its NATS connection when the test ends.

    One left open keeps its subscriptions: it stays in ``rpc.*`` queue groups and is handed
    a share of later tests' requests that nobody answers (seen as timeouts far from the leak).
    """
    if "nats_server" not in request.fixturenames:
        yield
        return
    server: NatsServer = request.getfixturevalue("nats_server")
    before = service_connections(server)
    yield
    deadline = time.monotonic() + 10
    while left := {
        cid: name for cid, name in service_connections(server).items() if cid not in before
    }:
        if time.monotonic() > deadline:
            pytest.fail(
                f"{request.node.nodeid} left these service connections open on NATS: "
                f"{sorted(left.values())}; stop every service the test starts"
            )
        time.sleep(0.1)


@pytest.fixture(scope="session")
def short_tmp() -> Iterator[Path]:
    # Short, because Postgres puts its Unix socket in its data folder.
    with tempfile.TemporaryDirectory(prefix="ac-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def nats_server(short_tmp: Path) -> Iterator[NatsServer]:
    server = start_nats(short_tmp / "nats")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(short_tmp: Path) -> Iterator[str]:
    postgres = start_postgres(short_tmp / "pg")
    yield postgres.dsn
    postgres.stop()


@pytest.fixture
def service_name() -> str:
    """A fresh service name: its own schema, stream and subjects."""
    return f"t{uuid.uuid4().hex[:12]}"


async def migrated_pool(dsn: str, schema: str, size: int = 16) -> "asyncpg.Pool[Any]":
    pool = await create_pool(dsn, schema, size=size)
    async with pool.acquire() as conn:
        await migrate(conn, schema, [*runtime_migrations(), NOTES_MIGRATION])
    return pool


@pytest.fixture
async def pool(postgres_dsn: str, service_name: str) -> AsyncIterator["asyncpg.Pool[Any]"]:
    pool = await migrated_pool(postgres_dsn, service_name)
    yield pool
    await pool.close()


@pytest.fixture
def store(pool: "asyncpg.Pool[Any]", service_name: str) -> EventStore:
    return EventStore(pool, service_name, [NoteCounts()])


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    # Signed as signaling: the tests ask media for seats and recordings as signaling does.
    client = signing_as(
        await connect_nats(nats_server.url, "tests"),
        Identity.load(harness_auth().creds("signaling")),
    )
    yield client
    await client.drain()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    SPANS.clear()
    return SPANS
