"""Clinic API: settings, practitioners, clients and rooms. Scoped to the caller's clinic."""

from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Response
from pydantic import ValidationError

from contracts.events import Event
from contracts.scheduling import ClinicSettings, Contact
from runtime.http import Problem, problems
from runtime.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor
from runtime.refusals import not_found
from services.scheduling import domain, handlers, queries
from services.scheduling.auth import CLINIC_PROBLEMS, Access, Clinic, Context, access_of
from services.scheduling.domain import Client
from services.scheduling.handlers import CLIENT, CLINIC, ROOM, execute
from services.scheduling.models import (
    ClientCreate,
    ClientPatch,
    ClientView,
    ClinicView,
    ContactIn,
    ErasureView,
    PractitionerCreate,
    PractitionerView,
    RoomCreate,
    RoomPatch,
    RoomView,
    SettingsPatch,
)

router = APIRouter(prefix="/v1", tags=["clinic"], responses=CLINIC_PROBLEMS)
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


@router.get("/clinic")
async def get_clinic(caller: Clinic, ctx: Context) -> ClinicView:
    """The caller's clinic and its settings."""
    return await queries.clinic(ctx.pool, caller.clinic_id)


@router.patch("/clinic/settings", responses=problems(409))
async def change_settings(
    body: SettingsPatch,
    caller: Clinic,
    ctx: Context,
    access: Annotated[Access, Depends(access_of)],
) -> ClinicView:
    """Change some settings; the others keep their values."""
    merged = caller.settings.model_dump() | body.model_dump(exclude_unset=True, exclude={"call"})
    if body.call is not None:
        merged["call"] = caller.settings.call.model_dump() | body.call.model_dump(
            exclude_unset=True
        )
    try:
        settings = ClinicSettings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Problem(
            422, f"The setting '{where}' is not valid: {first['msg']}.", code="invalid_setting"
        ) from exc
    await execute(
        ctx.store,
        CLINIC,
        caller.clinic_id,
        caller.clinic_id,
        lambda s: domain.change_settings(s, settings),
    )
    await access.keys.forget_clinic(caller.clinic_id)  # the next request sees the new settings
    return await queries.clinic(ctx.pool, caller.clinic_id)


# -- practitioners -----------------------------------------------------------------------------


@router.post("/practitioners", status_code=201, tags=["practitioners"], responses=problems(409))
async def add_practitioner(
    body: PractitionerCreate, caller: Clinic, ctx: Context, response: Response
) -> PractitionerView:
    """Add a practitioner; their room (``/r/{clinic}/{room_slug}``) is created with them."""
    practitioner_id = await handlers.add_practitioner(
        ctx.store, caller.clinic_id, body.display_name, body.room_slug
    )
    response.headers["Location"] = f"/v1/practitioners/{practitioner_id}"
    return await queries.practitioner(ctx.pool, caller.clinic_id, caller.slug, practitioner_id)


@router.get("/practitioners", tags=["practitioners"], responses=problems(400))
async def list_practitioners(
    caller: Clinic, ctx: Context, cursor: str | None = None, limit: Limit = DEFAULT_LIMIT
) -> Page[PractitionerView]:
    return await queries.practitioners(
        ctx.pool, caller.clinic_id, caller.slug, decode_cursor(cursor, 2), limit
    )


@router.get("/practitioners/{practitioner_id}", tags=["practitioners"], responses=problems(404))
async def get_practitioner(practitioner_id: UUID, caller: Clinic, ctx: Context) -> PractitionerView:
    return await queries.practitioner(ctx.pool, caller.clinic_id, caller.slug, practitioner_id)


# -- clients -----------------------------------------------------------------------------------


def _contacts(contacts: list[ContactIn]) -> tuple[Contact, ...]:
    return tuple(
        Contact(contact_id=c.contact_id or uuid4(), display_name=c.display_name, email=str(c.email))
        for c in contacts
    )


@router.post("/clients", status_code=201, tags=["clients"])
async def add_client(
    body: ClientCreate, caller: Clinic, ctx: Context, response: Response
) -> ClientView:
    client = Client(
        client_id=uuid4(),
        display_name=body.display_name,
        email=str(body.email) if body.email else None,
        phone=body.phone,
        linked_accounts=_contacts(body.linked_accounts),
        alternate_contacts=_contacts(body.alternate_contacts),
    )
    await handlers.add_client(ctx.store, caller.clinic_id, client)
    response.headers["Location"] = f"/v1/clients/{client.client_id}"
    return await queries.client(ctx.pool, caller.clinic_id, client.client_id)


@router.get("/clients", tags=["clients"], responses=problems(400))
async def list_clients(
    caller: Clinic, ctx: Context, cursor: str | None = None, limit: Limit = DEFAULT_LIMIT
) -> Page[ClientView]:
    return await queries.clients(ctx.pool, caller.clinic_id, decode_cursor(cursor, 2), limit)


