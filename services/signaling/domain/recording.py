"""Recording: a host starts and stops it; it stops when the call ends."""

from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    ConsentStatus,
    RecordingRequestCancelled,
    RecordingStarted,
    RecordingStopped,
    RecordingStoppedBecause,
)
from runtime.refusals import Conflict
from services.signaling.domain.room import Room, event_ids, host

NOT_LIVE = Conflict("not_live", "The call has not started.")
ALREADY_RECORDING = Conflict("already_recording", "This call is already being recorded.")
NOT_RECORDING = Conflict("not_recording", "This call is not being recorded.")

CONSENT_PENDING = Conflict(
    "consent_pending",
    "A request to record is still waiting for answers: it starts once everyone has "
    "consented, or stop it first.",
)


def check_start_recording(room: Room, by: UUID) -> None:
    """Whether ``by`` may start a recording now (before the media node is asked)."""
    host(room, by)
    if not room.live:
        raise NOT_LIVE
    if room.recording is not None:
        raise ALREADY_RECORDING
    if room.consent is not None and room.consent.status is ConsentStatus.asking:
        raise CONSENT_PENDING


def start_recording(room: Room, by: UUID, recording_id: UUID, media_node: str) -> list[Event]:
    check_start_recording(room, by)
    return [
        RecordingStarted(**event_ids(room), recording_id=recording_id, media_node=media_node, by=by)
    ]


def stop_recording(room: Room, by: UUID) -> list[Event]:
    """Stop the recording; before it started, withdraw the request that waits for answers."""
    host(room, by)
    if room.recording is None:
        asking = room.consent
        if asking is not None and asking.status is ConsentStatus.asking:
            return [
                RecordingRequestCancelled(**event_ids(room), request_id=asking.request_id, by=by)
            ]
        raise NOT_RECORDING
    return [
        RecordingStopped(
            **event_ids(room),
            recording_id=room.recording,
            media_node=room.recording_node,
            because=RecordingStoppedBecause.host_stopped,
            by=by,
        )
    ]


def recording_ends(room: Room) -> list[Event]:
    if room.recording is None:
        return []
    return [
        RecordingStopped(
            **event_ids(room),
            recording_id=room.recording,
            media_node=room.recording_node,
            because=RecordingStoppedBecause.session_ended,
        )
    ]
