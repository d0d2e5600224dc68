"""Durable JetStream consumers whose effects happen exactly once, handled in batches.

Each consumer pulls continuously (``runtime.pulling``) and handles whatever has arrived, up
to ``max_batch`` messages, in stream order and in **one** Postgres transaction: one multi-row
inbox insert (consumer name + event id) returns the events not handled before, their handlers
run in order on the same connection, and one COMMIT covers them all. Only then are the
messages acknowledged, without waiting for the server's reply: a redelivered message finds
its inbox row and is acknowledged without running the handler again.

When a batch fails, its messages are handled again one at a time, each in its own
transaction, under the rules below, so one poison message does not hold the others back.

A message that cannot be read, or whose handler keeps failing, is published to
``antechamber.deadletter.<service>`` with the reason and terminated, so the consumer moves on.
Failures to reach Postgres are not the message's fault: they are retried with back-off and do
not count towards dead-lettering, up to a hard bound (``CRASH_FACTOR`` x ``max_deliver``
deliveries) that also catches a message that crashes the process every time.

Inbox rows are pruned (``prune_inbox``) once their message can never come back: older than
the stream's duplicate window plus the longest redelivery, and at or below the consumer's
acknowledgement floor.
"""

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import structlog
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from contracts.deadletter import DeadLetter, deadletter_subject
from contracts.envelope import EventEnvelope, RawEnvelope, event_subject
from contracts.events import Event, EventRegistry, UnknownEventError
from runtime import metrics
from runtime.context import ServiceContext
from runtime.db import Executor
from runtime.deferred import HeldWrites
from runtime.pulling import Pull
from runtime.settings import RuntimeSettings
from runtime.streams import DUPLICATE_WINDOW_S, stream_name
from runtime.telemetry import consumer_span

log = structlog.get_logger(__name__)

Handler = Callable[[ServiceContext, Executor, Any, EventEnvelope[Any]], Awaitable[None]]
"""``async def handler(ctx, conn, event, envelope)``: effects go through ``conn``, which is in
the transaction that also records the inbox row (pass it to ``ctx.store.append(conn=conn)``)."""

BatchHandler = Callable[
    [ServiceContext, Executor, Sequence[tuple[Any, EventEnvelope[Any]]]], Awaitable[None]
]
"""``async def handler(ctx, conn, events)``: consecutive new events of one type, in stream
order, for an effect that is cheaper as one set-based statement than as one per event."""

CRASH_FACTOR = 10
MAX_RETRY_DELAY_S = 30.0
INFRASTRUCTURE_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
OUTCOMES = ("handled", "duplicate", "retried", "deadlettered")

_RECORD = (
    "WITH recorded AS ("
    "INSERT INTO inbox (consumer, event_id, stream_seq) "
    "SELECT $1, e, s FROM unnest($2::uuid[], $3::bigint[]) AS t(e, s) "
    "ON CONFLICT DO NOTHING RETURNING event_id) "
    "SELECT array(SELECT event_id FROM recorded)"
)
"""Records a batch in the inbox; the event ids not recorded before (each once)."""


@dataclass(frozen=True)
class Consumer:
    """One durable subscription of a service to events another service publishes."""

    name: str
    source: str
    registry: EventRegistry
    handlers: Mapping[str, Handler]
    batch_handlers: Mapping[str, BatchHandler] = field(default_factory=dict)
    """Event types handled a run at a time (see ``BatchHandler``) rather than one by one."""
    max_deliver: int | None = None
    """Handler failures before dead-lettering; None: the service's setting."""
    ack_wait_s: float | None = None
    """How long an unacknowledged message waits before redelivery; None: the setting."""
    max_batch: int | None = None
    """Most messages handled in one transaction; None: the service's setting."""

    def __post_init__(self) -> None:
        known = {cls.event_type() for cls in self.registry}
        unknown = (set(self.handlers) | set(self.batch_handlers)) - known
        if unknown:
            raise ValueError(f"{self.source} publishes no event named {sorted(unknown)}")
        both = set(self.handlers) & set(self.batch_handlers)
        if both:
            raise ValueError(f"{sorted(both)} have both a handler and a batch handler")

    def durable(self, service: str) -> str:
        return f"{service}-{self.name}"

    def event_types(self) -> list[str]:
        return sorted({*self.handlers, *self.batch_handlers})

    def subjects(self) -> list[str]:
        return [event_subject("*", self.source, t) for t in self.event_types()]

    def config(self, service: str, settings: RuntimeSettings) -> ConsumerConfig:
        durable = self.durable(service)
        return ConsumerConfig(
            durable_name=durable,
            filter_subjects=self.subjects(),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s or settings.consumer_ack_wait_s,
            max_deliver=-1,  # our own bound dead-letters instead of dropping silently
        )

    def retention_s(self, settings: RuntimeSettings) -> float:
        """How long an inbox row must outlive its handling: the stream's duplicate window
        (a republish inside it never reaches us) plus the longest a message can keep being
        redelivered before it is dead-lettered."""
        ack_wait = self.ack_wait_s or settings.consumer_ack_wait_s
        deliveries = CRASH_FACTOR * (self.max_deliver or settings.consumer_max_deliver)
        return DUPLICATE_WINDOW_S + deliveries * (ack_wait + MAX_RETRY_DELAY_S)


