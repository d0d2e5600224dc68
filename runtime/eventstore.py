"""The event store of one service on Postgres (asyncpg).

``append`` checks the stream's version (optimistic concurrency), inserts the events under the
store's commit-order lock (see ``sql/0001_event_store.sql``), updates the projections in the
same transaction and wakes the relay with NOTIFY.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg

from contracts.envelope import EventEnvelope, RawEnvelope
from contracts.events import Event
from runtime import metrics
from runtime.db import Executor, check_schema, lock_key
from runtime.deferred import HeldWrites
from runtime.telemetry import current_trace_context, span


class ConcurrencyError(Exception):
    """The stream moved on since the caller read it: reload and decide again, or refuse."""

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class Cause:
    """Why events are appended: the user action (correlation) and the direct cause."""

    correlation_id: UUID = field(default_factory=uuid4)
    causation_id: UUID | None = None

    @classmethod
    def of(cls, envelope: EventEnvelope[Any]) -> "Cause":
        """Events appended because ``envelope`` was consumed."""
        return cls(envelope.correlation_id, envelope.event_id)


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream_id: str
    version: int
    event_id: UUID
    type: str
    schema_version: int
    clinic_id: str
    occurred_at: datetime
    correlation_id: UUID
    causation_id: UUID | None
    data: dict[str, Any]
    trace_context: dict[str, str]

    def envelope(self, service: str) -> RawEnvelope:
        return RawEnvelope(
            event_id=self.event_id,
            type=self.type,
            schema_version=self.schema_version,
            service=service,
            clinic_id=self.clinic_id,
            stream_id=self.stream_id,
            version=self.version,
            position=self.position,
            occurred_at=self.occurred_at,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            data=self.data,
        )


class Projection(Protocol):
    """A read model kept in the service's schema, updated in the append's transaction.

    Its writes (``execute``, ``executemany``) are held back and sent when the group's events
    have all been applied, runs of the same statement as one pipelined ``executemany`` (one
    round trip), so ``execute`` returns no status; a read sends what is held back first."""

    name: str
    tables: Sequence[str]
    """Tables it owns; emptied before a rebuild."""

    async def apply(self, conn: Executor, event: RecordedEvent) -> None: ...


GROUP_LIMIT = 200
"""Most appends that share one commit."""


@dataclass(frozen=True)
class _Request:
    """One caller's append, waiting to be committed."""

    stream_id: str
    expected: int
    events: Sequence[Event]
    clinic_id: str
    cause: Cause
    event_ids: list[UUID] = field(init=False)
    data: list[dict[str, Any]] = field(init=False)
    occurred_at: datetime = field(init=False, default_factory=lambda: datetime.now(UTC))
    trace_context: dict[str, str] = field(init=False, default_factory=current_trace_context)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_ids", [uuid4() for _ in self.events])
        object.__setattr__(self, "data", [e.model_dump(mode="json") for e in self.events])

    def parameters(self, index: int, lock_key: int, channel: str) -> tuple[Any, ...]:
        """The arguments of ``append_events``, in its order."""
        return (
            index,
            lock_key,
            channel,
            self.stream_id,
            self.expected,
            self.event_ids,
            [e.event_type() for e in self.events],
            [e.schema_version for e in self.events],
            self.clinic_id,
            self.occurred_at,
            self.cause.correlation_id,
            self.cause.causation_id,
            self.data,
            self.trace_context,
        )

    def recorded(self, i: int, row: asyncpg.Record) -> RecordedEvent:
        event = self.events[i]
        return RecordedEvent(
            position=row["out_position"],
            stream_id=self.stream_id,
            version=row["out_version"],
            event_id=self.event_ids[i],
            type=event.event_type(),
            schema_version=event.schema_version,
            clinic_id=self.clinic_id,
            occurred_at=self.occurred_at,
            correlation_id=self.cause.correlation_id,
            causation_id=self.cause.causation_id,
            data=self.data[i],
            trace_context=self.trace_context,
        )


_Outcome = list[RecordedEvent] | ConcurrencyError


