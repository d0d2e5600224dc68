"""Screen sharing: who may share, one share at a time, and the media node told who it is.

The rules are the room aggregate's (``domain.start_screen_share``, ``stop_screen_share``, and
the share ending with its sharer); this module asks the sharer's media node to take a screen
track from them (``share_subject``) before the share is recorded, and tells it when the share
ended, however it ended (``stopped``, from the replica's after-append hook). The node takes a
screen from nobody signaling has not named: a browser's word is never enough.
"""

import contextlib
from functools import partial
from uuid import UUID

import structlog

from contracts.media import ScreenShareAction, ScreenShareCommand, ScreenShareReply, share_subject
from contracts.signaling import ScreenShareStopped
from runtime import refusals
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)


class ScreenSharing:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats

    async def start(self, conn: Connection) -> None:
        """Check, grant the share on the sharer's media node, then record it; if the room
        changed meanwhile (someone else began sharing), the grant is taken back."""
        rooms = self.replica.rooms
        me, room_id, clinic_id, _ = conn.place()
        allowed = conn.features.guest_screen_share
        check = partial(domain.check_start_screen_share, by=me, guests_may_share=allowed)
        await rooms.check(room_id, clinic_id, check)
        room = await rooms.state(room_id, clinic_id)
        if room.screen_share == me:
            return  # already sharing: nothing to do
        person = room.people.get(me)
        node = person.media_node if person is not None else None
        if not node:
            raise refusals.Conflict("not_in_call", "Join the call before sharing your screen.")
        await self._tell(node, clinic_id, room_id, me, ScreenShareAction.grant)
        try:
            await rooms.run(
                room_id,
                clinic_id,
                partial(
                    domain.start_screen_share, by=me, guests_may_share=allowed, media_node=node
                ),
            )
        except refusals.Refused:
            with contextlib.suppress(refusals.Refused):
                await self._tell(node, clinic_id, room_id, me, ScreenShareAction.revoke)
            raise

    async def stopped(self, clinic_id: str, event: ScreenShareStopped) -> None:
        """Tell the node that forwarded the share (if that fails, the share goes with the
        sharer's seat: the node drops it when their connection closes)."""
        if not event.media_node:
            return
        try:
            await self._tell(
                event.media_node,
                clinic_id,
                event.room_id,
                event.participant_id,
                ScreenShareAction.revoke,
            )
        except refusals.Refused as exc:
            log.warning("screen share not ended on its node", error=exc.detail)

    async def _tell(
        self,
        node: str,
        clinic_id: str,
        room_id: UUID,
        participant_id: UUID,
        action: ScreenShareAction,
    ) -> None:
        command = ScreenShareCommand(
            clinic_id=clinic_id, room_id=room_id, participant_id=participant_id, action=action
        )
        reply = await self.seats.ask(share_subject(node), command, ScreenShareReply)
        if not reply.ok:
            raise refusals.Conflict(reply.reason or "screen_share_refused", reply.message)
