"""Events waiting to be appended to the store, written in the background.

A refusal is answered at once; its ``SeatRefused`` follows a moment later, so Postgres is
never on the path of a seat answer. Nothing is dropped: a failed append stays queued and is
tried again, and what is still queued when the node stops is written before the pool closes.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from contracts.events import Event
from runtime.context import ServiceContext
from runtime.eventstore import ConcurrencyError, EventStore

log = structlog.get_logger(__name__)
RETRY_S = 1.0
FLUSH_AT_STOP_S = 5.0


@dataclass(frozen=True)
class Pending:
    stream_id: str
    clinic_id: str
    event: Event


@dataclass
class Journal:
    pending: list[Pending] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    """Each stream's last version as far as this node knows (another node may append too)."""
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _saving: "asyncio.Future[bool] | None" = field(default=None, repr=False)

    def record(self, stream_id: str, clinic_id: str, event: Event) -> None:
        """Queue ``event`` for ``stream_id``; returns at once."""
        self.pending.append(Pending(stream_id, clinic_id, event))
        self._wake.set()

    async def run(self, ctx: ServiceContext) -> None:
        """Background task: append what is queued, as it comes."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self.flush(ctx.store)
        finally:
            # Stopping: finish the append in flight, then write what is left.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(FLUSH_AT_STOP_S):
                    if self._saving is not None:
                        await self._saving
                    await self.flush(ctx.store)
            if self.pending:
                log.error("events not appended at stop", count=len(self.pending))

    async def flush(self, store: EventStore) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            # Shielded: cancelling the task must not cut an append whose outcome we need.
            self._saving = asyncio.ensure_future(self._save(store, batch))
            if not await asyncio.shield(self._saving):
                await asyncio.sleep(RETRY_S)

    async def _save(self, store: EventStore, batch: list[Pending]) -> bool:
        streams: dict[tuple[str, str], list[Event]] = {}
        for p in batch:
            streams.setdefault((p.stream_id, p.clinic_id), []).append(p.event)
        keys = list(streams)
        outcomes = await asyncio.gather(
            *(self._append(store, s, c, streams[(s, c)]) for s, c in keys),
            return_exceptions=True,
        )
        failed = [
            Pending(s, c, e)
            for (s, c), outcome in zip(keys, outcomes, strict=True)
            if isinstance(outcome, BaseException)
            for e in streams[(s, c)]
        ]
        if failed:
            log.warning("events not appended yet; trying again", count=len(failed))
            self.pending[:0] = failed  # ahead of newer ones, so each stream keeps its order
        return not failed

    async def _append(
        self, store: EventStore, stream_id: str, clinic_id: str, events: list[Event]
    ) -> None:
        while True:
            expected = self.versions.get(stream_id, 0)
            try:
                recorded = await store.append(stream_id, expected, events, clinic_id=clinic_id)
            except ConcurrencyError as exc:
                # These events do not depend on the stream's state: append after whatever
                # is there (another node's, or an earlier owner's).
                self.versions[stream_id] = exc.actual or 0
                continue
            self.versions[stream_id] = recorded[-1].version
            return
