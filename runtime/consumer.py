"""Durable JetStream consumers (FastStream) whose effects happen exactly once.

A handler's effects and an inbox row (consumer name + event id) commit in one Postgres
transaction, and only then is the message acknowledged. A redelivered message finds its inbox
row and is acknowledged without running the handler again.

A message that cannot be read, or whose handler keeps failing, is published to
``antechamber.deadletter.<service>`` with the reason and terminated, so the consumer moves on.
Failures to reach Postgres are not the message's fault: they are retried with back-off and do
not count towards dead-lettering, up to a hard bound (``CRASH_FACTOR`` x ``max_deliver``
deliveries) that also catches a message that crashes the process every time.
"""

import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import structlog
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from contracts.deadletter import DeadLetter, deadletter_subject
from contracts.envelope import RawEnvelope, event_subject
from contracts.events import Event, EventRegistry, UnknownEventError
from runtime import metrics
from runtime.context import ServiceContext
from runtime.db import Executor
from runtime.settings import RuntimeSettings
from runtime.streams import stream_name
from runtime.telemetry import context_from, tracer

log = structlog.get_logger(__name__)

Handler = Callable[[ServiceContext, Executor, Any, RawEnvelope], Awaitable[None]]
"""``async def handler(ctx, conn, event, envelope)``: effects go through ``conn``, which is in
the transaction that also records the inbox row (pass it to ``ctx.store.append(conn=conn)``)."""

CRASH_FACTOR = 10
INFRASTRUCTURE_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)


@dataclass(frozen=True)
class Consumer:
    """One durable subscription of a service to events another service publishes."""

    name: str
    source: str
    registry: EventRegistry
    handlers: Mapping[str, Handler]
    max_deliver: int | None = None
    """Handler failures before dead-lettering; None: the service's setting."""
    ack_wait_s: float | None = None
    """How long an unacknowledged message waits before redelivery; None: the setting."""

    def __post_init__(self) -> None:
        unknown = set(self.handlers) - {cls.event_type() for cls in self.registry}
        if unknown:
            raise ValueError(f"{self.source} publishes no event named {sorted(unknown)}")

    def durable(self, service: str) -> str:
        return f"{service}-{self.name}"

    def subjects(self) -> list[str]:
        return sorted(event_subject("*", self.source, t) for t in self.handlers)


