"""Who is calling: the operator, or a clinic through one of its API keys."""

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import Scope

from contracts.scheduling import ClinicSettings
from runtime.context import ServiceContext
from runtime.http import CLINIC_KEY, OPERATOR_KEY, Problem, bearer_credential, problems
from runtime.ratelimit import RateLimiter
from runtime.sealing import Sealer, secret_digest
from runtime.service import context_of
from services.scheduling.handlers import API_KEY_PREFIX
from services.scheduling.integrators import Integrators
from services.scheduling.keys import ClinicKeys


@dataclass(frozen=True)
class Access:
    """What the routes need besides the service context, built once per app."""

    operator_key_hash: bytes | None
    booking_limiter: RateLimiter
    sealer: Sealer
    """Opens the join links that the links service announces sealed."""
    keys: ClinicKeys
    """Which clinic an API key opens (cached on this replica)."""
    integrators: Integrators
    """Issues integrators' NATS credentials and tells NATS which ones to refuse."""


@dataclass(frozen=True)
class ClinicCaller:
    clinic_id: str
    slug: str
    settings: ClinicSettings


async def access_of(request: Request) -> Access:
    access: Access = request.app.state.scheduling_access
    return access


Credentials = HTTPAuthorizationCredentials | None


async def operator(
    access: Annotated[Access, Depends(access_of)],
    credentials: Annotated[Credentials, Security(OPERATOR_KEY)],
) -> None:
    key = bearer_credential(credentials)
    if access.operator_key_hash is None:
        raise Problem(
            503,
            "No operator key is configured; set ANTECHAMBER_OPERATOR_KEY (or _FILE).",
            code="operator_key_missing",
        )
    if not hmac.compare_digest(secret_digest(key), access.operator_key_hash):
        raise Problem(401, "That is not the operator key.", code="unauthenticated")


async def clinic_caller(
    ctx: Annotated[ServiceContext, Depends(context_of)],
    access: Annotated[Access, Depends(access_of)],
    credentials: Annotated[Credentials, Security(CLINIC_KEY)],
) -> ClinicCaller:
    key = bearer_credential(credentials)
    if not key.startswith(API_KEY_PREFIX):
        raise Problem(
            401, f"Clinic API keys start with {API_KEY_PREFIX!r}.", code="unauthenticated"
        )
    holder = await access.keys.holder(ctx.pool, secret_digest(key))
    if holder is None:
        raise Problem(401, "This API key is unknown or was revoked.", code="unauthenticated")
    if holder.suspended:
        raise Problem(
            403,
            "This clinic is suspended; its keys and links do not work. Contact your operator.",
            code="clinic_suspended",
        )
    return ClinicCaller(holder.clinic_id, holder.slug, holder.settings)


Operator = Depends(operator)
Clinic = Annotated[ClinicCaller, Depends(clinic_caller)]
Context = Annotated[ServiceContext, Depends(context_of)]
OPERATOR_PROBLEMS = problems(401, 503)
"""What ``operator`` may answer instead (503: no operator key is configured, or starting)."""
CLINIC_PROBLEMS = problems(401, 403, 503)
"""What ``clinic_caller`` may answer instead (403: the clinic is suspended)."""


async def credential_still_works(scope: Scope) -> bool:
    """The idempotency replay guard: replay only to a caller who may still call."""
    request = Request(scope)
    if request.url.path.startswith("/v1/public/"):
        return True
    try:
        if request.url.path.startswith("/v1/clinics"):
            await operator(await access_of(request), await OPERATOR_KEY(request))
        else:
            await clinic_caller(
                await context_of(request), await access_of(request), await CLINIC_KEY(request)
            )
    except Problem:
        return False
    return True
