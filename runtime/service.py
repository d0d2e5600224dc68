"""A service's composition root: what it is (``ServiceDefinition``) and how it runs.

``build_app`` returns the service's ASGI app; its lifespan starts the runtime in the
background (pool, migrations, relay, consumers), so ``/healthz`` answers at once and
``/readyz`` turns ready when Postgres and NATS answer and the migrations have run.
"""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
import structlog
from fastapi import FastAPI, Request
from fastapi.middleware import Middleware
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from contracts.deadletter import DeadLetter, deadletter_subject
from contracts.envelope import EventEnvelope, event_subject
from contracts.events import EventRegistry
from runtime.caller import Identity
from runtime.consumer import Consumer, ConsumerLoop
from runtime.context import ServiceContext
from runtime.db import create_pool
from runtime.eventstore import EventStore, Projection
from runtime.http import Problem, ReadinessCheck, create_http_app
from runtime.idempotency import IdempotencyMiddleware
from runtime.inbox import Retention, keep_pruning
from runtime.logging import configure_logging
from runtime.migrations import Migration, discover, migrate, pending, runtime_migrations
from runtime.nats_auth import identity_options
from runtime.nats_permissions import BusAccess, ConsumedStream, ServiceBus
from runtime.relay import Relay
from runtime.retry import retry
from runtime.rpc import Endpoint, serve
from runtime.settings import RuntimeSettings, nats_creds_for, nats_servers
from runtime.streams import deadletter_stream, ensure_stream, service_stream, stream_name
from runtime.telemetry import configure_tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    default_port: int
    events: EventRegistry
    migrations_package: str | None = None
    projections: Callable[[], Sequence[Projection]] = tuple
    consumers: Sequence[Consumer] = ()
    routes: Callable[[FastAPI], None] | None = None
    endpoints: Sequence[Endpoint] = ()
    """NATS request/reply endpoints (``rpc.<service>.<name>``)."""
    tasks: Sequence[Callable[[ServiceContext], Coroutine[Any, Any, None]]] = ()
    """Background work that runs while the service does (cancelled at stop)."""
    description: str = ""
    bus: BusAccess = field(default_factory=BusAccess)
    """RPC subjects it calls, core subjects and KV buckets: with the above, its NATS rights."""

    def migrations(self) -> list[Migration]:
        own = discover(self.migrations_package) if self.migrations_package else []
        return runtime_migrations() + own

    def bus_view(self) -> ServiceBus:
        """What its NATS user must be allowed (see :mod:`runtime.nats_permissions`)."""
        return ServiceBus(
            name=self.name,
            consumes=tuple(ConsumedStream(c.source, c.durable(self.name)) for c in self.consumers),
            serves_rpc=bool(self.endpoints),
            access=self.bus,
        )


def document_events(broker: NatsBroker, definition: ServiceDefinition) -> None:
    """Declare what the service publishes, so the AsyncAPI document lists it."""
    broker.publisher(
        deadletter_subject(definition.name),
        schema=DeadLetter,
        title=f"{definition.name}.deadletter",
        description=f"Messages the {definition.name} service's consumers gave up on.",
    )
    for cls in definition.events:
        broker.publisher(
            event_subject("{clinic_id}", definition.name, cls.event_type()),
            schema=EventEnvelope[cls],  # type: ignore[valid-type]
            title=f"{definition.name}.{cls.event_type()}",
            description=(cls.__doc__ or "").strip(),
        )


DEPENDENCY_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
    NatsError,
)
"""What a dependency that is still starting (or briefly down) raises."""

STOP_WAIT_S = 10.0
"""How long stopping waits for in-flight work (NATS drain, Postgres connections in use)."""


async def connect_nats(url: str, name: str, creds: Path | None = None) -> NATS:
    """A connection that reconnects for ever, as the user in ``creds`` (see
    :func:`runtime.nats_auth.identity_options`)."""

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            log.error(
                "NATS refused an operation: not in this user's rights",
                connection=name,
                error=str(exc),
            )
        else:
            log.warning("NATS connection error", connection=name, error=str(exc))

    return await nats.connect(
        nats_servers(url),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=2,
        error_cb=on_error,
        **identity_options(creds),
    )


