"""Session API: schedule, change, invite, complete, and the queries a calendar needs."""

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Response

from contracts.events import Event
from contracts.scheduling import PLAN_VIDEO_MODES, SessionSource, VideoMode, outside_calendar
from runtime.commands import Decide
from runtime.eventstore import RecordedEvent
from runtime.http import NO_STORE, Problem, problems
from runtime.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor
from runtime.refusals import not_found
from services.scheduling import handlers, queries, sessions
from services.scheduling.auth import (
    CLINIC_PROBLEMS,
    Access,
    Clinic,
    ClinicCaller,
    Context,
    access_of,
)
from services.scheduling.handlers import SESSION, ScheduleRequest, execute
from services.scheduling.models import (
    AdHocCreate,
    AttendeeCreate,
    AttendeeView,
    Cancel,
    HistoryEntry,
    LinkSharing,
    Reschedule,
    SessionCreate,
    SessionView,
    UpcomingSession,
)
from services.scheduling.person_keys import KEYS
from services.scheduling.sessions import Attendee

router = APIRouter(prefix="/v1", tags=["sessions"], responses=CLINIC_PROBLEMS)
ERASED = {410: "A client's personal data was erased (`client_erased`)."}
SCHEDULING_PROBLEMS = problems(
    404,
    described={403: "Not allowed: the clinic's plan does not include the video mode."} | ERASED,
)


def now() -> datetime:
    return datetime.now(UTC)


def default_video_mode(caller: ClinicCaller) -> VideoMode:
    if VideoMode.session_link in PLAN_VIDEO_MODES[caller.settings.plan]:
        return VideoMode.session_link
    return VideoMode.practitioner_room


def _created(scheduled: RecordedEvent, response: Response) -> SessionView:
    """The answer to a new session, from the event appended: nothing is read back."""
    view = queries.scheduled_session(scheduled)
    response.headers["Location"] = f"/v1/sessions/{view.session_id}"
    return view


@router.post("/sessions", status_code=201, responses=SCHEDULING_PROBLEMS)
async def schedule_session(
    body: SessionCreate, caller: Clinic, ctx: Context, response: Response
) -> SessionView:
    """Schedule an appointment; the links service issues its link in reaction."""
    request = ScheduleRequest(
        practitioner_id=body.practitioner_id,
        client_ids=tuple(body.client_ids),
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        time_zone=body.time_zone,
        video_mode=body.video_mode or default_video_mode(caller),
        room_id=body.room_id,
        link_sharing=body.link_sharing,
        guest_admission=body.guest_admission,
    )
    scheduled = await handlers.schedule_session(
        ctx.store, caller.clinic_id, caller.settings, request, SessionSource.api, now()
    )
    return _created(scheduled, response)


@router.post("/sessions/ad-hoc", status_code=201, responses=SCHEDULING_PROBLEMS)
async def start_ad_hoc_session(
    body: AdHocCreate, caller: Clinic, ctx: Context, response: Response
) -> SessionView:
    """Open a call now, without an appointment; share its link or invite people into it."""
    started = now()
    request = ScheduleRequest(
        practitioner_id=body.practitioner_id,
        client_ids=tuple(body.client_ids),
        starts_at=started,
        ends_at=started + timedelta(minutes=body.duration_minutes),
        time_zone=body.time_zone,
        video_mode=body.video_mode,
        room_id=body.room_id,
        link_sharing=body.link_sharing,
        guest_admission=body.guest_admission,
    )
    scheduled = await handlers.schedule_session(
        ctx.store, caller.clinic_id, caller.settings, request, SessionSource.ad_hoc, started
    )
    return _created(scheduled, response)


