"""What every part of signaling shares on one replica.

Its settings, clock and name, the participant key, the service context and rooms once the
service runs, the connections of the people connected here (by room), and the background
tasks it started and must keep alive.
"""

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from runtime.clock import Clock
from runtime.context import ServiceContext
from runtime.participant_tokens import ParticipantKeySettings
from services.signaling.config import SignalingSettings
from services.signaling.rooms import Rooms

if TYPE_CHECKING:
    from services.signaling.connection import Connection


class Replica:
    def __init__(
        self,
        settings: SignalingSettings,
        key_source: Callable[[], str] | None,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self._key_source = key_source or (lambda: ParticipantKeySettings().key())
        self._key: str | None = None
        self.clock = clock
        self.replica_id = settings.replica_id
        self.local: dict[UUID, dict[UUID, Connection]] = {}
        self._ctx: ServiceContext | None = None
        self._rooms: Rooms | None = None
        self.background: set[asyncio.Task[Any]] = set()

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self._key_source()
        return self._key

    @property
    def ctx(self) -> ServiceContext:
        assert self._ctx is not None, "the signaling service has not started"
        return self._ctx

    @property
    def rooms(self) -> Rooms:
        assert self._rooms is not None, "the signaling service has not started"
        return self._rooms

    def start(self, ctx: ServiceContext, rooms: Rooms) -> None:
        self._ctx, self._rooms = ctx, rooms

    def spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
