"""Read caches that Postgres keeps honest, on every replica.

An entry is stored with tags naming what it was read from (``link:<id>``, ``clinic:<id>``).
A table it was read from carries the ``notify_change`` trigger (``sql/0003_change_notices.sql``),
which sends those tags on the channel ``<schema>_changes`` in the transaction that changes a
row. Postgres delivers the notices at COMMIT to every listening connection, in commit order,
so each replica's :class:`Invalidations` drops the entries within a round trip of the change,
whichever replica (or consumer) made it.

Two races are closed here rather than by the callers:
- A read that started before a change and stores its answer after the change's notice came
  in would put back what the change made stale. ``put`` takes the cache's generation from
  before the read and stores nothing when any notice arrived since.
- While the listening connection is down, notices are lost. A cache is only used while its
  listener is connected; on a loss it is emptied and bypassed until the listener is back.

The same notices wake a reader that waits for a row to appear (``Invalidations.noticing``),
e.g. a session another replica's consumer is about to record.
"""

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from runtime import metrics
from runtime.db import check_schema, connect
from runtime.retry import retry

log = structlog.get_logger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TaggedCache(Generic[K, V]):
    """Least recently used entries, each dropped when one of its tags is noticed."""

    def __init__(self, service: str, name: str, max_entries: int = 10_000) -> None:
        self.name = name
        self.max_entries = max_entries
        self.generation = 0
        """Bumped by every notice and reset; a read that saw another generation stores nothing."""
        self.live = False
        """Whether a listener is connected; until then every lookup misses and nothing is kept."""
        self._entries: OrderedDict[K, tuple[V, tuple[str, ...]]] = OrderedDict()
        self._by_tag: dict[str, set[K]] = {}
        self._hit = metrics.cache_lookups.labels(service, name, "hit")
        self._miss = metrics.cache_lookups.labels(service, name, "miss")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key) if self.live else None
        if entry is None:
            self._miss.inc()
            return None
        self._entries.move_to_end(key)
        self._hit.inc()
        return entry[0]

    async def read_through(
        self, key: K, read: Callable[[], Awaitable[tuple[V, Iterable[str]] | None]]
    ) -> V | None:
        """The entry for ``key``; else what ``read`` finds (its value and tags), kept unless a
        notice came in meanwhile. None, and nothing kept, when ``read`` finds nothing."""
        if (hit := self.get(key)) is not None:
            return hit
        since = self.generation
        found = await read()
        if found is None:
            return None
        value, tags = found
        self.put(key, value, tags, since)
        return value

    def put(self, key: K, value: V, tags: Iterable[str], since: int) -> None:
        """Keep ``value``, read when the generation was ``since``, unless a notice came since."""
        if not self.live or since != self.generation:
            return
        self._forget(key)
        kept = tuple(set(tags))
        self._entries[key] = (value, kept)
        for tag in kept:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._forget(next(iter(self._entries)))

    def drop(self, tag: str) -> None:
        """Forget every entry tagged ``tag`` (a row it was read from changed)."""
        self.generation += 1
        for key in self._by_tag.pop(tag, ()):
            self._forget(key)

    def reset(self, *, live: bool) -> None:
        """Forget everything: the listener (re)connected, or lost its connection."""
        self.generation += 1
        self.live = live
        self._entries.clear()
        self._by_tag.clear()

    def _forget(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry[1]:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]


SYNC = "sync:"
SYNC_WAIT_S = 5.0


class Invalidations:
    """Listens for a schema's change notices and drops the tagged entries of its caches."""

    def __init__(self, dsn: str, schema: str, caches: Sequence[TaggedCache[Any, Any]]) -> None:
        self.dsn = dsn
        self.schema = check_schema(schema)
        self.channel = f"{schema}_changes"
        self.caches = list(caches)
        self.listening = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._syncs: dict[str, asyncio.Future[None]] = {}
        self._noticing: dict[str, set[asyncio.Event]] = {}
        self._sending = asyncio.Lock()  # one statement at a time on the listening connection

    async def run(self) -> None:
        """Listen until cancelled, reconnecting (with empty caches) after a lost connection."""
        await retry(
            self._listen,
            errors=(OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError),
            what=f"{self.channel}: Postgres",
        )

    async def _listen(self) -> None:
        conn = await connect(self.dsn, self.schema)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._on_notice)
            self._conn = conn
            for cache in self.caches:
                cache.reset(live=True)
            self.listening.set()
            await lost.wait()
            raise ConnectionError(f"the connection listening on {self.channel} was lost")
        finally:
            self._conn = None
            self.listening.clear()
            for cache in self.caches:
                cache.reset(live=False)
            for waiting in self._syncs.values():
                if not waiting.done():  # nothing is cached now, so nothing is stale
                    waiting.set_result(None)
            self._syncs.clear()
            for events in self._noticing.values():
                for event in events:
                    event.set()  # a notice may have been lost: read again
            conn.terminate()

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        assert isinstance(payload, str)
        if payload.startswith(SYNC):
            waiting = self._syncs.pop(payload, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        for cache in self.caches:
            cache.drop(payload)
        for event in self._noticing.get(payload, ()):
            event.set()

    @contextlib.contextmanager
    def noticing(self, tag: str) -> Iterator[asyncio.Event]:
        """An event set, while the block runs, when a change tagged ``tag`` commits (whichever
        replica or consumer made it) or when the listener is lost: a reader waiting for a row
        to appear clears it, reads, and waits for it before reading again."""
        event = asyncio.Event()
        self._noticing.setdefault(tag, set()).add(event)
        try:
            yield event
        finally:
            events = self._noticing.get(tag)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._noticing[tag]

    async def synced(self) -> None:
        """Return once every change committed before this call has been applied here.

        Notices reach a listener in commit order, so a notice of our own sent now arrives
        after all of them. It never raises: without a listener (or when it is lost meanwhile)
        nothing is cached to be stale, and a notice that does not come back in time is logged
        (the change stands; the caches catch up when the notice arrives).
        """
        conn = self._conn
        if conn is None:
            return
        payload = f"{SYNC}{uuid.uuid4().hex}"
        waiting = asyncio.get_running_loop().create_future()
        self._syncs[payload] = waiting
        try:
            async with self._sending:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload)
            async with asyncio.timeout(SYNC_WAIT_S):
                await waiting
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass  # the listener is going: its caches are emptied and bypassed until it is back
        except TimeoutError:
            log.warning("a change notice did not come back in time", channel=self.channel)
        finally:
            self._syncs.pop(payload, None)
