"""What each person connected here sees of their room, sent as it changes: every change of a
room, made here or on another replica, becomes frames for that room's people."""

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    EndedBecause,
    GuestKnocked,
    GuestPutOnHold,
    LeftBecause,
    MediaMoved,
    ParticipantDenied,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMediaChanged,
    ParticipantRemoved,
    ParticipantSentToWaitingRoom,
    SessionEnded,
)
from contracts.signaling_protocol import (
    Denied,
    Ended,
    Knock,
    Participants,
    Present,
    Recording,
    Refused,
    Removed,
    RoomView,
    ScreenShare,
    SeatRefused,
    Waiting,
    WaitingGuest,
    WaitingState,
)
from services.signaling import chat, consent, mute, waiting_room
from services.signaling.connection import Connection
from services.signaling.domain import Person, Room, Status
from services.signaling.negotiation import MediaNegotiation
from services.signaling.replica import Replica

HOLD_MESSAGE = "The host asked you to wait a little longer."
DENIED_MESSAGE = "The host could not let you in this time."
REMOVED_MESSAGE = "The host removed you from the call."
ENDED_MESSAGE = "The host ended the meeting for everyone."
SENT_BACK_MESSAGE = "The host moved you back to the waiting room; they can let you in again."
SEAT_LAPSED = Refused(
    reason="seat_lapsed",
    status=409,
    message=(
        "Your video did not connect in time, so your place in this call lapsed; "
        "open your link again to join."
    ),
)
RECORDING_ON = "This call is being recorded."
RECORDING_OFF = "The recording has stopped."
WAITING_MESSAGES = {
    WaitingState.waiting_for_host: "Waiting for the host: you will be let in when they arrive.",
    WaitingState.host_notified: "The host has been notified and will let you in shortly.",
}


class RoomViews:
    def __init__(self, replica: Replica, negotiation: MediaNegotiation) -> None:
        self.replica = replica
        self.negotiation = negotiation

    async def react(self, room_id: UUID, room: Room, events: list[Event]) -> None:
        here = self.replica.local.get(room_id)
        if not here:
            return
        for event in events:
            pid = getattr(event, "participant_id", None)
            conn = here.get(pid) if pid is not None else None
            match event:
                case GuestKnocked() if not event.muted:
                    for host in _hosts(here, room):
                        host.send(Knock(participant_id=pid, display_name=event.display_name))
                case GuestPutOnHold() if conn is not None:
                    conn.send_once(
                        "waiting",
                        Waiting(state=WaitingState.on_hold, message=event.message or HOLD_MESSAGE),
                    )
                case ParticipantJoined() if conn is not None and event.media_node:
                    self.negotiation.send_admitted(conn, event.media_node, event.media_url)
                case MediaMoved():
                    # Everyone connected here whose call moved: media again, on the new node.
                    for moved in event.participant_ids:
                        if (mover := here.get(moved)) is not None:
                            self.negotiation.send_admitted(mover, event.media_node, event.media_url)
                case ParticipantDenied() if conn is not None:
                    conn.send(Denied(message=event.message or DENIED_MESSAGE))
                    conn.close()
                case ParticipantSentToWaitingRoom() if conn is not None:
                    # Back to waiting: the sent-back frame (``refresh``) goes even if the same
                    # one went before, and the call's people again once admitted again.
                    conn.last_sent.pop("waiting", None)
                    conn.last_sent.pop("participants", None)
                case ParticipantMediaChanged() if conn is not None:
                    mute.muted_by_host(conn, room, event)
                case ParticipantRemoved() if conn is not None:
                    conn.send(Removed(message=event.message or REMOVED_MESSAGE))
                    conn.close()
                case ParticipantLeft() if conn is not None and (
                    event.reason is LeftBecause.seat_lapsed
                ):
                    conn.send(SEAT_LAPSED)
                    conn.close()
                case SessionEnded() if event.because is EndedBecause.ended_for_all:
                    for other in list(here.values()):
                        other.send(
                            Ended(because=event.because, message=event.message or ENDED_MESSAGE)
                        )
                        other.close()
        for conn in list(here.values()):
            refresh(conn, room)

    async def on_notice(self, room_id: UUID, notice: dict[str, Any]) -> None:
        here = self.replica.local.get(room_id)
        if not here:
            return
        if notice.get("kind") == waiting_room.NOTICE:
            waiting_room.deliver(here, notice)
            return
        if notice.get("kind") == chat.NOTICE:
            clinic_id = next(iter(here.values())).clinic_id or ""
            chat.deliver(here, await self.replica.rooms.state(room_id, clinic_id), notice)
            return
        if notice.get("kind") == mute.UNMUTE_REQUESTED:
            await mute.deliver_request(self.replica.rooms, room_id, here, notice)
            return
        pid = UUID(notice["participant_id"])
        match notice.get("kind"):
            case "seat_refused":
                message = str(notice["message"])
                if (guest := here.get(pid)) is not None:
                    guest.send(Waiting(state=WaitingState.room_full, message=message))
                    guest.last_sent.pop("waiting", None)
                for conn in here.values():
                    if conn.role is CallRole.host and conn is not guest:
                        conn.send(
                            SeatRefused(participant_id=pid, reason="room_full", message=message)
                        )
            case "superseded" if notice.get("by") != self.replica.replica_id:
                if (stale := here.get(pid)) is not None:
                    stale.close(4001, "replaced by a newer connection")


