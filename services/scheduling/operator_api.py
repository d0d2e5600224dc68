"""Operator API: clinics (tenants) and their API keys. Needs the operator key."""

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from runtime.commands import Decide
from runtime.http import problems
from runtime.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor
from services.scheduling import domain, handlers, queries
from services.scheduling.auth import OPERATOR_PROBLEMS, Access, Context, Operator, access_of
from services.scheduling.domain import Clinic
from services.scheduling.handlers import CLINIC, execute
from services.scheduling.models import (
    ApiKeyCreate,
    ApiKeyView,
    ClinicCreate,
    ClinicSuspend,
    ClinicView,
    IssuedApiKey,
)

router = APIRouter(
    prefix="/v1/clinics", tags=["operator"], dependencies=[Operator], responses=OPERATOR_PROBLEMS
)


async def _change(ctx: Context, access: Access, clinic_id: str, decide: Decide[Clinic]) -> None:
    """Run a command on the clinic; its keys answer as it is now, at once, on this replica."""
    await execute(ctx.store, CLINIC, clinic_id, clinic_id, decide)
    await access.keys.forget_clinic(clinic_id)


@router.post("", status_code=201, responses=problems(409))
async def register_clinic(body: ClinicCreate, ctx: Context, response: Response) -> ClinicView:
    """Register a clinic (a tenant) with its settings."""
    clinic_id = await handlers.register_clinic(ctx.store, body.name, body.slug, body.settings)
    response.headers["Location"] = f"/v1/clinics/{clinic_id}"
    return await queries.clinic(ctx.pool, clinic_id)


@router.get("", responses=problems(400))
async def list_clinics(
    ctx: Context,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[ClinicView]:
    return await queries.clinics(ctx.pool, decode_cursor(cursor, 2), limit)


@router.get("/{clinic_id}", responses=problems(404))
async def get_clinic(clinic_id: str, ctx: Context) -> ClinicView:
    return await queries.clinic(ctx.pool, clinic_id)


@router.post("/{clinic_id}/suspend", responses=problems(404, 409))
async def suspend_clinic(
    clinic_id: str, body: ClinicSuspend, ctx: Context, access: Annotated[Access, Depends(access_of)]
) -> ClinicView:
    """Suspend a clinic: its API keys, links and integrators' NATS credentials stop working
    until it is reinstated."""
    await _change(ctx, access, clinic_id, lambda s: domain.suspend_clinic(s, body.reason))
    await access.integrators.clinic_changed(ctx)
    return await queries.clinic(ctx.pool, clinic_id)


@router.post("/{clinic_id}/reinstate", responses=problems(404, 409))
async def reinstate_clinic(
    clinic_id: str, ctx: Context, access: Annotated[Access, Depends(access_of)]
) -> ClinicView:
    """Lift the suspension; integrators' credentials that were not revoked work again."""
    await _change(ctx, access, clinic_id, domain.reinstate_clinic)
    await access.integrators.clinic_changed(ctx)
    return await queries.clinic(ctx.pool, clinic_id)


@router.post("/{clinic_id}/api-keys", status_code=201, responses=problems(404, 409))
async def issue_api_key(
    clinic_id: str, body: ApiKeyCreate, ctx: Context, response: Response
) -> IssuedApiKey:
    """Create a clinic API key. The key is in this response only; it is stored hashed.

    A retry with the same Idempotency-Key does not repeat the key (409
    `idempotent_secret_withheld`): revoke it and issue another if the answer was lost.
    """
    response.headers["Cache-Control"] = "no-store"
    key_id, secret = await handlers.issue_api_key(ctx.store, clinic_id, body.label)
    [view] = await queries.api_keys(ctx.pool, clinic_id, key_id)
    response.headers["Location"] = f"/v1/clinics/{clinic_id}/api-keys"
    return IssuedApiKey(**view.model_dump(), key=secret)


@router.get("/{clinic_id}/api-keys", responses=problems(404))
async def list_api_keys(clinic_id: str, ctx: Context) -> list[ApiKeyView]:
    await queries.clinic(ctx.pool, clinic_id)
    return await queries.api_keys(ctx.pool, clinic_id)


@router.delete("/{clinic_id}/api-keys/{key_id}", status_code=204, responses=problems(404, 409))
async def revoke_api_key(
    clinic_id: str, key_id: UUID, ctx: Context, access: Annotated[Access, Depends(access_of)]
) -> None:
    """Revoke a key: it stops working at once."""
    await _change(ctx, access, clinic_id, lambda s: domain.revoke_api_key(s, key_id))
