"""The signaling service at work on one replica: its parts put together, and kept running.

``Signaling`` joins a browser (``joining``: its link resolved by the links service, a seat
asked of the media node), runs what joined people ask for (``commands``), and turns every
change of a room, made here or on another replica, into frames for the people of that room
connected here (``views``). A background loop keeps this replica's heartbeat and ends the
places of people whose connection dropped and who did not come back within the rejoin grace
(also for a replica that died: its heartbeat stops; ``connections``), and moves the calls of
its people off a media node that died (``failover``).
"""

import asyncio
from collections.abc import Callable
from uuid import UUID

import structlog
from pydantic import BaseModel

from contracts.events import Event
from contracts.signaling import (
    EndedBecause,
    KnockWithdrawn,
    LeftBecause,
    ParticipantDenied,
    ParticipantLeft,
    RecordingStopped,
    ScreenShareStopped,
    SessionEnded,
)
from contracts.signaling_protocol import Check, Join
from runtime.clock import Clock, system_clock
from runtime.context import ServiceContext
from services.signaling.admission import Admission
from services.signaling.chat import InCallChat
from services.signaling.commands import Commands
from services.signaling.config import SignalingSettings
from services.signaling.connection import Connection
from services.signaling.connections import Connections
from services.signaling.consent import RecordingConsents
from services.signaling.failover import MediaFailover
from services.signaling.joining import Joining
from services.signaling.mute import Microphones
from services.signaling.negotiation import MediaNegotiation
from services.signaling.network_test import NetworkTests
from services.signaling.recording import RecordingControl
from services.signaling.replica import Replica
from services.signaling.rooms import Rooms
from services.signaling.screen_share import ScreenSharing
from services.signaling.seats import MediaSeats
from services.signaling.views import RoomViews

log = structlog.get_logger(__name__)


class Signaling:
    def __init__(
        self,
        settings: SignalingSettings | None = None,
        key_source: Callable[[], str] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.replica = Replica(settings or SignalingSettings(), key_source, clock)
        self.ready = asyncio.Event()
        self.seats = MediaSeats(self.replica)
        self.negotiation = MediaNegotiation(self.replica, self.seats)
        self.recording = RecordingControl(self.replica, self.seats)
        self.consents = RecordingConsents(self.replica, self.recording)
        self.views = RoomViews(self.replica, self.negotiation)
        self.connections = Connections(self.replica, self.negotiation)
        self.failover = MediaFailover(self.replica, self.seats)
        self.joining = Joining(self.replica, self.connections, self.seats, self.negotiation)
        self.network_tests = NetworkTests(self.replica, self.seats, self.joining)
        self.admission = Admission(self.replica, self.seats)
        self.chat = InCallChat(self.replica)
        self.screen_sharing = ScreenSharing(self.replica, self.seats)
        self.microphones = Microphones(self.replica, self.seats)
        self.commands = Commands(
            self.replica,
            self.connections,
            self.seats,
            self.negotiation,
            self.consents,
            self.admission,
            chat=self.chat,
            screen_sharing=self.screen_sharing,
            microphones=self.microphones,
        )

    @property
    def settings(self) -> SignalingSettings:
        return self.replica.settings

    @property
    def key(self) -> str:
        return self.replica.key

    @property
    def ctx(self) -> ServiceContext:
        return self.replica.ctx

    # --- running ----------------------------------------------------------------------------

    async def run(self, ctx: ServiceContext) -> None:
        """The service's background task: start, then sweep until cancelled."""
        replica = self.replica
        rooms = Rooms(
            ctx,
            replica.replica_id,
            self.views.react,
            self.views.on_notice,
            replica.settings.room_linger_s,
        )
        rooms.after_append(self._after_append)
        rooms.after_append(self.consents.after_append)
        rooms.after_append(self.microphones.after_append)
        replica.start(ctx, rooms)
        await self.connections.heartbeat()
        await self.connections.disown_an_earlier_life()
        self.ready.set()
        sweeps = 0
        chat_purged = asyncio.get_running_loop().time() - replica.settings.chat_purge_s
        while True:
            await asyncio.sleep(replica.settings.sweep_s)
            sweeps += 1
            if asyncio.get_running_loop().time() - chat_purged >= replica.settings.chat_purge_s:
                chat_purged = asyncio.get_running_loop().time()
                try:
                    await self.chat.purge()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("deleting chat past its retention failed; trying again")
            try:
                await self.connections.sweep()
                if sweeps % 5 == 0:
                    await rooms.resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping lapsed places failed; trying again")
            try:
                await self.failover.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("moving calls off dead media nodes failed; trying again")
            try:
                await self.consents.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lapsing requests to record failed; trying again")

    def _after_append(self, room_id: UUID, clinic_id: str, events: list[Event]) -> None:
        """Free the seats and resume tokens of whoever is gone for good."""
        replica = self.replica
        gone = [
            e.participant_id
            for e in events
            if isinstance(e, ParticipantLeft | KnockWithdrawn | ParticipantDenied)
        ]
        if gone:
            replica.spawn(
                replica.ctx.pool.execute(
                    "DELETE FROM connections WHERE participant_id = ANY($1::uuid[])", gone
                )
            )
        for event in events:
            if isinstance(event, ParticipantLeft) and event.reason is not LeftBecause.ended:
                replica.spawn(self.seats.release(clinic_id, room_id, event.participant_id))
            elif isinstance(event, SessionEnded) and event.because is EndedBecause.ended_for_all:
                replica.spawn(self.seats.release(clinic_id, room_id, None))
            elif isinstance(event, RecordingStopped):
                replica.spawn(self.recording.stopped(clinic_id, event))
            elif isinstance(event, ScreenShareStopped):
                replica.spawn(self.screen_sharing.stopped(clinic_id, event))

    # --- what the WebSocket endpoint calls ----------------------------------------------------

    async def join(self, conn: Connection, message: Join) -> None:
        await self.joining.join(conn, message)

    async def check(self, conn: Connection, message: Check) -> None:
        await self.joining.check(conn, message)

    async def command(self, conn: Connection, message: BaseModel) -> None:
        await self.commands.command(conn, message)

    async def dropped(self, conn: Connection) -> None:
        if conn.network_test is not None:
            await self.network_tests.abandoned(conn)
        await self.connections.dropped(conn)