class _Delivery:
    """Handles one message of one consumer; see the module docstring for the rules."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        service: str,
        max_deliver: int,
        context: ServiceContext,
        after_commit: Callable[[RawEnvelope], Awaitable[None]] | None,
    ) -> None:
        self.consumer = consumer
        self.max_deliver = max_deliver
        self.service = service
        self.durable = consumer.durable(service)
        self.context = context
        self.pool = context.pool
        self.js = context.nats.jetstream()
        self.after_commit = after_commit

    def _count(self, outcome: str) -> None:
        metrics.consumer_outcomes.labels(self.service, self.durable, outcome).inc()

    async def __call__(self, msg: Msg) -> None:
        deliveries = msg.metadata.num_delivered or 1
        try:
            envelope = RawEnvelope.model_validate_json(msg.data)
        except ValidationError as exc:
            return await self._dead_letter(
                msg, "unparseable", f"not a valid event envelope: {_describe(exc)}"
            )
        try:
            event = self.consumer.registry.decode(
                envelope.type, envelope.schema_version, envelope.data
            )
        except ValidationError as exc:
            reason = f"{envelope.type} v{envelope.schema_version} payload is not valid: "
            return await self._dead_letter(msg, "unparseable", reason + _describe(exc))
        except UnknownEventError as exc:
            return await self._dead_letter(msg, "unknown_event", str(exc))
        handler = self.consumer.handlers.get(envelope.type)
        if handler is None:
            return await self._dead_letter(
                msg, "unknown_event", f"{self.durable} has no handler for {envelope.type}"
            )
        if deliveries > CRASH_FACTOR * self.max_deliver:
            return await self._dead_letter(
                msg,
                "handler_failed",
                f"delivered {deliveries} times without being acknowledged "
                "(the consumer stopped or could not reach Postgres each time)",
            )
        with tracer.start_as_current_span(
            f"consume {envelope.type}", context=context_from(msg.headers), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.consumer.group.name", self.durable)
            await self._handle(msg, handler, event, envelope, deliveries)

    async def _handle(
        self, msg: Msg, handler: Handler, event: Event, envelope: RawEnvelope, deliveries: int
    ) -> None:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                fresh = await conn.fetchval(
                    "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) "
                    "ON CONFLICT DO NOTHING RETURNING true",
                    self.durable,
                    envelope.event_id,
                )
                if fresh:
                    await handler(self.context, conn, event, envelope)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("consumer cannot reach Postgres", consumer=self.durable, error=str(exc))
            self._count("retried")
            await msg.nak(delay=min(2.0 ** min(deliveries, 5), 30.0))
            return
        except Exception as exc:
            if deliveries >= self.max_deliver:
                reason = f"handler failed {deliveries} times: {type(exc).__name__}: {exc}"
                await self._dead_letter(msg, "handler_failed", _first_line(reason))
                return
            log.warning(
                "handler failed, will retry",
                consumer=self.durable,
                event_id=str(envelope.event_id),
                event_type=envelope.type,
                delivery=deliveries,
                exc_info=True,
            )
            self._count("retried")
            await msg.nak(delay=min(0.5 * 2 ** (deliveries - 1), 30.0))
            return
        self._count("handled" if fresh else "duplicate")
        if self.after_commit is not None:
            await self.after_commit(envelope)
        await msg.ack_sync()

    async def _dead_letter(self, msg: Msg, kind: str, reason: str) -> None:
        metadata = msg.metadata
        letter = DeadLetter(
            service=self.service,
            consumer=self.durable,
            reason=reason,
            kind=kind,
            subject=msg.subject,
            stream_sequence=metadata.sequence.stream if metadata.sequence else None,
            deliveries=metadata.num_delivered or 1,
            event_id=(msg.headers or {}).get("Nats-Msg-Id"),
            payload_b64=base64.b64encode(msg.data).decode(),
            dead_lettered_at=datetime.now(UTC),
        )
        await self.js.publish(
            deadletter_subject(self.service),
            letter.model_dump_json().encode(),
            headers={"Nats-Msg-Id": f"{self.durable}:{letter.stream_sequence}:{kind}"},
        )
        await msg.term()
        metrics.deadletters.labels(self.service, self.durable, kind).inc()
        self._count("deadlettered")
        log.error(
            "message dead-lettered",
            consumer=self.durable,
            kind=kind,
            reason=reason,
            subject=msg.subject,
            stream_sequence=letter.stream_sequence,
        )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "(no message)"


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


def attach(
    broker: NatsBroker,
    consumer: Consumer,
    *,
    service: str,
    context: ServiceContext | None,
    after_commit: Callable[[RawEnvelope], Awaitable[None]] | None = None,
) -> None:
    """Register ``consumer`` as a durable pull subscriber on ``broker``.

    Without a context (documentation only) the subscriber is declared but cannot run.
    """
    settings = context.settings if context is not None else RuntimeSettings()
    max_deliver = consumer.max_deliver or settings.consumer_max_deliver
    durable = consumer.durable(service)
    deliver = (
        _Delivery(
            consumer,
            service=service,
            max_deliver=max_deliver,
            context=context,
            after_commit=after_commit,
        )
        if context is not None
        else None
    )
    subscriber = broker.subscriber(
        stream=JStream(stream_name(consumer.source), declare=False),
        durable=durable,
        # One message per fetch, handled in stream order. FastStream runs the messages of a
        # larger pull batch concurrently (reordering a stream), and nats-py's lingering pull
        # waits until a larger batch is full (adding up to the fetch timeout of latency).
        pull_sub=PullSub(batch_size=1, timeout=5.0, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(
            durable_name=durable,
            filter_subjects=consumer.subjects(),
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=consumer.ack_wait_s or settings.consumer_ack_wait_s,
            max_deliver=-1,  # our own bound dead-letters instead of dropping silently
        ),
        title=durable,
        description=(
            f"{service} consumes {', '.join(sorted(consumer.handlers))} from {consumer.source}"
        ),
    )

    @subscriber
    async def on_events(batch: Annotated[NatsBatchMessage, Context("message")]) -> None:
        if deliver is None:
            raise RuntimeError(f"{durable} was declared for documentation only")
        for msg in batch.raw_message:
            await deliver(msg)

    _ = on_events
