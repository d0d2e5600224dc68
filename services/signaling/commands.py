"""What a joined person asks for: the hosts' commands on the room (admit, deny, hold, remove,
end, lock, recording, knock alerts), leaving, and media negotiation; the domain's refusals
become error frames."""

from functools import partial

from pydantic import BaseModel

from contracts.signaling_protocol import (
    Admit,
    Deny,
    EndForAll,
    Error,
    Hold,
    Leave,
    Lock,
    MuteKnocks,
    Remove,
    Signal,
    StartRecording,
    StopRecording,
    Unlock,
    UnmuteKnocks,
)
from runtime import refusals
from services.signaling import domain
from services.signaling.admission import Admission
from services.signaling.connection import Connection
from services.signaling.connections import Connections
from services.signaling.negotiation import MediaNegotiation
from services.signaling.recording import RecordingControl
from services.signaling.replica import Replica
from services.signaling.rooms import Decide
from services.signaling.seats import MediaSeats


class Commands:
    def __init__(
        self,
        replica: Replica,
        connections: Connections,
        seats: MediaSeats,
        negotiation: MediaNegotiation,
        recording: RecordingControl,
        admission: Admission,
    ) -> None:
        self.replica = replica
        self.connections = connections
        self.seats = seats
        self.negotiation = negotiation
        self.recording = recording
        self.admission = admission

    async def command(self, conn: Connection, message: BaseModel) -> None:
        """Run one frame of a joined person; the domain's refusals become error frames."""
        me, room_id, clinic_id, _ = conn.place()
        now = self.replica.clock()
        decide: Decide
        try:
            match message:
                case Admit():
                    await self.admission.admit(conn, message.participant_id)
                    return
                case Leave():
                    await self.connections.leave(conn)
                    return
                case Signal():
                    await self.negotiation.signal(conn, message)
                    return
                case StartRecording():
                    await self.recording.start(conn)
                    return
                case StopRecording():
                    decide = partial(domain.stop_recording, by=me)
                case Deny(participant_id=guest, message=text):
                    decide = partial(domain.deny, by=me, participant_id=guest, message=text)
                case Hold(participant_id=guest, message=text):
                    decide = partial(domain.hold, by=me, participant_id=guest, message=text)
                case Remove(participant_id=person, message=text):
                    decide = partial(
                        domain.remove, by=me, participant_id=person, message=text, now=now
                    )
                case EndForAll(message=text):
                    decide = partial(domain.end_for_all, by=me, message=text, now=now)
                case Lock():
                    decide = partial(domain.lock, by=me)
                case Unlock():
                    decide = partial(domain.unlock, by=me)
                case MuteKnocks():
                    decide = partial(domain.mute_knocks, by=me)
                case UnmuteKnocks():
                    decide = partial(domain.unmute_knocks, by=me)
                case _:
                    return
            await self.replica.rooms.run(room_id, clinic_id, decide)
        except refusals.Refused as exc:
            conn.send(Error(code=exc.code, message=exc.detail))