async def settle(work: Awaitable[Any], what: str, wait_s: float | None = None) -> bool:
    """Await ``work`` for at most ``wait_s`` (STOP_WAIT_S); whether it finished cleanly.

    The wait does not rely on ``work`` honouring cancellation (client libraries' stop paths
    do not always): past the limit, it is cancelled, left behind, and the warning says where
    it was stuck.
    """
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S if wait_s is None else wait_s)
    if not done:
        where = _stack_of(task)
        task.cancel()
        log.warning("did not finish in time; left behind", what=what, stuck_in=where)
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("did not finish cleanly", what=what, error=repr(exc))
        return False
    return True


async def cancel_and_wait(tasks: Sequence["asyncio.Task[Any]"], what: str) -> None:
    """Cancel ``tasks`` and wait for them (at most STOP_WAIT_S), cancelling again while they
    run: on Python 3.11 ``asyncio.wait_for`` (which nats-py and asyncpg use inside) drops a
    cancellation that arrives as the awaited result does, and a loop such as the relay's
    would then go on for ever."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_WAIT_S
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in pending:
        log.warning("did not stop in time; left behind", what=what, stuck_in=_stack_of(task))


def _stack_of(task: "asyncio.Task[Any]") -> str:
    return " <- ".join(
        f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in task.get_stack(limit=8)
    )


async def close_nats(nc: NATS, what: str) -> None:
    """Drain ``nc`` if it can be (bounded), then close it whatever happened: a connection left
    open keeps its subscriptions and, reconnecting, rejoins its queue groups."""
    try:
        if nc.is_connected:
            await settle(nc.drain(), f"draining the {what} connection")
    finally:
        if not nc.is_closed:
            await settle(nc.close(), f"closing the {what} connection")


class ServiceRuntime:
    def __init__(self, definition: ServiceDefinition, settings: RuntimeSettings) -> None:
        self.definition = definition
        self.settings = settings
        self.migrations = definition.migrations()  # read from disk once, not on every probe
        self.context: ServiceContext | None = None
        self.started = asyncio.Event()
        self.failure: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._consumers: list[ConsumerLoop] = []
        self._consumer_nats: NATS | None = None

    @property
    def dsn(self) -> str:
        return self.settings.database_url.get_secret_value()

    async def start(self) -> None:
        d, s = self.definition, self.settings

        async def open_pool() -> "asyncpg.Pool[Any]":
            return await create_pool(
                self.dsn, d.name, size=s.db_pool_size, lock_timeout_ms=s.lock_timeout_ms
            )

        pool = await retry(open_pool, errors=DEPENDENCY_ERRORS, what="postgres", first_delay=0.2)
        async with pool.acquire() as conn:
            await migrate(conn, d.name, self.migrations)
        nc = await retry(
            lambda: connect_nats(s.nats_url, f"antechamber-{d.name}", nats_creds_for(s, d.name)),
            errors=DEPENDENCY_ERRORS,
            what="nats",
            first_delay=0.2,
        )
        store = EventStore(pool, d.name, d.projections())
        creds = nats_creds_for(s, d.name)
        identity = Identity.load(creds) if creds is not None else None
        self.context = context = ServiceContext(s, pool, store, nc, identity)
        consumers = list(d.consumers)
        js = nc.jetstream()
        r = s.stream_replicas
        streams = [service_stream(d.name, r), deadletter_stream(r)]
        streams += [service_stream(c.source, r) for c in consumers]

        async def declare_streams() -> None:
            for config in streams:
                await ensure_stream(js, config)

        await retry(declare_streams, errors=DEPENDENCY_ERRORS, what="jetstream", first_delay=0.2)
        relay = Relay(
            dsn=self.dsn,
            service=d.name,
            nats=nc,
            batch_size=s.relay_batch_size,
            ack_timeout=s.relay_ack_timeout_s,
            stream_replicas=s.stream_replicas,
        )
        self._tasks.append(asyncio.create_task(relay.run(), name=f"{d.name}-relay"))

        if consumers:
            # The consumers pull on a connection of their own, so a burst of events never
            # queues behind (or in front of) the service's requests and replies.
            self._consumer_nats = consumer_nats = await retry(
                lambda: connect_nats(
                    s.nats_url, f"antechamber-{d.name}-consumers", nats_creds_for(s, d.name)
                ),
                errors=DEPENDENCY_ERRORS,
                what="nats",
                first_delay=0.2,
            )
            for consumer in consumers:
                loop = ConsumerLoop(consumer, service=d.name, context=context, nats=consumer_nats)
                self._consumers.append(loop)
                await retry(
                    loop.start,
                    errors=DEPENDENCY_ERRORS,
                    what="jetstream consumers",
                    first_delay=0.2,
                )
            retentions = [
                Retention(c.durable(d.name), stream_name(c.source), c.retention_s(s))
                for c in consumers
            ]
            pruning = keep_pruning(pool, js, retentions, s.inbox_prune_interval_s)
            self._tasks.append(asyncio.create_task(pruning, name=f"{d.name}-inbox"))
        if d.endpoints:
            await serve(nc, list(d.endpoints), context, queue=d.name)
        for work in d.tasks:
            self._tasks.append(asyncio.create_task(work(context), name=f"{d.name}-task"))
        self.started.set()
        # What start-up allocated lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise pause every request for tens of ms.
        gc.collect()
        gc.freeze()
        log.info("service started", port=s.http_port)

    async def stop(self) -> None:
        """Stop everything start() began; each step runs whatever the one before did.

        The NATS connection is closed in the end even when draining it fails: a connection
        left open keeps its subscriptions, so the server would go on handing this stopped
        service a share of its queue groups' requests (rpc, consumers) that nobody answers.
        """
        try:
            await cancel_and_wait(self._tasks, "background tasks (relay, loops)")
            for loop in self._consumers:
                await settle(loop.stop(), "stopping an event consumer")
            if self._consumer_nats is not None:
                await close_nats(self._consumer_nats, "event consumers'")
        finally:
            # Whatever went wrong above (even an interruption), the connections are closed.
            if self.context is not None:
                try:
                    await close_nats(self.context.nats, "service")
                finally:
                    pool = self.context.pool
                    if not await settle(pool.close(), "releasing Postgres connections"):
                        pool.terminate()

    def readiness(self) -> list[ReadinessCheck]:
        async def started() -> str | None:
            if self.failure:
                return f"start-up failed: {self.failure}"
            return (
                None if self.started.is_set() else "still starting (waiting for Postgres or NATS)"
            )

        async def postgres() -> str | None:
            if self.context is None:
                return None
            try:
                async with self.context.pool.acquire(timeout=2) as conn:
                    missing = await pending(conn, self.definition.name, self.migrations)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                return f"Postgres does not answer ({type(exc).__name__})"
            return f"{len(missing)} migrations not applied" if missing else None

        async def nats_up() -> str | None:
            if self.context is None or self.context.nats.is_connected:
                return None
            return "NATS is not connected"

        return [started, postgres, nats_up]


def build_app(definition: ServiceDefinition, settings: RuntimeSettings) -> FastAPI:
    """The service as an ASGI app; the runtime starts in its lifespan."""
    configure_logging(definition.name, settings.log_level, settings.log_format)
    configure_tracing(definition.name, settings.otel_exporter)
    runtime = ServiceRuntime(definition, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def start() -> None:
            try:
                await runtime.start()
            except Exception as exc:
                runtime.failure = f"{type(exc).__name__}: {exc}"
                log.error("service failed to start", exc_info=True)
                raise

        task = asyncio.create_task(start(), name=f"{definition.name}-start")
        try:
            yield
        finally:
            try:
                await cancel_and_wait([task], "start-up")
            finally:
                await runtime.stop()

    app = create_http_app(definition.name, readiness=runtime.readiness(), lifespan=lifespan)
    app.state.runtime = runtime
    app.state.trusted_proxies = settings.trusted_proxies  # see runtime.client_address
    # Innermost, so replayed answers are traced and counted like the first one.
    app.user_middleware.append(
        Middleware(
            IdempotencyMiddleware,
            pool=lambda: (
                runtime.context.pool if runtime.started.is_set() and runtime.context else None
            ),
        )
    )
    if definition.routes is not None:
        definition.routes(app)
    return app


async def context_of(request: Request) -> ServiceContext:
    """FastAPI dependency: the running service's context (503 until started).

    ``async`` on purpose, like every dependency here: FastAPI runs a plain ``def`` dependency
    in a thread pool, two thread hops per request for nothing.
    """
    runtime: ServiceRuntime = request.app.state.runtime
    if runtime.context is None or not runtime.started.is_set():
        raise Problem(503, "The service is still starting; try again in a moment.")
    return runtime.context
