"""Public booking: a clinic's calendar page books a session without an API key.

Open only while the clinic's ``public_booking`` setting is on; rate limited per address. The
booking adds the person as a client and schedules a session with source ``public_booking``;
the links service issues its link like any other, and notify mails the invitation.
"""

from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Depends, Request

from contracts.scheduling import ClinicSettings, SessionSource
from runtime.client_address import client_address_of
from runtime.db import lock_key
from runtime.http import Problem, problems
from runtime.refusals import Conflict
from services.scheduling import handlers, queries
from services.scheduling.auth import Access, ClinicCaller, Context, access_of
from services.scheduling.domain import Client
from services.scheduling.handlers import ScheduleRequest
from services.scheduling.models import BookingCreate, BookingView, PublicClinicView
from services.scheduling.sessions_api import default_video_mode, now

router = APIRouter(prefix="/v1/public/clinics", tags=["public booking"], responses=problems(503))
CLOSED = "The clinic does not take bookings online (or does not exist, or is suspended)."


async def _bookable(ctx: Context, slug: str) -> ClinicCaller:
    row = await ctx.pool.fetchrow(
        "SELECT clinic_id, slug, settings, suspended FROM clinics WHERE slug = $1", slug
    )
    settings = ClinicSettings.model_validate(row["settings"]) if row else None
    if row is None or row["suspended"] or settings is None or not settings.public_booking:
        # One answer for all three, so the page does not reveal which clinics exist.
        raise Problem(404, "This clinic does not take bookings online.", code="booking_closed")
    return ClinicCaller(row["clinic_id"], row["slug"], settings)


async def _limit(request: Request, access: Annotated[Access, Depends(access_of)]) -> None:
    address = client_address_of(request) or "unknown"
    wait = access.booking_limiter.retry_after(address)
    if wait is not None:
        raise Problem(
            429,
            f"Too many bookings from your address; try again in {wait:.0f} seconds.",
            code="rate_limited",
            headers={"Retry-After": str(max(1, round(wait)))},
        )


@router.get("/{clinic_slug}", responses=problems(described={404: CLOSED}))
async def booking_page(clinic_slug: str, ctx: Context) -> PublicClinicView:
    """What a booking page shows: the clinic's name, time zone and practitioners."""
    clinic = await _bookable(ctx, clinic_slug)
    view = await queries.clinic(ctx.pool, clinic.clinic_id)
    rows = await ctx.pool.fetch(
        "SELECT display_name, room_slug FROM practitioners WHERE clinic_id = $1 "
        "ORDER BY display_name",
        clinic.clinic_id,
    )
    return PublicClinicView(
        name=view.name,
        time_zone=clinic.settings.time_zone,
        practitioners=[{"name": r["display_name"], "slug": r["room_slug"]} for r in rows],
    )


@router.post(
    "/{clinic_slug}/bookings",
    status_code=201,
    dependencies=[Depends(_limit)],
    responses=problems(
        429,
        described={
            403: "Not allowed: the clinic's plan does not include the booked video mode.",
            404: CLOSED + " Or it has no practitioner by that name.",
            409: "That time is no longer free.",
        },
    ),
)
async def book(clinic_slug: str, body: BookingCreate, ctx: Context) -> BookingView:
    """Book a session; the invitation with the join link is emailed.

    The answer is the booking's confirmation, without ``Location``: the session itself is
    the clinic's, read with its key. Quote ``session_id`` to the clinic about this booking.
    """
    clinic = await _bookable(ctx, clinic_slug)
    practitioner = await ctx.pool.fetchrow(
        "SELECT practitioner_id, display_name FROM practitioners "
        "WHERE clinic_id = $1 AND room_slug = $2",
        clinic.clinic_id,
        body.practitioner,
    )
    if practitioner is None:
        raise Problem(404, "This clinic has no practitioner by that name.", code="not_found")
    practitioner_id = practitioner["practitioner_id"]
    client = Client(uuid4(), body.display_name, str(body.email), body.phone)
    request = ScheduleRequest(
        practitioner_id=practitioner_id,
        client_ids=(client.client_id,),
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        time_zone=None,
        video_mode=default_video_mode(clinic),
        room_id=None,
        link_sharing=False,
        guest_admission=None,
    )
    # One transaction: a booking the domain refuses leaves no client behind. Bookings of one
    # practitioner queue on a lock, so two people cannot both take the same free slot.
    async with ctx.store.transaction() as conn:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)",
            lock_key(ctx.store.schema, "booking", str(practitioner_id)),
        )
        if await handlers.overlapping(
            conn, clinic.clinic_id, practitioner_id, body.starts_at, body.ends_at
        ):
            raise Conflict("slot_taken", "That time is no longer free; choose another.")
        await handlers.add_client(ctx.store, clinic.clinic_id, client, conn=conn)
        scheduled = await handlers.schedule_session(
            ctx.store,
            clinic.clinic_id,
            clinic.settings,
            request,
            SessionSource.public_booking,
            now(),
            conn=conn,
        )
    # No Location: the session is read with the clinic's key, which the booker has not.
    session = queries.scheduled_session(scheduled)
    return BookingView(
        session_id=session.session_id,
        practitioner={"name": practitioner["display_name"], "slug": body.practitioner},
        starts_at=session.starts_at,
        ends_at=session.ends_at,
        local_starts_at=session.local_starts_at,
        time_zone=session.time_zone,
        status="booked",
    )
