"""Retention of the consumers' inbox (the events each consumer has handled).

A row may go once its event can never be delivered to that consumer again:
- it is older than the consumer's retention (``Consumer.retention_s``): the stream's
  duplicate window, so a republish inside it is dropped by JetStream, plus the longest a
  message can go on being redelivered before it is dead-lettered;
- and its message is at or below the consumer's acknowledgement floor, so JetStream will not
  redeliver it even after a long outage (a row whose sequence is beyond the stream's last one
  belongs to a stream that was re-created).

Deletes go in bounded chunks, so no lock is held for long. Every replica prunes; concurrent
deletes of the same rows are harmless.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

log = structlog.get_logger(__name__)
CHUNK = 5_000

_PRUNE = """
DELETE FROM inbox WHERE ctid IN (
    SELECT ctid FROM inbox
     WHERE consumer = $1
       AND handled_at < now() - make_interval(secs => $2)
       AND (stream_seq IS NULL OR stream_seq <= $3 OR stream_seq > $4)
     LIMIT $5)
"""


@dataclass(frozen=True)
class Retention:
    durable: str
    stream: str
    retention_s: float


async def prune_inbox(
    pool: "asyncpg.Pool[Any]", js: JetStreamContext, retentions: Sequence[Retention]
) -> int:
    """Delete what can never be redelivered; returns how many rows went."""
    pruned = 0
    for r in retentions:
        try:
            info = await js.consumer_info(r.stream, r.durable)
            stream = await js.stream_info(r.stream)
        except (NatsError, TimeoutError) as exc:
            log.info(
                "inbox not pruned: JetStream did not answer", consumer=r.durable, error=str(exc)
            )
            continue
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        last = stream.state.last_seq
        while True:
            status = await pool.execute(_PRUNE, r.durable, r.retention_s, floor or 0, last, CHUNK)
            deleted = int(status.split()[-1])
            pruned += deleted
            if deleted < CHUNK:
                break
    return pruned


async def keep_pruning(
    pool: "asyncpg.Pool[Any]",
    js: JetStreamContext,
    retentions: Sequence[Retention],
    interval_s: float,
) -> None:
    """Prune every ``interval_s`` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            pruned = await prune_inbox(pool, js, retentions)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("inbox not pruned", error=str(exc))
            continue
        if pruned:
            log.info("inbox pruned", rows=pruned)
