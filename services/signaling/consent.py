"""Recording consent: a host's request to record, everyone's answers, and the recording's
start on the media node once everyone in the call has consented (the clinic's policy
``all``, the default), or at once with a notice (``notice``).

Under ``all`` everyone else in the room is asked, in the call or waiting, and so is whoever
arrives while the request waits or the recording is on (``domain``: in the same append as
their arrival). Whoever in the call has not answered holds the start back; someone who
leaves no longer does. A decline ends the request, or stops the recording. The request
lapses when someone in the call has not answered within ``recording_consent_s``.

The start follows from the room's state, not from one frame: after any append made here
that leaves the room ready (``domain.ready_to_record``: the last consent, or the last
person still to answer leaving), this replica asks the node to record. The sweep lapses
requests whose time is up, and starts one that is ready then (the replica that should have
started it died).
"""

import json
from datetime import timedelta
from functools import partial
from uuid import UUID, uuid4

import structlog

from contracts.events import Event
from contracts.signaling import CallRole, ConsentStatus, RecordingConsent
from contracts.signaling_protocol import (
    ConsentClosed,
    ConsentPerson,
    ConsentRequest,
    ConsentState,
    RecordingConsentAnswer,
)
from runtime import refusals
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.domain import Person, Room
from services.signaling.recording import RecordingControl
from services.signaling.replica import Replica

log = structlog.get_logger(__name__)

NOT_IN_CALL = refusals.Conflict("not_in_call", "Join the call before recording it.")


class RecordingConsents:
    def __init__(self, replica: Replica, recording: RecordingControl) -> None:
        self.replica = replica
        self.recording = recording
        self._starting: set[UUID] = set()
        """Requests whose recording this replica is starting (the node is being asked)."""

    async def request(self, conn: Connection) -> None:
        """A host's ``start_recording``, under the policy they joined with."""
        me, room_id, clinic_id, _ = conn.place()
        rooms, now = self.replica.rooms, self.replica.clock()
        if conn.features.recording_consent is RecordingConsent.notice:
            await rooms.check(room_id, clinic_id, partial(domain.check_start_recording, by=me))
            node = _node(await rooms.state(room_id, clinic_id), me)
            if not node:
                raise NOT_IN_CALL
            request_id = uuid4()
            await self.recording.start(
                clinic_id,
                room_id,
                node,
                lambda room, recording_id: domain.record_with_notice(
                    room, me, request_id, recording_id, node, now
                ),
            )
            return
        answer_by = now + timedelta(seconds=self.replica.settings.recording_consent_s)
        await rooms.run(
            room_id,
            clinic_id,
            partial(domain.request_recording, by=me, request_id=uuid4(), answer_by=answer_by),
        )  # nobody in the call to ask: the after-append hook starts it at once

    async def answer(self, conn: Connection, message: RecordingConsentAnswer) -> None:
        me, room_id, clinic_id, _ = conn.place()
        await self.replica.rooms.run(
            room_id,
            clinic_id,
            partial(
                domain.answer_consent,
                participant_id=me,
                request_id=message.request_id,
                given=message.given,
            ),
        )

    def after_append(self, room_id: UUID, clinic_id: str, events: list[Event]) -> None:
        """After a change made here: start the recording once nobody in the call has still
        to consent."""
        room = self.replica.rooms.known(room_id)
        if room is not None and domain.ready_to_record(room):
            self.replica.spawn(self._start_if_ready(room_id, clinic_id))

    async def _start_if_ready(self, room_id: UUID, clinic_id: str) -> None:
        room = await self.replica.rooms.state(room_id, clinic_id)
        asking = room.consent
        if asking is None or not domain.ready_to_record(room):
            return
        request_id = asking.request_id
        node = _node(room, asking.by)
        if not node or request_id in self._starting:
            return
        self._starting.add(request_id)
        try:
            await self.recording.start(
                clinic_id,
                room_id,
                node,
                lambda r, recording_id: domain.start_consented_recording(
                    r, request_id, recording_id, node
                ),
            )
        except refusals.Refused as exc:
            # The node could not record, or the room moved on meanwhile (a decline): it
            # stays asked for, and the sweep tries again once its time is up.
            log.warning("a consented recording did not start", reason=exc.code)
        finally:
            self._starting.discard(request_id)

    async def sweep(self) -> None:
        """Requests whose time is up, in the rooms followed here: lapsed if someone in the call
        has not answered; started if everyone has (and it did not start)."""
        now = self.replica.clock()
        for room_id, clinic_id, room in self.replica.rooms.followed():
            asking = room.consent
            if asking is None or asking.status is not ConsentStatus.asking:
                continue
            if asking.answer_by > now:
                continue
            if domain.ready_to_record(room):
                await self._start_if_ready(room_id, clinic_id)
            else:
                await self.replica.rooms.run(
                    room_id, clinic_id, partial(domain.lapse_consent, now=now)
                )


