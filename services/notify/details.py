"""Recipients' names and addresses, opened by scheduling when a message is written.

Scheduling's events carry them sealed for their person (``runtime.personal_data``), and notify
keeps them so. To write messages it asks scheduling to open them (``UNSEAL_SUBJECT``): the
sender asks once for a whole claimed batch, and what comes back is kept in this process's
memory for ``TTL_S`` at most, never in the database, so a burst of invitations costs one
request per batch and an erasure is honoured within ``TTL_S`` by every process (at once by
the one that consumes ``ClientErased``). Plain values (events from before sealing) pass as
they are.
"""

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from contracts.scheduling import (
    MAX_SEALED_VALUES,
    UNSEAL_SUBJECT,
    OpenedValues,
    Opening,
    SealedValues,
)
from runtime.context import ServiceContext
from runtime.personal_data import is_sealed, person_of
from runtime.rpc import RpcError, call

TTL_S = 30.0
CAPACITY = 20_000
WAIT_S = 5.0


@dataclass(frozen=True)
class Opened:
    """A value as notify may use it: plain, or why not."""

    value: str | None
    outcome: Opening = Opening.opened


class DetailsUnavailable(Exception):
    """Scheduling did not answer: the message waits and is tried again."""


class Details:
    """One process's opened values, each for ``TTL_S`` at most."""

    def __init__(self, ttl_s: float = TTL_S, capacity: int = CAPACITY) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._kept: OrderedDict[tuple[str, str], tuple[float, Opened]] = OrderedDict()
        self.requests = 0
        """Requests sent to scheduling so far (what a burst costs, for tests and benches)."""

    async def open(
        self, ctx: ServiceContext, clinic_id: str, values: Iterable[str | None]
    ) -> dict[str, Opened]:
        """Each of ``values`` (None skipped) as it may be used; sealed ones not kept are asked
        for in as few requests as the batch limit allows. Raises :class:`DetailsUnavailable`."""
        now = time.monotonic()
        found: dict[str, Opened] = {}
        missing: list[str] = []
        for value in dict.fromkeys(v for v in values if v is not None):
            kept = self._kept.get((clinic_id, value))
            if not is_sealed(value):
                found[value] = Opened(value)
            elif kept is not None and kept[0] > now:
                found[value] = kept[1]
            else:
                missing.append(value)
        for first in range(0, len(missing), MAX_SEALED_VALUES):
            asked = missing[first : first + MAX_SEALED_VALUES]
            self.requests += 1
            try:
                answer = await call(
                    ctx.nats,
                    UNSEAL_SUBJECT,
                    SealedValues(clinic_id=clinic_id, values=asked),
                    OpenedValues,
                    WAIT_S,
                    attempts=2,  # a read: asking twice is harmless
                    identity=ctx.identity,  # scheduling opens values for notify alone
                )
            except RpcError as exc:
                raise DetailsUnavailable(str(exc)) from exc
            for value, opened in zip(asked, answer.values, strict=True):
                found[value] = Opened(opened.value, opened.outcome)
                self._keep(clinic_id, value, found[value], now)
        return found

    def _keep(self, clinic_id: str, value: str, opened: Opened, now: float) -> None:
        self._kept[(clinic_id, value)] = (now + self.ttl_s, opened)
        self._kept.move_to_end((clinic_id, value))
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)

    def forget(self, people: Iterable[UUID]) -> None:
        """Drop what is kept of these people's values (they were erased)."""
        gone = set(people)
        for entry in [e for e in self._kept if person_of(e[1]) in gone]:
            del self._kept[entry]
