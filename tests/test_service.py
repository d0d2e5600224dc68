"""A service composed as in production: HTTP -> Postgres -> NATS -> another service's consumer."""

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from runtime.context import ServiceContext
from runtime.embedded import NatsServer
from runtime.eventstore import Cause
from runtime.migrations import migrate
from runtime.rpc import Endpoint, RpcError, call
from runtime.service import (
    ServiceDefinition,
    build_app,
    cancel_and_wait,
    connect_nats,
    context_of,
    settle,
)
from tests.conftest import NOTES_MIGRATION
from tests.support import (
    NoteTaken,
    eventually,
    notes,
    notes_consumer,
    service_connections,
    serving,
    settings,
    start_nats,
)


class NoteRequest(BaseModel):
    n: int


def note_routes(app: FastAPI) -> None:
    @app.post("/notes/{stream}", status_code=201)
    async def take_note(
        stream: str, body: NoteRequest, ctx: Annotated[ServiceContext, Depends(context_of)]
    ) -> dict[str, int]:
        recorded = await ctx.store.append(
            stream, 0, [NoteTaken(n=body.n)], clinic_id="c_http", cause=Cause()
        )
        return {"position": recorded[0].position}


async def test_one_user_action_is_one_trace_from_http_to_the_consumers_effect(
    postgres_dsn: str, nats_server: NatsServer, service_name: str, spans: InMemorySpanExporter
) -> None:
    source = ServiceDefinition(
        name=f"{service_name}a", default_port=0, events=notes, routes=note_routes
    )
    sink = ServiceDefinition(
        name=f"{service_name}b",
        default_port=0,
        events=notes,
        consumers=[notes_consumer(f"{service_name}a")],
    )
    source_app = build_app(source, settings(postgres_dsn, nats_server.url))
    sink_app = build_app(sink, settings(postgres_dsn, nats_server.url))
    async with serving(sink_app) as sink_client, serving(source_app) as client:
        await _add_notes_table(sink_app)
        response = await client.post(
            "/notes/n-1",
            json={"n": 42},
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
        assert response.status_code == 201, response.text

        async def consumed() -> bool:
            pool = sink_app.state.runtime.context.pool
            return bool(await pool.fetchval("SELECT count(*) FROM effects") == 1)

        await eventually(consumed, what="the consumer's effect")
        assert (await sink_client.get("/readyz")).json()["status"] == "ready"

    names_by_trace: dict[int, set[str]] = {}
    for span in spans.get_finished_spans():
        names_by_trace.setdefault(span.context.trace_id, set()).add(span.name)
    trace = names_by_trace[0x0AF7651916CD43DD8448EB211C80319C]
    assert {
        "POST /notes/n-1",
        "eventstore.append",
        "publish NoteTaken",
        "consume NoteTaken",
    } <= trace


async def _add_notes_table(app: FastAPI) -> None:
    runtime = app.state.runtime
    async with runtime.context.pool.acquire() as conn:
        await migrate(conn, runtime.definition.name, [NOTES_MIGRATION])


async def test_readiness_says_what_is_missing_until_the_runtime_has_started(
    postgres_dsn: str, service_name: str
) -> None:
    unreachable = "nats://127.0.0.1:9"  # nothing listens there
    app = build_app(
        ServiceDefinition(name=service_name, default_port=0, events=notes),
        settings(postgres_dsn, unreachable),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/healthz")).json() == {
                "status": "ok",
                "service": service_name,
            }
            await asyncio.sleep(0.5)
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert "still starting" in response.json()["detail"]
            metrics = await client.get("/metrics")
            assert "antechamber_http_request_seconds" in metrics.text


async def test_a_service_stopped_while_nats_is_down_does_not_come_back_when_nats_does(
    postgres_dsn: str, service_name: str, short_tmp: Path
) -> None:
    """Draining needs a connected client; stopping must close it anyway, or it reconnects
    when NATS returns and rejoins its queue groups: requests handed to a service that has
    stopped are never answered."""
    server = start_nats(short_tmp / f"nats-{service_name}")
    subject = f"rpc.{service_name}.echo"

    async def echo(ctx: ServiceContext, data: bytes) -> bytes:
        return data

    app = build_app(
        ServiceDefinition(
            name=service_name,
            default_port=0,
            events=notes,
            endpoints=(Endpoint(subject, echo),),
        ),
        settings(postgres_dsn, server.url),
    )
    try:
        async with serving(app):
            assert set(service_connections(server).values()) == {f"antechamber-{service_name}"}
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        asker = await connect_nats(server.url, "asker")
        try:
            await asyncio.sleep(1.5)  # the clients would have reconnected by now
            assert list(service_connections(server, prefix="").values()) == ["asker"]
            with pytest.raises(RpcError, match="no service is listening"):
                await call(asker, subject, NoteRequest(n=1), NoteRequest)
        finally:
            await asker.close()
    finally:
        server.stop()


async def test_stopping_does_not_wait_forever_on_work_that_ignores_cancellation() -> None:
    """Client libraries' stop paths do not always honour cancellation; settle() gives up on
    them after its limit, so the connections are still closed after it."""
    released = asyncio.Event()

    async def stubborn() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue  # swallowed, as a misbehaving library might

    started = asyncio.get_running_loop().time()
    assert not await settle(stubborn(), "a stubborn stop", wait_s=0.2)
    assert asyncio.get_running_loop().time() - started < 2
    released.set()
    assert await settle(asyncio.sleep(0), "a quick stop")


async def test_a_task_that_drops_a_cancellation_is_cancelled_again() -> None:
    """On 3.11 ``wait_for`` can drop a cancellation (nats-py and asyncpg use it inside); one
    ``cancel()`` would then leave the relay's loop running for ever."""

    async def drops_one() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # dropped
            await asyncio.sleep(10)
        await asyncio.sleep(10)

    task = asyncio.create_task(drops_one())
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    await cancel_and_wait([task], "a loop")
    assert task.cancelled()
    assert asyncio.get_running_loop().time() - started < 2
