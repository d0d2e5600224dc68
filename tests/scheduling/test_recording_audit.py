"""A session's audit trail of recording consent: what signaling reports about the session's
call (a request to record, the answers, the recording) goes into the session's history; a
call with no session, or another clinic's session, changes nothing."""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from nats.aio.client import Client as NATS

from contracts.signaling import (
    RecordingConsent,
    RecordingConsentDeclined,
    RecordingConsentGiven,
    RecordingRequested,
    RecordingStarted,
    RecordingStopped,
    RecordingStoppedBecause,
)
from tests.scheduling.conftest import ClinicHandle, register_clinic, report
from tests.support import eventually


async def test_consents_declines_and_recordings_are_in_the_sessions_history(
    clinic: ClinicHandle, nc: NATS
) -> None:
    practitioner = await clinic.practitioner()
    session = await clinic.session(practitioner, [await clinic.client()])
    session_id = UUID(session["session_id"])
    ids = {"room_id": uuid4(), "session_id": session_id}
    host, grace, bob = uuid4(), uuid4(), uuid4()
    request, recording = uuid4(), uuid4()
    events = [
        RecordingRequested(
            **ids,
            request_id=request,
            by=host,
            policy=RecordingConsent.all,
            asked=[grace, bob],
            answer_by=datetime.now(UTC) + timedelta(minutes=1),
        ),
        RecordingConsentGiven(**ids, participant_id=grace, request_id=request),
        RecordingConsentGiven(**ids, participant_id=bob, request_id=request),
        RecordingStarted(
            **ids, recording_id=recording, media_node="m1", by=host, request_id=request
        ),
        RecordingConsentDeclined(**ids, participant_id=bob, request_id=request),
        RecordingStopped(
            **ids,
            recording_id=recording,
            media_node="m1",
            because=RecordingStoppedBecause.consent_declined,
            by=bob,
        ),
    ]
    envelopes = [await report(nc, "signaling", clinic.clinic_id, e) for e in events[:-1]]
    # A call with no appointment, and one of this session's id in another clinic: nothing
    # (reported before the last one, which the consumer handles after them).
    await report(
        nc,
        "signaling",
        clinic.clinic_id,
        RecordingConsentGiven(
            room_id=uuid4(), session_id=None, participant_id=grace, request_id=request
        ),
    )
    other = await register_clinic(clinic.api)
    await report(nc, "signaling", other.clinic_id, events[2])
    envelopes.append(await report(nc, "signaling", clinic.clinic_id, events[-1]))

    wanted = [
        "SessionRecordingRequested",
        "SessionRecordingConsentGiven",
        "SessionRecordingConsentGiven",
        "SessionRecordingStarted",
        "SessionRecordingConsentDeclined",
        "SessionRecordingStopped",
    ]
    entries: list[dict[str, Any]] = []

    async def recorded() -> bool:
        nonlocal entries
        entries = await clinic.ok("GET", f"/v1/sessions/{session_id}/history")
        return [e["type"] for e in entries if e["type"].startswith("SessionRecording")] == wanted

    await eventually(recorded, what="the recording entries in the session's history")
    audit = [e for e in entries if e["type"].startswith("SessionRecording")]
    assert audit[0]["data"] == {
        "session_id": str(session_id),
        "request_id": str(request),
        "by": str(host),
        "policy": "all",
        "asked": [str(grace), str(bob)],
    }
    assert [e["data"]["participant_id"] for e in audit[1:3]] == [str(grace), str(bob)]
    assert audit[3]["data"]["request_id"] == str(request)
    assert audit[5]["data"]["because"] == "consent_declined"
    # Each entry is caused by the signaling event it copies.
    assert [e["correlation_id"] for e in audit] == [str(en.correlation_id) for en in envelopes]