@dataclass(eq=False)
class _Item:
    """A message that was read: what it holds and what handles it."""

    msg: Msg
    envelope: EventEnvelope[Any]
    """Its ``data`` is the event itself on the usual path, the raw payload otherwise."""
    event: Event
    deliveries: int


class ConsumerLoop:
    """Runs one consumer of one service: a continuous pull, handled a batch at a time."""

    def __init__(
        self,
        consumer: Consumer,
        *,
        service: str,
        context: ServiceContext,
        nats: NATS | None = None,
        after_commit: Callable[[EventEnvelope[Any]], Awaitable[None]] | None = None,
    ) -> None:
        """``nats``: the connection to pull on (the context's by default). ``after_commit``
        runs for each message between its commit and its acknowledgement (tests, benches)."""
        settings = context.settings
        self.consumer = consumer
        self.service = service
        self.durable = consumer.durable(service)
        self.context = context
        self.pool = context.pool
        self.nats = nats or context.nats
        self.js = self.nats.jetstream()
        self.stream = stream_name(consumer.source)
        self.max_deliver = consumer.max_deliver or settings.consumer_max_deliver
        self.max_batch = consumer.max_batch or settings.consumer_max_batch
        self.config = consumer.config(service, settings)
        self.after_commit = after_commit
        self.pull = Pull(
            self.nats, self.stream, self.durable, self.max_batch, on_silence=self.declare
        )
        self._outcome = {
            o: metrics.consumer_outcomes.labels(service, self.durable, o) for o in OUTCOMES
        }
        self._task: asyncio.Task[None] | None = None
        wanted = set(consumer.event_types())
        self._typed: dict[str, type[EventEnvelope[Any]]] = {
            cls.event_type(): EventEnvelope[cls]  # type: ignore[valid-type]
            for cls in consumer.registry
            if cls.event_type() in wanted
        }

    async def declare(self) -> None:
        """Create the durable consumer, or update it to this config (idempotent)."""
        await self.js.add_consumer(self.stream, self.config)

    async def start(self) -> None:
        await self.declare()
        await self.pull.start()
        self._task = asyncio.create_task(self._run(), name=f"consume {self.durable}")

    async def stop(self, wait_s: float = 5.0) -> None:
        """Stop pulling; a batch being handled may finish (for ``wait_s``), else it rolls back
        and its messages are redelivered."""
        await self.pull.stop()
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):  # a pull that was waiting returns at once
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = await self.pull.take(self.max_batch)
            if not batch:
                return  # stopped
            try:
                await self.handle(batch)
            except (NatsError, OSError) as exc:
                # Not acknowledged (NATS is away): the messages come back after ack_wait.
                log.warning("consumer lost NATS mid-batch", consumer=self.durable, error=str(exc))

    # --- a batch ---------------------------------------------------------------------------

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Handle ``msgs`` (in stream order) as the module docstring says."""
        items = []
        for msg in msgs:
            item = await self._read(msg)
            if item is not None:
                items.append(item)
        if not items:
            return
        try:
            handled = await self._commit(items)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("consumer cannot reach Postgres", consumer=self.durable, error=str(exc))
            for item in items:
                self._outcome["retried"].inc()
                await item.msg.nak(delay=min(2.0 ** min(item.deliveries, 5), MAX_RETRY_DELAY_S))
            return
        except Exception:
            # Some handler refused; find which, one message at a time, as before batching.
            for item in items:
                await self._handle_one(item)
            return
        handled_ids = {id(item) for item in handled}
        for item in items:
            self._outcome["handled" if id(item) in handled_ids else "duplicate"].inc()
            if self.after_commit is not None:
                await self.after_commit(item.envelope)
        for item in items:
            await item.msg.ack()  # not waited for: the inbox makes a redelivery harmless

    async def _commit(self, items: Sequence[_Item]) -> list[_Item]:
        """One transaction: the inbox rows, then the handlers of the events not seen before,
        in order, their writes held back and sent a run of one statement at a time; the
        items whose handlers ran."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = set(
                await conn.fetchval(
                    _RECORD,
                    self.durable,
                    [i.envelope.event_id for i in items],
                    [_stream_seq(i.msg) for i in items],
                )
            )
            todo = []
            for item in items:
                if item.envelope.event_id in fresh:
                    fresh.discard(item.envelope.event_id)  # the same event twice in one batch
                    todo.append(item)
            writes = HeldWrites(conn)
            await self._run_handlers(writes.executor(), todo)
            await writes.flush()
        return todo

    async def _run_handlers(self, conn: Executor, todo: Sequence[_Item]) -> None:
        i = 0
        while i < len(todo):
            item = todo[i]
            event_type = item.envelope.type
            batch_handler = self.consumer.batch_handlers.get(event_type)
            if batch_handler is None:
                handler = self.consumer.handlers[event_type]
                with consumer_span(event_type, self.durable, item.msg.headers):
                    await handler(self.context, conn, item.event, item.envelope)
                i += 1
                continue
            end = i + 1
            while end < len(todo) and todo[end].envelope.type == event_type:
                end += 1
            run = [(r.event, r.envelope) for r in todo[i:end]]
            with consumer_span(event_type, self.durable, item.msg.headers):
                await batch_handler(self.context, conn, run)
            i = end

    # --- one message -----------------------------------------------------------------------

    async def _read(self, msg: Msg) -> _Item | None:
        """The message's event and handler, or None once it has been dead-lettered."""
        deliveries = msg.metadata.num_delivered or 1
        crashed = deliveries > CRASH_FACTOR * self.max_deliver
        if not crashed and (item := self._read_typed(msg, deliveries)) is not None:
            return item
        try:
            envelope = RawEnvelope.model_validate_json(msg.data)
        except ValidationError as exc:
            reason = f"not a valid event envelope: {_describe(exc)}"
            await self._dead_letter(msg, "unparseable", reason)
            return None
        try:
            event = self.consumer.registry.decode(
                envelope.type, envelope.schema_version, envelope.data
            )
        except ValidationError as exc:
            reason = f"{envelope.type} v{envelope.schema_version} payload is not valid: "
            await self._dead_letter(msg, "unparseable", reason + _describe(exc))
            return None
        except UnknownEventError as exc:
            await self._dead_letter(msg, "unknown_event", str(exc))
            return None
        if envelope.type not in self._typed:
            await self._dead_letter(
                msg, "unknown_event", f"{self.durable} has no handler for {envelope.type}"
            )
            return None
        if crashed:
            await self._dead_letter(
                msg,
                "handler_failed",
                f"delivered {deliveries} times without being acknowledged "
                "(the consumer stopped or could not reach Postgres each time)",
            )
            return None
        return _Item(msg, envelope, event, deliveries)

    def _read_typed(self, msg: Msg, deliveries: int) -> _Item | None:
        """One validation pass for the usual message: the type its subject names, at this
        build's schema version. Anything else (None) takes the general path, which upcasts
        older versions and says precisely what is wrong."""
        event_type = msg.subject.rpartition(".")[2]
        typed = self._typed.get(event_type)
        if typed is None:
            return None
        try:
            envelope = typed.model_validate_json(msg.data)
        except ValidationError:
            return None
        cls = type(envelope.data)
        if envelope.type != event_type or envelope.schema_version != cls.schema_version:
            return None
        return _Item(msg, envelope, envelope.data, deliveries)

    async def _handle_one(self, item: _Item) -> None:
        msg, envelope, deliveries = item.msg, item.envelope, item.deliveries
        try:
            fresh = bool(await self._commit([item]))
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("consumer cannot reach Postgres", consumer=self.durable, error=str(exc))
            self._outcome["retried"].inc()
            await msg.nak(delay=min(2.0 ** min(deliveries, 5), MAX_RETRY_DELAY_S))
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
            self._outcome["retried"].inc()
            await msg.nak(delay=min(0.5 * 2 ** (deliveries - 1), MAX_RETRY_DELAY_S))
            return
        self._outcome["handled" if fresh else "duplicate"].inc()
        if self.after_commit is not None:
            await self.after_commit(envelope)
        await msg.ack()

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
        self._outcome["deadlettered"].inc()
        log.error(
            "message dead-lettered",
            consumer=self.durable,
            kind=kind,
            reason=reason,
            subject=msg.subject,
            stream_sequence=letter.stream_sequence,
        )


def _stream_seq(msg: Msg) -> int | None:
    sequence = msg.metadata.sequence
    return sequence.stream if sequence is not None else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else "(no message)"


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where + ': ' if where else ''}{first['msg']}{more}"


def attach(broker: NatsBroker, consumer: Consumer, *, service: str) -> None:
    """Declare ``consumer`` on ``broker`` for the AsyncAPI document (it is run by
    :class:`ConsumerLoop`, not by the broker)."""
    settings = RuntimeSettings()
    durable = consumer.durable(service)
    subscriber = broker.subscriber(
        stream=JStream(stream_name(consumer.source), declare=False),
        durable=durable,
        pull_sub=PullSub(batch_size=consumer.max_batch or settings.consumer_max_batch, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=consumer.config(service, settings),
        title=durable,
        description=(
            f"{service} consumes {', '.join(consumer.event_types())} from {consumer.source}"
        ),
    )

    @subscriber
    async def on_events(batch: Annotated[NatsBatchMessage, Context("message")]) -> None:
        raise RuntimeError(f"{durable} is declared for documentation only")

    _ = on_events
