"""Recording control: a host asks the room's media node to record, and to stop."""

import contextlib
from functools import partial
from uuid import UUID, uuid4

import structlog

from contracts.media import RecordingAction, RecordingCommand, RecordingReply, record_subject
from contracts.signaling import RecordingStopped
from runtime import refusals
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)


class RecordingControl:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    async def start(self, conn: Connection) -> None:
        """Check, ask the room's media node to record, then record that it is on; if the
        room changed meanwhile, the node is told to stop again."""
        rooms = self.replica.rooms
        me, room_id, clinic_id, _ = conn.place()
        await rooms.check(room_id, clinic_id, partial(domain.check_start_recording, by=me))
        host = (await rooms.state(room_id, clinic_id)).people.get(me)
        node = host.media_node if host is not None else None
        if not node:
            raise refusals.Conflict("not_in_call", "Join the call before recording it.")
        recording_id = uuid4()
        await self._record(node, clinic_id, room_id, recording_id, RecordingAction.start)
        try:
            await rooms.run(
                room_id,
                clinic_id,
                partial(domain.start_recording, by=me, recording_id=recording_id, media_node=node),
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
