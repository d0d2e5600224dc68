"""The event store of one service on Postgres (asyncpg).

``append`` checks the stream's version (optimistic concurrency), inserts the events under the
store's commit-order lock (see ``sql/0001_event_store.sql``), updates the projections in the
same transaction and wakes the relay with NOTIFY.
"""

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
from runtime.telemetry import current_trace_context, tracer


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
    """A read model kept in the service's schema, updated in the append's transaction."""

    name: str
    tables: Sequence[str]
    """Tables it owns; emptied before a rebuild."""

    async def apply(self, conn: Executor, event: RecordedEvent) -> None: ...


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
        effects; otherwise it commits on its own. Raises :class:`ConcurrencyError`.
        """
        if not events:
            return []
        cause = cause or Cause()
        with tracer.start_as_current_span("eventstore.append") as span:
            span.set_attribute("db.system", "postgresql")
            span.set_attribute("antechamber.stream_id", stream_id)
            args = (
                self.lock_key,
                self.channel,
                stream_id,
                expected_version,
                [uuid4() for _ in events],
                [e.event_type() for e in events],
                [e.schema_version for e in events],
                clinic_id,
                datetime.now(UTC),
                cause.correlation_id,
                cause.causation_id,
                [e.model_dump(mode="json") for e in events],
                current_trace_context(),
            )
            try:
                if conn is not None:
                    recorded = await self._append(conn, args, events)
                elif self.projections:
                    async with self.transaction() as tx:
                        recorded = await self._append(tx, args, events)
                else:  # one statement, one round trip, its own transaction
                    async with self.pool.acquire() as own:
                        recorded = await self._append(own, args, events)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == "AC409":
                    metrics.append_conflicts.labels(self.schema).inc()
                    detail = getattr(exc, "detail", None)
                    actual = int(detail) if detail and detail.isdigit() else None
                    raise ConcurrencyError(stream_id, expected_version, actual) from exc
                if isinstance(exc, asyncpg.UniqueViolationError):
                    metrics.append_conflicts.labels(self.schema).inc()
                    raise ConcurrencyError(stream_id, expected_version, None) from exc
                raise
        metrics.events_appended.labels(self.schema).inc(len(recorded))
        return recorded

    async def _append(
        self, conn: Executor, args: tuple[Any, ...], events: Sequence[Event]
    ) -> list[RecordedEvent]:
        rows = await conn.fetch(
            "SELECT out_position, out_version FROM append_events"
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb[], $13)",
            *args,
        )
        recorded = [
            RecordedEvent(
                position=row["out_position"],
                stream_id=args[2],
                version=row["out_version"],
                event_id=args[4][i],
                type=args[5][i],
                schema_version=args[6][i],
                clinic_id=args[7],
                occurred_at=args[8],
                correlation_id=args[9],
                causation_id=args[10],
                data=args[11][i],
                trace_context=args[12],
            )
            for i, row in enumerate(rows)
        ]
        for event in recorded:
            for projection in self.projections:
                await projection.apply(conn, event)
        return recorded

    async def read_stream(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
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