ERASED = {410: "The client's personal data was erased (`client_erased`)."}


@router.get("/clients/{client_id}", tags=["clients"], responses=problems(404, described=ERASED))
async def get_client(client_id: UUID, caller: Clinic, ctx: Context) -> ClientView:
    return await queries.client(ctx.pool, caller.clinic_id, client_id)


@router.post("/clients/{client_id}/erasure", tags=["clients"], responses=problems(404))
async def erase_client(client_id: UUID, caller: Clinic, ctx: Context) -> ErasureView:
    """Erase the client's personal data for good (a right-to-erasure request).

    Their key is deleted, so every value sealed for them (their profile, their contacts'
    invitations, their rooms' titles) becomes unreadable in every stored event and stream
    copy; ``ClientErased`` tells the other services to delete their copies; the client's
    rooms are deleted. Afterwards the client answers 410 and cannot be booked. Mails already
    sent cannot be recalled. Asking again is harmless and answers the same.
    """
    erasure = await handlers.erase_client(ctx.store, caller.clinic_id, client_id)
    return ErasureView(
        client_id=erasure.client_id,
        erased_at=erasure.erased_at,
        already_erased=erasure.already_erased,
        attendee_ids=list(erasure.attendee_ids),
        room_ids=list(erasure.room_ids),
        history_in_clear=erasure.history_in_clear,
    )


@router.patch(
    "/clients/{client_id}", tags=["clients"], responses=problems(404, 409, described=ERASED)
)
async def update_client(
    client_id: UUID, body: ClientPatch, caller: Clinic, ctx: Context
) -> ClientView:
    given = body.model_dump(exclude_unset=True)
    if given.get("display_name", "") is None:
        raise Problem(422, "A client's display_name cannot be removed.", code="name_required")

    def decide(state: Client | None) -> list[Event]:
        if state is None:
            raise not_found("client")
        updated = Client(
            client_id=state.client_id,
            display_name=body.display_name or state.display_name,
            email=(str(body.email) if body.email else None) if "email" in given else state.email,
            phone=body.phone if "phone" in given else state.phone,
            linked_accounts=_contacts(body.linked_accounts or [])
            if "linked_accounts" in given
            else state.linked_accounts,
            alternate_contacts=_contacts(body.alternate_contacts or [])
            if "alternate_contacts" in given
            else state.alternate_contacts,
        )
        return domain.update_client(state, updated)

    await execute(ctx.store, CLIENT, client_id, caller.clinic_id, decide)
    return await queries.client(ctx.pool, caller.clinic_id, client_id)


# -- rooms -------------------------------------------------------------------------------------


@router.post(
    "/clients/{client_id}/rooms",
    status_code=201,
    tags=["rooms"],
    responses=problems(404, described=ERASED),
)
async def create_client_room(
    client_id: UUID, body: RoomCreate, caller: Clinic, ctx: Context, response: Response
) -> RoomView:
    """A personalised room for the client, with a title the practitioner chooses."""
    room_id = await handlers.create_client_room(
        ctx.store, caller.clinic_id, client_id, body.practitioner_id, body.title
    )
    response.headers["Location"] = f"/v1/rooms/{room_id}"
    return await queries.room(ctx.pool, caller.clinic_id, room_id)


@router.get("/rooms", tags=["rooms"], responses=problems(400))
async def list_rooms(
    caller: Clinic,
    ctx: Context,
    client_id: UUID | None = None,
    practitioner_id: UUID | None = None,
    cursor: str | None = None,
    limit: Limit = DEFAULT_LIMIT,
) -> Page[RoomView]:
    return await queries.rooms(
        ctx.pool, caller.clinic_id, client_id, practitioner_id, decode_cursor(cursor, 2), limit
    )


@router.get("/rooms/{room_id}", tags=["rooms"], responses=problems(404))
async def get_room(room_id: UUID, caller: Clinic, ctx: Context) -> RoomView:
    return await queries.room(ctx.pool, caller.clinic_id, room_id)


@router.patch("/rooms/{room_id}", tags=["rooms"], responses=problems(404, 409))
async def rename_room(room_id: UUID, body: RoomPatch, caller: Clinic, ctx: Context) -> RoomView:
    await execute(
        ctx.store, ROOM, room_id, caller.clinic_id, lambda s: domain.rename_room(s, body.title)
    )
    return await queries.room(ctx.pool, caller.clinic_id, room_id)


@router.delete("/rooms/{room_id}", status_code=204, tags=["rooms"], responses=problems(404, 409))
async def delete_room(room_id: UUID, caller: Clinic, ctx: Context) -> None:
    """Delete a client room; its link stops working."""
    await execute(ctx.store, ROOM, room_id, caller.clinic_id, domain.delete_room)
