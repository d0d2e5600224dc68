"""The relay: publishes a service's committed events to its JetStream stream, in order.

One leader per service holds a session advisory lock; another instance blocks on it and takes
over when the leader's connection ends. The leader is woken by NOTIFY, reads events after its
checkpoint, publishes them with ``Nats-Msg-Id`` = event id and moves the checkpoint once
JetStream acknowledged them. A crash between ack and checkpoint republishes a batch, which
JetStream's de-duplication absorbs; on taking the lead the relay also starts after the last
event already in the stream, so even a restart after the duplicate window adds no copies.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry.trace import Span

from contracts.envelope import event_subject
from runtime import metrics
from runtime.db import connect, lock_key
from runtime.eventstore import RecordedEvent, read_all
from runtime.retry import retry
from runtime.streams import ensure_stream, service_stream, stream_name
from runtime.telemetry import current_trace_context, producer_span

log = structlog.get_logger(__name__)

POSITION_HEADER = "Antechamber-Position"
IDLE_RECHECK_S = 30.0  # NOTIFY wakes us; this only bounds how stale a missed wake-up can be


class PublishError(Exception):
    """JetStream did not acknowledge a batch; it will be published again."""


def _headers(event: RecordedEvent, span: Span | None) -> dict[str, str]:
    """With a publish span, its context; without (tracing off), the stored one as it is."""
    return {
        "Nats-Msg-Id": str(event.event_id),
        POSITION_HEADER: str(event.position),
        "Content-Type": "application/json",
        **(current_trace_context() if span is not None else event.trace_context),
    }


async def publish_events(
    js: JetStreamContext, service: str, events: Sequence[RecordedEvent], ack_timeout: float
) -> None:
    """Publish ``events`` in order and wait until JetStream acknowledged every one."""
    futures = []
    try:
        for event in events:
            with producer_span(event.type, event.trace_context) as span:
                body = event.envelope(service).model_dump_json().encode()
                subject = event_subject(event.clinic_id, service, event.type)
                # Awaited one by one so they go on the wire in position order; acks come later.
                futures.append(await js.publish_async(subject, body, headers=_headers(event, span)))
        async with asyncio.timeout(ack_timeout):
            await asyncio.gather(*futures)
    except (TimeoutError, NatsError, OSError) as exc:
        for future in futures:
            future.cancel()
        raise PublishError(f"{type(exc).__name__}: {exc}") from exc


class Relay:
    def __init__(
        self,
        *,
        dsn: str,
        service: str,
        nats: NATS,
        batch_size: int = 500,
        ack_timeout: float = 5.0,
        stream_replicas: int = 1,
        on_acked: Callable[[Sequence[RecordedEvent]], None] | None = None,
    ) -> None:
        """``on_acked`` is called with each batch once JetStream acknowledged it.
        ``stream_replicas`` must be what the service declares its stream with: ensuring the
        stream updates it to this config."""
        self.dsn = dsn
        self.service = service
        self.schema = service  # a service's store lives in the schema named after it
        self.nats = nats
        self.js = nats.jetstream()
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.stream_replicas = stream_replicas
        self.on_acked = on_acked
        self.leader = asyncio.Event()
        self._published = metrics.relay_published.labels(service)
        self._lag = metrics.relay_lag.labels(service)
        self.position = 0

    async def run(self) -> None:
        """Lead (or wait to lead) until cancelled, reconnecting after Postgres failures."""
        await retry(
            self._lead,
            errors=(OSError, asyncpg.PostgresError, asyncpg.InterfaceError),
            what="relay: Postgres",
        )

    async def _lead(self) -> None:
        conn = await connect(self.dsn, self.schema, lock_timeout="0")
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", lock_key(self.schema, "relay"))
            wake = asyncio.Event()
            await conn.add_listener(f"{self.schema}_events", lambda *_: wake.set())
            await self._ensure_stream()
            self.position = await self._resume_position(conn)
            self.leader.set()
            metrics.relay_leader.labels(self.service).set(1)
            log.info("relay leading", position=self.position)
            while True:
                wake.clear()
                batch = await read_all(conn, self.position, self.batch_size)
                if not batch:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation
                    # that arrives as the wake-up does, and the relay would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(IDLE_RECHECK_S):
                            await wake.wait()
                    continue
                await self._publish_until_acked(batch)
                self.position = batch[-1].position
                await conn.execute(
                    "INSERT INTO relay_checkpoints (relay, position) VALUES ('jetstream', $1) "
                    "ON CONFLICT (relay) DO UPDATE SET position = $1, updated_at = now()",
                    self.position,
                )
        finally:
            self.leader.clear()
            metrics.relay_leader.labels(self.service).set(0)
            # Not a graceful close: cancelled mid-query, close() can time out and leave the
            # session, and so the leadership lock, alive. Dropping the socket ends both.
            conn.terminate()

    async def _ensure_stream(self) -> None:
        await retry(
            lambda: ensure_stream(self.js, service_stream(self.service, self.stream_replicas)),
            errors=(TimeoutError, NatsError, OSError),
            what="relay: JetStream",
        )

    async def _publish_until_acked(self, batch: list[RecordedEvent]) -> None:
        await retry(
            lambda: publish_events(self.js, self.service, batch, self.ack_timeout),
            errors=(PublishError,),
            what="relay: publish",
            first_delay=0.05,
            on_failure=lambda _: metrics.relay_failures.labels(self.service).inc(),
        )
        if self.on_acked is not None:
            self.on_acked(batch)
        now = datetime.now(UTC)
        self._published.inc(len(batch))
        for event in batch:
            self._lag.observe((now - event.occurred_at).total_seconds())

    async def _resume_position(self, conn: asyncpg.Connection) -> int:
        """The checkpoint, or the last event already in the stream if that is further on.

        The stream's last message is trusted only if the store holds the same event id at that
        position, so a stream left over from another database never makes the relay skip.
        """
        checkpoint = await conn.fetchval(
            "SELECT position FROM relay_checkpoints WHERE relay = 'jetstream'"
        )
        checkpoint = int(checkpoint or 0)
        try:
            info = await self.js.stream_info(stream_name(self.service))
            if not info.state.last_seq:
                return checkpoint
            last = await self.js.get_msg(stream_name(self.service), seq=info.state.last_seq)
        except (NotFoundError, TimeoutError, NatsError):
            return checkpoint
        headers = last.headers or {}
        stream_position = int(headers.get(POSITION_HEADER, 0))
        if stream_position <= checkpoint:
            return checkpoint
        stored = await conn.fetchval(
            "SELECT event_id FROM events WHERE position = $1", stream_position
        )
        if stored is not None and str(stored) == headers.get("Nats-Msg-Id"):
            return stream_position
        return checkpoint


async def republish(
    pool: "asyncpg.Pool[Any]",
    js: JetStreamContext,
    service: str,
    from_position: int = 1,
    *,
    batch_size: int = 500,
    ack_timeout: float = 10.0,
    stream_replicas: int = 1,
) -> int:
    """Publish every stored event from ``from_position`` on; returns how many were sent.

    Events still inside the stream's duplicate window are de-duplicated by JetStream.
    """
    await ensure_stream(js, service_stream(service, stream_replicas))
    sent, after, started = 0, from_position - 1, time.monotonic()
    while batch := await read_all(pool, after, batch_size):
        await publish_events(js, service, batch, ack_timeout)
        sent += len(batch)
        after = batch[-1].position
    log.info(
        "republished", service=service, events=sent, seconds=round(time.monotonic() - started, 2)
    )
    return sent