def _hosts(here: dict[UUID, Connection], room: Room) -> list[Connection]:
    out = []
    for pid, conn in here.items():
        person = room.people.get(pid)
        if person is not None and person.role is CallRole.host and not person.waiting:
            out.append(conn)
    return out


def refresh(conn: Connection, room: Room) -> None:
    """Send what this person sees of the room, where it changed."""
    person = room.people.get(conn.participant_id) if conn.participant_id else None
    if person is None or conn.closing:
        return
    if room.recording is not None or "recording" in conn.last_sent:
        # Everyone in the room, waiting or not, knows whether they are being recorded.
        on = room.recording is not None
        message = consent.with_notice(room, RECORDING_ON) if on else RECORDING_OFF
        conn.send_once("recording", Recording(on=on, message=message))
    consent.show(conn, room, person)  # asked in the waiting room too, before they enter
    if person.waiting:
        conn.last_sent.pop("screen_share", None)  # told again when they are let in (again)
        if person.status is Status.on_hold:
            return  # the hold message stays until the host acts
        if person.sent_back:  # so does the host's reason for sending them back
            message = person.hold_message or SENT_BACK_MESSAGE
            conn.send_once("waiting", Waiting(state=WaitingState.sent_back, message=message))
            return
        state = (
            WaitingState.host_notified if room.hosts_present() else WaitingState.waiting_for_host
        )
        conn.send_once("waiting", Waiting(state=state, message=WAITING_MESSAGES[state]))
        return
    present = [_present(p) for p in room.in_call()]
    if person.role is CallRole.host:
        conn.send_once(
            "room",
            RoomView(
                live=room.live,
                locked=room.locked,
                knocks_muted=room.knocks_muted,
                max_participants=conn.cap,
                waiting=[_waiting(p) for p in room.waiting()],
                participants=present,
            ),
        )
    else:
        conn.send_once("participants", Participants(participants=present))
    conn.send_once("screen_share", _screen_share(room))


def _screen_share(room: Room) -> ScreenShare:
    sharer = room.people.get(room.screen_share) if room.screen_share is not None else None
    if sharer is None:
        return ScreenShare(participant_id=None, sender_name=None)
    return ScreenShare(participant_id=sharer.participant_id, sender_name=sharer.display_name)


def _present(p: Person) -> Present:
    return Present(
        participant_id=p.participant_id,
        display_name=p.display_name,
        role=p.role,
        disconnected=p.disconnected_until is not None,
        audio_on=p.audio_on,
        video_on=p.video_on,
        muted_by_host=p.muted_by is not None,
    )


def _waiting(p: Person) -> WaitingGuest:
    return WaitingGuest(
        participant_id=p.participant_id,
        display_name=p.display_name,
        waiting_since=p.since or datetime.now(UTC),
        muted=p.muted,
        on_hold=p.status is Status.on_hold,
        disconnected=p.disconnected_until is not None,
        attended=p.attended,
    )
