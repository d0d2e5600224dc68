"""What a joined person asks for: the hosts' commands on the room (admit, deny, hold, remove,
end, lock, recording, knock alerts), leaving, and media negotiation; the domain's refusals
become error frames."""

from functools import partial

from pydantic import BaseModel

from contracts.signaling_protocol import (
    Admit,
    AdmitAll,
    AskUnmute,
    Chat,
    Deny,
    EndForAll,
    Error,
    Hold,
    Leave,
    Lock,
    MediaState,
    MessageWaiting,
    Mute,
    MuteKnocks,
    RecordingConsentAnswer,
    Remove,
    ReplyWaiting,
    SendToWaitingRoom,
    Signal,
    StartRecording,
    StartScreenShare,
    StopRecording,
    StopScreenShare,
    Unlock,
    UnmuteKnocks,
)
from runtime import refusals
from services.signaling import domain
from services.signaling.admission import Admission
from services.signaling.chat import InCallChat
from services.signaling.connection import Connection
from services.signaling.connections import Connections
from services.signaling.consent import RecordingConsents
from services.signaling.mute import Microphones
from services.signaling.negotiation import MediaNegotiation
from services.signaling.replica import Replica
from services.signaling.rooms import Decide
from services.signaling.screen_share import ScreenSharing
from services.signaling.seats import MediaSeats
from services.signaling.waiting_room import WaitingRoom


class Commands:
    def __init__(
        self,
        replica: Replica,
        connections: Connections,
        seats: MediaSeats,
        negotiation: MediaNegotiation,
        consents: RecordingConsents,
        admission: Admission,
        chat: InCallChat,
        screen_sharing: ScreenSharing,
        microphones: Microphones,
    ) -> None:
        self.replica = replica
        self.connections = connections
        self.seats = seats
        self.negotiation = negotiation
        self.consents = consents
        self.admission = admission
        self.chat = chat
        self.screen_sharing = screen_sharing
        self.microphones = microphones
        self.waiting_room = WaitingRoom(replica, admission)

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
                case MessageWaiting(participant_id=guest, text=text):
                    await self.waiting_room.message(conn, guest, text)
                    return
                case ReplyWaiting(text=text):
                    await self.waiting_room.reply(conn, text)
                    return
                case AdmitAll():
                    await self.waiting_room.admit_all(conn)
                    return
                case SendToWaitingRoom(participant_id=guest, message=text):
                    await self.waiting_room.send_back(conn, guest, text)
                    return
                case Leave():
                    await self.connections.leave(conn)
                    return
                case Chat():
                    await self.chat.send(conn, message)
                    return
                case MediaState():
                    await self.microphones.media_state(conn, message)
                    return
                case Mute(participant_id=person):
                    await self.microphones.mute(conn, person)
                    return
                case AskUnmute(participant_id=person):
                    await self.microphones.ask_unmute(conn, person)
                    return
                case Signal():
                    await self.negotiation.signal(conn, message)
                    return
                case StartRecording():
                    await self.consents.request(conn)
                    return
                case RecordingConsentAnswer():
                    await self.consents.answer(conn, message)
                    return
                case StopRecording():
                    decide = partial(domain.stop_recording, by=me)
                case StartScreenShare():
                    await self.screen_sharing.start(conn)
                    return
                case StopScreenShare(participant_id=sharer):
                    decide = partial(domain.stop_screen_share, by=me, participant_id=sharer)
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