def _settle(future: "asyncio.Future[_Outcome]", outcome: "_Outcome | BaseException") -> None:
    if future.done():  # its caller was cancelled; the append itself stands
        return
    if isinstance(outcome, BaseException) and not isinstance(outcome, ConcurrencyError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


_COLUMNS = (
    "position, stream_id, version, event_id, type, schema_version, clinic_id, occurred_at, "
    "correlation_id, causation_id, data, trace_context"
)


def _recorded(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(**dict(row))


class EventStore:
    def __init__(
        self,
        pool: "asyncpg.Pool[Any]",
        schema: str,
        projections: Sequence[Projection] = (),
    ) -> None:
        self.pool = pool
        self.schema = check_schema(schema)
        self.projections = tuple(projections)
        self.lock_key = lock_key(schema, "append")
        self.channel = f"{schema}_events"
        self._waiting: list[tuple[_Request, asyncio.Future[_Outcome]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._appended = metrics.events_appended.labels(schema)
        self._conflicts = metrics.append_conflicts.labels(schema)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """A connection in a transaction, for appends that commit with other effects."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        clinic_id: str,
        cause: Cause | None = None,
        conn: Executor | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` after version ``expected_version`` (0 for a new stream).

        With ``conn`` (already in a transaction) the append commits with the caller's other
        effects. Otherwise it commits with whatever other appends are waiting at that moment
        (group commit: they all wait behind the store's lock, so sharing one commit turns
        many WAL flushes into one). Raises :class:`ConcurrencyError`.
        """
        if not events:
            return []
        with span(
            "eventstore.append", **{"db.system": "postgresql", "antechamber.stream_id": stream_id}
        ):
            # Built inside the span, so the stored trace context is this append's.
            request = _Request(stream_id, expected_version, events, clinic_id, cause or Cause())
            if conn is not None:
                outcome = (await self._append_batch(conn, [request]))[0]
            else:
                outcome = await self._enqueue(request)
        if isinstance(outcome, ConcurrencyError):
            self._conflicts.inc()
            raise outcome
        self._appended.inc(len(outcome))
        return outcome

    async def _enqueue(self, request: "_Request") -> "_Outcome":
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._drainer is None or self._drainer.done():
            # A task of its own, so a caller that is cancelled never strands the others.
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.schema}-appends")
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:GROUP_LIMIT], self._waiting[GROUP_LIMIT:]
            try:
                outcomes = await self._commit([request for request, _ in batch])
            except Exception:
                # One append's failure (say, a projection refusing it) must not fail the
                # others that happened to share its transaction: give each its own.
                for request, future in batch:
                    try:
                        outcome = (await self._commit([request]))[0]
                    except Exception as exc:
                        _settle(future, exc)
                    else:
                        _settle(future, outcome)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                _settle(future, outcome)

    async def _commit(self, requests: list["_Request"]) -> list["_Outcome"]:
        async with self.pool.acquire() as conn:
            if not self.projections:
                # fetchmany pipelines the calls and runs them atomically in one implicit
                # transaction: the whole group commits in one round trip.
                return await self._append_batch(conn, requests)
            async with conn.transaction():  # projections run statements of their own
                return await self._append_batch(conn, requests)

    async def _append_batch(self, conn: Executor, requests: list["_Request"]) -> list["_Outcome"]:
        rows = await conn.fetchmany(
            "SELECT out_request, out_position, out_version FROM append_events"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb[], $14)",
            [r.parameters(i, self.lock_key, self.channel) for i, r in enumerate(requests)],
        )
        deferred = HeldWrites(conn)
        writes = deferred.executor()
        by_request: dict[int, list[asyncpg.Record]] = {}
        for row in rows:
            by_request.setdefault(row["out_request"], []).append(row)
        outcomes: list[_Outcome] = []
        for i, request in enumerate(requests):
            mine = by_request[i]
            if mine[0]["out_position"] is None:
                outcomes.append(
                    ConcurrencyError(request.stream_id, request.expected, mine[0]["out_version"])
                )
                continue
            recorded = [request.recorded(j, row) for j, row in enumerate(mine)]
            for event in recorded:
                for projection in self.projections:
                    await projection.apply(writes, event)
            outcomes.append(recorded)
        await deferred.flush()
        return outcomes

    async def read_stream(
        self, stream_id: str, after_version: int = 0, *, conn: Executor | None = None
    ) -> list[RecordedEvent]:
        """The events of one stream after ``after_version``; with ``conn``, read inside the
        caller's transaction (never a second pool connection while one is held)."""
        rows = await (conn or self.pool).fetch(
            f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version",
            stream_id,
            after_version,
        )
        return [_recorded(r) for r in rows]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events in commit order. Positions may have gaps (rolled-back appends)."""
        return await read_all(self.pool, after_position, limit)

    async def last_position(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(position), 0) FROM events"))


async def read_all(
    conn: "Executor | asyncpg.Pool[Any]", after_position: int, limit: int
) -> list[RecordedEvent]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        after_position,
        limit,
    )
    return [_recorded(r) for r in rows]