@router.get("/sessions", responses=problems(400))
async def list_sessions(
    caller: Clinic,
    ctx: Context,
    practitioner_id: UUID | None = None,
    starts_from: Annotated[
        datetime | None,
        Query(alias="from", description="Start at or after (ISO 8601 with an offset)."),
    ] = None,
    starts_before: Annotated[
        datetime | None,
        Query(alias="to", description="Start before (ISO 8601 with an offset)."),
    ] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[SessionView]:
    """Sessions by start time, e.g. one practitioner's day or week."""
    for value, name in ((starts_from, "from"), (starts_before, "to")):
        if value is None:
            continue
        if value.tzinfo is None:
            raise Problem(
                422,
                f"'{name}' needs a UTC offset, e.g. 2026-12-01T00:00:00+01:00.",
                code="offset_required",
            )
        if (reason := outside_calendar(value, now())) is not None:
            raise Problem(422, f"'{name}' is out of range: {reason}.", code="date_out_of_range")
    return await queries.sessions(
        ctx.pool,
        caller.clinic_id,
        practitioner_id,
        starts_from,
        starts_before,
        decode_cursor(cursor, 2),
        limit,
    )


@router.get("/sessions/{session_id}", responses=problems(404))
async def get_session(session_id: UUID, caller: Clinic, ctx: Context) -> SessionView:
    return await queries.session(ctx.pool, caller.clinic_id, session_id)


@router.get("/sessions/{session_id}/history", responses=problems(404))
async def session_history(session_id: UUID, caller: Clinic, ctx: Context) -> list[HistoryEntry]:
    """Everything that happened to the session, in order (its events), personal values opened
    (those of an erased person stay sealed)."""
    recorded = await ctx.store.read_stream(SESSION.stream(session_id))
    if not recorded or recorded[0].clinic_id != caller.clinic_id:
        raise not_found("session")
    payloads = await KEYS.open(ctx.pool, caller.clinic_id, [r.data for r in recorded])
    return [
        HistoryEntry(
            event_id=r.event_id,
            type=r.type,
            version=r.version,
            occurred_at=r.occurred_at,
            correlation_id=r.correlation_id,
            data=data,
        )
        for r, data in zip(recorded, payloads, strict=True)
    ]


async def _change(
    ctx: Context, caller: ClinicCaller, session_id: UUID, decide: Decide[sessions.Session]
) -> SessionView:
    """Run a command on the session and answer with how it reads now."""
    await execute(ctx.store, SESSION, session_id, caller.clinic_id, decide)
    return await queries.session(ctx.pool, caller.clinic_id, session_id)


@router.post("/sessions/{session_id}/reschedule", responses=problems(404, 409))
async def reschedule_session(
    session_id: UUID, body: Reschedule, caller: Clinic, ctx: Context
) -> SessionView:
    """Move the session; its links' windows and its reminders move with it."""

    def decide(state: sessions.Session | None) -> list[Event]:
        tz = body.time_zone or (state.time_zone if state else caller.settings.time_zone)
        return sessions.reschedule_session(state, body.starts_at, body.ends_at, tz, now())

    return await _change(ctx, caller, session_id, decide)


@router.post("/sessions/{session_id}/cancel", responses=problems(404, 409))
async def cancel_session(
    session_id: UUID, body: Cancel, caller: Clinic, ctx: Context
) -> SessionView:
    """Cancel: the links stop working and the reminders are dropped."""
    return await _change(ctx, caller, session_id, lambda s: sessions.cancel_session(s, body.reason))


@router.post(
    "/sessions/{session_id}/attendees",
    status_code=201,
    responses=problems(404, 409, described=ERASED),
)
async def invite_attendee(
    session_id: UUID, body: AttendeeCreate, caller: Clinic, ctx: Context, response: Response
) -> AttendeeView:
    """Invite a client's contact or anyone by email; they get their own drop-in link.

    Answers the attendee; ``Location`` is where it reads. While the session is live, the
    invitation is mailed at once.
    """
    if body.client_id is not None and body.contact_id is not None:
        attendee = await handlers.attendee_from_contact(
            ctx.pool, caller.clinic_id, body.client_id, body.contact_id
        )
    else:
        attendee = Attendee(uuid4(), str(body.email), body.display_name, None, None)
    await execute(
        ctx.store,
        SESSION,
        session_id,
        caller.clinic_id,
        lambda s: sessions.invite_attendee(s, attendee, caller.settings),
    )
    path = f"/v1/sessions/{session_id}/attendees/{attendee.attendee_id}"
    response.headers["Location"] = path
    return await queries.attendee(ctx.pool, caller.clinic_id, session_id, attendee.attendee_id)


@router.get("/sessions/{session_id}/attendees/{attendee_id}", responses=problems(404))
async def get_attendee(
    session_id: UUID, attendee_id: UUID, caller: Clinic, ctx: Context
) -> AttendeeView:
    """One attendee of the session (``email`` is null once erased with their client)."""
    return await queries.attendee(ctx.pool, caller.clinic_id, session_id, attendee_id)


@router.delete(
    "/sessions/{session_id}/attendees/{attendee_id}",
    status_code=204,
    responses=problems(404, 409),
)
async def remove_attendee(
    session_id: UUID, attendee_id: UUID, caller: Clinic, ctx: Context
) -> None:
    await execute(
        ctx.store,
        SESSION,
        session_id,
        caller.clinic_id,
        lambda s: sessions.remove_attendee(s, attendee_id),
    )


@router.put("/sessions/{session_id}/link-sharing", responses=problems(404, 409))
async def set_link_sharing(
    session_id: UUID, body: LinkSharing, caller: Clinic, ctx: Context
) -> SessionView:
    """Turn guest links on or off; turning off stops every guest and drop-in link."""
    return await _change(
        ctx, caller, session_id, lambda s: sessions.set_link_sharing(s, body.enabled)
    )


@router.post("/sessions/{session_id}/complete", responses=problems(404, 409))
async def mark_complete(session_id: UUID, caller: Clinic, ctx: Context) -> SessionView:
    """Complete a session that ended before its scheduled end."""
    return await _change(ctx, caller, session_id, sessions.mark_complete)


@router.get(
    "/clients/{client_id}/sessions/upcoming",
    tags=["clients"],
    responses=problems(404, described=ERASED),
    dependencies=[NO_STORE],
)
async def upcoming_sessions(
    client_id: UUID, caller: Clinic, ctx: Context, access: Annotated[Access, Depends(access_of)]
) -> list[UpcomingSession]:
    """What a client portal shows: the client's coming sessions, each with its join link
    (so the answer is sent ``Cache-Control: no-store``)."""
    return await queries.upcoming_sessions(
        ctx.pool, caller.clinic_id, client_id, now(), access.sealer
    )
