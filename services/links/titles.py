"""Rooms' titles for the join page, opened when a link resolves.

Scheduling publishes a room's title with ``RoomCreated`` and ``RoomRenamed``: in clear for a
practitioner's room, sealed for the client in a client's room (``runtime.personal_data``).
The links service stores each as it comes (``rooms.title``, ``handlers.py``), so its database
holds no client's title in clear. To answer a resolve it asks scheduling to open a sealed one
(``UNSEAL_SUBJECT``, which answers notify and links alone) and keeps the answer in this
process's memory for ``TTL_S`` at most. A title is never logged.

An erased client's titles are gone: ``ClientErased`` empties the stored copy (and every
replica's cached read of it, through the change notice) and what this process kept; until
it arrives, scheduling answers ``erased``. If scheduling does not answer within
``resolve_room_title_wait_s``, the decision goes out without a title, and scheduling is not
asked again for ``PAUSE_S``: while it is down, resolving stays as fast as it was.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

import structlog

from contracts.scheduling import UNSEAL_SUBJECT, OpenedValues, Opening, SealedValues
from runtime.context import ServiceContext
from runtime.personal_data import is_sealed, person_of
from runtime.rpc import RpcError, call

log = structlog.get_logger(__name__)

TTL_S = 30.0
CAPACITY = 10_000
PAUSE_S = 5.0

_Key = tuple[str, str]
"""(clinic id, the title as stored)."""


class RoomTitles:
    """One process's opened titles, each kept for ``TTL_S`` at most."""

    def __init__(self, wait_s: float, ttl_s: float = TTL_S, capacity: int = CAPACITY) -> None:
        self.wait_s = wait_s
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.requests = 0
        """Requests sent to scheduling so far (for tests)."""
        self._opened: OrderedDict[_Key, tuple[float, str | None]] = OrderedDict()
        self._asking: dict[_Key, asyncio.Future[str | None]] = {}
        self._paused_until = 0.0

    async def open(self, ctx: ServiceContext, clinic_id: str, stored: str | None) -> str | None:
        """The title to show for ``stored`` (as ``room_titles`` holds it): a plain one as it
        is; a sealed one opened, or None if its client was erased or scheduling did not
        answer. Resolutions of one room at the same moment share one request."""
        now = time.monotonic()
        self._expire(now)
        if stored is None or not is_sealed(stored):
            return stored
        key = (clinic_id, stored)
        kept = self._opened.get(key)
        if kept is not None:
            return kept[1]
        if now < self._paused_until:
            return None
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(ctx, key))
            self._asking[key] = asking
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(asking)  # one resolution given up does not stop the others'

    async def _ask(self, ctx: ServiceContext, key: _Key) -> str | None:
        clinic_id, sealed = key
        self.requests += 1
        try:
            answer = await call(
                ctx.nats,
                UNSEAL_SUBJECT,
                SealedValues(clinic_id=clinic_id, values=[sealed]),
                OpenedValues,
                self.wait_s,
                identity=ctx.identity,  # scheduling opens values for named services alone
            )
        except (RpcError, ValueError) as exc:
            self._paused_until = time.monotonic() + PAUSE_S
            # An unreadable answer's error would quote it: only its kind is logged.
            why = str(exc) if isinstance(exc, RpcError) else type(exc).__name__
            log.warning("a room's title was not opened; resolving without it", why=why)
            return None
        opened = answer.values[0] if len(answer.values) == 1 else None
        title = opened.value if opened is not None and opened.outcome is Opening.opened else None
        self._keep(key, title)
        return title

    def _keep(self, key: _Key, title: str | None) -> None:
        self._opened[key] = (time.monotonic() + self.ttl_s, title)
        self._opened.move_to_end(key)
        while len(self._opened) > self.capacity:
            self._opened.popitem(last=False)

    def _expire(self, now: float) -> None:
        # Kept in the order they expire (one TTL for all): the oldest go first.
        while self._opened:
            key, (until, _) = next(iter(self._opened.items()))
            if until > now:
                return
            del self._opened[key]

    def forget(self, people: Iterable[UUID]) -> None:
        """Drop what is kept of these people's titles (they were erased)."""
        gone = set(people)
        for key in [k for k in self._opened if person_of(k[1]) in gone]:
            del self._opened[key]

    def __len__(self) -> int:
        return len(self._opened)

    def keeps(self, title: str) -> bool:
        """Whether this plain title is kept (what an erasure must leave behind: nothing)."""
        return any(kept == title for _, kept in self._opened.values())