def _node(room: Room, by: UUID) -> str:
    """The room's media node: the asking host's, or anyone's in the call."""
    asking = room.people.get(by)
    if asking is not None and asking.media_node and not asking.waiting:
        return asking.media_node
    return next((p.media_node for p in room.in_call() if p.media_node), "")


# --- what people see of it (views.refresh) ---------------------------------------------------


def with_notice(room: Room, message: str) -> str:
    """The ``recording`` frame's sentence: under the policy ``notice`` nobody was asked, so
    it says what they may do."""
    asking = room.consent
    if asking is not None and asking.policy is RecordingConsent.notice and asking.open:
        return f"{message} If you do not want to be recorded, you may leave the call."
    return message


def show(conn: Connection, room: Room, person: Person) -> None:
    """Send what ``person`` sees of the request to record, where it changed: the question
    (or that it is settled) to whoever was asked, and how it stands to hosts in the call."""
    asking = room.consent
    me = person.participant_id
    if asking is not None and me in asking.asked:
        if asking.open and me in asking.pending():
            name = asking.by_name or "The host"
            conn.send_once(
                "consent",
                ConsentRequest(
                    request_id=asking.request_id,
                    requested_by=name,
                    message=f"{name} wants to record this call. Do you consent?",
                ),
            )
        elif "consent" in conn.last_sent:
            conn.send_once(
                "consent",
                ConsentClosed(request_id=asking.request_id, message=_settled(asking, me)),
            )
    elif (open_question := _last_request(conn)) is not None:
        # Its call ended, or a new request left them out: the page's question is over.
        conn.send_once(
            "consent",
            ConsentClosed(request_id=open_question, message="The request to record is over."),
        )
    if asking is not None and person.role is CallRole.host and not person.waiting:
        conn.send_once("consent_state", _state(room, asking))


def _last_request(conn: Connection) -> UUID | None:
    """The request of the last question sent to this connection, while it is still open on
    the page."""
    last = conn.last_sent.get("consent")
    if last is None:
        return None
    frame = json.loads(last)
    return UUID(frame["request_id"]) if frame["type"] == "consent_request" else None


def _settled(asking: domain.ConsentRequest, me: UUID) -> str:
    match asking.status:
        case ConsentStatus.asking:
            return "Thank you. The recording starts once everyone in the call has consented."
        case ConsentStatus.recording:
            return "You consented: this call is being recorded."
        case ConsentStatus.declined if me in asking.declined:
            return "You declined: this call is not being recorded."
        case ConsentStatus.declined:
            return "Someone declined to be recorded, so this call is not being recorded."
        case ConsentStatus.lapsed:
            return "Not everyone answered in time, so this call is not being recorded."
        case ConsentStatus.cancelled:
            return "The host withdrew the request to record."
    return "The recording has stopped."


def _state(room: Room, asking: domain.ConsentRequest) -> ConsentState:
    def named(pids: list[UUID]) -> list[ConsentPerson]:
        out = []
        for pid in pids:
            person = room.people.get(pid)
            out.append(
                ConsentPerson(
                    participant_id=pid,
                    display_name=person.display_name if person else asking.asked.get(pid, ""),
                    waiting=person is not None and person.waiting,
                )
            )
        return out

    # Who left no longer matters to the answer, unless they declined.
    consented = named([p for p in asking.asked if p in asking.given and p in room.people])
    declined = named([p for p in asking.asked if p in asking.declined])
    pending = named([p for p in asking.pending() if p in room.people])
    return ConsentState(
        request_id=asking.request_id,
        status=asking.status,
        policy=asking.policy,
        requested_by=asking.by_name or "A host",
        answer_by=asking.answer_by,
        consented=consented,
        declined=declined,
        pending=pending,
        message=_for_hosts(asking, declined, pending),
    )


def _names(people: list[ConsentPerson]) -> str:
    names = [p.display_name or "Someone" for p in people]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _for_hosts(
    asking: domain.ConsentRequest, declined: list[ConsentPerson], pending: list[ConsentPerson]
) -> str:
    in_call = [p for p in pending if not p.waiting]
    match asking.status:
        case ConsentStatus.asking if in_call:
            return f"Waiting for {_names(in_call)} to consent to the recording."
        case ConsentStatus.asking:
            return "Everyone in the call has consented: the recording is starting."
        case ConsentStatus.recording if asking.policy is RecordingConsent.notice:
            return "This call is being recorded; everyone was told."
        case ConsentStatus.recording if pending:
            return f"This call is being recorded; waiting for {_names(pending)} to answer."
        case ConsentStatus.recording:
            return "Everyone consented: this call is being recorded."
        case ConsentStatus.declined:
            outcome = "the recording stopped" if asking.started else "it will not be recorded"
            who = _names(declined) if declined else "Someone"
            return f"{who} declined to be recorded, so {outcome}."
        case ConsentStatus.lapsed:
            late = f"{_names(pending)} did not answer in time" if pending else "time ran out"
            return f"The request to record lapsed: {late}."
        case ConsentStatus.cancelled:
            return "The request to record was withdrawn."
    return "The recording has stopped."
