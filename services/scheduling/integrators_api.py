"""Clinic API: NATS credentials for the clinic's integrators (its events, read-only)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from contracts.scheduling import ConsumerStart
from runtime.http import problems
from runtime.nats_jwt import is_user_key
from runtime.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, decode_cursor
from services.scheduling import credential_views
from services.scheduling.auth import CLINIC_PROBLEMS, Access, Clinic, Context, access_of
from services.scheduling.credential_views import CredentialView
from services.scheduling.credentials import DEFAULT_LIFETIME_DAYS, MAX_LIFETIME_DAYS
from services.scheduling.integrators import Integrators


async def integrators_of(
    _caller: Clinic, access: Annotated[Access, Depends(access_of)]
) -> Integrators:
    """The clinic's caller first (401, 403), then 503 when NATS authentication is off."""
    access.integrators.issuer()
    return access.integrators


Issuing = Annotated[Integrators, Depends(integrators_of)]
router = APIRouter(
    prefix="/v1/integrator-credentials",
    tags=["integrators"],
    dependencies=[Depends(integrators_of)],
    responses=CLINIC_PROBLEMS,
)


def _user_key(key: str) -> str:
    if not is_user_key(key):
        raise ValueError("not a user's public nkey (56 characters starting with U)")
    return key


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100, examples=["EHR sync"])
    expires_in_days: int = Field(default=DEFAULT_LIFETIME_DAYS, ge=1, le=MAX_LIFETIME_DAYS)
    public_key: Annotated[str, AfterValidator(_user_key)] | None = Field(
        default=None,
        description="Your own user nkey (U..., e.g. from `nsc generate nkey --user`): the seed "
        "never leaves your side, and you pair it with `jwt`. Left out: we make the key pair "
        "and answer with `creds` this once.",
    )
    start: ConsumerStart = Field(
        default=ConsumerStart.ALL,
        description="Where the consumers made for it start: `all`, the clinic's first event "
        "in each stream; `new`, the events stored from now on.",
    )


class IssuedCredential(CredentialView):
    jwt: str = Field(description="The user JWT (also inside `creds`). Useless without the seed.")
    creds: str | None = Field(
        description="The .creds file (user JWT and nkey seed) for nats-py's `user_credentials` "
        "or the `nats` CLI, when we made the key pair. Shown only now and stored nowhere; keep "
        "it in a secret store."
    )


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)  # a JWT's times are whole seconds


@router.post("", status_code=201, responses=problems(409))
async def issue_credential(
    body: CredentialCreate, caller: Clinic, ctx: Context, integrators: Issuing, response: Response
) -> IssuedCredential:
    """Issue a NATS credential for this clinic's events: subscribe to
    `antechamber.<clinic_id>.>`, or pull through the durable consumer named `consumer_name`
    made for it on each stream (from `start`).

    `creds` is in this response only: a retry with the same Idempotency-Key answers 409
    `idempotent_secret_withheld`; revoke the credential and issue another if the answer was
    lost. A `public_key` another credential has answers 409 `public_key_in_use`, one of the
    platform's own NATS users 409 `public_key_reserved`. 503 when NATS authentication is not
    configured.
    """
    issued_at = now()
    credential_id, credential = await integrators.issue(
        ctx,
        caller.clinic_id,
        body.label,
        issued_at,
        issued_at + timedelta(days=body.expires_in_days),
        body.public_key,
        body.start,
    )
    view = await credential_views.credential(ctx.pool, caller.clinic_id, credential_id, issued_at)
    if credential.creds is not None:
        response.headers["Cache-Control"] = "no-store"
    response.headers["Location"] = f"/v1/integrator-credentials/{view.credential_id}"
    return IssuedCredential(**view.model_dump(), jwt=credential.jwt, creds=credential.creds)


@router.get("", responses=problems(400))
async def list_credentials(
    caller: Clinic,
    ctx: Context,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Page[CredentialView]:
    """Every credential of the clinic, revoked and expired ones included, oldest first."""
    return await credential_views.credentials(
        ctx.pool, caller.clinic_id, decode_cursor(cursor, 2), limit, now()
    )


@router.get("/{credential_id}", responses=problems(404))
async def get_credential(credential_id: UUID, caller: Clinic, ctx: Context) -> CredentialView:
    return await credential_views.credential(ctx.pool, caller.clinic_id, credential_id, now())


@router.delete("/{credential_id}", status_code=204, responses=problems(404))
async def revoke_credential(
    credential_id: UUID, caller: Clinic, ctx: Context, integrators: Issuing
) -> None:
    """Revoke it: NATS closes its connections at once and refuses it from then on, and its
    consumers are deleted. Revoking it again changes nothing."""
    await integrators.revoke(ctx, caller.clinic_id, credential_id)
