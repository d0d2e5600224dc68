"""Recording control: the room's media node is asked to record, and to stop (whether it
may start is ``consent``'s to decide)."""

import contextlib
from collections.abc import Callable
from uuid import UUID, uuid4

import structlog

from contracts.events import Event
from contracts.media import RecordingAction, RecordingCommand, RecordingReply, record_subject
from contracts.signaling import RecordingStopped
from runtime import refusals
from services.signaling import domain
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)


class RecordingControl:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    async def start(
        self,
        clinic_id: str,
        room_id: UUID,
        node: str,
        decide: Callable[[domain.Room, UUID], list[Event]],
    ) -> None:
        """Ask ``node`` to record (a new recording id), then append what ``decide`` makes of
        the room with that id (the recording's start); if the room refuses meanwhile, the
        node is told to stop again."""
        recording_id = uuid4()
        await self._record(node, clinic_id, room_id, recording_id, RecordingAction.start)
        try:
            await self.replica.rooms.run(
                room_id, clinic_id, lambda room: decide(room, recording_id)
            )
        except refusals.Refused:
            with contextlib.suppress(refusals.Refused):
                await self._record(node, clinic_id, room_id, recording_id, RecordingAction.stop)
            raise

    async def _record(
        self,
        node: str,
        clinic_id: str,
        room_id: UUID,
        recording_id: UUID,
        action: RecordingAction,
    ) -> None:
        command = RecordingCommand(
            clinic_id=clinic_id, room_id=room_id, recording_id=recording_id, action=action
        )
        reply = await self.seats.ask(record_subject(node), command, RecordingReply)
        if not reply.ok:
            raise refusals.Conflict(reply.reason or "recording_refused", reply.message)

    async def stopped(self, clinic_id: str, event: RecordingStopped) -> None:
        """Tell the node that records (if that fails, the node stops when the room ends)."""
        try:
            await self._record(
                event.media_node,
                clinic_id,
                event.room_id,
                event.recording_id,
                RecordingAction.stop,
            )
        except refusals.Refused as exc:
            log.warning("recording not stopped on its node", error=exc.detail)
